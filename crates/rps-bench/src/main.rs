//! `make bench`: measures each stage beside its ceiling on this machine and prints
//! one table (markdown), plus the projected time of `make all` with the recipe's
//! settings. Timings, never assertions: targets are read off the table.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use ndarray::{Array2, ArrayD, IxDyn};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use rps_core::cli::whole;
use rps_core::defaults::ranges;
use rps_core::names::{self, StateKind};
use rps_core::{GraphFile, Layout, Runtime, SessionOptions, Split, Tensors, imagenet, npy};
use rps_export::export::{self, Source};
use rps_export::resnet::Arch;
use rps_export::train::{self as graphs, Convolutions};
use rps_image::{self as transform, Augmentation};
use rps_train::runner::StepRunner;
use rps_train::state::TrainState;

/// Benchmarks every stage against its ceiling and prints one table.
#[derive(Parser)]
#[command(allow_negative_numbers = true)]
struct Args {
    /// Threads for ONNX Runtime and the image work, 1 to 1024 (default: all cores).
    #[arg(long, value_parser = whole::<usize>(ranges::THREADS))]
    threads: Option<usize>,
    /// Generated 300x300 PNGs for the preprocess benchmark, 1 to 10000.
    #[arg(long, default_value_t = 192, value_parser = whole::<usize>(1..=10_000))]
    images: usize,
    /// Images the extract benchmark runs through the full-width backbone, 1 to 10000.
    #[arg(long, default_value_t = 256, value_parser = whole::<usize>(1..=10_000))]
    extract_images: usize,
    /// Python interpreter with PyTorch, to time the phase 2 step in PyTorch eager
    /// mode beside ours (skipped with a note where it cannot import torch).
    #[arg(long, default_value = "python3")]
    torch_python: String,
    /// Timed train steps (after the warm-up steps), 1 to 1000; their median is
    /// reported.
    #[arg(long, default_value_t = 5, value_parser = whole::<usize>(1..=1000))]
    steps: usize,
}

const ARCH: Arch = Arch {
    width: 64,
    image_size: 224,
    classes: 3,
};
const BATCH: usize = 64;
/// The phase 2 step's target, images/s (issue 3).
const FINETUNE_TARGET: f64 = 120.0;
/// Untimed steps first: ONNX Runtime's memory arena and the first touch of its
/// buffers make the first two or three runs of a step graph up to twice as slow.
const WARM_UP_STEPS: usize = 3;

struct Row {
    stage: String,
    ours: String,
    ceiling: String,
    ratio: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;
    let work = tempfile::tempdir()?;
    let mut rows = Vec::new();

    eprintln!("bench: preprocess ({} PNGs, 300x300)", args.images);
    let pngs = work.path().join("pngs");
    generate_pngs(&pngs, args.images)?;
    let (test_rate, train_rate) = preprocess_rates(&pngs)?;
    let pillow = pillow_rates(&pngs, threads);
    for (name, ours, theirs) in [
        ("test", test_rate, pillow.map(|p| p.0)),
        ("train", train_rate, pillow.map(|p| p.1)),
    ] {
        rows.push(Row {
            stage: format!("preprocess {name} transform (images/s)"),
            ours: format!("{ours:.0}"),
            ceiling: theirs.map_or("Pillow not available".into(), |t| {
                format!("{t:.0} (Pillow + numpy)")
            }),
            ratio: theirs.map_or(String::new(), |t| {
                format!("{:.2}x (target >= 2x)", ours / t)
            }),
        });
    }

    eprintln!(
        "bench: extract ({} images, width 64, 224 px)",
        args.extract_images
    );
    let layout = Layout::new(work.path().join("data"));
    export::run(&export::Config {
        layout: layout.clone(),
        source: Source::Random(0),
        width: ARCH.width,
        image_size: ARCH.image_size as u32,
        classes: Some(ARCH.classes),
    })?;
    let (stage_rate, bare_rate) = extract_rates(&layout, args.extract_images, threads)?;
    rows.push(Row {
        stage: "extract backbone (images/s)".into(),
        ours: format!("{stage_rate:.1} ({:.1} ms/image)", 1e3 / stage_rate),
        ceiling: format!("{bare_rate:.1} (bare ORT loop, batch 32)"),
        ratio: format!("{:.0}% (target >= 90%)", 100.0 * stage_rate / bare_rate),
    });

