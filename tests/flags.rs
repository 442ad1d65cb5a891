//! Every binary's flags. The recipe's defaults are defined once, in
//! `rps_core::defaults`: the Makefile, `make help`, the README's variables table and
//! every binary's `--help` must say the same. A value out of a flag's range is refused
//! by name, never a panic.

use std::process::Command;

use rps_core::defaults as d;
use rps_fixtures::repo;

/// A Makefile variable, its default, and the binaries (with subcommand) and flags
/// that take it.
struct Setting {
    variable: &'static str,
    value: String,
    flags: Vec<(&'static [&'static str], &'static str)>,
}

const STAGES: [&[&str]; 7] = [
    &["rps-fetch"],
    &["rps-export"],
    &["rps-preprocess"],
    &["rps-extract"],
    &["rps-train"],
    &["rps-evaluate"],
    &["rps-predict"],
];
const PREPROCESS: &[&str] = &["rps-preprocess"];
const EXPORT: &[&str] = &["rps-export"];
const TRAIN: &[&str] = &["rps-train"];
const EXTRACT: &[&str] = &["rps-extract"];
const EVALUATE: &[&str] = &["rps-evaluate"];
const FETCH_DATASET: &[&str] = &["rps-fetch", "dataset"];
const FETCH_FOLDER: &[&str] = &["rps-fetch", "folder"];
/// The stages that run ONNX Runtime.
const ON_ORT: [&[&str]; 4] = [
    &["rps-extract"],
    &["rps-train"],
    &["rps-evaluate"],
    &["rps-predict", "photo.png"],
];

/// Variables unset by default (`make help` shows "(unset)"), each with a README row
/// saying what unset means: what the binaries do without the flag.
const UNSET: [&str; 9] = [
    "THREADS",
    "IMAGES",
    "EXTRACT_BATCH",
    "CLASSES",
    "FROM",
    "IMAGE",
    "IMAGENET",
    "PLOT",
    "FUZZ_TARGETS",
];

/// Variables only the Makefile reads (no binary has a flag with their default):
/// which weights file to fetch, what `make setup`, `make bench` and `make fuzz` use.
const MAKE_ONLY: [&str; 6] = [
    "WEIGHTS",
    "WEIGHTS_URL",
    "ORT_FLAVOR",
    "VENV",
    "TORCH_PYTHON",
    "FUZZ_SECONDS",
];

/// The Makefile's own plumbing, overridable but no setting of the pipeline: not in
/// `make help` or the README.
const PLUMBING: [&str; 4] = ["BIN", "CARGO", "ORT_DYLIB_PATH", "SHARED"];

