//! `SHA256SUMS` (the `sha256sum` format) recording each fetched file's hash the first
//! time, and checking it on every reuse; plus torch.hub's check that a weights file's
//! hash starts with the hex in its name (`resnet18-f37072fd.pth`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// The hash prefix in a torch.hub file name: the hex after the last `-`, 8+ digits.
pub fn name_hash_prefix(file_name: &str) -> Option<&str> {
    let stem = file_name.split('.').next()?;
    let (_, suffix) = stem.rsplit_once('-')?;
    (suffix.len() >= 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit())).then_some(suffix)
}

/// The recorded hashes, by file name.
pub struct Checksums {
    entries: BTreeMap<String, String>,
}

impl Checksums {
    pub fn read(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut entries = BTreeMap::new();
        for (number, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let Some((hash, name)) = line.split_once("  ") else {
                bail!(
                    "{} line {}: expected `HASH  NAME`",
                    path.display(),
                    number + 1
                );
            };
            entries.insert(name.to_string(), hash.to_string());
        }
        Ok(Self { entries })
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text: String = self
            .entries
            .iter()
            .map(|(name, hash)| format!("{hash}  {name}\n"))
            .collect();
        Ok(rps_core::atomic::write_bytes(path, text.as_bytes())?)
    }

    /// Checks `file` against its recorded hash and against the hash in its name, and
    /// returns its hash; recording it is [`Checksums::trust`]'s, once the file has
    /// proved readable. A bad file is set aside as `NAME.bad` and an error returned.
    pub fn check(&mut self, file: &Path) -> Result<String> {
        let name = name_of(file)?;
        let actual = sha256_file(file)?;
        let problem = match (name_hash_prefix(&name), self.entries.get(&name)) {
            (Some(prefix), _) if !actual.starts_with(prefix) => Some(format!(
                "its sha256 {actual} does not start with {prefix}, the hash in its name"
            )),
            (_, Some(recorded)) if *recorded != actual => Some(format!(
                "its sha256 {actual} differs from {recorded} recorded in SHA256SUMS"
            )),
            _ => None,
        };
        if let Some(problem) = problem {
            let bad = set_aside(file)?;
            bail!(
                "{}: {problem}; set aside as {}",
                file.display(),
                bad.display()
            );
        }
        Ok(actual)
    }

    /// Whether `file`'s hash is recorded (it was checked once before).
    pub fn records(&self, file: &Path) -> Result<bool> {
        Ok(self.entries.contains_key(&name_of(file)?))
    }

    /// Records `file`'s hash: later runs reuse it only while it matches.
    pub fn trust(&mut self, file: &Path, sha256: String) -> Result<()> {
        self.entries.insert(name_of(file)?, sha256);
        Ok(())
    }

    /// Sets aside a file that proved unreadable and forgets its hash (which a faulty
    /// transfer may have recorded), so that the next run fetches it again; returns
    /// where it went.
    pub fn distrust(&mut self, file: &Path) -> Result<PathBuf> {
        self.entries.remove(&name_of(file)?);
        set_aside(file)
    }
}

/// Renames `file` to `NAME.bad` (replacing an older one); returns the new path.
fn set_aside(file: &Path) -> Result<PathBuf> {
    let bad = file.with_file_name(format!("{}.bad", name_of(file)?));
    std::fs::rename(file, &bad).with_context(|| format!("setting {} aside", file.display()))?;
    Ok(bad)
}

fn name_of(file: &Path) -> Result<String> {
    Ok(file
        .file_name()
        .and_then(|n| n.to_str())
        .context("file name is not UTF-8")?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_names_carry_a_hash_prefix() {
        assert_eq!(name_hash_prefix("resnet18-f37072fd.pth"), Some("f37072fd"));
        assert_eq!(name_hash_prefix("rps-test-set.zip"), None);
        assert_eq!(name_hash_prefix("imagenet_classes.txt"), None);
    }

    #[test]
    fn recorded_hash_is_checked_on_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.zip");
        std::fs::write(&file, b"first").unwrap();
        let sums_path = dir.path().join("SHA256SUMS");
        let mut sums = Checksums::read(&sums_path).unwrap();
        let sha256 = sums.check(&file).unwrap();
        sums.trust(&file, sha256).unwrap();
        sums.write(&sums_path).unwrap();
        std::fs::write(&file, b"changed").unwrap();
        let mut sums = Checksums::read(&sums_path).unwrap();
        let err = sums.check(&file).unwrap_err().to_string();
        assert!(err.contains("a.zip") && err.contains("SHA256SUMS"), "{err}");
        assert!(!file.exists() && dir.path().join("a.zip.bad").exists());
    }

    #[test]
    fn weights_whose_hash_disagrees_with_the_name_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("resnet18-f37072fd.pth");
        std::fs::write(&file, b"not the weights").unwrap();
        let err = Checksums::read(&dir.path().join("S"))
            .unwrap()
            .check(&file)
            .unwrap_err()
            .to_string();
        assert!(err.contains("f37072fd"), "{err}");
    }
}
