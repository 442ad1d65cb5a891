//! How deep phase 2 trains (`UNFREEZE`): where it starts. Everything before it is
//! frozen, runs in eval mode and is computed once by rps-extract. Which stages a
//! network has, and what they are called, is the network's own fact (rps-model):
//! rps-export checks the name against the network and records the stage it chose
//! in `export.json`, which the later stages read.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where phase 2 starts training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Unfreeze {
    /// The whole network, its stem too: phase 2 reads the cached images.
    All,
    /// The network's last stage, and the head: the recipe (layer4 for the ResNets).
    Last,
    /// A stage, by the name its network gives it (`layer3`).
    Stage(StageName),
}

/// A stage's name: 1 to [`StageName::MAX`] ASCII letters, digits, `_` and `.`, held
/// inline so that a setting stays a plain value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StageName {
    bytes: [u8; StageName::MAX],
    len: u8,
}

impl StageName {
    pub const MAX: usize = 32;

    pub fn new(name: &str) -> Option<StageName> {
        let fits = (1..=Self::MAX).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
        fits.then(|| {
            let mut bytes = [0; Self::MAX];
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            StageName {
                bytes,
                len: name.len() as u8,
            }
        })
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).expect("ASCII by construction")
    }
}

impl fmt::Debug for StageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl Unfreeze {
    const ALL: &str = "all";
    const LAST: &str = "last";

    /// A stage by a name known to be well formed (a literal): input goes through
    /// [`Unfreeze::flag`].
    pub fn stage(name: &str) -> Unfreeze {
        Unfreeze::Stage(StageName::new(name).expect("a well-formed stage name"))
    }

    /// The setting's value: `all`, `last` or the stage's name.
    pub fn name(&self) -> &str {
        match self {
            Unfreeze::All => Self::ALL,
            Unfreeze::Last => Self::LAST,
            Unfreeze::Stage(name) => name.as_str(),
        }
    }

    /// `--unfreeze`'s value, or what it may be: every binary's flag parser. Whether
    /// the network has the stage is checked where the network is known (rps-model, when rps-export builds it).
    pub fn flag(text: &str) -> Result<Unfreeze, String> {
        match text {
            Self::ALL => Ok(Unfreeze::All),
            Self::LAST => Ok(Unfreeze::Last),
            _ => StageName::new(text).map(Unfreeze::Stage).ok_or_else(|| {
                format!(
                    "expected all, last or a stage of the network (up to {} letters, digits, '_' and '.'; `make summary` lists them)",
                    StageName::MAX
                )
            }),
        }
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

impl From<Unfreeze> for String {
    fn from(unfreeze: Unfreeze) -> String {
        unfreeze.name().to_string()
    }
}

impl TryFrom<String> for Unfreeze {
    type Error = String;

    fn try_from(text: String) -> Result<Unfreeze, String> {
        Unfreeze::flag(&text).map_err(|why| format!("unfreeze {text:?}: {why}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_only_well_formed_ones() {
        for text in ["all", "last", "layer3", "_blocks.11", "features.14"] {
            assert_eq!(Unfreeze::flag(text).unwrap().name(), text);
        }
        assert_eq!(Unfreeze::flag("all"), Ok(Unfreeze::All));
        assert_eq!(Unfreeze::flag("layer4"), Ok(Unfreeze::stage("layer4")));
        for bad in ["", "layer 4", "layer4;rm", "é", &"x".repeat(33)] {
            let refused = Unfreeze::flag(bad).unwrap_err();
            assert!(
                refused.contains("expected all, last or a stage"),
                "{refused}"
            );
        }
        assert!(Unfreeze::All.from_images() && !Unfreeze::Last.from_images());
        let json = serde_json::to_string(&Unfreeze::stage("layer3")).unwrap();
        assert_eq!(json, "\"layer3\"");
        assert_eq!(
            serde_json::from_str::<Unfreeze>("\"all\"").unwrap(),
            Unfreeze::All
        );
        assert!(serde_json::from_str::<Unfreeze>("\"a b\"").is_err());
    }
}
