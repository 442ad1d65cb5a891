//! Checkpoint and resume. After every epoch the checkpoint is written as one folder,
//! replaced by rename; `--resume` starts from it only once it is what it must be:
//! made with the same settings and step graph (network, depth, classes), at an epoch
//! of the phase it names, with every tensor the phase's step takes, of its shape and
//! finite, and the Adam step count the epochs imply. Each refusal names
//! `results/checkpoint/` and what is wrong; none reaches ONNX Runtime.

use std::path::Path;

use anyhow::{Context, Result, bail};
use ndarray::ArrayD;
use rps_core::names::StateKind;
use rps_core::rows::EpochRow;
use rps_core::sidecar::HeadNames;
use rps_core::{CheckpointFile, GraphFile, Layout, Phase, ResultFile, Tensors, atomic, npy, table};

use crate::Run;
use crate::phase::{PhasePlan, RunProgress};
use crate::runner::StepRunner;
use crate::state::{TrainState, first_not_finite};

/// Where training starts: the weights, and with `--resume` the last checkpoint and
/// the epochs.csv rows up to it.
pub(crate) struct Start {
    pub weights: Tensors,
    pub progress: Option<RunProgress>,
    pub state: Option<TrainState>,
    pub epochs: Vec<EpochRow>,
}

/// The exported backbone, or with `--resume` the last checkpoint.
pub(crate) fn start_or_resume(run: &Run) -> Result<Start> {
    let layout = &run.config.layout;
    let progress_path = layout.checkpoint(CheckpointFile::Progress);
    if run.config.resume && progress_path.exists() {
        let text = std::fs::read_to_string(&progress_path)
            .with_context(|| format!("reading {}", progress_path.display()))?;
        let progress: RunProgress = serde_json::from_str(&text)
            .with_context(|| format!("reading {}", progress_path.display()))?;
        let changed = progress.settings.differences(&run.config.settings);
        if !changed.is_empty() {
            bail!(
                "cannot resume {}: it was trained with other settings ({}); leave out --resume to start over",
                layout.result(ResultFile::Checkpoint).display(),
                changed.join(", ")
            );
        }
        check_progress(layout, &progress, run)?;
        let weights = npy::read_tensors(&layout.checkpoint(CheckpointFile::Weights))?;
        check_weights(layout, &weights, &run.head)?;
        let state = TrainState::load(&layout.checkpoint(CheckpointFile::State))?;
        let epochs_path = layout.result(ResultFile::Epochs);
        let rows: Vec<EpochRow> = table::read(&epochs_path).unwrap_or_default();
        let rows: Vec<EpochRow> = rows
            .into_iter()
            .filter(|r| r.epoch <= progress.epoch)
            .collect();
        if rows.len() != progress.epoch {
            bail!(
                "{}: has {} rows up to epoch {}; cannot resume",
                epochs_path.display(),
                rows.len(),
                progress.epoch
            );
        }
        eprintln!(
            "train: resuming after epoch {} ({})",
            progress.epoch,
            progress.phase.name()
        );
        return Ok(Start {
            weights,
            progress: Some(progress),
            state: Some(state),
            epochs: rows,
        });
    }
    Ok(Start {
        weights: npy::read_tensors(&layout.graph(GraphFile::Weights))?,
        progress: None,
        state: None,
        epochs: Vec::new(),
    })
}

/// Writes the checkpoint as a whole folder, replaced by rename.
pub(crate) fn save_checkpoint(
    layout: &Layout,
    state: &TrainState,
    weights: &Tensors,
    progress: &RunProgress,
) -> Result<()> {
    let tmp = atomic::TempDir::beside(&layout.result(ResultFile::Checkpoint))?;
    let inside = |file: CheckpointFile| tmp.path().join(file.file_name());
    state.save(&inside(CheckpointFile::State))?;
    npy::write_tensors(&inside(CheckpointFile::Weights), weights)?;
    atomic::write_bytes(
        &inside(CheckpointFile::Progress),
        serde_json::to_string_pretty(progress)?.as_bytes(),
    )?;
    tmp.commit()?;
    Ok(())
}

/// `why`, about `results/checkpoint/`, with the way out.
fn refuse(layout: &Layout, why: String) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot resume {}/: {why}; leave out --resume (or delete the folder) to start over",
        layout.result(ResultFile::Checkpoint).display()
    )
}

