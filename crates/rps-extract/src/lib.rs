//! rps-extract: runs `backbone.onnx` once over every cached image, so training never
//! touches the frozen layers again. Writes per split the frozen layers' output
//! (`frozen`, unless phase 2 trains the whole network and reads the cached images)
//! and the `pooled` features (f32 `.npy`), and the labels, to `DATA/features/`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Result, bail};
use ndarray::{ArrayViewD, Axis};
use ort::session::Session;
use ort::value::Tensor;
use rps_core::disk;
use rps_core::npy::{F16, Mapped, Precision, RowWriter};
use rps_core::progress::{Progress, Units};
use rps_core::sidecar::{ExtractDetails, ExtractMeta, ExtractSettings, SplitRate, Stage};
use rps_core::upstream::Upstream;
use rps_core::{
    Device, Feature, Folder, GraphFile, Layout, Normalization, SessionOptions, Split,
    atomic::TempDir, defaults, names, npy,
};
use rps_runtime::Runtime;
use rps_runtime::fixed_dims;

#[derive(Debug, Clone)]
pub struct Config {
    pub layout: Layout,
    /// Images per ONNX Runtime call; `None` picks one for the device.
    pub batch: Option<usize>,
    /// How the frozen layers' output is stored.
    pub precision: Precision,
    pub session: SessionOptions,
}

#[derive(Debug)]
pub struct Report {
    pub device: Device,
    /// `(split, images, seconds)`.
    pub splits: Vec<(Split, usize, f64)>,
}

/// The backbone's per-image output shapes, read off its graph: the frozen layers'
/// output when it has one, and the pooled features.
struct Outputs {
    frozen: Option<Vec<usize>>,
    pooled: Vec<usize>,
    precision: Precision,
}

pub fn run(config: &Config) -> Result<Report> {
    let started = Instant::now();
    let layout = &config.layout;
    let _lock = rps_core::lock::DataLock::acquire(layout, env!("CARGO_PKG_NAME"))?;
    let upstream = Upstream::read(layout)?;
    let image_size = upstream.export.settings.image_size as usize;
    let inputs: Vec<(Split, Mapped)> = Split::ALL
        .iter()
        .map(|&s| Ok((s, Mapped::open(&layout.cache_tensor(s))?)))
        .collect::<Result<_>>()?;
    for (split, mapped) in &inputs {
        check_cache(mapped, *split, image_size)?;
    }
    let graph = layout.graph(GraphFile::Backbone);
    let (mut session, device) =
        Runtime::get()?.exported(layout, GraphFile::Backbone, config.session)?;
    let has_frozen = session.outputs().iter().any(|o| o.name() == names::FROZEN);
    let outputs = Outputs {
        frozen: match has_frozen {
            true => Some(fixed_dims(&session, names::FROZEN, &graph, 1)?),
            false => None,
        },
        pooled: fixed_dims(&session, names::POOLED, &graph, 1)?,
        precision: config.precision,
    };
    eprintln!("extract: running {} on {device}", graph.display());
    let mut rows = 0;
    for (_, mapped) in &inputs {
        rows += cache_dims(mapped)?[0];
    }
    let per_row = outputs.bytes_per_row();
    let bytes = per_row * rows as u64;
    eprintln!(
        "extract: {rows} images -> {} of features ({} KB each: {}; UNFREEZE={})",
        disk::gigabytes(bytes),
        per_row / 1000,
        outputs.describe(),
        upstream.export.settings.unfreeze
    );
    let advice = match config.precision {
        Precision::F32 => "cache fewer views (VIEWS), store them as f16 (FEATURES=f16)",
        Precision::F16 => "cache fewer views (VIEWS)",
    };
    disk::check_free_space(layout.root(), bytes, "the features", advice)?;
    let batch = config.batch.unwrap_or(match device {
        Device::Cpu => defaults::EXTRACT_BATCH_CPU,
        Device::Cuda => defaults::EXTRACT_BATCH_CUDA,
    });
    check_batch_memory(batch, upstream.export.details.backbone_floats_per_image)?;
    let tmp = TempDir::beside(&layout.dir(Folder::Features))?;
    let mut splits = Vec::new();
    for (split, mapped) in &inputs {
        let t = Instant::now();
        let job = SplitJob {
            split: *split,
            pixels: mapped,
            image_size,
            batch,
            out_dir: tmp.path(),
            layout,
            outputs: &outputs,
            normalization: &upstream.export.details.normalization,
        };
        let n = job.run(&mut session)?;
        let labels = npy::read::<i64>(&layout.cache_labels(*split))?;
        if labels.len() != n {
            bail!(
                "{}: {} labels for {n} images",
                layout.cache_labels(*split).display(),
                labels.len()
            );
        }
        npy::write(&job.out_path(Feature::Labels), &labels)?;
        splits.push((*split, n, t.elapsed().as_secs_f64()));
    }
    let settings = ExtractSettings {
        batch,
        storage: format!("{}; rows as in cache/index.csv", outputs.describe()),
    };
    let rates: BTreeMap<Split, SplitRate> = splits
        .iter()
        .map(|&(split, images, seconds)| {
            let images_per_second = images as f64 / seconds;
            (
                split,
                SplitRate {
                    images,
                    images_per_second,
                },
            )
        })
        .collect();
    let details = ExtractDetails { splits: rates };
    let mut meta = ExtractMeta::new(Stage::Extract, env!("CARGO_PKG_VERSION"), settings, details);
    meta.inputs = vec![
        graph.display().to_string(),
        layout.dir(Folder::Cache).display().to_string(),
    ];
    meta.device = Some(device);
    meta.seconds = started.elapsed().as_secs_f64();
    meta.write(&tmp.path().join(file_name(&layout.features_meta())))?;
    tmp.commit()?;
    rps_core::outputs::record_folder(layout, "extract", &layout.dir(Folder::Features))?;
    Ok(Report { device, splits })
}

