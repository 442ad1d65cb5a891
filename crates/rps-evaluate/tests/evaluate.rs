//! rps-evaluate and rps-predict after a tiny pipeline on the shared archives.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use rps_core::sidecar::TrainSettings;
use rps_core::{Folder, Layout, ResultFile, SessionOptions};

/// fetch -> export (random init, width 4, 32 px) -> preprocess -> extract -> train
/// (1 + 1 epochs) -> evaluate, once for all tests here.
fn pipeline() -> &'static Layout {
    static DATA: OnceLock<(tempfile::TempDir, Layout)> = OnceLock::new();
    &DATA
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let layout = Layout::new(dir.path());
            let source = rps_fetch::Source {
                from: Some(rps_fixtures::shared().join("data")),
                retry: Default::default(),
            };
            let urls = [
                "https://x.invalid/rps.zip",
                "https://x.invalid/rps-test-set.zip",
            ]
            .map(String::from);
            let [train_url, test_url] = urls;
            rps_fetch::fetch_dataset(&rps_fetch::DatasetConfig {
                layout: layout.clone(),
                source,
                train_url,
                test_url,
                max_unpacked_bytes: 1 << 30,
            })
            .unwrap();
            rps_export::export::run(&rps_export::export::Config {
                layout: layout.clone(),
                source: rps_export::export::Source::Random(0),
                width: 4,
                image_size: 32,
                classes: None,
            })
            .unwrap();
            rps_preprocess::run(&rps_preprocess::Config {
                layout: layout.clone(),
                dataset: layout.dir(Folder::Dataset),
                image_size: 32,
                views: 1,
                seed: 0,
            })
            .unwrap();
            let session = SessionOptions::cpu(2);
            rps_extract::run(&rps_extract::Config {
                layout: layout.clone(),
                batch: None,
                session,
            })
            .unwrap();
            let settings = TrainSettings {
                head_epochs: 1,
                head_lr: 1e-3,
                ft_epochs: 1,
                ft_lr: 1e-4,
                ..TrainSettings::default()
            };
            rps_train::run(&rps_train::Config {
                layout: layout.clone(),
                settings,
                resume: false,
                stop_after: None,
                session,
            })
            .unwrap();
            let out = Command::new(env!("CARGO_BIN_EXE_rps-evaluate"))
                .args(["--data", dir.path().to_str().unwrap(), "--device", "cpu"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            (dir, layout)
        })
        .1
}

fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header = reader.headers().unwrap().iter().map(String::from).collect();
    let rows = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}

#[test]
fn csv_outputs_agree_with_each_other() {
    let layout = pipeline();
    let (header, predictions) = read_csv(&layout.result(ResultFile::Predictions));
    assert_eq!(
        header,
        [
            "path",
            "true",
            "pred",
            "p_paper",
            "p_rock",
            "p_scissors",
            "correct"
        ]
    );
    assert_eq!(predictions.len(), 372);
    for row in &predictions {
        let p: f64 = row[3..6].iter().map(|v| v.parse::<f64>().unwrap()).sum();
        assert!((p - 1.0).abs() < 1e-4);
        assert_eq!(row[6] == "true", row[1] == row[2]);
    }
    let (header, confusion) = read_csv(&layout.result(ResultFile::Confusion));
    assert_eq!(header, ["true", "paper", "rock", "scissors"]);
    let total: usize = confusion
        .iter()
        .flat_map(|r| r[1..].iter().map(|v| v.parse::<usize>().unwrap()))
        .sum();
    assert_eq!(total, 372);
    let correct = predictions.iter().filter(|r| r[6] == "true").count();
    let (_, summary) = read_csv(&layout.result(ResultFile::Summary));
    let metric = |name: &str| summary.iter().find(|r| r[0] == name).unwrap()[1].clone();
    assert!((metric("accuracy").parse::<f64>().unwrap() - correct as f64 / 372.0).abs() < 1e-12);
    assert_eq!(metric("test_count"), "372");
    assert_eq!(metric("device"), "cpu");
    let (header, per_class) = read_csv(&layout.result(ResultFile::PerClass));
    assert_eq!(header, ["class", "precision", "recall", "f1", "support"]);
    assert!(per_class.iter().all(|r| r[4] == "124"));
}

#[test]
fn plots_decode_with_their_size_and_are_not_blank() {
    let layout = pipeline();
    for (file, size) in [
        (ResultFile::LossPlot, (900, 560)),
        (ResultFile::AccuracyPlot, (900, 560)),
        (ResultFile::ConfusionPlot, (640, 600)),
    ] {
        let image = image::open(layout.result(file)).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), size, "{file}");
        let colours: std::collections::HashSet<_> = image.pixels().map(|p| p.0).collect();
        assert!(colours.len() > 10, "{file} looks blank");
    }
    let errors = image::open(layout.result(ResultFile::ErrorsPlot)).unwrap();
    assert_eq!(errors.width(), 800);
}

#[test]
fn predict_reports_a_bad_image_and_still_classifies_the_rest() {
    let layout = pipeline();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.jpg");
    std::fs::write(&bad, b"not a jpeg").unwrap();
    let good = layout
        .dataset_split(rps_core::Split::Test)
        .join("rock/testrock01-00.png");
    let plot = dir.path().join("out.png");
    let out = Command::new(env!("CARGO_BIN_EXE_rps-predict"))
        .args([
            "--data",
            layout.root().to_str().unwrap(),
            "--device",
            "cpu",
            "--csv",
            "--plot",
            plot.to_str().unwrap(),
        ])
        .arg(&bad)
        .arg(&good)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.jpg"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[1].contains("testrock01-00.png,1,"));
    assert!(image::open(dir.path().join("out-2.png")).is_ok());
}