/// `file` holds `name` (what it `found`), of the shape `whose` says it must have:
/// refused, naming both, when it has none or another.
fn check_shape(
    layout: &Layout,
    file: &Path,
    (name, found): (&str, Option<&ArrayD<f32>>),
    (whose, expected): (&str, &[usize]),
) -> Result<()> {
    match found {
        None => Err(refuse(layout, format!("{} has no {name}", file.display()))),
        Some(found) if found.shape() != expected => Err(refuse(
            layout,
            format!(
                "{}: {name} is {:?}, {whose} {expected:?}",
                file.display(),
                found.shape()
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// The checkpoint was made with this export's step graph, at an epoch the settings
/// have, of the phase it names.
fn check_progress(layout: &Layout, progress: &RunProgress, run: &Run) -> Result<()> {
    if progress.graph.as_deref() != Some(run.graph.as_str()) {
        return Err(refuse(
            layout,
            "it was made with other graphs (another ARCH, UNFREEZE, WIDTH, IMAGE_SIZE or class count, or before they were recorded)".into(),
        ));
    }
    let s = &run.config.settings;
    let epoch = progress.epoch;
    let last_head = progress
        .stopped
        .iter()
        .find(|stop| stop.phase == Phase::Head)
        .map_or(s.head_epochs, |stop| stop.epoch);
    let (low, high) = match progress.phase {
        Phase::Head => (1, s.head_epochs),
        Phase::Finetune => (last_head + 1, last_head + s.ft_epochs),
    };
    if !(low..=high).contains(&epoch) {
        return Err(refuse(
            layout,
            format!(
                "its progress.json says epoch {epoch} of phase {}, which runs epochs {low} to {high}",
                progress.phase
            ),
        ));
    }
    Ok(())
}

/// The checkpoint's weights are the exported backbone's tensors with their shapes,
/// the head, and nothing else, every value finite.
fn check_weights(layout: &Layout, weights: &Tensors, head: &HeadNames) -> Result<()> {
    let exported = npy::read_tensors(&layout.graph(GraphFile::Weights))?;
    let file = layout.checkpoint(rps_core::CheckpointFile::Weights);
    for (name, value) in &exported {
        let holds = (name.as_str(), weights.get(name));
        check_shape(layout, &file, holds, ("the network's", value.shape()))?;
    }
    let known =
        |name: &String| exported.contains_key(name) || *name == head.weight || *name == head.bias;
    if let Some(extra) = weights.keys().find(|name| !known(name)) {
        return Err(refuse(
            layout,
            format!(
                "{} holds {extra}, which the network has not",
                file.display()
            ),
        ));
    }
    if let Some(name) = [&head.weight, &head.bias]
        .into_iter()
        .find(|name| !weights.contains_key(*name))
    {
        return Err(refuse(layout, format!("{} has no {name}", file.display())));
    }
    if let Some(name) = first_not_finite(weights) {
        return Err(refuse(
            layout,
            format!(
                "{}: {name} holds a value that is not finite",
                file.display()
            ),
        ));
    }
    Ok(())
}

/// The resumed optimizer state is what `step`'s graph takes, each tensor of its
/// shape and finite, with the Adam step count of the phase's epochs up to `epoch`.
pub(crate) fn check_state(
    layout: &Layout,
    state: &TrainState,
    epoch: usize,
    step: &StepRunner,
    plan: &PhasePlan,
) -> Result<()> {
    let file = layout.checkpoint(rps_core::CheckpointFile::State);
    let by_kind = [
        (StateKind::Param, &state.params, StateKind::Param),
        (StateKind::AdamM, &state.adam_m, StateKind::Param),
        (StateKind::AdamV, &state.adam_v, StateKind::Param),
        (StateKind::Buffer, &state.buffers, StateKind::Buffer),
    ];
    for (kind, tensors, shaped_as) in by_kind {
        let expected = step.state_shapes(shaped_as)?;
        for (name, shape) in &expected {
            let input = kind.input(name);
            let holds = (input.as_str(), tensors.get(name));
            check_shape(layout, &file, holds, ("the step graph takes", shape))?;
        }
        if let Some(extra) = tensors
            .keys()
            .find(|name| !expected.iter().any(|(n, _)| n == *name))
        {
            return Err(refuse(
                layout,
                format!(
                    "{} holds {}, which the step graph does not take",
                    file.display(),
                    kind.input(extra)
                ),
            ));
        }
        if let Some(name) = first_not_finite(tensors) {
            return Err(refuse(
                layout,
                format!(
                    "{}: {} holds a value that is not finite",
                    file.display(),
                    kind.input(name)
                ),
            ));
        }
    }
    let steps = (epoch + 1 - plan.first) as u64 * plan.steps_per_epoch as u64;
    if state.step != steps {
        return Err(refuse(
            layout,
            format!(
                "{} counts {} Adam steps, where epochs {} to {epoch} take {steps}",
                file.display(),
                state.step,
                plan.first
            ),
        ));
    }
    Ok(())
}