impl Outputs {
    /// Bytes of features one image adds (the labels are noise beside them).
    fn bytes_per_row(&self) -> u64 {
        let frozen: usize = self.frozen.iter().flatten().product();
        let pooled: usize = self.pooled.iter().product();
        (frozen * self.precision.bytes() + pooled * std::mem::size_of::<f32>()) as u64
    }

    /// What is stored per image: `.npy: frozen f16 [N,256,14,14], pooled f32 [N,512]`.
    fn describe(&self) -> String {
        let frozen = match &self.frozen {
            Some(dims) => format!("frozen {} [N,{}], ", self.precision, dims_text(dims)),
            None => "no frozen layers (phase 2 reads cache/), ".into(),
        };
        format!(".npy: {frozen}pooled f32 [N,{}]", dims_text(&self.pooled))
    }
}

fn dims_text(dims: &[usize]) -> String {
    let dims: Vec<String> = dims.iter().map(usize::to_string).collect();
    dims.join(",")
}

/// A batch of the backbone holds at least each image's largest layer input and
/// output at once (export's lower bound): refused before a batch is made when even
/// that is more than is free, rather than left to fail in ONNX Runtime.
fn check_batch_memory(batch: usize, floats_per_image: u64) -> Result<()> {
    match rps_core::memory::batch_shortfall(batch, floats_per_image) {
        Some((needed, free)) => bail!(
            "extract at --batch {batch} (EXTRACT_BATCH) needs at least {} ({} per image for the \
             backbone's largest layer), and {} is free: lower EXTRACT_BATCH",
            rps_core::memory::describe(needed),
            rps_core::memory::describe(floats_per_image * 4),
            rps_core::memory::describe(free)
        ),
        None => Ok(()),
    }
}

fn file_name(path: &Path) -> &std::ffi::OsStr {
    path.file_name().expect("a file path")
}

/// A cache of another image size than the graphs is an error before any work.
fn check_cache(mapped: &Mapped, split: Split, size: usize) -> Result<()> {
    let dims = cache_dims(mapped)?;
    if dims[1..] != [3, size, size] {
        bail!(
            "{}: {split} images are {:?}, but the graphs take [N, 3, {size}, {size}]: \
             `make preprocess` remakes the cache for the export's IMAGE_SIZE",
            mapped.path().display(),
            dims
        );
    }
    Ok(())
}

/// The cache holds u8 pixels (normalized here) or already-normalized f32.
enum Pixels<'a> {
    U8(ArrayViewD<'a, u8>),
    F32(ArrayViewD<'a, f32>),
}

impl Pixels<'_> {
    /// Bytes a pixel takes in the cache.
    fn element_bytes(&self) -> usize {
        match self {
            Pixels::U8(_) => 1,
            Pixels::F32(_) => 4,
        }
    }
}

fn pixels(mapped: &Mapped) -> Result<Pixels<'_>> {
    match mapped.view::<u8>() {
        Ok(view) => Ok(Pixels::U8(view)),
        Err(_) => Ok(Pixels::F32(mapped.view::<f32>()?)),
    }
}

