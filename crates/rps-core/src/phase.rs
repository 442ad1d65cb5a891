//! The recipe's two training phases, as files and sidecars name them.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Phase 1: the new head on pooled features, the backbone frozen.
    #[default]
    Head,
    /// Phase 2: the stages from `UNFREEZE` on, and the head.
    Finetune,
}

impl Phase {
    pub const ALL: [Phase; 2] = [Phase::Head, Phase::Finetune];

    /// `head` or `finetune`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Head => "head",
            Phase::Finetune => "finetune",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
