//! How much memory this machine can still give a process: what the kernel reports as
//! available (`MemAvailable`), or less where a control group or an address-space
//! limit (`ulimit -v`) holds this process to less.

use std::path::Path;

/// Bytes available now, or `None` where the system does not say.
pub fn available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let system = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())?
        * 1024;
    let cgroup = cgroup_room(Path::new("/sys/fs/cgroup")).unwrap_or(u64::MAX);
    Some(
        system
            .min(cgroup)
            .min(address_space_limit().unwrap_or(u64::MAX)),
    )
}

/// This process's address-space limit (`ulimit -v`), when it has one.
fn address_space_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } == 0;
    (read && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// A cgroup v2 limit's room: `memory.max` less `memory.current`.
fn cgroup_room(root: &Path) -> Option<u64> {
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(root.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some(read("memory.max")?.saturating_sub(read("memory.current")?))
}

/// What is free when `needed` bytes are more than that; `None` when they fit, or
/// where the system does not say.
pub fn short_of(needed: u64) -> Option<u64> {
    available().filter(|&free| needed > free)
}

/// A batch of `batch` images that each hold `floats_per_image` floats at once:
/// `(needed, free)` in bytes when it cannot fit in what is free, `None` when it may.
pub fn batch_shortfall(batch: usize, floats_per_image: u64) -> Option<(u64, u64)> {
    let needed = (batch as u64)
        .saturating_mul(floats_per_image)
        .saturating_mul(4);
    short_of(needed).map(|free| (needed, free))
}

/// `bytes` as people read them: `12.2 GB`.
pub fn describe(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_says_what_it_has() {
        let bytes = available().expect("Linux reports MemAvailable");
        assert!(bytes > 1 << 20, "{bytes}");
        assert_eq!(describe(12_200_000_000), "12.2 GB");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        std::fs::write(dir.path().join("memory.current"), "100\n").unwrap();
        assert_eq!(cgroup_room(dir.path()), None, "no limit");
        std::fs::write(dir.path().join("memory.max"), "4000\n").unwrap();
        assert_eq!(cgroup_room(dir.path()), Some(3900));
    }
}
