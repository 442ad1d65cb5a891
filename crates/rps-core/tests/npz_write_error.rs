//! An `.npz` that fails to write (a full disk) returns its error and prints nothing
//! of its own: the zip writer, dropped unfinished, would otherwise try to finish the
//! archive and print "ZipWriter drop failed" to stderr. Its own process, since it
//! watches file descriptor 2.

use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;

use ndarray::ArrayD;

/// A disk that fills after `room` bytes.
struct Filling {
    written: Cursor<Vec<u8>>,
    room: usize,
}

impl Write for Filling {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written.get_ref().len() + buf.len() > self.room {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.written.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for Filling {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.written.seek(to)
    }
}

/// What `f` printed to file descriptor 2.
fn stderr_of(f: impl FnOnce()) -> String {
    let mut capture = tempfile::tempfile().unwrap();
    // SAFETY: dup and dup2 on descriptors this process holds; fd 2 is restored.
    let saved = unsafe { libc::dup(2) };
    assert!(saved >= 0);
    assert!(unsafe { libc::dup2(capture.as_raw_fd(), 2) } >= 0);
    f();
    assert!(unsafe { libc::dup2(saved, 2) } >= 0);
    unsafe { libc::close(saved) };
    let mut printed = String::new();
    capture.seek(SeekFrom::Start(0)).unwrap();
    capture.read_to_string(&mut printed).unwrap();
    printed
}

#[test]
fn a_full_disk_is_an_error_and_nothing_else_is_printed() {
    let big = ArrayD::<f32>::zeros(ndarray::IxDyn(&[64, 1024]));
    let small = ArrayD::<f32>::zeros(ndarray::IxDyn(&[4]));
    let write = |room: usize| {
        let disk = Filling {
            written: Cursor::new(Vec::new()),
            room,
        };
        rps_core::npy::write_npz_to(disk, [("big", &big), ("small", &small)])
    };
    let mut whole = Cursor::new(Vec::new());
    rps_core::npy::write_npz_to(&mut whole, [("big", &big), ("small", &small)]).unwrap();
    let size = whole.get_ref().len();
    // Full in the middle of the first array, and while writing the central
    // directory that finishes the archive.
    for room in [1000, size - 10] {
        let mut result = Ok(());
        let printed = stderr_of(|| result = write(room));
        let error = result.unwrap_err();
        assert!(error.contains("No space left"), "room {room}: {error}");
        assert_eq!(printed, "", "room {room}");
    }
}
