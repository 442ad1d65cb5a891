//! Nothing half-written may look complete: every output is written under a
//! temporary name in its final folder, then renamed into place.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, io};

/// Writes `path` through `write`, then renames it into place. On any error the
/// temporary file is removed and `path` is left as it was.
pub fn write_file<F, E>(path: &Path, write: F) -> Result<(), E>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<(), E>,
    E: From<Error>,
{
    let dir = parent_dir(path);
    fs::create_dir_all(dir).map_err(io("creating folder", dir))?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", file_name(path)))
        .suffix(".part")
        .permissions(readable_by_all())
        .tempfile_in(dir)
        .map_err(io("creating a temporary file in", dir))?;
    let (file, tmp_path) = tmp.into_parts();
    let mut out = BufWriter::new(file);
    write(&mut out)?;
    let file = out
        .into_inner()
        .map_err(|e| io("writing", path)(e.into_error()))?;
    file.sync_all().map_err(io("syncing", path))?;
    tmp_path
        .persist(path)
        .map_err(|e| io("renaming into place", path)(e.error))?;
    Ok(())
}

/// Writes `bytes` to `path` atomically.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file(path, |out| {
        out.write_all(bytes).map_err(io("writing", path))
    })
}

/// A folder being filled under a temporary name beside its final one. Dropping it
/// without [`TempDir::commit`] removes it, so an interrupted stage leaves no folder
/// that looks complete.
pub struct TempDir {
    tmp: Option<tempfile::TempDir>,
    target: PathBuf,
}

impl TempDir {
    pub fn beside(target: &Path) -> Result<Self> {
        let dir = parent_dir(target);
        fs::create_dir_all(dir).map_err(io("creating folder", dir))?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", file_name(target)))
            .suffix(".part")
            .tempdir_in(dir)
            .map_err(io("creating a temporary folder in", dir))?;
        Ok(Self {
            tmp: Some(tmp),
            target: target.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        self.tmp.as_ref().expect("not committed yet").path()
    }

    /// Replaces the target folder (if any) with this one.
    pub fn commit(mut self) -> Result<()> {
        let tmp = self.tmp.take().expect("committed once").keep();
        if self.target.exists() {
            fs::remove_dir_all(&self.target).map_err(io("removing old", &self.target))?;
        }
        fs::rename(&tmp, &self.target).map_err(io("renaming into place", &self.target))
    }
}

/// Outputs are ordinary files (0644), not the 0600 of a temporary file.
fn readable_by_all() -> fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    fs::Permissions::from_mode(0o644)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_file_replaces_only_on_success() {
        let (_dir, path) = crate::testing::temp_path("sub/out.txt");
        write_bytes(&path, b"first").unwrap();
        let failed: Result<()> = write_file(&path, |out| {
            out.write_all(b"half").unwrap();
            Err(Error::Invalid {
                path: path.clone(),
                message: "stop".into(),
            })
        });
        assert!(failed.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"first");
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary file left behind");
    }

    #[test]
    fn temp_dir_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("set");
        {
            let tmp = TempDir::beside(&target).unwrap();
            fs::write(tmp.path().join("a"), b"x").unwrap();
        }
        assert!(!target.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let tmp = TempDir::beside(&target).unwrap();
        fs::write(tmp.path().join("b"), b"y").unwrap();
        tmp.commit().unwrap();
        assert_eq!(fs::read(target.join("b")).unwrap(), b"y");
    }
}
