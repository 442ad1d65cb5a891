//! One run per DATA at a time: a stage finds DATA held by another process and is
//! refused at once, naming it; once that process is killed (SIGKILL, no clean-up),
//! its lock is gone with it.

use rps_fixtures::repo;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// `rps-preprocess` on `data` (which holds no dataset): its stderr and exit code.
fn preprocess(data: &Path) -> (String, Option<i32>) {
    let out = Command::new(repo().join("target/debug/rps-preprocess"))
        .arg("--data")
        .arg(data)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stderr).into(),
        out.status.code(),
    )
}

/// `flock` holding `lock` until killed, once it holds it (`-o`: itself, not the
/// command it runs, so that killing it ends the lock).
fn holder(lock: &Path) -> Child {
    let child = Command::new("flock")
        .arg("-o")
        .arg(lock)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    // `flock -n` fails while the lock is held: then the holder has it.
    let started = Instant::now();
    while Command::new("flock")
        .args(["-n"])
        .arg(lock)
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "flock never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn a_second_run_is_refused_naming_the_first_and_a_killed_one_leaves_no_lock() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let lock = data.join(".lock");
    std::fs::write(&lock, "rps-train, pid 4242\n").unwrap();
    let mut other = holder(&lock);
    let (stderr, code) = preprocess(&data);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("is in use by another run (rps-train, pid 4242)"),
        "{stderr}"
    );
    other.kill().unwrap();
    other.wait().unwrap();
    let (stderr, _) = preprocess(&data);
    assert!(!stderr.contains("in use by another run"), "{stderr}");
    // It went on to its own work, and says what it lacks.
    assert!(stderr.contains("rps"), "{stderr}");
}
