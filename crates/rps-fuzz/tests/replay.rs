//! On stable: every fuzz target's seeds and every input a fuzzer once failed on
//! (`fuzz/regressions/<target>/`) go through the target's reader, which must not
//! panic; and the fuzz package's targets are exactly [`rps_fuzz::TARGETS`].

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `dir` (none when it does not exist), sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_seed_and_regression_is_read_without_a_panic_and_some_seed_reads_as_valid() {
    for target in &rps_fuzz::TARGETS {
        let seeds = files(&fuzz_dir().join("seeds").join(target.name));
        assert!(!seeds.is_empty(), "{}: no seeds", target.name);
        let valid = seeds
            .iter()
            .filter(|seed| (target.run)(&std::fs::read(seed).unwrap()))
            .count();
        assert!(valid > 0, "{}: no seed reads as valid", target.name);
        for input in files(&fuzz_dir().join("regressions").join(target.name)) {
            let data = std::fs::read(&input).unwrap();
            let outcome = std::panic::catch_unwind(|| (target.run)(&data));
            assert!(
                outcome.is_ok(),
                "{}: panicked on {}",
                target.name,
                input.display()
            );
        }
    }
}

#[test]
fn the_fuzz_package_runs_every_target_by_its_name() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    let mut on_disk: Vec<String> = files(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = rps_fuzz::TARGETS
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "fuzz/fuzz_targets/ against rps_fuzz::TARGETS"
    );
    for name in &listed {
        let source =
            std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{name}.rs"))).unwrap();
        assert!(
            source.contains(&format!("target(\"{name}\")")),
            "{name}.rs runs another target"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name}: no [[bin]] in fuzz/Cargo.toml"
        );
    }
}
