//! How deep phase 2 trains (`UNFREEZE`): the first stage it trains. Everything before
//! it is frozen, runs in eval mode and is computed once by rps-extract.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The first stage phase 2 trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unfreeze {
    /// The whole network, conv1 and bn1 too: phase 2 reads the cached images.
    All,
    Layer1,
    Layer2,
    Layer3,
    /// The recipe: layer4 and the head.
    Layer4,
}

impl Unfreeze {
    pub const ALL: [Unfreeze; 5] = [
        Unfreeze::All,
        Unfreeze::Layer1,
        Unfreeze::Layer2,
        Unfreeze::Layer3,
        Unfreeze::Layer4,
    ];

    /// The setting's value: `all`, `layer1`, ... `layer4`.
    pub fn name(self) -> &'static str {
        match self {
            Unfreeze::All => "all",
            Unfreeze::Layer1 => "layer1",
            Unfreeze::Layer2 => "layer2",
            Unfreeze::Layer3 => "layer3",
            Unfreeze::Layer4 => "layer4",
        }
    }

    pub fn parse(name: &str) -> Option<Unfreeze> {
        Self::ALL.into_iter().find(|u| u.name() == name)
    }

    /// The choices, for messages: `all, layer1, layer2, layer3, layer4`.
    pub fn choices() -> String {
        Self::ALL.map(Unfreeze::name).join(", ")
    }

    /// `--unfreeze`'s value, or the choices: every binary's flag parser.
    pub fn flag(name: &str) -> Result<Unfreeze, String> {
        Self::parse(name).ok_or_else(|| format!("expected one of {}", Self::choices()))
    }

    /// The first trained stage: 0 is the stem (conv1, bn1, max pooling), k is layerk.
    pub fn first_stage(self) -> usize {
        self as usize
    }

    /// Whether nothing is frozen, so phase 2 reads the images themselves.
    pub fn from_images(self) -> bool {
        self == Unfreeze::All
    }
}

impl fmt::Display for Unfreeze {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_stages_count_from_the_stem() {
        for u in Unfreeze::ALL {
            assert_eq!(Unfreeze::parse(u.name()), Some(u));
        }
        assert_eq!(Unfreeze::parse("layer5"), None);
        let refused = Unfreeze::flag("layer5").unwrap_err();
        assert!(
            refused.contains("all, layer1, layer2, layer3, layer4"),
            "{refused}"
        );
        let stages: Vec<usize> = Unfreeze::ALL.map(Unfreeze::first_stage).to_vec();
        assert_eq!(stages, [0, 1, 2, 3, 4]);
        assert_eq!(
            serde_json::to_string(&Unfreeze::Layer3).unwrap(),
            "\"layer3\""
        );
    }
}
