//! rps-evaluate and rps-predict after a tiny pipeline on the shared archives.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use rps_core::sidecar::TrainSettings;
use rps_core::{Folder, Layout, ResultFile, SessionOptions};
use rps_evaluate::plots;

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
                net: rps_model::network::Net::ResNet18,
                width: rps_core::Width::Channels(4),
                image_size: 32,
                classes: None,
                unfreeze: rps_core::Unfreeze::stage("layer4"),
            })
            .unwrap();
            rps_preprocess::run(&rps_preprocess::Config {
                layout: layout.clone(),
                images: rps_preprocess::Images::Folder(layout.dir(Folder::Dataset)),
                image_size: 32,
                views: 1,
                seed: 0,
            })
            .unwrap();
            let session = SessionOptions::cpu(2);
            rps_extract::run(&rps_extract::Config {
                layout: layout.clone(),
                precision: rps_core::npy::Precision::F32,
                batch: None,
                session,
            })
            .unwrap();
            let settings = settings();
            rps_train::run(&rps_train::Config {
                layout: layout.clone(),
                settings,
                resume: false,
                stop_after: None,
                session,
            })
            .unwrap();
            report_after_evaluate(dir.path());
            (dir, layout)
        })
        .1
}

/// The pipeline's training settings.
fn settings() -> TrainSettings {
    TrainSettings {
        head_epochs: 1,
        head_lr: 1e-3,
        ft_epochs: 1,
        ft_lr: 1e-4,
        ..TrainSettings::default()
    }
}

/// rps-evaluate on `data`, on the CPU.
fn evaluate(data: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rps-evaluate"))
        .arg("--data")
        .arg(data)
        .args(["--device", "cpu"])
        .output()
        .unwrap()
}

/// Evaluates `data` (again); its report.
fn report_after_evaluate(data: &Path) -> String {
    let out = evaluate(data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(Layout::new(data).result(ResultFile::Report)).unwrap()
}

/// The report shows make lr-find's sweep only as this run's and as it was written:
/// one made with other settings is marked so, one whose files changed after it (an
/// interrupted sweep) has no plot.
#[test]
fn the_report_shows_a_sweep_only_as_this_runs_and_as_written() {
    let copy = pipeline_copy();
    let layout = Layout::new(copy.path());
    let sweep = |batch: usize| {
        let config = rps_train::Config {
            layout: layout.clone(),
            settings: TrainSettings {
                batch,
                ..settings()
            },
            resume: false,
            stop_after: None,
            session: SessionOptions::cpu(2),
        };
        rps_train::lr_find::run(&config, rps_train::lr_find::Sweeps::Head).unwrap();
    };
    sweep(TrainSettings::default().batch);
    let page = report_after_evaluate(copy.path());
    assert!(page.contains("lr_find_head.png"), "no plot");
    assert!(
        !page.contains("not this run"),
        "marked though it is this run's"
    );
    sweep(32);
    let page = report_after_evaluate(copy.path());
    assert!(
        page.contains(
            "This sweep is not this run's: made with other settings (batch: 32 then, 64 now)"
        ),
        "not marked: {}",
        &page[page.find("Learning-rate finder").unwrap()..]
    );
    sweep(TrainSettings::default().batch);
    std::fs::write(
        layout.result(ResultFile::lr_find(rps_core::Phase::Head).0),
        "step,lr\n",
    )
    .unwrap();
    let page = report_after_evaluate(copy.path());
    assert!(page.contains("its files changed after the sweep"));
    assert!(
        !page.contains("lr_find_head.png"),
        "a changed sweep's plot is shown"
    );
}

/// The report's model table is graphs/summary.csv as export wrote it: an edited one
/// is not shown, and the page says why.
#[test]
fn an_edited_model_summary_is_not_shown() {
    let copy = pipeline_copy();
    let path = Layout::new(copy.path()).graph(rps_core::GraphFile::Summary);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("conv1,", "hacked,")).unwrap();
    let page = report_after_evaluate(copy.path());
    assert!(
        page.contains("Not shown:") && page.contains("summary.csv"),
        "no warning"
    );
    assert!(!page.contains("hacked"), "the edited table is shown");
}