fn cache_dims(mapped: &Mapped) -> Result<Vec<usize>> {
    let dims = match pixels(mapped)? {
        Pixels::U8(v) => v.shape().to_vec(),
        Pixels::F32(v) => v.shape().to_vec(),
    };
    if dims.len() != 4 {
        bail!(
            "{}: expected a [N,3,S,S] tensor, found shape {dims:?}",
            mapped.path().display()
        );
    }
    Ok(dims)
}

/// Input for rows `start..end`, normalized as the network wants (u8 pixels).
fn batch_input(
    pixels: &Pixels<'_>,
    start: usize,
    end: usize,
    normalization: &Normalization,
) -> Vec<f32> {
    match pixels {
        Pixels::U8(view) => {
            let rows = view.slice_axis(Axis(0), (start..end).into());
            let per_image = rows.len() / (end - start).max(1);
            let mut out = vec![0.0; rows.len()];
            for (src, dst) in rows
                .as_slice()
                .expect("contiguous")
                .chunks(per_image)
                .zip(out.chunks_mut(per_image))
            {
                normalization.normalize_chw(src, dst);
            }
            out
        }
        Pixels::F32(view) => view
            .slice_axis(Axis(0), (start..end).into())
            .iter()
            .copied()
            .collect(),
    }
}

/// One split through the backbone.
struct SplitJob<'a> {
    split: Split,
    pixels: &'a Mapped,
    image_size: usize,
    batch: usize,
    out_dir: &'a Path,
    layout: &'a Layout,
    outputs: &'a Outputs,
    /// What the cached u8 pixels go through before the backbone.
    normalization: &'a Normalization,
}

impl SplitJob<'_> {
    fn out_path(&self, feature: Feature) -> std::path::PathBuf {
        self.out_dir
            .join(file_name(&self.layout.features(self.split, feature)))
    }

    /// Runs the backbone over the split; returns its image count. A second thread
    /// prepares the next batch while ONNX Runtime runs the current one.
    fn run(&self, session: &mut Session) -> Result<usize> {
        let n = cache_dims(self.pixels)?[0];
        let s = self.image_size;
        let rows_of = |dims: &[usize]| [&[n][..], dims].concat();
        let precision = self.outputs.precision;
        let mut frozen = match &self.outputs.frozen {
            Some(dims) => {
                let path = self.out_path(Feature::Frozen);
                Some(match precision {
                    Precision::F32 => RowWriter::create::<f32>(&path, &rows_of(dims))?,
                    Precision::F16 => RowWriter::create::<F16>(&path, &rows_of(dims))?,
                })
            }
            None => None,
        };
        let mut pooled = RowWriter::create::<f32>(
            &self.out_path(Feature::Pooled),
            &rows_of(&self.outputs.pooled),
        )?;
        let progress = Progress::new(
            format!("extract {}", self.split),
            n as u64,
            Units::Count("images"),
        );
        let pixels = pixels(self.pixels)?;
        let batch = self.batch.max(1);
        std::thread::scope(|scope| -> Result<()> {
            let (send, receive) = mpsc::sync_channel::<(usize, Vec<f32>)>(1);
            let pixels = &pixels;
            let mapped = self.pixels;
            let normalization = self.normalization;
            scope.spawn(move || {
                for start in (0..n).step_by(batch) {
                    let end = (start + batch).min(n);
                    let input = batch_input(pixels, start, end, normalization);
                    mapped.read_rows(input.len() * pixels.element_bytes());
                    if send.send((end - start, input)).is_err() {
                        return;
                    }
                }
            });
            for (rows, input) in receive {
                let tensor = Tensor::from_array(([rows, 3, s, s], input))?;
                let outputs = session.run(ort::inputs![names::IMAGES => tensor])?;
                if let Some(frozen) = &mut frozen {
                    let values = outputs[names::FROZEN].try_extract_tensor::<f32>()?.1;
                    match precision {
                        Precision::F32 => frozen.write(values)?,
                        Precision::F16 => frozen.write(&npy::halves(values))?,
                    }
                }
                pooled.write(outputs[names::POOLED].try_extract_tensor::<f32>()?.1)?;
                progress.inc(rows as u64);
            }
            Ok(())
        })?;
        drop(progress);
        if let Some(frozen) = frozen {
            frozen.finish()?;
        }
        pooled.finish()?;
        Ok(n)
    }
}