fn settings() -> Vec<Setting> {
    let setting = |variable,
                   value: &dyn ToString,
                   flags: Vec<(&'static [&'static str], &'static str)>| Setting {
        variable,
        value: value.to_string(),
        flags,
    };
    vec![
        setting(
            "DATA",
            &d::DATA,
            STAGES.iter().map(|s| (*s, "--data")).collect(),
        ),
        setting(
            "SEED",
            &d::SEED,
            vec![
                (PREPROCESS, "--seed"),
                (TRAIN, "--seed"),
                (FETCH_FOLDER, "--seed"),
            ],
        ),
        setting(
            "IMAGE_SIZE",
            &d::IMAGE_SIZE,
            vec![(PREPROCESS, "--image-size"), (EXPORT, "--image-size")],
        ),
        setting("VIEWS", &d::VIEWS, vec![(PREPROCESS, "--views")]),
        setting(
            "BATCH",
            &d::BATCH,
            vec![(TRAIN, "--batch"), (EVALUATE, "--batch")],
        ),
        setting("DROPOUT", &d::DROPOUT, vec![(TRAIN, "--dropout")]),
        setting(
            "HEAD_EPOCHS",
            &d::HEAD_EPOCHS,
            vec![(TRAIN, "--head-epochs")],
        ),
        setting("HEAD_LR", &d::HEAD_LR, vec![(TRAIN, "--head-lr")]),
        setting("FT_EPOCHS", &d::FT_EPOCHS, vec![(TRAIN, "--ft-epochs")]),
        setting("FT_LR", &d::FT_LR, vec![(TRAIN, "--ft-lr")]),
        setting(
            "VAL_FRACTION",
            &d::VAL_FRACTION,
            vec![(TRAIN, "--val-fraction")],
        ),
        setting("FEATURES", &d::FEATURES, vec![(EXTRACT, "--features")]),
        setting(
            "TEST_FRACTION",
            &d::TEST_FRACTION,
            vec![(FETCH_FOLDER, "--test-fraction")],
        ),
        setting(
            "HEAD_SCHEDULE",
            &d::HEAD_SCHEDULE,
            vec![(TRAIN, "--head-schedule")],
        ),
        setting(
            "FT_SCHEDULE",
            &d::FT_SCHEDULE,
            vec![(TRAIN, "--ft-schedule")],
        ),
        setting("FT_BN", &d::FT_BN, vec![(TRAIN, "--ft-bn")]),
        setting("FT_LR_MULT", &d::FT_LR_MULT, vec![(TRAIN, "--ft-lr-mult")]),
        setting("PATIENCE", &d::PATIENCE, vec![(TRAIN, "--patience")]),
        setting(
            "CLASS_WEIGHTS",
            &d::CLASS_WEIGHTS,
            vec![(TRAIN, "--class-weights")],
        ),
        // `--lr-find` alone sweeps LR_FIND's default; with no flag, nothing.
        setting("LR_FIND", &d::LR_FIND, vec![]),
        setting("ARCH", &d::ARCH, vec![(EXPORT, "--arch")]),
        setting(
            "DEVICE",
            &d::DEVICE,
            ON_ORT.iter().map(|s| (*s, "--device")).collect(),
        ),
        setting("UNFREEZE", &d::UNFREEZE, vec![(EXPORT, "--unfreeze")]),
        setting("WIDTH", &d::WIDTH, vec![(EXPORT, "--width")]),
        setting(
            "TRAIN_URL",
            &d::TRAIN_URL,
            vec![(FETCH_DATASET, "--train-url")],
        ),
        setting(
            "TEST_URL",
            &d::TEST_URL,
            vec![(FETCH_DATASET, "--test-url")],
        ),
    ]
}

/// Numbers compare as numbers (`1e-4` is `0.0001`), anything else as text.
fn same(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn output(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Checks every setting's default as `source` shows it; `shown` looks a variable up.
fn check_variables(source: &str, shown: impl Fn(&str) -> Option<String>) {
    for s in settings() {
        let value = shown(s.variable).unwrap_or_else(|| panic!("{source} shows no {}", s.variable));
        assert!(
            same(&value, &s.value),
            "{source}: {} is {value}, not {}",
            s.variable,
            s.value
        );
    }
}

/// The Makefile's `NAME ?= value` lines, as (name, value).
fn makefile_defaults() -> Vec<(String, String)> {
    let makefile = std::fs::read_to_string(repo().join("Makefile")).unwrap();
    makefile
        .lines()
        .filter_map(|l| l.split_once("?="))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect()
}

/// The Makefile's default for `variable`.
fn makefile_default(variable: &str) -> Option<String> {
    let defaults = makefile_defaults().into_iter();
    defaults
        .filter(|(name, _)| name == variable)
        .map(|(_, value)| value)
        .next()
}

/// What `make help` shows after `variable`'s name, its words joined by one space.
fn make_help_value(help: &str, variable: &str) -> Option<String> {
    help.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some(variable)).then(|| words.collect::<Vec<_>>().join(" "))
    })
}

fn make_help() -> String {
    output(
        Command::new("make")
            .current_dir(repo())
            .args(["-s", "help"]),
    )
}

/// Every variable the Makefile lets a person set (`NAME ?= ...`), and `HELP_VARS`.
fn makefile_variables() -> (Vec<String>, Vec<String>) {
    let makefile = std::fs::read_to_string(repo().join("Makefile")).unwrap();
    let settable = makefile_defaults()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let help_vars = makefile
        .split("HELP_VARS :=")
        .nth(1)
        .expect("HELP_VARS in the Makefile")
        .lines()
        .map(|l| l.trim_end_matches('\\'))
        .take_while(|l| !l.trim().is_empty())
        .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    (settable, help_vars)
}

