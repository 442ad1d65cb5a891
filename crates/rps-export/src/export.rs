//! The `rps-export` stage: weights in, every graph and the starting weights out.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use rps_core::{GraphFile, Metadata, atomic, npy};

use crate::resnet::{Arch, ParamCounts};
use crate::weights::{self, Tensors};
use crate::{infer, train};

/// Where the weights come from.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    /// Seeded random initialization, for tests and for people without weights.
    Random(u64),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub source: Source,
    pub out: PathBuf,
    pub arch: Arch,
    /// Seeds the new head's initialization.
    pub seed: u64,
}

#[derive(Debug)]
pub struct Report {
    pub counts: ParamCounts,
    pub written: Vec<PathBuf>,
}

pub fn run(config: &Config) -> Result<Report> {
    let started = Instant::now();
    let arch = &config.arch;
    let (backbone, provenance) = load_backbone(&config.source, arch)?;
    let transfer = transfer_weights(&backbone, arch, config.seed);
    let imagenet_arch = Arch {
        classes: backbone[crate::resnet::HEAD_WEIGHT].shape()[0],
        ..*arch
    };

    let graphs: [(GraphFile, Vec<u8>); 7] = [
        (GraphFile::Backbone, infer::backbone(arch, &transfer)),
        (
            GraphFile::Imagenet,
            infer::classifier(&imagenet_arch, &backbone, "imagenet", None),
        ),
        (GraphFile::HeadStep, train::head_step(arch)),
        (GraphFile::HeadEval, infer::head_eval(arch, &transfer)),
        (GraphFile::FinetuneStep, train::finetune_step(arch)),
        (
            GraphFile::FinetuneEval,
            infer::finetune_eval(arch, &transfer),
        ),
        (
            GraphFile::Model,
            infer::classifier(arch, &transfer, "model", None),
        ),
    ];
    let mut written = Vec::new();
    for (file, bytes) in graphs {
        let path = config.out.join(file.file_name());
        atomic::write_bytes(&path, &bytes)?;
        written.push(path);
    }
    let weights_path = config.out.join(GraphFile::Weights.file_name());
    npy::write_npz(&weights_path, transfer.iter().map(|(k, v)| (k.as_str(), v)))?;
    written.push(weights_path);

    let counts = arch.param_counts();
    let mut meta = Metadata::new("export", env!("CARGO_PKG_VERSION"))
        .setting("width", arch.width)
        .setting("image_size", arch.image_size)
        .setting("classes", arch.classes)
        .setting("seed", config.seed)
        .setting("weights", &provenance);
    if let Source::File(path) = &config.source {
        meta = meta.input(path);
    }
    meta.detail("params_total", counts.total);
    meta.detail("params_trainable_head", counts.head);
    meta.detail("params_trainable_finetune", counts.finetune);
    meta.seconds = started.elapsed().as_secs_f64();
    let meta_path = config.out.join(GraphFile::Meta.file_name());
    meta.write(&meta_path)?;
    written.push(meta_path);
    Ok(Report { counts, written })
}

/// What export.json says of the weights: a file with its sha256, or random init.
#[derive(Debug, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Provenance {
    File { path: String, sha256: String },
    Random { seed: u64 },
}

fn load_backbone(source: &Source, arch: &Arch) -> Result<(Tensors, Provenance)> {
    match source {
        Source::File(path) => {
            let (tensors, sha256) = weights::load_file(path)?;
            weights::check_backbone(&tensors, arch, path)?;
            if !tensors.contains_key(crate::resnet::HEAD_WEIGHT) {
                anyhow::bail!("{}: no ImageNet head (fc.weight)", path.display());
            }
            let path = path.display().to_string();
            Ok((tensors, Provenance::File { path, sha256 }))
        }
        Source::Random(seed) => Ok((
            weights::random_backbone(arch, *seed),
            Provenance::Random { seed: *seed },
        )),
    }
}

/// The transfer model: the backbone with its ImageNet fc replaced by the new head.
fn transfer_weights(backbone: &Tensors, arch: &Arch, seed: u64) -> Tensors {
    let mut tensors = backbone.clone();
    tensors.extend(weights::new_head(arch, seed));
    tensors
}

/// The architecture the graphs in `layout` were exported for (from export.json).
pub fn exported_arch(layout: &rps_core::Layout) -> Result<Arch> {
    let path = layout.graph(GraphFile::Meta);
    let meta = Metadata::read(&path).context("run `make export` first")?;
    let get = |key: &str| -> Result<usize> {
        meta.require(key, &path)?
            .as_u64()
            .map(|v| v as usize)
            .with_context(|| format!("{}: {key} is not a number", path.display()))
    };
    Ok(Arch {
        width: get("width")?,
        image_size: get("image_size")?,
        classes: get("classes")?,
    })
}

/// Reads the starting weights written by [`run`].
pub fn read_weights(path: &Path) -> Result<Tensors> {
    let mut npz = npy::Npz::open(path)?;
    let mut tensors = Tensors::new();
    for name in npz.names()? {
        let array = npz
            .get::<f32>(&name)
            .with_context(|| format!("reading {}", path.display()))?;
        tensors.insert(name, array);
    }
    Ok(tensors)
}