/// A copy of the pipeline's DATA, for a test that spoils one of its files.
fn pipeline_copy() -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(pipeline().root().join("."))
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(status.success());
    copy
}

#[test]
fn a_test_label_outside_the_classes_is_refused_naming_file_row_and_value() {
    for label in [-1i64, 3] {
        let copy = pipeline_copy();
        let layout = Layout::new(copy.path());
        let path = layout.features(rps_core::Split::Test, rps_core::Feature::Labels);
        let mut labels = rps_core::npy::read::<i64>(&path).unwrap();
        labels[[4]] = label;
        rps_core::npy::write(&path, &labels).unwrap();
        let out = evaluate(copy.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("test_labels.npy")
                && stderr.contains(&format!("row 4 has label {label}")),
            "{stderr}"
        );
    }
}

/// A scoring batch that cannot fit in the memory this machine has free is refused
/// before anything is scored, with export's lower bound and what is free.
#[test]
fn a_batch_larger_than_free_memory_is_refused_before_it_runs() {
    use rps_core::sidecar::ExportMeta;
    let copy = pipeline_copy();
    let layout = Layout::new(copy.path());
    let path = layout.graph(rps_core::GraphFile::Meta);
    let mut meta = ExportMeta::read(&path).unwrap();
    meta.details.eval_floats_per_image = 1 << 40;
    meta.write(&path).unwrap();
    std::fs::remove_file(layout.result(ResultFile::Summary)).unwrap();
    let out = evaluate(copy.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("scoring at --batch 64 needs at least") && stderr.contains("is free"),
        "{stderr}"
    );
    assert!(!layout.result(ResultFile::Summary).exists());
}

/// A phase 2 that ends with a higher test loss than phase 1's last epoch is said on
/// the terminal, at the top of the report and in summary.csv, with the epoch
/// model.onnx holds; one that ends lower is not warned about.
#[test]
fn a_phase_two_worse_than_phase_one_is_said_plainly() {
    for (finetune_loss, worse) in [(9.0, true), (0.001, false)] {
        let copy = pipeline_copy();
        let layout = Layout::new(copy.path());
        let path = layout.result(ResultFile::Epochs);
        let mut rows: Vec<rps_core::rows::EpochRow> = rps_core::table::read(&path).unwrap();
        assert_eq!(rows.len(), 2);
        rows[1].test_loss = finetune_loss;
        rps_core::table::write(&path, &rows).unwrap();
        let out = evaluate(copy.path());
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{stderr}");
        assert!(stdout.contains("model.onnx holds epoch 2"), "{stdout}");
        let said = "phase 2 ended worse than phase 1: test loss 9.0000 at epoch 2 against";
        assert_eq!(stderr.contains(said), worse, "{stderr}");
        assert_eq!(stderr.contains("FT_BN=eval"), worse, "{stderr}");
        let page = std::fs::read_to_string(layout.result(ResultFile::Report)).unwrap();
        assert_eq!(
            page.contains("<p class=\"warning\">phase 2 ended worse"),
            worse
        );
        let (_, summary) = read_csv(&layout.result(ResultFile::Summary));
        let row = summary.iter().find(|r| r[0] == "phase_2").unwrap();
        let verdict = if worse {
            "ended worse"
        } else {
            "ended no worse"
        };
        assert!(row[1].contains(verdict), "{row:?}");
        assert!(summary.iter().any(|r| r[0] == "model_epoch" && r[1] == "2"));
    }
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
    // The train and test lines run from the first epoch to the last across the
    // epoch charts' plot area: their colours fill a good part of its columns (half
    // the axis at this pipeline's two epochs; a title or an axis alone fills none).
    for file in [ResultFile::LossPlot, ResultFile::AccuracyPlot] {
        let image = image::open(layout.result(file)).unwrap().to_rgb8();
        let plot_width = image.width() - plots::LEGEND_WIDTH;
        for (name, colour) in ["train", "test"].iter().zip(plots::SERIES_COLORS) {
            let rgb = [colour.0, colour.1, colour.2];
            let columns = (0..plot_width)
                .filter(|&x| (0..image.height()).any(|y| image.get_pixel(x, y).0 == rgb))
                .count();
            assert!(
                columns as u32 > plot_width / 4,
                "{file}: the {name} line covers {columns} of {plot_width} columns"
            );
        }
    }
    // lr.png: each phase's rates (one epoch each here) drawn, first and last step.
    let rates = image::open(layout.result(ResultFile::RatePlot))
        .unwrap()
        .to_rgb8();
    let plot_width = rates.width() - plots::LEGEND_WIDTH;
    for (name, colour) in ["last step", "first step"].iter().zip(plots::SERIES_COLORS) {
        let rgb = [colour.0, colour.1, colour.2];
        let drawn = (0..plot_width)
            .flat_map(|x| (0..rates.height()).map(move |y| (x, y)))
            .filter(|&(x, y)| rates.get_pixel(x, y).0 == rgb)
            .count();
        assert!(
            drawn > 20,
            "lr.png: the {name} rates are not drawn ({drawn} pixels)"
        );
    }
    let errors = image::open(layout.result(ResultFile::ErrorsPlot)).unwrap();
    assert_eq!(errors.width(), 800);
}

