//! Safe extraction of a dataset archive into `<split>/<class>/<file>`: the archive's
//! top folder is dropped; entries with `..`, absolute paths or symlinks are refused;
//! `__MACOSX/` and dot-files are skipped; the unpacked size is capped. The split
//! is unpacked beside its folder, which the caller swaps in once every split is.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use rps_core::atomic::TempDir;

/// A failure to write here while unpacking (a full disk, a name too long, a file in
/// the way): the archive is not at fault and stays trusted. Attached as the context
/// of such errors, so [`is_local`] finds it.
#[derive(Debug)]
pub struct LocalWrite(String);

impl std::fmt::Display for LocalWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether unpacking failed writing here, not reading the archive.
pub fn is_local(error: &anyhow::Error) -> bool {
    error.downcast_ref::<LocalWrite>().is_some()
}

/// Unpacks `archive` into a temporary folder beside `target`, which replaces `target`
/// when committed.
pub fn unpack(archive: &Path, target: &Path, max_bytes: u64) -> Result<TempDir> {
    let file = File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut zip = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a readable zip archive", archive.display()))?;
    let tmp = TempDir::beside(target)?;
    let mut unpacked = 0u64;
    let mut files = 0;
    for index in 0..zip.len() {
        let mut entry = zip
            .by_index(index)
            .with_context(|| format!("{}: entry {index}", archive.display()))?;
        let name = entry
            .name()
            .with_context(|| {
                format!(
                    "{}: entry {index} has an unreadable name",
                    archive.display()
                )
            })?
            .to_string();
        if entry.is_symlink() {
            bail!("{}: refusing symlink entry {name:?}", archive.display());
        }
        let Some(relative) = inside_top_folder(&name)
            .with_context(|| format!("{}: refusing unsafe entry {name:?}", archive.display()))?
        else {
            continue;
        };
        let local = |e: io::Error, what: &str, path: &Path| {
            anyhow::Error::new(e).context(LocalWrite(format!(
                "{}: entry {name:?}: {what} {}",
                archive.display(),
                path.display()
            )))
        };
        let (folder, file_name) = if entry.is_dir() {
            (relative.as_path(), None)
        } else {
            (
                relative.parent().unwrap_or(Path::new("")),
                relative.file_name(),
            )
        };
        let dir = tmp
            .create_dir(folder)
            .map_err(|e| local(e, "creating", &tmp.path().join(folder)))?;
        let Some(file_name) = file_name else {
            continue;
        };
        let out = dir.join(file_name);
        let mut writer = File::create(&out).map_err(|e| local(e, "creating", &out))?;
        let budget = max_bytes.saturating_sub(unpacked);
        let copied = copy(&mut entry, &mut writer, budget + 1).map_err(|e| match e {
            Copy::Read(e) => anyhow::Error::new(e).context(format!(
                "{}: reading {name:?} (corrupt archive?)",
                archive.display()
            )),
            Copy::Write(e) => local(e, "writing", &out),
        })?;
        unpacked += copied;
        if unpacked > max_bytes {
            bail!(
                "{}: unpacks to more than {max_bytes} bytes; refusing (raise --max-unpacked-bytes if it is genuine)",
                archive.display()
            );
        }
        files += 1;
    }
    if files == 0 {
        bail!("{}: no files in the archive", archive.display());
    }
    Ok(tmp)
}

/// Which side of a copy failed.
enum Copy {
    Read(io::Error),
    Write(io::Error),
}

/// Copies at most `limit` bytes from `from` to `to`; the count copied.
fn copy(from: &mut impl Read, to: &mut impl Write, limit: u64) -> Result<u64, Copy> {
    let mut from = from.take(limit);
    let mut buffer = vec![0u8; 1 << 16];
    let mut copied = 0;
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        to.write_all(&buffer[..n]).map_err(Copy::Write)?;
        copied += n as u64;
    }
}

/// The entry's path below the archive's top folder; `None` for entries to skip
/// (the top folder itself, `__MACOSX/`, dot-files); an error for unsafe paths.
fn inside_top_folder(name: &str) -> Result<Option<PathBuf>> {
    let path = Path::new(name);
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => bail!("path leaves the folder"),
        }
    }
    if parts.len() < 2 || parts[0] == "__MACOSX" || parts.iter().any(|p| p.starts_with('.')) {
        return Ok(None);
    }
    Ok(Some(parts[1..].iter().collect()))
}

/// Files per class folder of an extracted split, sorted by class.
pub fn count_per_class(split_dir: &Path) -> Result<Vec<(String, usize)>> {
    rps_core::classes::class_folders(split_dir)?
        .into_iter()
        .map(|(class, dir)| {
            let count = fs::read_dir(&dir)
                .with_context(|| format!("listing {}", dir.display()))?
                .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_file()))
                .count();
            Ok((class, count))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_folder_is_dropped_and_junk_skipped() {
        assert_eq!(
            inside_top_folder("rps/rock/a.png").unwrap(),
            Some(PathBuf::from("rock/a.png"))
        );
        assert_eq!(inside_top_folder("rps/").unwrap(), None);
        assert_eq!(inside_top_folder("__MACOSX/rps/._a.png").unwrap(), None);
        assert_eq!(inside_top_folder("rps/rock/.DS_Store").unwrap(), None);
        assert!(inside_top_folder("rps/../../evil").is_err());
        assert!(inside_top_folder("/etc/passwd").is_err());
    }
}
