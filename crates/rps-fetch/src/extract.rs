//! Safe extraction of a dataset archive into `<split>/<class>/<file>`: the archive's
//! top folder is dropped; entries with `..`, absolute paths or symlinks are refused;
//! `__MACOSX/` and dot-files are skipped; the unpacked size is capped. The split
//! is unpacked beside its folder, which the caller swaps in once every split is.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use rps_core::atomic::TempDir;

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
        let out = tmp.path().join(&relative);
        if entry.is_dir() {
            fs::create_dir_all(&out)?;
            continue;
        }
        fs::create_dir_all(out.parent().expect("inside the folder"))?;
        let budget = max_bytes.saturating_sub(unpacked);
        let mut writer =
            File::create(&out).with_context(|| format!("creating {}", out.display()))?;
        let copied =
            io::copy(&mut (&mut entry).take(budget + 1), &mut writer).with_context(|| {
                format!("{}: reading {name:?} (corrupt archive?)", archive.display())
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
