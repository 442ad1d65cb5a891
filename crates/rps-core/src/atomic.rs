//! Nothing half-written may look complete: every output is written under a
//! temporary name in its final folder, then renamed into place.
//!
//! A temporary name is `.NAME.PID.RANDOM.part`: a stage that is killed leaves one
//! behind, and the next stage to write `NAME` there removes those whose process is
//! gone (never a running stage's). SIGINT and SIGTERM remove this process's own at
//! once ([`remove_temporaries_on_signal`]).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

use crate::error::{Error, Result, io};

/// Writes `path` through `write`, then renames it into place. On any error the
/// temporary file is removed and `path` is left as it was.
pub fn write_file<F, E>(path: &Path, write: F) -> Result<(), E>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<(), E>,
    E: From<Error>,
{
    let (dir, prefix) = make_room(path)?;
    let (tmp, _live) = Live::create(
        || {
            tempfile::Builder::new()
                .prefix(&prefix)
                .suffix(PART)
                .permissions(readable_by_all())
                .tempfile_in(dir)
        },
        |tmp| tmp.path().to_path_buf(),
    )
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

/// Writes `bytes` to `path` (atomically) unless it holds them already, so that its
/// time changes only with its content and make reruns what depends on it only
/// then; whether it wrote.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    write_bytes(path, bytes)?;
    Ok(true)
}

/// A folder being filled under a temporary name beside its final one. Dropping it
/// without [`TempDir::commit`] removes it, so an interrupted stage leaves no folder
/// that looks complete.
pub struct TempDir {
    tmp: Option<tempfile::TempDir>,
    target: PathBuf,
    _live: Live,
}

impl TempDir {
    pub fn beside(target: &Path) -> Result<Self> {
        let (dir, prefix) = make_room(target)?;
        let (tmp, live) = Live::create(
            || {
                tempfile::Builder::new()
                    .prefix(&prefix)
                    .suffix(PART)
                    .tempdir_in(dir)
            },
            |tmp| tmp.path().to_path_buf(),
        )
        .map_err(io("creating a temporary folder in", dir))?;
        Ok(Self {
            tmp: Some(tmp),
            target: target.to_path_buf(),
            _live: live,
        })
    }

    pub fn path(&self) -> &Path {
        self.tmp.as_ref().expect("not committed yet").path()
    }

    /// Creates the folder `relative` (and those above it) inside this one. Never
    /// this folder itself: once a signal has removed it, nothing recreates it.
    pub fn create_dir(&self, relative: &Path) -> std::io::Result<PathBuf> {
        let mut dir = self.path().to_path_buf();
        for part in relative.components() {
            dir.push(part);
            match fs::create_dir(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
        }
        Ok(dir)
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

/// The end of every temporary name.
const PART: &str = ".part";

/// Readies `target`'s folder for a temporary: creates it, removes the temporaries
/// for `target` that a process now gone left. Returns the folder and the prefix of
/// this process's temporary name, `.NAME.PID.` (tempfile's random letters and
/// [`PART`] follow).
fn make_room(target: &Path) -> Result<(&Path, String)> {
    let dir = parent_dir(target);
    fs::create_dir_all(dir).map_err(io("creating folder", dir))?;
    remove_stale(dir, target)?;
    Ok((
        dir,
        format!(".{}.{}.", file_name(target), std::process::id()),
    ))
}

/// Removes the temporaries for `target` in `dir` that a process now gone left.
fn remove_stale(dir: &Path, target: &Path) -> Result<()> {
    let prefix = format!(".{}.", file_name(target));
    let entries = fs::read_dir(dir).map_err(io("listing", dir))?;
    for entry in entries.filter_map(std::result::Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .filter(|_| name.ends_with(PART))
            .and_then(|rest| rest.split('.').next()?.parse::<u32>().ok())
        else {
            continue;
        };
        if !process_alive(pid) {
            remove(&entry.path());
        }
    }
    Ok(())
}

/// Whether process `pid` still runs: not when gone or a zombie (a killed process
/// whose parent died too may stay one); unknown (no `/proc`) counts as running.
fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    if !proc.is_dir() {
        return true;
    }
    match fs::read_to_string(proc.join(pid.to_string()).join("stat")) {
        // `PID (COMMAND) STATE ...`; the command may hold spaces and parentheses.
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next()),
            Some(Some('Z' | 'X'))
        ),
        Err(_) => false,
    }
}

fn remove(path: &Path) {
    // Best effort: what cannot be removed now is tried again by the next run.
    let _ = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
}

/// Removes `path`, again while it is still there: the stage's own thread may write
/// into a folder while a signal's handler removes it. Whether it is gone.
fn remove_for_good(path: &Path) -> bool {
    (0..100).any(|_| {
        remove(path);
        fs::symlink_metadata(path).is_err()
    })
}

/// This process's temporaries not yet renamed into place.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A temporary on the live list for as long as this guard lives.
struct Live(PathBuf);

impl Live {
    /// Makes a temporary with `create` and lists it, under the list's lock: a signal
    /// handler, which takes the lock, then sees every temporary on disk.
    fn create<T>(
        create: impl FnOnce() -> std::io::Result<T>,
        path_of: impl FnOnce(&T) -> PathBuf,
    ) -> std::io::Result<(T, Self)> {
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        let made = create()?;
        let path = path_of(&made);
        live.push(path.clone());
        Ok((made, Self(path)))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|p| *p != self.0);
    }
}

/// On SIGINT, SIGTERM or SIGHUP: removes this process's temporaries, then exits with
/// status 130 at once. Each stage binary calls this first.
pub fn remove_temporaries_on_signal() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let installed = ctrlc::set_handler(|| {
            let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
            let kept: Vec<&PathBuf> = live.iter().filter(|p| !remove_for_good(p)).collect();
            eprintln!(
                "interrupted: removed {} temporary file(s)",
                live.len() - kept.len()
            );
            for path in kept {
                eprintln!("interrupted: could not remove {}", path.display());
            }
            // At once, without exit's handlers: a library's static destructors (ONNX
            // Runtime's) would run under the stage's own thread and print its errors.
            // SAFETY: _exit only ends the process.
            unsafe { libc::_exit(130) }
        });
        if let Err(e) = installed {
            eprintln!("warning: temporaries will not be removed on interrupt: {e}");
        }
    });
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
            assert_eq!(
                LIVE.lock()
                    .unwrap()
                    .iter()
                    .filter(|p| p.starts_with(dir.path()))
                    .count(),
                1
            );
        }
        assert!(!target.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let tmp = TempDir::beside(&target).unwrap();
        fs::write(tmp.path().join("b"), b"y").unwrap();
        tmp.commit().unwrap();
        assert_eq!(fs::read(target.join("b")).unwrap(), b"y");
        assert!(
            !LIVE
                .lock()
                .unwrap()
                .iter()
                .any(|p| p.starts_with(dir.path()))
        );
    }

    #[test]
    fn a_gone_process_temporaries_are_removed_a_running_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join(format!(".cache.{}.abc.part", u32::MAX));
        let running = dir
            .path()
            .join(format!(".cache.{}.def.part", std::process::id()));
        let other = dir.path().join(format!(".features.{}.ghi.part", u32::MAX));
        for path in [&gone, &running, &other] {
            fs::create_dir(path).unwrap();
        }
        let tmp = TempDir::beside(&dir.path().join("cache")).unwrap();
        assert!(!gone.exists(), "a dead process's temporary stays");
        assert!(running.exists() && other.exists());
        drop(tmp);
    }
}