/// A variable added to the Makefile fails here until it is a checked setting (a
/// default in `rps_core::defaults` that the binaries, `make help` and the README
/// show), unset by default, read by the Makefile only, or its plumbing; every one but
/// the plumbing is in `make help` and has a README row.
#[test]
fn every_makefile_variable_is_a_checked_setting_or_named_here() {
    let (settable, help_vars) = makefile_variables();
    let checked: Vec<&str> = settings().iter().map(|s| s.variable).collect();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let table = readme.split("### Variables").nth(1).unwrap();
    let table = table.split("\n## ").next().unwrap();
    for variable in settable.iter().chain(&help_vars) {
        let name = variable.as_str();
        let kinds = [
            checked.contains(&name),
            UNSET.contains(&name),
            MAKE_ONLY.contains(&name),
            PLUMBING.contains(&name),
        ];
        assert_eq!(
            kinds.iter().filter(|&&k| k).count(),
            1,
            "{name}: a checked setting in settings(), or in one of UNSET, MAKE_ONLY, PLUMBING"
        );
        if PLUMBING.contains(&name) {
            assert!(
                !help_vars.contains(variable),
                "{name} is plumbing but in make help"
            );
            continue;
        }
        assert!(
            help_vars.contains(variable),
            "{name} is not in HELP_VARS (make help)"
        );
        assert!(
            table.contains(&format!("`{name}`")),
            "{name} has no row in the README's variables table"
        );
    }
    for name in checked.iter().chain(&UNSET).chain(&MAKE_ONLY) {
        assert!(
            settable.iter().any(|v| v == name),
            "{name} is listed here but the Makefile has no `{name} ?=`"
        );
    }
}

#[test]
fn unset_variables_are_empty_in_the_makefile_and_make_help() {
    let help = make_help();
    for name in UNSET {
        let value = makefile_default(name);
        assert_eq!(value.as_deref(), Some(""), "{name} ?= in the Makefile");
        let shown = make_help_value(&help, name);
        assert_eq!(shown.as_deref(), Some("(unset)"), "make help's {name}");
    }
}

#[test]
fn makefile_defaults_match() {
    check_variables("the Makefile", makefile_default);
}

#[test]
fn make_help_shows_the_defaults() {
    let help = make_help();
    check_variables("make help", |variable| {
        let shown = make_help_value(&help, variable)?;
        Some(shown.split_whitespace().next().unwrap_or("").to_string())
    });
}

#[test]
fn readme_variables_table_shows_the_defaults() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let table = readme
        .split("### Variables")
        .nth(1)
        .expect("a Variables section");
    let ticked = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    let mut documented = Vec::new();
    let rows = table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'));
    for row in rows {
        let cells: Vec<&str> = row.split('|').collect();
        if cells.len() > 3 {
            documented.extend(ticked(cells[1]).into_iter().zip(ticked(cells[2])));
        }
    }
    check_variables("the README's variables table", |variable| {
        documented
            .iter()
            .find(|(name, _)| name == variable)
            .map(|(_, value)| value.clone())
    });
}

/// The `[default: ...]` clap shows for `flag` in `help`.
fn shown_default(help: &str, flag: &str) -> Option<String> {
    let mut entry = String::new();
    let mut in_flag = false;
    for line in help.lines() {
        let trimmed = line.trim_start();
        // A flag's line, not a bullet of its possible values ("- auto: ...").
        if trimmed.starts_with('-') && !trimmed.starts_with("- ") {
            if in_flag {
                break;
            }
            in_flag = trimmed.split([',', ' ', '=']).any(|word| word == flag);
        }
        if in_flag {
            entry.push_str(line);
            entry.push(' ');
        }
    }
    let start = entry.find("[default: ")? + "[default: ".len();
    Some(entry[start..].split(']').next()?.to_string())
}