    eprintln!("bench: train steps (batch {BATCH})");
    let options = SessionOptions::cpu(threads);
    let head_rate = step_rate(
        &layout,
        GraphFile::HeadStep,
        &[BATCH, ARCH.features()],
        options,
        20,
    )?;
    let ft = layout.graph(GraphFile::FinetuneStep);
    let s = ARCH.layer3_size();
    let ft_shape = [BATCH, ARCH.layer3_channels(), s, s];
    let bare_ft = bare_step_rate(
        Runtime::get()?.session(&ft, options)?.0,
        &ft_shape,
        args.steps,
    )?;
    let stage_ft = step_rate(
        &layout,
        GraphFile::FinetuneStep,
        &ft_shape,
        options,
        args.steps,
    )?;
    rows.push(Row {
        stage: "train phase 2 step, finetune_step.onnx (images/s)".into(),
        ours: format!("{bare_ft:.1} ({:.0} ms/step)", 1e3 * BATCH as f64 / bare_ft),
        ceiling: format!("target {FINETUNE_TARGET}"),
        ratio: format!("{:.0}% of target", 100.0 * bare_ft / FINETUNE_TARGET),
    });
    eprintln!(
        "bench: the same step in PyTorch eager ({})",
        args.torch_python
    );
    rows.push(
        match pytorch_rate(&args.torch_python, threads, args.steps) {
            Some((version, rate)) => Row {
                stage: format!("the same step in PyTorch {version} eager (images/s)"),
                ours: format!("{rate:.1}"),
                ceiling: "scripts/bench_pytorch.py".into(),
                ratio: format!("ours {:.2}x (target 1.3x)", bare_ft / rate),
            },
            None => Row {
                stage: "the same step in PyTorch eager (images/s)".into(),
                ours: format!("not measured: {} cannot import torch", args.torch_python),
                ceiling: String::new(),
                ratio: String::new(),
            },
        },
    );
    let (products_ms, run_ms) = product_time(&ft, &ft_shape, options, args.steps)?;
    rows.push(Row {
        stage: "the step's time in matrix products (MatMul, Gemm)".into(),
        ours: format!(
            "{products_ms:.0} of {run_ms:.0} ms ({:.0}%)",
            100.0 * products_ms / run_ms
        ),
        ceiling: format!(
            "{:.0} images/s if all else took no time",
            1e3 * BATCH as f64 / products_ms
        ),
        ratio: String::new(),
    });
    let patches_graph = graphs::finetune_step(&ARCH, Convolutions::Patches);
    let patches_session = Runtime::get()?.session_from_bytes(&patches_graph, "patches", options)?;
    let patches_ft = bare_step_rate(patches_session.0, &ft_shape, args.steps)?;
    rows.push(Row {
        stage: "the same step without Winograd (images/s)".into(),
        ours: format!("{patches_ft:.1}"),
        ceiling: String::new(),
        ratio: format!("Winograd gains {:.2}x", bare_ft / patches_ft),
    });
    rows.push(Row {
        stage: "train phase 2, stage loop (images/s)".into(),
        ours: format!("{stage_ft:.1}"),
        ceiling: format!("{bare_ft:.1} (bare ORT loop)"),
        ratio: format!("{:.0}% (target >= 80%)", 100.0 * stage_ft / bare_ft),
    });
    rows.push(Row {
        stage: "train phase 1 step, head_step.onnx (images/s)".into(),
        ours: format!("{head_rate:.0}"),
        ceiling: String::new(),
        ratio: String::new(),
    });

    // make all with the recipe: 2520 training images x 5 views + 372 test images.
    let (train_images, views, test_images, epochs) = (2520.0, 5.0, 372.0, 20.0);
    let preprocess = (train_images * views) / train_rate + test_images / test_rate;
    let extract = (train_images * views + test_images) / stage_rate;
    let train = epochs * train_images / head_rate + epochs * train_images / stage_ft;
    let total = preprocess + extract + train;
    rows.push(Row {
        stage: "make all, recipe defaults (projected)".into(),
        ours: format!("{:.0} min", total / 60.0),
        ceiling: format!(
            "preprocess {:.0} s, extract {:.0} s, train {:.0} min",
            preprocess,
            extract,
            train / 60.0
        ),
        ratio: "projected from the rates above".into(),
    });
    print_table(&rows, threads);
    Ok(())
}