/// `rps-predict --csv` on the pipeline's DATA with `args` (flags, then photos).
fn predict_csv(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let layout = pipeline();
    Command::new(env!("CARGO_BIN_EXE_rps-predict"))
        .arg("--data")
        .arg(layout.root())
        .args(["--device", "cpu", "--csv"])
        .args(args)
        .output()
        .unwrap()
}

/// A test photo of the shared archives.
fn rock() -> std::path::PathBuf {
    pipeline()
        .dataset_split(rps_core::Split::Test)
        .join("rock/testrock01-00.png")
}

/// predict normalizes a photo as the model's metadata says its network needs; a
/// model whose entry is not a normalization is refused, naming the file and entry.
#[test]
fn predict_takes_the_normalization_from_the_model() {
    let copy = pipeline_copy();
    let model = Layout::new(copy.path()).result(ResultFile::Model);
    let key = rps_core::names::META_NORMALIZATION;
    let mut graph = rps_onnx::ModelFile::read(&model).unwrap();
    assert_eq!(
        graph.metadata(key),
        Some("0.485,0.456,0.406/0.229,0.224,0.225")
    );
    let predict = |graph: &rps_onnx::ModelFile| {
        std::fs::write(&model, graph.to_bytes()).unwrap();
        Command::new(env!("CARGO_BIN_EXE_rps-predict"))
            .arg("--data")
            .arg(copy.path())
            .args(["--device", "cpu", "--csv"])
            .arg(rock())
            .output()
            .unwrap()
    };
    let imagenet = predict(&graph);
    assert!(imagenet.status.success());
    graph.set_metadata(key, "0.5,0.5,0.5/0.5,0.5,0.5");
    let half = predict(&graph);
    assert!(half.status.success());
    assert_ne!(
        half.stdout, imagenet.stdout,
        "the normalization was not used"
    );
    graph.set_metadata(key, "0.5,0.5/1,1,1");
    let refused = predict(&graph);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("model.onnx") && stderr.contains("metadata normalization"),
        "{stderr}"
    );
}

/// A model file is a stranger's: an image size export cannot make is refused
/// before anything is allocated, and class names print with their control
/// characters escaped.
#[test]
fn predict_bounds_what_the_model_metadata_makes_it_do() {
    let copy = pipeline_copy();
    let model = Layout::new(copy.path()).result(ResultFile::Model);
    let good = rps_onnx::ModelFile::read(&model).unwrap();
    let predict = |graph: &rps_onnx::ModelFile| {
        std::fs::write(&model, graph.to_bytes()).unwrap();
        Command::new(env!("CARGO_BIN_EXE_rps-predict"))
            .arg("--data")
            .arg(copy.path())
            .args(["--device", "cpu"])
            .arg(rock())
            .output()
            .unwrap()
    };
    for size in ["0", "100000", "20000"] {
        let mut graph = good.clone();
        graph.set_metadata(rps_core::names::META_IMAGE_SIZE, size);
        let out = predict(&graph);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{size}: {stderr}");
        assert!(
            stderr.contains("model.onnx") && stderr.contains(&format!("image size {size}")),
            "{stderr}"
        );
    }
    let mut graph = good.clone();
    let names = "\x1b[31mpaper\nrock\r\rFAKE: 100%\nscissors";
    graph.set_metadata(rps_core::names::META_CLASSES, names);
    let out = predict(&graph);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains('\x1b') && !stdout.contains('\r'),
        "{stdout:?}"
    );
    assert!(
        stdout.contains("\\u{1b}[31mpaper") || stdout.contains("\\r\\rFAKE"),
        "{stdout:?}"
    );
}