#[test]
fn every_binary_flag_shows_the_defaults() {
    let bin = repo().join("target/debug");
    for s in settings() {
        for (command, flag) in &s.flags {
            let help = output(
                Command::new(bin.join(command[0]))
                    .args(&command[1..])
                    .arg("--help"),
            );
            let shown = shown_default(&help, flag).unwrap_or_else(|| {
                panic!("{command:?} --help shows no default for {flag}:\n{help}")
            });
            assert!(
                same(&shown, &s.value),
                "{command:?} {flag} defaults to {shown}, not {} ({})",
                s.value,
                s.variable
            );
        }
    }
}

/// Out-of-range values, each refused by the binary naming the flag.
const OUT_OF_RANGE: &[(&[&str], &str, &str)] = &[
    (FETCH_DATASET_BEFORE, "--attempts", "0"),
    (&["rps-fetch", "dataset"], "--max-unpacked-bytes", "0"),
    (EXPORT, "--width", "0"),
    (EXPORT, "--image-size", "0"),
    (EXPORT, "--image-size", "100000"),
    (EXPORT, "--classes", "0"),
    (EXPORT, "--classes", "1"),
    (PREPROCESS, "--image-size", "0"),
    (PREPROCESS, "--views", "0"),
    (PREPROCESS, "--threads", "0"),
    (&["rps-extract"], "--batch", "0"),
    (&["rps-extract"], "--threads", "-2"),
    (TRAIN, "--batch", "0"),
    (TRAIN, "--head-lr", "-1"),
    (TRAIN, "--ft-lr", "NaN"),
    (TRAIN, "--ft-lr", "inf"),
    (TRAIN, "--dropout", "1"),
    (TRAIN, "--weight-decay", "2"),
    (TRAIN, "--val-fraction", "1"),
    (TRAIN, "--head-epochs", "-1"),
    (TRAIN, "--ft-lr-mult", "0"),
    (TRAIN, "--ft-lr-mult", "-2"),
    (TRAIN, "--patience", "-1"),
    (TRAIN, "--head-schedule", "onecycle"),
    (TRAIN, "--ft-schedule", "1"),
    (TRAIN, "--ft-bn", "frozen"),
    (TRAIN, "--class-weights", "1,0,1"),
    (TRAIN, "--class-weights", "heavy"),
    (TRAIN, "--class-weights", "-1,1,1"),
    (TRAIN, "--class-weights", "1e-45,1e-45,1e-45"),
    (TRAIN, "--lr-find", "middle"),
    (EVALUATE, "--batch", "0"),
    (&["rps-predict", "photo.png"], "--threads", "0"),
];

/// `rps-fetch`'s global flags come before its subcommand.
const FETCH_DATASET_BEFORE: &[&str] = &["rps-fetch"];

#[test]
fn out_of_range_values_are_refused_by_flag_without_a_panic() {
    let bin = repo().join("target/debug");
    for (command, flag, value) in OUT_OF_RANGE {
        let mut run = Command::new(bin.join(command[0]));
        run.args(&command[1..]).args([flag, value]);
        if command == &FETCH_DATASET_BEFORE {
            run.arg("dataset");
        }
        let out = run.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        assert!(
            matches!(code, Some(1 | 2)) && stderr.contains(flag) && !stderr.contains("panicked"),
            "{command:?} {flag} {value}: exit {code:?}, {stderr}"
        );
    }
}

#[test]
fn no_epoch_at_all_is_refused() {
    let out = Command::new(repo().join("target/debug/rps-train"))
        .args(["--head-epochs", "0", "--ft-epochs", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--head-epochs") && stderr.contains("--ft-epochs"),
        "{stderr}"
    );
}

#[test]
fn an_ordinary_error_prints_no_stack_trace() {
    let out = Command::new(repo().join("target/debug/rps-train"))
        .args(["--data", "/nonexistent/data", "--device", "cpu"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("Error: ") && stderr.contains("/nonexistent/data"),
        "{stderr}"
    );
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
}
