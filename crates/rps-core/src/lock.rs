//! One run per DATA at a time. Every stage that writes under DATA holds an
//! exclusive `flock` on `DATA/.lock` while it runs; the kernel releases it when the
//! process ends, however it ends, so no lock outlives a kill. A second stage finds it
//! held and, once a killed holder has had time to go, is refused, naming the process
//! that holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::Layout;
use crate::error::{Error, Result, io};

/// How long a stage waits for a lock before it is refused: a killed process lets go
/// of its lock only once the kernel has torn it down, which its parent may not have
/// waited for (make killed with its stage), while a run that holds the lock holds it
/// far longer.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// Takes `file`'s exclusive lock, trying until `wait` has passed; whether it got it.
fn lock_within(file: &File, wait: Duration) -> std::io::Result<bool> {
    let deadline = Instant::now() + wait;
    loop {
        // SAFETY: flock on a descriptor `file` owns; no memory is shared.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lock on a DATA folder, held until dropped.
#[derive(Debug)]
pub struct DataLock {
    _file: File,
}

impl DataLock {
    /// Takes `layout`'s lock for `stage` (`rps-train`), or says who holds it.
    pub fn acquire(layout: &Layout, stage: &str) -> Result<DataLock> {
        Self::acquire_within(layout, stage, RELEASE_WAIT)
    }

    /// [`DataLock::acquire`], refused once `wait` has passed.
    fn acquire_within(layout: &Layout, stage: &str, wait: Duration) -> Result<DataLock> {
        let path = layout.lock();
        std::fs::create_dir_all(layout.root()).map_err(io("creating", layout.root()))?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("opening", &path))?;
        if !lock_within(&file, wait).map_err(io("locking", &path))? {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = crate::text::printable(holder.trim()).into_owned();
            return Err(Error::Invalid {
                path,
                message: format!(
                    "{} is in use by another run ({}): one run per DATA at a time; wait for it to end, or stop it (its lock ends with it)",
                    layout.root().display(),
                    if holder.is_empty() {
                        "a process starting".into()
                    } else {
                        holder
                    }
                ),
            });
        }
        let mut tell = || -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{stage}, pid {}", std::process::id())
        };
        tell().map_err(io("writing", &path))?;
        Ok(DataLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_naming_the_first_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("data"));
        let first = DataLock::acquire(&layout, "rps-train").unwrap();
        // Refused after a short wait (the stages wait RELEASE_WAIT).
        let err = DataLock::acquire_within(&layout, "rps-evaluate", Duration::from_millis(100))
            .unwrap_err()
            .to_string();
        let pid = std::process::id();
        assert!(
            err.contains(".lock") && err.contains(&format!("rps-train, pid {pid}")),
            "{err}"
        );
        drop(first);
        DataLock::acquire(&layout, "rps-evaluate").unwrap();
    }

    #[test]
    fn a_lock_let_go_while_waiting_is_taken() {
        // As a SIGKILLed stage lets go a moment after its parent has been reaped.
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("data"));
        let first = DataLock::acquire(&layout, "rps-extract").unwrap();
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(first);
        });
        DataLock::acquire(&layout, "rps-extract").unwrap();
        letting_go.join().unwrap();
    }
}
