//! The commands the README shows, run as a person would type them, in a fresh folder
//! (the debug binaries `cargo test` has just built stand in for the release ones).
//! Each command is run here or named with why it is not; a command added to the README
//! fails here until it is one or the other.

use rps_fixtures::repo;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

/// The shared folder, its path free of `..` (so that replacing `../shared` in a
/// command that holds it changes nothing).
fn shared() -> PathBuf {
    rps_fixtures::shared().canonicalize().unwrap()
}

/// The shell commands in the README's code blocks: the lines that run `make` or a
/// binary, comments cut off.
fn shown_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let mut fenced = false;
    let mut commands = Vec::new();
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let command = line.split(" #").next().unwrap_or_default().trim();
        if fenced && (command.starts_with("make") || command.starts_with("target/")) {
            commands.push(command.to_string());
        }
    }
    commands
}

/// The README's commands this test does not run, and why.
const NOT_RUN: [(&str, &str); 4] = [
    (
        "make all",
        "downloads the dataset and the weights; tests reach no network (the offline example is the same run from local files)",
    ),
    ("make test", "runs this test"),
    (
        "make setup ORT_FLAVOR=gpu",
        "downloads ONNX Runtime's CUDA build (over 1 GB)",
    ),
    ("make all DEVICE=cuda", "needs a GPU"),
];

/// The README's commands this test runs, in the order it runs them.
const RUN: [&str; 6] = [
    "make all FROM=../shared/data WEIGHTS=random WIDTH=8 IMAGE_SIZE=64 HEAD_EPOCHS=2 FT_EPOCHS=2",
    "make predict IMAGE=my_hand.jpg PLOT=my_hand.png",
    "make predict IMAGE=cat.jpg IMAGENET=1 PLOT=top5.png",
    "target/release/rps-predict --csv photos/*.jpg",
    "make all IMAGES=~/pets TEST_FRACTION=0.2",
    "make all TRAIN_URL=file:///path/train.zip TEST_URL=file:///path/test.zip",
];

#[test]
fn every_command_the_readme_shows_is_run_here_or_says_why_not() {
    let mut listed: Vec<&str> = RUN.to_vec();
    listed.extend(NOT_RUN.map(|(command, _)| command));
    listed.sort();
    let mut shown = shown_commands();
    shown.sort();
    assert_eq!(
        shown, listed,
        "the README's commands against this test's lists"
    );
}

/// `command` as typed in `folder`: `make` on the project's Makefile with the debug
/// binaries (never rebuilt), on the CPU; `target/release/` the debug binaries;
/// `../shared` the shared folder; `extra` appended.
fn typed(folder: &Path, command: &str, extra: &[String]) -> Output {
    let shared = shared();
    let bin = repo().join("target/debug");
    let mut words: Vec<String> = command
        .replace("../shared", &shared.display().to_string())
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let mut process = if words[0] == "make" {
        let mut make = Command::new("make");
        make.arg("-f").arg(repo().join("Makefile"));
        make.arg(format!("BIN={}", bin.display()));
        make.args(["CARGO=true", "DEVICE=cpu", "THREADS=2"]);
        make
    } else {
        Command::new(bin.join(words[0].trim_start_matches("target/release/")))
    };
    words.remove(0);
    let out = process
        .current_dir(folder)
        .args(expand_globs(folder, &words))
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{command} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `words` with each `DIR/*.EXT` replaced by the matching files, sorted, as the shell
/// would.
fn expand_globs(folder: &Path, words: &[String]) -> Vec<String> {
    let mut expanded = Vec::new();
    for word in words {
        let Some((dir, ext)) = word.split_once("/*.") else {
            expanded.push(word.clone());
            continue;
        };
        let mut matches: Vec<String> = std::fs::read_dir(folder.join(dir))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().to_string())
            .filter(|name| name.ends_with(&format!(".{ext}")))
            .map(|name| format!("{dir}/{name}"))
            .collect();
        matches.sort();
        assert!(!matches.is_empty(), "{word} matches nothing");
        expanded.extend(matches);
    }
    expanded
}

