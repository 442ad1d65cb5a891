//! How wide the network is built (`WIDTH`): as published, or with another number of
//! channels in its first stage. What a width means for a network, and which widths
//! it can be built at, is the network's own fact (rps-model); rps-export records
//! the width it built in `export.json`.

use std::fmt;

use crate::defaults::ranges;

/// `WIDTH`'s value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// The network's published width (64 for the ResNets).
    Full,
    /// The channels of its first stage.
    Channels(usize),
}

impl Width {
    /// `full`, or a whole number in [`ranges::WIDTH`].
    pub fn flag(text: &str) -> Result<Width, String> {
        let text = text.trim();
        if text == "full" {
            return Ok(Width::Full);
        }
        text.parse::<u64>()
            .ok()
            .filter(|n| ranges::WIDTH.contains(n))
            .map(|n| Width::Channels(n as usize))
            .ok_or_else(|| {
                format!(
                    "expected full (the network's published width) or a whole number from {} to {}",
                    ranges::WIDTH.start(),
                    ranges::WIDTH.end()
                )
            })
    }

    /// The channels this width gives a network whose published width is `full`.
    pub fn channels(self, full: usize) -> usize {
        match self {
            Width::Full => full,
            Width::Channels(channels) => channels,
        }
    }
}

impl fmt::Display for Width {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Width::Full => f.write_str("full"),
            Width::Channels(channels) => write!(f, "{channels}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_or_a_number_in_range() {
        assert_eq!(Width::flag("full"), Ok(Width::Full));
        assert_eq!(Width::flag(" 16 "), Ok(Width::Channels(16)));
        assert_eq!(Width::Full.channels(64), 64);
        assert_eq!(Width::Channels(8).channels(64), 8);
        for bad in ["0", "257", "Full", "-8", "8.0", ""] {
            let error = Width::flag(bad).unwrap_err();
            assert!(
                error.contains("full") && error.contains("256"),
                "{bad}: {error}"
            );
        }
        assert_eq!(
            Width::flag(&Width::Channels(24).to_string()),
            Ok(Width::Channels(24))
        );
    }
}