fn print_table(rows: &[Row], threads: usize) {
    println!("| stage | ours | ceiling / reference | ratio |");
    println!("| --- | --- | --- | --- |");
    for r in rows {
        println!("| {} | {} | {} | {} |", r.stage, r.ours, r.ceiling, r.ratio);
    }
    println!(
        "\n{threads} threads; ONNX Runtime {} on cpu",
        Runtime::get()
            .ok()
            .and_then(|r| r.version())
            .unwrap_or_default()
    );
}

/// 300x300 RGBA PNGs with smooth shapes and noise, like photos of hands.
fn generate_pngs(dir: &Path, count: usize) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    (0..count).into_par_iter().try_for_each(|i| {
        let mut rng = ChaCha8Rng::seed_from_u64(i as u64);
        let (cx, cy) = (rng.random_range(80.0..220.0), rng.random_range(80.0..220.0));
        let img = image::RgbaImage::from_fn(300, 300, |x, y| {
            let d = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
            let skin = if d < 90.0 { 180.0 - d * 0.5 } else { 245.0 };
            let n = rng.random_range(0.0..12.0);
            image::Rgba([
                (skin + n) as u8,
                (skin * 0.8 + n) as u8,
                (skin * 0.7 + n) as u8,
                255,
            ])
        });
        img.save(dir.join(format!("{i:04}.png")))
            .context("saving a PNG")
    })
}

/// Rust images/s for the test and train transforms, to normalized f32 as Pillow's.
fn preprocess_rates(dir: &Path) -> Result<(f64, f64)> {
    let paths: Vec<_> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    let to_input = |img: &image::RgbImage| {
        let chw = transform::to_chw(img);
        let mut out = vec![0.0f32; chw.len()];
        imagenet::normalize_chw(&chw, &mut out);
        out.len()
    };
    let time = |f: &(dyn Fn(&Path) -> Result<usize> + Sync)| -> Result<f64> {
        let start = Instant::now();
        paths.par_iter().map(|p| f(p)).collect::<Result<Vec<_>>>()?;
        Ok(paths.len() as f64 / start.elapsed().as_secs_f64())
    };
    let test = time(&|p| {
        Ok(to_input(&transform::test_view(
            &transform::load_rgb(p)?,
            224,
        )))
    })?;
    let train = time(&|p| {
        let img = transform::load_rgb(p)?;
        let mut rng = transform::view_rng(0, &p.display().to_string(), 0);
        Ok(to_input(
            &Augmentation::draw(&mut rng, img.width(), img.height()).apply(&img, 224),
        ))
    })?;
    Ok((test, train))
}

fn pillow_rates(dir: &Path, threads: usize) -> Option<(f64, f64)> {
    let dir = dir.to_str()?;
    let output = run_script(
        "python3",
        "bench_pillow.py",
        &[dir, "224", &threads.to_string()],
    )
    .map_err(|stderr| eprintln!("bench: Pillow benchmark failed: {stderr}"))
    .ok()?;
    Some((
        field(&output, "test")?.parse().ok()?,
        field(&output, "train")?.parse().ok()?,
    ))
}

/// PyTorch's version and its images/s on the phase 2 step, where `python` has it.
fn pytorch_rate(python: &str, threads: usize, steps: usize) -> Option<(String, f64)> {
    let args = [threads.to_string(), steps.to_string()];
    let output = run_script(python, "bench_pytorch.py", &[&args[0], &args[1]]).ok()?;
    Some((
        field(&output, "torch")?.to_string(),
        field(&output, "step")?.parse().ok()?,
    ))
}

/// Runs `scripts/<script>` with `python`: its standard output, or why it failed.
fn run_script(python: &str, script: &str, args: &[&str]) -> Result<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(script);
    let out = Command::new(python)
        .arg(path)
        .args(args)
        .output()
        .map_err(|e| format!("running {python}: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The value of a script's `KEY VALUE` output line.
fn field<'a>(output: &'a str, key: &str) -> Option<&'a str> {
    output
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .map(str::trim)
}