/// A photo of `width` x `height` pixels at `path`, a gradient with a stripe.
fn photo(path: &Path, width: u32, height: u32) {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        let stripe = if (x / 7) % 2 == 0 { 60 } else { 0 };
        image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, stripe])
    });
    image.save(path).unwrap();
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|bytes| bytes.starts_with(b"\x89PNG"))
}

#[test]
fn the_readme_commands_run_as_shown() {
    let folder = tempfile::tempdir().unwrap();
    let here = folder.path();
    let [offline, predict, top5, several, folder, own] = RUN;

    typed(here, offline, &[]);
    let model = here.join("data/results/model.onnx");
    assert!(here.join("data/results/report.html").exists());
    let trained = modified(&model);

    // Your own photo: the model the last run left, retraining nothing.
    photo(&here.join("my_hand.jpg"), 300, 200);
    let said = String::from_utf8_lossy(&typed(here, predict, &[]).stdout).to_string();
    assert!(said.contains("my_hand.jpg: "), "{said}");
    assert!(is_png(&here.join("my_hand.png")));
    photo(&here.join("cat.jpg"), 120, 160);
    typed(here, top5, &[]);
    assert!(is_png(&here.join("top5.png")));
    assert_eq!(modified(&model), trained, "make predict retrained");

    std::fs::create_dir(here.join("photos")).unwrap();
    photo(&here.join("photos/a.jpg"), 64, 64);
    photo(&here.join("photos/b.jpg"), 500, 90);
    let csv = String::from_utf8_lossy(&typed(here, several, &[]).stdout).to_string();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("path,rank,class,probability"));
    for name in ["photos/a.jpg", "photos/b.jpg"] {
        assert!(csv.contains(&format!("{name},1,")), "{csv}");
    }

    // Your own images, a folder of class folders; a small network keeps it cheap.
    let cheap = "WEIGHTS=random WIDTH=4 IMAGE_SIZE=32 VIEWS=1 HEAD_EPOCHS=1 FT_EPOCHS=1";
    let cheap: Vec<String> = cheap.split_whitespace().map(str::to_string).collect();
    for class in ["cats", "dogs"] {
        std::fs::create_dir_all(here.join("pets").join(class)).unwrap();
        for i in 0..5 {
            let size = if class == "cats" { 40 + i } else { 90 - i };
            photo(&here.join(format!("pets/{class}/{i}.jpg")), size, 50);
        }
    }
    let pets = here.join("pets").display().to_string();
    let in_pets = [cheap.as_slice(), &["DATA=pets-data".to_string()]].concat();
    typed(here, &folder.replace("~/pets", &pets), &in_pets);
    assert!(here.join("pets-data/results/report.html").exists());

    // Zipped: the shared archives have the layout the README asks for.
    let data = shared().join("data");
    let own = own
        .replace(
            "/path/train.zip",
            &data.join("rps.zip").display().to_string(),
        )
        .replace(
            "/path/test.zip",
            &data.join("rps-test-set.zip").display().to_string(),
        );
    let in_own = [cheap.as_slice(), &["DATA=own".to_string()]].concat();
    typed(here, &own, &in_own);
    assert!(here.join("own/results/report.html").exists());
}

/// The model summary docs/tuning.md shows is what `make -s summary` prints: every
/// line it shows, in order (its `...` stand for lines left out).
#[test]
fn the_model_summary_shown_is_what_make_summary_prints() {
    let tuning = std::fs::read_to_string(repo().join("docs/tuning.md")).unwrap();
    let block = tuning
        .split("```\n$ ")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a shown summary");
    let mut lines = block.lines();
    let command = lines.next().unwrap();
    assert_eq!(command, "make -s summary FROM=../shared/data");
    let folder = tempfile::tempdir().unwrap();
    let printed = String::from_utf8_lossy(&typed(folder.path(), command, &[]).stdout).to_string();
    let mut printed_lines = printed.lines();
    for shown in lines.filter(|l| *l != "...") {
        assert!(
            printed_lines.any(|p| p.trim_end() == shown.trim_end()),
            "docs/tuning.md shows {shown:?}, which make -s summary does not print in that order:\n{printed}"
        );
    }
}
