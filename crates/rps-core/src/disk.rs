//! The disk under `DATA`: a stage that writes much says how much before it starts,
//! and refuses when it would not fit rather than failing hours in.

use std::path::Path;

use crate::error::{Error, Result};

/// Refuses when `needed` bytes of `what` (with a margin of a twentieth) exceed the
/// free space of `data`'s disk, saying both figures and `advice`.
pub fn check_free_space(data: &Path, needed: u64, what: &str, advice: &str) -> Result<()> {
    let stats = rustix::fs::statvfs(data).map_err(|e| Error::Invalid {
        path: data.to_path_buf(),
        message: format!("checking its free space: {e}"),
    })?;
    let free = stats.f_bavail.saturating_mul(stats.f_frsize);
    if needed.saturating_add(needed / 20) > free {
        return Err(Error::Invalid {
            path: data.to_path_buf(),
            message: format!(
                "{what} need {}, and its disk has {} free: free some space, {advice}, or \
                 put DATA on a larger disk",
                gigabytes(needed),
                gigabytes(free)
            ),
        });
    }
    Ok(())
}

/// `bytes` as gigabytes, two decimals.
pub fn gigabytes(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_than_the_disk_holds_is_refused_with_both_figures() {
        let dir = tempfile::tempdir().unwrap();
        check_free_space(dir.path(), 1, "the cache", "cache fewer views").unwrap();
        let err = check_free_space(dir.path(), u64::MAX / 2, "the cache", "cache fewer views")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the cache need 9223372036.85 GB")
                && err.contains("GB free")
                && err.contains("cache fewer views"),
            "{err}"
        );
    }
}