#[test]
fn predict_reports_a_bad_image_and_still_classifies_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.jpg");
    std::fs::write(&bad, b"not a jpeg").unwrap();
    let plot = dir.path().join("out.png");
    let out = predict_csv(&[
        "--plot".as_ref(),
        plot.as_os_str(),
        bad.as_os_str(),
        rock().as_os_str(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.jpg"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[1].contains("testrock01-00.png,1,"));
    assert!(image::open(dir.path().join("out-2.png")).is_ok());
}

#[test]
fn the_report_shows_every_plot_and_is_well_formed() {
    let layout = pipeline();
    let html = std::fs::read_to_string(layout.result(ResultFile::Report)).unwrap();
    let mut reader = quick_xml::Reader::from_str(&html);
    let mut images = Vec::new();
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(quick_xml::events::Event::Empty(tag)) if tag.name().as_ref() == "img" => {
                let src = tag.try_get_attribute("src").unwrap().unwrap();
                images.push(src.value.to_string());
            }
            Ok(_) => {}
            Err(e) => panic!(
                "report.html does not parse at {}: {e}",
                reader.buffer_position()
            ),
        }
    }
    let mut pngs: Vec<String> = std::fs::read_dir(layout.dir(Folder::Results))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".png"))
        .collect();
    pngs.sort();
    images.sort();
    assert_eq!(images, pngs);
    for stage in ["export", "preprocess", "extract", "train", "evaluate"] {
        assert!(
            html.contains(&format!("<h3>{stage} ")),
            "no {stage} settings"
        );
    }
}

#[test]
fn every_plotted_string_has_its_glyphs() {
    // On a copy: evaluating the shared DATA again would rewrite its results while
    // other tests copy or read them.
    let copy = pipeline_copy();
    rps_evaluate::run(&rps_evaluate::Config {
        layout: Layout::new(copy.path()),
        batch: 64,
        session: SessionOptions::cpu(2),
    })
    .unwrap();
    let names = rps_core::imagenet::class_names();
    let photo = image::RgbImage::from_pixel(40, 40, image::Rgb([9, 99, 199]));
    let dir = tempfile::tempdir().unwrap();
    let top5: Vec<(String, f32)> = names[281..286].iter().map(|n| (n.clone(), 0.2)).collect();
    let plot = dir.path().join("top5.png");
    rps_evaluate::plots::bar_chart(&plot, "ImageNet top 5: cat.jpg", &photo, &top5).unwrap();
    rps_evaluate::plots::titled_image(&plot, &photo, "rock (97.0%)").unwrap();
    let drawn = rps_plot::drawn();
    assert!(
        drawn.iter().any(|s| s.contains("misclassified")),
        "{drawn:?}"
    );
    for text in drawn {
        let missing = rps_plot::missing_glyphs(&text);
        assert!(missing.is_empty(), "{text:?} has no glyph for {missing:?}");
    }
}

#[test]
fn imagenet_names_need_no_download() {
    let out = predict_csv(&["--imagenet".as_ref(), rock().as_os_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let classes: Vec<&str> = stdout
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap())
        .collect();
    assert_eq!(classes.len(), 5);
    let names = rps_core::imagenet::class_names();
    assert!(
        classes.iter().all(|c| names.iter().any(|n| n == c)),
        "{classes:?}"
    );
}
