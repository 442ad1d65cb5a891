//! The `rps-export` stage: weights in, every graph and the backbone's weights out,
//! with `export.json` recording the settings and each file's digest.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ndarray::{ArrayD, IxDyn};
use rps_core::classes::MIN_CLASSES;
use rps_core::rows::DatasetCount;
use rps_core::sidecar::{
    ExportDetails, ExportMeta, ExportSettings, FileDigest, HeadNames, Stage, WeightsSource,
};
use rps_core::{
    Folder, FtBn, GraphFile, Layout, Split, Tensors, Unfreeze, Width, atomic, npy, table,
};

use crate::train::{Convolutions, Gradients};
use crate::{infer, train};
use rps_model::network::{Arch, Net};
use rps_model::summary;
use rps_model::weights;

/// Where the weights come from.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    /// Seeded random initialization, for tests and for people without weights.
    Random(u64),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub layout: Layout,
    pub source: Source,
    pub net: Net,
    pub width: Width,
    pub image_size: u32,
    /// Classes of the new head; `None` counts the fetched dataset's classes.
    pub classes: Option<usize>,
    /// The first stage phase 2 trains.
    pub unfreeze: Unfreeze,
}

impl Config {
    /// The export of `arch` (its class count given), training from `unfreeze`, from
    /// `source` into `layout`.
    pub fn for_arch(layout: &Layout, source: Source, arch: &Arch, unfreeze: Unfreeze) -> Self {
        Self {
            unfreeze,
            layout: layout.clone(),
            source,
            net: arch.net,
            width: Width::Channels(arch.width),
            image_size: arch.image_size as u32,
            classes: Some(arch.classes),
        }
    }

    /// The model the settings describe, its classes counted in the fetched dataset
    /// when not given.
    pub fn arch(&self) -> Result<Arch> {
        let width = self
            .net
            .check_width(self.width.channels(self.net.full_width()))
            .map_err(|why| anyhow::anyhow!("WIDTH={} (--width): {why}", self.width))?;
        Ok(Arch {
            net: self.net,
            width,
            image_size: self.image_size as usize,
            classes: match self.classes {
                Some(classes) => classes,
                None => dataset_classes(&self.layout)?,
            },
        })
    }

    /// Where phase 2 starts, checked against `arch` and named (`last` resolved).
    pub fn unfreeze(&self, arch: &Arch) -> Result<Unfreeze> {
        arch.resolve(self.unfreeze)
            .map_err(|why| anyhow::anyhow!("UNFREEZE={} (--unfreeze): {why}", self.unfreeze))
    }
}

/// The model summary as a terminal table (what `graphs/summary.csv` holds).
pub fn summary(config: &Config) -> Result<String> {
    let arch = config.arch()?;
    let rows = summary::layers(&arch, config.unfreeze(&arch)?);
    Ok(summary::table(&rows, &summary::cuts(&arch)))
}

pub fn run(config: &Config) -> Result<ExportMeta> {
    let started = Instant::now();
    let layout = &config.layout;
    let _lock = rps_core::lock::DataLock::acquire(layout, env!("CARGO_PKG_NAME"))?;
    let arch = config.arch()?;
    let unfreeze = config.unfreeze(&arch)?;
    check_memory(&arch)?;
    let (backbone, source) = load_backbone(&config.source, &arch)?;
    let imagenet_arch = Arch {
        classes: backbone[&arch.head().tensor("weight")].shape()[0],
        ..arch
    };
    let frozen = without_head(backbone.clone(), &arch);
    let template = with_zero_head(frozen.clone(), &arch);
    let graphs = [
        (
            GraphFile::Backbone,
            infer::backbone(&arch, &frozen, unfreeze),
        ),
        (
            GraphFile::Imagenet,
            infer::classifier(&imagenet_arch, &backbone, "imagenet"),
        ),
        (
            GraphFile::HeadStep,
            train::head_step(&arch, Gradients::Internal),
        ),
        (GraphFile::HeadEval, train::head_eval(&arch)),
        (
            GraphFile::FinetuneStep,
            train::finetune_step(
                &arch,
                unfreeze,
                Convolutions::Fastest,
                FtBn::Train,
                Gradients::Internal,
            ),
        ),
        (
            GraphFile::FinetuneStepBnEval,
            train::finetune_step(
                &arch,
                unfreeze,
                Convolutions::Fastest,
                FtBn::Eval,
                Gradients::Internal,
            ),
        ),
        (
            GraphFile::FinetuneEval,
            train::finetune_eval(&arch, unfreeze, Convolutions::Fastest),
        ),
        (
            GraphFile::Classifier,
            infer::classifier(&arch, &template, "classifier"),
        ),
    ];
    let mut files = Vec::new();
    for (file, bytes) in graphs {
        atomic::write_bytes(&layout.graph(file), &bytes)?;
        files.push(digest(file, &bytes));
    }
    npy::write_tensors(&layout.graph(GraphFile::Weights), &frozen)?;
    files.push(written(layout, GraphFile::Weights)?);
    let rows = summary::layers(&arch, unfreeze);
    table::write(&layout.graph(GraphFile::Summary), &rows)?;
    files.push(written(layout, GraphFile::Summary)?);

    let counts = arch.param_counts(unfreeze);
    let settings = ExportSettings {
        arch: arch.net.name().into(),
        width: arch.width,
        image_size: config.image_size,
        classes: arch.classes,
        weights: source,
        unfreeze,
    };
    let [(weight, _), (bias, _)] = arch.head_shapes(arch.classes);
    let details = ExportDetails {
        params_total: counts.total,
        params_trainable_head: counts.head,
        params_trainable_finetune: counts.finetune,
        head: HeadNames { weight, bias },
        normalization: arch.normalization(),
        finetune_floats_per_image: arch.step_floats_per_image(unfreeze),
        backbone_floats_per_image: arch.forward_floats_per_image(Unfreeze::All),
        eval_floats_per_image: arch.forward_floats_per_image(unfreeze),
        files,
    };
    let mut meta = ExportMeta::new(Stage::Export, env!("CARGO_PKG_VERSION"), settings, details);
    if let Source::File(path) = &config.source {
        meta.inputs.push(path.display().to_string());
    }
    if config.classes.is_none() {
        meta.inputs
            .push(layout.dataset_summary().display().to_string());
    }
    meta.seconds = started.elapsed().as_secs_f64();
    // Written last: make's sign that the export finished.
    meta.write(&layout.graph(GraphFile::Meta))?;
    rps_core::outputs::record_folder(layout, "export", &layout.dir(Folder::Graphs))?;
    Ok(meta)
}

