//! What a finished run leaves: the trained weights, `params.csv`, `train.json` and,
//! last, `model.onnx` (make's sign that training finished).

use std::time::Instant;

use anyhow::Result;
use rps_core::names;
use rps_core::rows::{EpochRow, ParamsRow};
use rps_core::sidecar::{Sidecar, Stage, TrainDetails, TrainMeta, TrainSettings};
use rps_core::upstream::Upstream;
use rps_core::{
    ClassList, Device, Folder, GraphFile, Layout, Phase, ResultFile, Tensors, atomic, npy, table,
};
use rps_onnx::ModelFile;
use serde::Serialize;

use crate::phase::RunProgress;
use crate::{Config, Run};

/// The trained weights, parameter counts, metadata and the deployable model (the
/// best epoch's when a validation split picked one); the model is written last, as
/// make's sign that training finished.
pub(crate) fn finish(
    run: &Run,
    upstream: &Upstream,
    weights: &Tensors,
    progress: Option<&RunProgress>,
    epochs: &[EpochRow],
    started: Instant,
    device: Device,
) -> Result<()> {
    let layout = &run.config.layout;
    npy::write_tensors(&layout.result(ResultFile::Weights), weights)?;
    let counts = &upstream.export.details;
    let params = [
        (Phase::Head, counts.params_trainable_head),
        (Phase::Finetune, counts.params_trainable_finetune),
    ]
    .map(|(phase, trainable)| ParamsRow {
        phase,
        total: counts.params_total,
        trainable,
    });
    table::write(&layout.result(ResultFile::Params), &params)?;
    let best_epoch = progress.and_then(|p| p.best).map(|(_, epoch)| epoch);
    let last_epoch = epochs.last().map_or(0, |row| row.epoch);
    let details = TrainDetails {
        train_images: run.train_images.len(),
        val_images: run.val_images.len(),
        model_epoch: best_epoch.unwrap_or(last_epoch),
        class_weights: run.optimizer.class_weights.clone(),
        stopped_early: progress.map(|p| p.stopped.clone()).unwrap_or_default(),
    };
    let meta: TrainMeta = sidecar(run.config, details, device, started);
    meta.write(&layout.result(ResultFile::TrainMeta))?;
    let model_weights = match best_epoch {
        Some(_) => npy::read_tensors(&layout.result(ResultFile::Best))?,
        None => weights.clone(),
    };
    write_model(layout, &model_weights, &upstream.classes)?;
    let written = [
        ResultFile::Model,
        ResultFile::Weights,
        ResultFile::Best,
        ResultFile::Epochs,
        ResultFile::Params,
        ResultFile::TrainMeta,
        ResultFile::Checkpoint,
    ]
    .map(|file| layout.result(file));
    Ok(rps_core::outputs::record(layout, "train", &written)?)
}

/// A sidecar of rps-train's: `config`'s settings, what it read, where and how long
/// it ran, and `details`.
pub(crate) fn sidecar<D: Serialize + serde::de::DeserializeOwned>(
    config: &Config,
    details: D,
    device: Device,
    started: Instant,
) -> Sidecar<TrainSettings, D> {
    let layout = &config.layout;
    let settings = config.settings.clone();
    let mut meta = Sidecar::new(Stage::Train, env!("CARGO_PKG_VERSION"), settings, details);
    meta.inputs = [layout.dir(Folder::Features), layout.dir(Folder::Graphs)]
        .map(|p| p.display().to_string())
        .to_vec();
    meta.device = Some(device);
    meta.seconds = started.elapsed().as_secs_f64();
    meta
}

/// `results/model.onnx`: the exported classifier with `weights` and the class names.
fn write_model(layout: &Layout, weights: &Tensors, classes: &ClassList) -> Result<()> {
    let mut model = ModelFile::read(&layout.graph(GraphFile::Classifier))?;
    for (name, value) in weights {
        let value = value.as_standard_layout();
        let data = value.as_slice().expect("standard layout");
        model.set_initializer(name, value.shape(), data)?;
    }
    model.set_metadata(names::META_CLASSES, &classes.names().join("\n"));
    atomic::write_bytes(&layout.result(ResultFile::Model), &model.to_bytes())?;
    Ok(())
}