/// The extract stage's images/s on a u8 cache, and a bare loop's on one batch.
fn extract_rates(layout: &Layout, images: usize, threads: usize) -> Result<(f64, f64)> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let s = ARCH.image_size;
    for (split, n) in [(Split::Train, images), (Split::Test, 8)] {
        let pixels = ArrayD::from_shape_simple_fn(IxDyn(&[n, 3, s, s]), || rng.random::<u8>());
        npy::write(&layout.cache_tensor(split), &pixels)?;
        npy::write(
            &layout.cache_labels(split),
            &ndarray::Array1::<i64>::zeros(n),
        )?;
    }
    rps_fixtures::write_cache_sidecars(layout, ARCH.image_size as u32, 1, &["a", "b", "c"])?;
    let options = SessionOptions::cpu(threads);
    let config = rps_extract::Config {
        layout: layout.clone(),
        batch: Some(32),
        session: options,
    };
    let report = rps_extract::run(&config)?;
    let (_, n, seconds) = report.splits[0];
    let stage = n as f64 / seconds;

    let (mut session, _) = Runtime::get()?.session(&layout.graph(GraphFile::Backbone), options)?;
    let input = Tensor::from_array(([32, 3, s, s], vec![0.5f32; 32 * 3 * s * s]))?;
    session.run(ort::inputs![names::IMAGES => input.view()])?;
    let runs = images.div_ceil(32);
    let start = Instant::now();
    for _ in 0..runs {
        session.run(ort::inputs![names::IMAGES => input.view()])?;
    }
    Ok((stage, (runs * 32) as f64 / start.elapsed().as_secs_f64()))
}

/// Seeded values in [0, 1): features shaped like real activations.
fn random_array(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.random::<f32>())
}

/// Parameters of realistic size: BatchNorm scales near 1, the rest small and centred.
fn random_param(name: &str, shape: &[usize], seed: u64) -> ArrayD<f32> {
    let noise = random_array(shape, 100 + seed).mapv(|v| 0.1 * (v - 0.5));
    if name.contains(".bn") || name.contains("downsample.1") {
        if name.ends_with("weight") {
            noise + 1.0
        } else {
            noise
        }
    } else {
        noise
    }
}

/// images/s of a batch-`BATCH` step, from the median of `steps` timed runs after the
/// warm-up: a shared machine's occasional slow step moves a mean by a third.
fn median_rate(steps: usize, mut step: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..WARM_UP_STEPS {
        step()?;
    }
    let mut seconds = Vec::with_capacity(steps);
    for _ in 0..steps {
        let start = Instant::now();
        step()?;
        seconds.push(start.elapsed().as_secs_f64());
    }
    seconds.sort_by(f64::total_cmp);
    Ok(BATCH as f64 / seconds[steps / 2])
}

/// images/s of a step graph through the training stage's own runner.
fn step_rate(
    layout: &Layout,
    graph: GraphFile,
    features: &[usize],
    options: SessionOptions,
    steps: usize,
) -> Result<f64> {
    let mut runner = StepRunner::open(layout, graph, options, 0.0)?;
    let params = runner.state_shapes(StateKind::Param)?;
    let buffers = runner.state_shapes(StateKind::Buffer)?;
    let mut weights = Tensors::new();
    for (i, (name, shape)) in params.iter().enumerate() {
        weights.insert(name.clone(), random_param(name, shape, i as u64));
    }
    for (name, shape) in &buffers {
        weights.insert(name.clone(), ArrayD::from_elem(IxDyn(shape), 1.0));
    }
    let mut state = TrainState::fresh(&weights, &params, &buffers)?;
    let x = random_array(features, 1);
    let labels: Vec<i64> = (0..BATCH as i64).map(|i| i % 3).collect();
    let mask = Array2::ones((BATCH, ARCH.features()));
    median_rate(steps, || {
        runner.step(&mut state, &x, &labels, &mask, 1e-4)?;
        Ok(())
    })
}