/// The files under `graphs/` that no longer match `export.json` (missing, cut or
/// changed), each with what is wrong.
pub fn verify(layout: &Layout) -> Result<Vec<String>> {
    let meta = ExportMeta::read(&layout.graph(GraphFile::Meta))?;
    let mut problems = Vec::new();
    for file in &meta.details.files {
        let path = layout.dir(Folder::Graphs).join(&file.name);
        let problem = match std::fs::read(&path) {
            Err(e) => Some(e.to_string()),
            Ok(bytes) => file.mismatch(&bytes),
        };
        if let Some(problem) = problem {
            problems.push(format!("{}: {problem}", path.display()));
        }
    }
    Ok(problems)
}

fn digest(file: GraphFile, bytes: &[u8]) -> FileDigest {
    FileDigest::of(file.file_name(), bytes)
}

/// The digest of `file` as it was written.
fn written(layout: &Layout, file: GraphFile) -> Result<FileDigest> {
    let path = layout.graph(file);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(digest(file, &bytes))
}

/// The classes of the fetched dataset's training split (`rps/summary.csv`).
fn dataset_classes(layout: &Layout) -> Result<usize> {
    let path = layout.dataset_summary();
    let rows: Vec<DatasetCount> = table::read(&path).with_context(|| {
        "the class count is read from the fetched dataset when --classes is not given: \
         run `make fetch` first, or pass --classes (CLASSES=N)"
    })?;
    let classes: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.split == Split::Train)
        .map(|r| r.class.as_str())
        .collect();
    if classes.len() < MIN_CLASSES {
        bail!(
            "{}: lists {} training classes; a classifier needs at least {MIN_CLASSES} \
             (`make fetch` checks the archives and rewrites it)",
            path.display(),
            classes.len()
        );
    }
    Ok(classes.len())
}

/// Export holds the network's weights at least twice (as tensors, and in a graph
/// being written): refused before drawing or reading any when even that is more
/// than this process may have.
fn check_memory(arch: &Arch) -> Result<()> {
    let imagenet_head = weights::IMAGENET_CLASSES * (arch.features() + 1);
    let params = (arch.param_counts(Unfreeze::Last).total + imagenet_head) as u64;
    let needed = 2 * 4 * params;
    match rps_core::memory::short_of(needed) {
        Some(free) => bail!(
            "{} at width {}, {} pixels and {} classes has {params} parameters: export needs at least {} \
             (two copies of them), and {} is free; lower WIDTH or CLASSES",
            arch.net.name(),
            arch.width,
            arch.image_size,
            arch.classes,
            rps_core::memory::describe(needed),
            rps_core::memory::describe(free)
        ),
        None => Ok(()),
    }
}

fn load_backbone(source: &Source, arch: &Arch) -> Result<(Tensors, WeightsSource)> {
    match source {
        Source::File(path) => {
            let (tensors, sha256) = rps_weights::load_file(path)?;
            let checked = weights::check_weights(&tensors, arch, path)?;
            if !checked.unexpected.is_empty() {
                eprintln!(
                    "export: warning: {}: {} tensors no {} has, left unused: {}",
                    path.display(),
                    checked.unexpected.len(),
                    arch.net.name(),
                    checked.unexpected.join(", ")
                );
            }
            let path = path.display().to_string();
            Ok((tensors, WeightsSource::File { path, sha256 }))
        }
        Source::Random(seed) => Ok((
            weights::random_backbone(arch, *seed),
            WeightsSource::Random { seed: *seed },
        )),
    }
}

/// The backbone without its ImageNet classifier: what training starts from.
fn without_head(mut tensors: Tensors, arch: &Arch) -> Tensors {
    let head = arch.head();
    tensors.retain(|name, _| !head.owns(name));
    tensors
}

/// `frozen` with an all-zero head of `arch`'s classes, which train overwrites.
fn with_zero_head(mut frozen: Tensors, arch: &Arch) -> Tensors {
    for (name, shape) in arch.head_shapes(arch.classes) {
        frozen.insert(name, ArrayD::zeros(IxDyn(&shape)));
    }
    frozen
}
