//! Our own rates: each stage's work timed in this process, beside the ceiling of the
//! same ONNX Runtime session run bare.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use ndarray::{Array2, ArrayD, IxDyn};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use rps_core::names::{self, StateKind};
use rps_core::{Layout, SessionOptions, Split, Tensors, Unfreeze, defaults, npy};
use rps_image::{self as transform, Augmentation};
use rps_runtime::Runtime;
use rps_score::Batch;
use rps_train::runner::{Optimizer, StepRates, StepRunner};
use rps_train::state::TrainState;

use rps_model::network::{Arch, IMAGENET_NORMALIZATION};

use crate::{BATCH, EXTRACT_BATCH, IMAGE_SIZE};

/// Untimed steps first: ONNX Runtime's memory arena and the first touch of its
/// buffers make the first two or three runs of a step graph up to twice as slow.
const WARM_UP_STEPS: usize = 3;

/// Timed passes over the PNGs, here and in Pillow, after an untimed one: a pass
/// lasts a fraction of a second, so a single one reads whatever else the machine did.
pub const PREPROCESS_PASSES: usize = 5;

/// 300x300 RGBA PNGs with smooth shapes and noise, like photos of hands.
pub fn generate_pngs(dir: &Path, count: usize) -> Result<()> {
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
pub fn preprocess_rates(dir: &Path) -> Result<(f64, f64)> {
    let paths: Vec<_> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    let to_input = |img: &image::RgbImage| {
        let chw = transform::to_chw(img);
        let mut out = vec![0.0f32; chw.len()];
        IMAGENET_NORMALIZATION.normalize_chw(&chw, &mut out);
        out.len()
    };
    let time = |f: &(dyn Fn(&Path) -> Result<usize> + Sync)| -> Result<f64> {
        let seconds = median_seconds(1, PREPROCESS_PASSES, || {
            paths.par_iter().map(|p| f(p)).collect::<Result<Vec<_>>>()?;
            Ok(())
        })?;
        Ok(paths.len() as f64 / seconds)
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

/// The extract stage's images/s on a u8 cache of `images` random images.
pub fn extract_rate(layout: &Layout, images: usize, threads: usize) -> Result<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let s = IMAGE_SIZE;
    for (split, n) in [(Split::Train, images), (Split::Test, 8)] {
        let pixels = ArrayD::from_shape_simple_fn(IxDyn(&[n, 3, s, s]), || rng.random::<u8>());
        npy::write(&layout.cache_tensor(split), &pixels)?;
        npy::write(
            &layout.cache_labels(split),
            &ndarray::Array1::<i64>::zeros(n),
        )?;
    }
    rps_fixtures::write_cache_sidecars(layout, IMAGE_SIZE as u32, 1, &["a", "b", "c"])?;
    let config = rps_extract::Config {
        layout: layout.clone(),
        precision: rps_core::npy::Precision::F32,
        batch: Some(EXTRACT_BATCH),
        session: SessionOptions::cpu(threads),
    };
    let report = rps_extract::run(&config)?;
    let (_, n, seconds) = report.splits[0];
    Ok(n as f64 / seconds)
}

/// images/s of a bare loop running the backbone `graph` (input `images`) on one
/// batch of `EXTRACT_BATCH`, for about `images` images.
pub fn bare_backbone_rate(graph: &Path, images: usize, threads: usize) -> Result<f64> {
    let options = SessionOptions::cpu(threads);
    let (mut session, _) = Runtime::get()?.session(graph, options)?;
    let (s, b) = (IMAGE_SIZE, EXTRACT_BATCH);
    let input = Tensor::from_array(([b, 3, s, s], vec![0.5f32; b * 3 * s * s]))?;
    session.run(ort::inputs![names::IMAGES => input.view()])?;
    let runs = images.div_ceil(b);
    let start = Instant::now();
    for _ in 0..runs {
        session.run(ort::inputs![names::IMAGES => input.view()])?;
    }
    Ok((runs * b) as f64 / start.elapsed().as_secs_f64())
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
fn median_rate(steps: usize, step: impl FnMut() -> Result<()>) -> Result<f64> {
    Ok(BATCH as f64 / median_seconds(WARM_UP_STEPS, steps, step)?)
}

/// The median duration of `runs` calls of `run`, after `warm_up` untimed ones.
fn median_seconds(warm_up: usize, runs: usize, mut run: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warm_up {
        run()?;
    }
    let mut seconds = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        run()?;
        seconds.push(start.elapsed().as_secs_f64());
    }
    seconds.sort_by(f64::total_cmp);
    Ok(seconds[runs / 2])
}

/// Bytes the memory probe copies: far past the caches, a few hundredths of a
/// second a copy.
const PROBE_BYTES: usize = 256 << 20;

/// The host's memory copy rate now, in GB/s (bytes read and written), the best of
/// three copies. The step's memory-bound passes slow down more than PyTorch's fused
/// kernels when the shared host's memory is busy: this shows such a spell.
pub fn memory_copy_rate() -> f64 {
    let source = vec![1u8; PROBE_BYTES];
    let mut target = vec![0u8; PROBE_BYTES];
    let best = (0..3)
        .map(|_| {
            let start = Instant::now();
            target.copy_from_slice(std::hint::black_box(&source));
            std::hint::black_box(&target);
            start.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min);
    2.0 * PROBE_BYTES as f64 / best / 1e9
}

/// A batch of random features of `shape` (u8 pixels when `unfreeze` reads images).
fn random_batch(shape: &[usize], unfreeze: Unfreeze) -> Batch {
    let values = random_array(shape, 1);
    match unfreeze.from_images() {
        true => Batch::U8(values.mapv(|v| (v * 255.0) as u8)),
        false => Batch::F32(values),
    }
}

/// images/s of a step graph through the training stage's own runner.
pub fn step_rate(
    arch: &Arch,
    layout: &Layout,
    graph: rps_core::GraphFile,
    (features, unfreeze): (&[usize], Unfreeze),
    options: SessionOptions,
    steps: usize,
) -> Result<f64> {
    let mut runner = StepRunner::open(layout, graph, options, Optimizer::recipe(arch.classes))?;
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
    let x = random_batch(features, unfreeze);
    let labels: Vec<i64> = (0..BATCH as i64).map(|i| i % 3).collect();
    let mask = Array2::ones((BATCH, arch.features()));
    median_rate(steps, || {
        runner.step(&mut state, &x, &labels, &mask, StepRates::constant(1e-4))?;
        Ok(())
    })
}

/// This process's peak resident memory so far (`VmHWM`), in bytes.
pub fn peak_resident_bytes() -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .context("/proc/self/status has no VmHWM")?;
    Ok(kib * 1024)
}

/// images/s of a step graph's session fed the same in-memory tensors each time.
pub fn bare_step_rate(
    arch: &Arch,
    mut session: Session,
    features: (&[usize], Unfreeze),
    steps: usize,
) -> Result<f64> {
    let inputs = step_inputs(arch, features)?;
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

/// A phase 2 step's inputs from `unfreeze`: random features, parameters of
/// realistic size ([`random_param`], as PyTorch's side has torchvision's; all 0.01
/// made every channel alike and left 262,144 of the layer4 step's gradients and
/// second moments subnormal), zero moments.
fn step_inputs(
    arch: &Arch,
    (features, unfreeze): (&[usize], Unfreeze),
) -> Result<Vec<(String, DynValue)>> {
    let x = match random_batch(features, unfreeze) {
        Batch::F32(a) => Tensor::from_array(a)?.into_dyn(),
        Batch::U8(a) => Tensor::from_array(a)?.into_dyn(),
    };
    let mut inputs: Vec<(String, DynValue)> = vec![
        (names::FEATURES.into(), x),
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
                [BATCH, arch.features()],
                vec![1.0f32; BATCH * arch.features()],
            ))?
            .into_dyn(),
        ),
    ];
    let params = arch.finetune_params(unfreeze);
    let mut groups: Vec<String> = params
        .iter()
        .map(|(n, _)| arch.rate_group(n).input())
        .collect();
    groups.dedup();
    let scalars = [
        (names::STEP.to_string(), 1.0f32),
        (names::BETA1.into(), defaults::ADAM_BETA1 as f32),
        (names::WEIGHT_DECAY.into(), 0.0),
    ];
    for (name, value) in scalars
        .into_iter()
        .chain(groups.into_iter().map(|g| (g, 1e-4)))
    {
        inputs.push((name, Tensor::from_array(((), vec![value]))?.into_dyn()));
    }
    inputs.push((
        names::CLASS_WEIGHTS.into(),
        Tensor::from_array(([arch.classes], vec![1.0f32; arch.classes]))?.into_dyn(),
    ));
    for (i, (name, shape)) in params.into_iter().enumerate() {
        let param = random_param(&name, &shape, i as u64);
        inputs.push((names::param(&name), Tensor::from_array(param)?.into_dyn()));
        for key in [names::adam_m(&name), names::adam_v(&name)] {
            let zeros = ArrayD::<f32>::zeros(IxDyn(&shape));
            inputs.push((key, Tensor::from_array(zeros)?.into_dyn()));
        }
    }
    for (name, shape) in arch.finetune_buffers(unfreeze) {
        inputs.push((
            names::buffer(&name),
            Tensor::from_array((shape.clone(), vec![1.0f32; shape[0]]))?.into_dyn(),
        ));
    }
    Ok(inputs)
}

/// Milliseconds a step graph's run spends in matrix products (`MatMul`, `Gemm`, and
/// ONNX Runtime's fusion of a transpose into one, `FusedMatMul`) and its blocked
/// convolutions (`Conv`), and in all, from ONNX Runtime's profiler: the median by
/// total of `steps` warmed-up runs.
pub fn product_time(
    arch: &Arch,
    graph: &Path,
    features: (&[usize], Unfreeze),
    options: SessionOptions,
    steps: usize,
) -> Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let (builder, _) = Runtime::get()?.session_builder(options)?;
    let mut session = builder
        .with_profiling(dir.path().join("step"))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .commit_from_file(graph)?;
    let inputs = step_inputs(arch, features)?;
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
            .filter(|e| {
                matches!(
                    e["args"]["op_name"].as_str(),
                    Some("MatMul" | "Gemm" | "FusedMatMul" | "Conv")
                )
            })
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