/// images/s of a step graph's session fed the same in-memory tensors each time.
fn bare_step_rate(mut session: Session, features: &[usize], steps: usize) -> Result<f64> {
    let inputs = step_inputs(features)?;
    median_rate(steps, || run_step(&mut session, &inputs))
}

fn run_step(session: &mut Session, inputs: &[(String, DynValue)]) -> Result<()> {
    let views: Vec<(String, SessionInputValue<'_>)> = inputs
        .iter()
        .map(|(k, v)| (k.clone(), v.view().into()))
        .collect();
    session.run(views)?;
    Ok(())
}

/// A phase 2 step's inputs: constant features, small parameters, zero moments.
fn step_inputs(features: &[usize]) -> Result<Vec<(String, DynValue)>> {
    let mut inputs: Vec<(String, DynValue)> = vec![
        (
            names::FEATURES.into(),
            Tensor::from_array((features.to_vec(), vec![0.5f32; features.iter().product()]))?
                .into_dyn(),
        ),
        (
            names::LABELS.into(),
            Tensor::from_array((
                [BATCH],
                (0..BATCH as i64).map(|i| i % 3).collect::<Vec<_>>(),
            ))?
            .into_dyn(),
        ),
        (
            names::DROPOUT_MASK.into(),
            Tensor::from_array((
                [BATCH, ARCH.features()],
                vec![1.0f32; BATCH * ARCH.features()],
            ))?
            .into_dyn(),
        ),
    ];
    for (name, value) in [
        (names::STEP, 1.0f32),
        (names::LR, 1e-4),
        (names::WEIGHT_DECAY, 0.0),
    ] {
        inputs.push((
            name.into(),
            Tensor::from_array(((), vec![value]))?.into_dyn(),
        ));
    }
    for (name, shape) in ARCH.finetune_params() {
        let n = shape.iter().product();
        for (key, fill) in [
            (names::param(&name), 0.01f32),
            (names::adam_m(&name), 0.0),
            (names::adam_v(&name), 0.0),
        ] {
            inputs.push((
                key,
                Tensor::from_array((shape.clone(), vec![fill; n]))?.into_dyn(),
            ));
        }
    }
    for (name, shape) in ARCH.finetune_buffers() {
        inputs.push((
            names::buffer(&name),
            Tensor::from_array((shape.clone(), vec![1.0f32; shape[0]]))?.into_dyn(),
        ));
    }
    Ok(inputs)
}

/// Milliseconds a step graph's run spends in matrix products (`MatMul`, `Gemm`) and
/// in all, from ONNX Runtime's profiler: the median by total of `steps` warmed-up runs.
fn product_time(
    graph: &Path,
    features: &[usize],
    options: SessionOptions,
    steps: usize,
) -> Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let (builder, _) = Runtime::get()?.session_builder(options)?;
    let mut session = builder
        .with_profiling(dir.path().join("step"))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .commit_from_file(graph)?;
    let inputs = step_inputs(features)?;
    for _ in 0..WARM_UP_STEPS + steps {
        run_step(&mut session, &inputs)?;
    }
    let path = session.end_profiling()?;
    let events: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&path)?)?;
    let micros = |e: &serde_json::Value, key: &str| e[key].as_f64().unwrap_or(0.0);
    let products_within = |start: f64, total: f64| -> f64 {
        events
            .iter()
            .filter(|e| e["cat"] == "Node" && (start..start + total).contains(&micros(e, "ts")))
            .filter(|e| {
                e["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("_kernel_time"))
            })
            .filter(|e| matches!(e["args"]["op_name"].as_str(), Some("MatMul" | "Gemm")))
            .map(|e| micros(e, "dur"))
            .sum()
    };
    let mut runs: Vec<(f64, f64)> = events
        .iter()
        .filter(|e| e["name"] == "model_run")
        .skip(WARM_UP_STEPS)
        .map(|run| {
            let (start, total) = (micros(run, "ts"), micros(run, "dur"));
            (products_within(start, total) / 1e3, total / 1e3)
        })
        .collect();
    runs.sort_by(|a, b| a.1.total_cmp(&b.1));
    runs.get(runs.len() / 2)
        .copied()
        .context("no model_run in ONNX Runtime's profile")
}
