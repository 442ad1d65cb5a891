//! rps-extract: runs `backbone.onnx` once over every cached image, so training never
//! touches the frozen layers again. Writes per split `layer3` and `pooled` features
//! (f32 `.npy`) and the labels to `DATA/features/`.

use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Result, bail};
use ndarray::{ArrayViewD, Axis};
use ort::session::Session;
use ort::value::Tensor;
use rps_core::npy::{Mapped, RowWriter};
use rps_core::{
    Device, DeviceChoice, GraphFile, Layout, Metadata, Runtime, Split, atomic::TempDir, imagenet,
    npy,
};
use rps_export::names;
use rps_export::resnet::Arch;

#[derive(Debug, Clone)]
pub struct Config {
    pub layout: Layout,
    /// Images per ONNX Runtime call; `None` picks one for the device.
    pub batch: Option<usize>,
    pub device: DeviceChoice,
    pub threads: usize,
}

#[derive(Debug)]
pub struct Report {
    pub device: Device,
    /// `(split, images, seconds)`.
    pub splits: Vec<(Split, usize, f64)>,
}

pub fn run(config: &Config) -> Result<Report> {
    let started = Instant::now();
    let layout = &config.layout;
    let arch = rps_export::export::exported_arch(layout)?;
    let inputs: Vec<(Split, Mapped)> = Split::ALL
        .iter()
        .map(|&s| Ok((s, Mapped::open(&layout.cache_tensor(s))?)))
        .collect::<Result<_>>()?;
    for (split, mapped) in &inputs {
        check_cache(mapped, *split, &arch)?;
    }
    let graph = layout.graph(GraphFile::Backbone);
    let (mut session, device) = Runtime::get()?.session(&graph, config.device, config.threads)?;
    eprintln!("extract: running {} on {device}", graph.display());
    let batch = config.batch.unwrap_or(match device {
        Device::Cpu => 32,
        Device::Cuda => 128,
    });
    let tmp = TempDir::beside(&layout.features_dir())?;
    let mut splits = Vec::new();
    for (split, mapped) in &inputs {
        let t = Instant::now();
        let n = extract_split(
            &mut session,
            mapped,
            *split,
            &arch,
            batch,
            tmp.path(),
            layout,
        )?;
        let labels = npy::read::<i64>(&layout.cache_labels(*split))?;
        if labels.len() != n {
            bail!(
                "{}: {} labels for {n} images",
                layout.cache_labels(*split).display(),
                labels.len()
            );
        }
        npy::write(
            &tmp.path()
                .join(file_name(&layout.features(*split, "labels"))),
            &labels,
        )?;
        splits.push((*split, n, t.elapsed().as_secs_f64()));
    }
    let mut meta = Metadata::new("extract", env!("CARGO_PKG_VERSION"))
        .setting("batch", batch)
        .setting(
            "storage",
            "f32 .npy: layer3 [N,4w,S/16,S/16], pooled [N,8w]; rows as in cache/index.csv",
        )
        .input(&graph)
        .input(&layout.cache_dir());
    meta.device = Some(device.name().into());
    for (split, n, seconds) in &splits {
        meta.detail(&format!("{split}_images"), n);
        meta.detail(&format!("{split}_images_per_second"), *n as f64 / seconds);
    }
    meta.seconds = started.elapsed().as_secs_f64();
    meta.write(&tmp.path().join("meta.json"))?;
    tmp.commit()?;
    Ok(Report { device, splits })
}

fn file_name(path: &Path) -> &std::ffi::OsStr {
    path.file_name().expect("a file path")
}

/// A cache of another image size than the graphs is an error before any work.
fn check_cache(mapped: &Mapped, split: Split, arch: &Arch) -> Result<()> {
    let dims = cache_dims(mapped)?;
    let s = arch.image_size;
    if dims[1..] != [3, s, s] {
        bail!(
            "{}: {split} images are {:?}, but the graphs take [N, 3, {s}, {s}] (IMAGE_SIZE differs between preprocess and export?)",
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

/// Normalized f32 input for rows `start..end`.
fn batch_input(pixels: &Pixels<'_>, start: usize, end: usize) -> Vec<f32> {
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
                imagenet::normalize_chw(src, dst);
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

/// Runs the backbone over one split. A second thread prepares the next batch while
/// ONNX Runtime runs the current one.
fn extract_split(
    session: &mut Session,
    mapped: &Mapped,
    split: Split,
    arch: &Arch,
    batch: usize,
    out_dir: &Path,
    layout: &Layout,
) -> Result<usize> {
    let n = cache_dims(mapped)?[0];
    let s = arch.image_size;
    let l3 = arch.layer3_size();
    let mut layer3 = RowWriter::create::<f32>(
        &out_dir.join(file_name(&layout.features(split, "layer3"))),
        &[n, arch.layer3_channels(), l3, l3],
    )?;
    let mut pooled = RowWriter::create::<f32>(
        &out_dir.join(file_name(&layout.features(split, "pooled"))),
        &[n, arch.features()],
    )?;
    let bar = rps_core::progress::bar(format!("extract {split}"), n, "images");
    let pixels = pixels(mapped)?;
    std::thread::scope(|scope| -> Result<()> {
        let (send, receive) = mpsc::sync_channel::<(usize, Vec<f32>)>(1);
        let pixels = &pixels;
        scope.spawn(move || {
            for start in (0..n).step_by(batch.max(1)) {
                let end = (start + batch).min(n);
                if send
                    .send((end - start, batch_input(pixels, start, end)))
                    .is_err()
                {
                    return;
                }
            }
        });
        for (rows, input) in receive {
            let tensor = Tensor::from_array(([rows, 3, s, s], input))?;
            let outputs = session.run(ort::inputs![names::IMAGES => tensor])?;
            layer3.write(outputs[names::LAYER3].try_extract_tensor::<f32>()?.1)?;
            pooled.write(outputs[names::POOLED].try_extract_tensor::<f32>()?.1)?;
            bar.inc(rows as u64);
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    layer3.finish()?;
    pooled.finish()?;
    Ok(n)
}
