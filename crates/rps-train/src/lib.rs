//! rps-train: the recipe's two phases on extracted features, run with the graphs
//! rps-export wrote. Phase 1 trains a new head on pooled features
//! (`head_step.onnx`); phase 2 trains the stages from `UNFREEZE` on (layer4 by
//! default; BatchNorm in train mode) and the head on the frozen layers' output (or
//! the cached images) with a fresh Adam (`finetune_step.onnx`). Every epoch scores the
//! test split with the phase's eval graph and appends a row to `epochs.csv`; a
//! checkpoint after every epoch makes `--resume` continue exactly where a killed run
//! stopped. Last, `model.onnx`: the exported classifier with the trained weights.

pub mod data;
pub mod runner;
pub mod state;

use std::time::Instant;

use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rps_core::names::{self, StateKind};
use rps_core::progress::{self, Units};
use rps_core::rows::{EpochRow, ParamsRow};
use rps_core::sidecar::{Stage, TrainDetails, TrainMeta, TrainSettings};
use rps_core::upstream::Upstream;
use rps_core::{
    CheckpointFile, ClassList, Device, Feature, Folder, GraphFile, Layout, ResultFile,
    SessionOptions, Split, Tensors, atomic, npy, table,
};
use rps_onnx::ModelFile;
use rps_score::{Features, Scorer};
use serde::{Deserialize, Serialize};

use data::BatchPosition;
use runner::{Shapes, StepRunner};
use state::TrainState;

#[derive(Debug, Clone)]
pub struct Config {
    pub layout: Layout,
    pub settings: TrainSettings,
    pub resume: bool,
    /// Stop after this epoch, as if killed (for testing `resume`).
    pub stop_after: Option<usize>,
    pub session: SessionOptions,
}

/// The recipe's two phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Head,
    Finetune,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Head => "head",
            Phase::Finetune => "finetune",
        }
    }

    /// The step and eval graphs the phase runs, and the features they take.
    fn graphs(self) -> (GraphFile, GraphFile, Feature) {
        match self {
            Phase::Head => (GraphFile::HeadStep, GraphFile::HeadEval, Feature::Pooled),
            Phase::Finetune => (
                GraphFile::FinetuneStep,
                GraphFile::FinetuneEval,
                Feature::Frozen,
            ),
        }
    }
}

/// What a checkpoint records beside the tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    /// The settings that got here: resuming takes the same.
    settings: TrainSettings,
    phase: Phase,
    /// The last completed epoch.
    epoch: usize,
    /// The lowest validation loss so far and its epoch (with `--val-fraction`).
    best: Option<(f64, usize)>,
}

#[derive(Debug)]
pub struct Report {
    pub epochs: Vec<EpochRow>,
    pub device: Device,
}

/// Everything one run needs that does not change between epochs.
struct Run<'a> {
    config: &'a Config,
    train: Features,
    test: Features,
    train_images: Vec<usize>,
    val_images: Vec<usize>,
}

/// The two graphs a phase runs, each in one session for the whole phase.
struct PhaseGraphs {
    step: StepRunner,
    eval: Scorer,
    feature: Feature,
}

impl PhaseGraphs {
    /// Opens the phase's graphs and checks that the features fit them.
    fn open(run: &Run, phase: Phase) -> Result<Self> {
        let layout = &run.config.layout;
        let (step, eval, feature) = phase.graphs();
        let weight_decay = run.config.settings.weight_decay as f32;
        let step = StepRunner::open(layout, step, run.config.session, weight_decay)?;
        let eval = Scorer::open(layout, eval, run.config.session)?;
        let dims = step.dims(names::FEATURES)?;
        for split in [&run.train, &run.test] {
            split.check_fits(feature, &dims, step.graph())?;
        }
        Ok(Self {
            step,
            eval,
            feature,
        })
    }
}

pub fn run(config: &Config) -> Result<Report> {
    let started = Instant::now();
    let layout = &config.layout;
    let settings = &config.settings;
    let upstream = Upstream::read(layout)?;
    let unfreeze = upstream.export.settings.unfreeze;
    let classes = upstream.classes.len();
    let views = upstream.cache.settings.views;
    let train = Features::load(layout, Split::Train, views, unfreeze, classes)?;
    let test = Features::load(layout, Split::Test, 1, unfreeze, classes)?;
    let (train_images, val_images) =
        data::split_validation(&train, settings.val_fraction, settings.seed);
    let run = Run {
        config,
        train,
        test,
        train_images,
        val_images,
    };
    run.check_nothing_empty(&upstream.classes)?;

    let results = layout.dir(Folder::Results);
    std::fs::create_dir_all(&results).with_context(|| format!("creating {}", results.display()))?;
    let Start {
        mut weights,
        mut progress,
        state: mut resumed_state,
        mut epochs,
    } = start_or_resume(&run)?;
    let mut log = table::Appender::create(&layout.result(ResultFile::Epochs))?;
    for row in &epochs {
        log.push(row)?;
    }
    let mut device = None;
    for plan in run.phases() {
        let phase = plan.phase;
        if progress.as_ref().is_some_and(|p| p.phase > phase) {
            continue;
        }
        let mut graphs = PhaseGraphs::open(&run, phase)?;
        device = Some(graphs.step.device);
        if progress.is_none() && phase == Phase::Head {
            let head_params = graphs.step.state_shapes(StateKind::Param)?;
            weights.extend(new_head(&head_params, settings.seed)?);
        }
        let mut state = match resumed_state.take() {
            Some(state) if progress.as_ref().is_some_and(|p| p.phase == phase) => state,
            _ => TrainState::fresh(
                &weights,
                &graphs.step.state_shapes(StateKind::Param)?,
                &graphs.step.state_shapes(StateKind::Buffer)?,
            )?,
        };
        let first = progress
            .as_ref()
            .filter(|p| p.phase == phase)
            .map_or(plan.first, |p| p.epoch + 1);
        for epoch in first..=plan.last {
            let row = run.epoch(&mut graphs, &mut state, &mut weights, &plan, epoch)?;
            println!("{}", summary_line(&row));
            log.push(&row)?;
            let (next, improved) = Progress::after(progress.as_ref(), &row, phase, settings);
            if improved {
                npy::write_tensors(&layout.result(ResultFile::Best), &weights)?;
            }
            save_checkpoint(layout, &state, &weights, &next)?;
            epochs.push(row);
            progress = Some(next);
            if config.stop_after == Some(epoch) {
                bail!("stopped after epoch {epoch} as asked");
            }
        }
    }
    let device = device.unwrap_or(Device::Cpu);
    let best_epoch = progress.and_then(|p| p.best).map(|(_, epoch)| epoch);
    finish(&run, &upstream, &weights, best_epoch, started, device)?;
    Ok(Report { epochs, device })
}

/// One phase's epochs (numbered on across phases) and learning rate.
struct PhasePlan {
    phase: Phase,
    first: usize,
    last: usize,
    lr: f64,
}

impl Progress {
    /// The progress after `row`'s epoch of `phase`, and whether its validation loss
    /// is the best yet.
    fn after(
        previous: Option<&Progress>,
        row: &EpochRow,
        phase: Phase,
        settings: &TrainSettings,
    ) -> (Self, bool) {
        let best = previous.and_then(|p| p.best);
        let improved = row
            .val_loss
            .is_some_and(|l| best.is_none_or(|(b, _)| l < b));
        let next = Progress {
            settings: settings.clone(),
            phase,
            epoch: row.epoch,
            best: match row.val_loss {
                Some(loss) if improved => Some((loss, row.epoch)),
                _ => best,
            },
        };
        (next, improved)
    }
}

/// The line printed after each epoch.
fn summary_line(row: &EpochRow) -> String {
    let val = match (row.val_loss, row.val_acc) {
        (Some(loss), Some(acc)) => format!(" | val loss {loss:.4} acc {acc:.4}"),
        _ => String::new(),
    };
    format!(
        "epoch {:>3} {:<8} train loss {:.4} acc {:.4} | test loss {:.4} acc {:.4}{val}",
        row.epoch, row.phase, row.train_loss, row.train_acc, row.test_loss, row.test_acc
    )
}

impl Run<'_> {
    /// Both phases, epochs numbered on across them.
    fn phases(&self) -> [PhasePlan; 2] {
        let s = &self.config.settings;
        [
            PhasePlan {
                phase: Phase::Head,
                first: 1,
                last: s.head_epochs,
                lr: s.head_lr,
            },
            PhasePlan {
                phase: Phase::Finetune,
                first: s.head_epochs + 1,
                last: s.head_epochs + s.ft_epochs,
                lr: s.ft_lr,
            },
        ]
    }

    /// Refuses to train on nothing: every class needs a training image, and the test
    /// split (and the validation split, when asked for) an image at all.
    fn check_nothing_empty(&self, classes: &ClassList) -> Result<()> {
        let val_fraction = self.config.settings.val_fraction;
        let held_out = if val_fraction > 0.0 {
            format!(" once --val-fraction {val_fraction} is held out")
        } else {
            String::new()
        };
        for (label, class) in classes.names().iter().enumerate() {
            let trains = |&i: &usize| self.train.image_label(i) == label as i64;
            if !self.train_images.iter().any(trains) {
                bail!("class {class:?} has no training image{held_out}");
            }
        }
        if val_fraction > 0.0 && self.val_images.is_empty() {
            bail!(
                "--val-fraction {val_fraction} holds out no image: raise it, or use 0 for no validation split"
            );
        }
        if self.test.images() == 0 {
            bail!("the test split has no image");
        }
        Ok(())
    }

    /// One epoch: train on the epoch's view, then score the test split (and the
    /// held-out images) with the updated weights.
    fn epoch(
        &self,
        graphs: &mut PhaseGraphs,
        state: &mut TrainState,
        weights: &mut Tensors,
        plan: &PhasePlan,
        epoch: usize,
    ) -> Result<EpochRow> {
        let started = Instant::now();
        let (train_loss, train_acc) = self.train_epoch(graphs, state, epoch, plan.lr)?;
        weights.extend(state.params.clone());
        weights.extend(state.buffers.clone());
        let test_images: Vec<usize> = (0..self.test.images()).collect();
        let (test_loss, test_acc) = self.score(graphs, &self.test, &test_images, weights)?;
        let val = if self.val_images.is_empty() {
            None
        } else {
            Some(self.score(graphs, &self.train, &self.val_images, weights)?)
        };
        Ok(EpochRow {
            epoch,
            phase: plan.phase.name().into(),
            train_loss,
            train_acc,
            test_loss,
            test_acc,
            lr: plan.lr,
            seconds: started.elapsed().as_secs_f64(),
            val_loss: val.map(|v| v.0),
            val_acc: val.map(|v| v.1),
        })
    }

    /// One epoch over the training images (this epoch's view), in train mode.
    fn train_epoch(
        &self,
        graphs: &mut PhaseGraphs,
        state: &mut TrainState,
        epoch: usize,
        lr: f64,
    ) -> Result<(f64, f64)> {
        let s = &self.config.settings;
        let view = epoch - 1;
        let order = data::shuffled(&self.train_images, s.seed, epoch);
        let feature = graphs.feature;
        let steps = progress::Progress::new(
            format!("epoch {epoch}"),
            order.len().div_ceil(s.batch) as u64,
            Units::Count("steps"),
        );
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for (step, images) in order.chunks(s.batch).enumerate() {
            let rows: Vec<usize> = images.iter().map(|&i| self.train.row(i, view)).collect();
            let labels = self.train.labels_of(&rows);
            let features = self.train.rows(feature, &rows)?;
            let at = BatchPosition {
                seed: s.seed,
                epoch,
                step,
            };
            let width = self.train.pooled.ncols();
            let mask = data::dropout_mask(rows.len(), width, s.dropout, at);
            let out = graphs
                .step
                .step(state, &features, &labels, &mask, lr as f32)?;
            if !out.loss.is_finite() {
                let kept = match epoch - 1 {
                    0 => "no epoch had completed, so nothing was saved".to_string(),
                    last => format!("results/checkpoint keeps epoch {last}"),
                };
                bail!(
                    "training diverged: loss {} at epoch {epoch}, step {} (is the learning rate too high?); {kept}",
                    out.loss,
                    step + 1
                );
            }
            loss_sum += out.loss as f64 * rows.len() as f64;
            correct += out.correct(&labels);
            steps.inc(1);
        }
        drop(steps);
        let n = order.len().max(1) as f64;
        Ok((loss_sum / n, correct as f64 / n))
    }

    /// Mean loss and accuracy of `images` (view 0) with the phase's eval graph.
    fn score(
        &self,
        graphs: &mut PhaseGraphs,
        split: &Features,
        images: &[usize],
        weights: &Tensors,
    ) -> Result<(f64, f64)> {
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for chunk in images.chunks(self.config.settings.batch) {
            let rows: Vec<usize> = chunk.iter().map(|&i| split.row(i, 0)).collect();
            let labels = split.labels_of(&rows);
            let features = split.rows(graphs.feature, &rows)?;
            let out = graphs.eval.score(&features, &labels, weights)?;
            loss_sum += out.loss as f64 * rows.len() as f64;
            correct += out.correct(&labels);
        }
        let n = images.len().max(1) as f64;
        Ok((loss_sum / n, correct as f64 / n))
    }
}

/// The new head's own random stream of `SEED` ("head"), so that it does not depend
/// on anything else drawn.
const HEAD_STREAM: u64 = 0x6865_6164;

/// A fresh head, drawn as `nn.Linear` draws one: the head step's parameters, a weight
/// `[classes, features]` and a bias `[classes]`.
fn new_head(params: &Shapes, seed: u64) -> Result<Tensors> {
    let shape = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, shape)| shape)
            .with_context(|| format!("the head step takes no {name}"))
    };
    let weight = shape(names::HEAD_WEIGHT)?;
    if weight.len() != 2 || shape(names::HEAD_BIAS)? != &[weight[0]] {
        bail!(
            "the head step's {} and {} do not make a Linear layer",
            names::HEAD_WEIGHT,
            names::HEAD_BIAS
        );
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ HEAD_STREAM);
    let (w, b) = rps_core::init::linear(weight[1], weight[0], &mut rng);
    Ok(Tensors::from([
        (names::HEAD_WEIGHT.to_string(), w),
        (names::HEAD_BIAS.to_string(), b),
    ]))
}

/// Where training starts: the weights, and with `--resume` the last checkpoint and
/// the epochs.csv rows up to it.
struct Start {
    weights: Tensors,
    progress: Option<Progress>,
    state: Option<TrainState>,
    epochs: Vec<EpochRow>,
}

/// The exported backbone, or with `--resume` the last checkpoint.
fn start_or_resume(run: &Run) -> Result<Start> {
    let layout = &run.config.layout;
    let progress_path = layout.checkpoint(CheckpointFile::Progress);
    if run.config.resume && progress_path.exists() {
        let text = std::fs::read_to_string(&progress_path)
            .with_context(|| format!("reading {}", progress_path.display()))?;
        let progress: Progress = serde_json::from_str(&text)
            .with_context(|| format!("reading {}", progress_path.display()))?;
        let changed = differences(&progress.settings, &run.config.settings)?;
        if !changed.is_empty() {
            bail!(
                "cannot resume {}: it was trained with other settings ({}); leave out --resume to start over",
                layout.result(ResultFile::Checkpoint).display(),
                changed.join(", ")
            );
        }
        let weights = npy::read_tensors(&layout.checkpoint(CheckpointFile::Weights))?;
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

/// `NAME: A then, B now` for each setting that differs.
fn differences(then: &TrainSettings, now: &TrainSettings) -> Result<Vec<String>> {
    let (serde_json::Value::Object(then), serde_json::Value::Object(now)) =
        (serde_json::to_value(then)?, serde_json::to_value(now)?)
    else {
        unreachable!("settings serialize as an object");
    };
    Ok(then
        .iter()
        .filter(|(name, value)| now.get(*name) != Some(value))
        .map(|(name, value)| {
            let current = now.get(name).map_or("nothing".into(), |v| v.to_string());
            format!("{name}: {value} then, {current} now")
        })
        .collect())
}

/// Writes the checkpoint as a whole folder, replaced by rename.
fn save_checkpoint(
    layout: &Layout,
    state: &TrainState,
    weights: &Tensors,
    progress: &Progress,
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

/// The trained weights, parameter counts, metadata and the deployable model (the
/// best epoch's when a validation split picked one); the model is written last, as
/// make's sign that training finished.
fn finish(
    run: &Run,
    upstream: &Upstream,
    weights: &Tensors,
    best_epoch: Option<usize>,
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
        phase: phase.name().into(),
        total: counts.params_total,
        trainable,
    });
    table::write(&layout.result(ResultFile::Params), &params)?;
    let last_epoch = run.phases()[1].last;
    let details = TrainDetails {
        train_images: run.train_images.len(),
        val_images: run.val_images.len(),
        model_epoch: best_epoch.unwrap_or(last_epoch),
    };
    let settings = run.config.settings.clone();
    let mut meta = TrainMeta::new(Stage::Train, env!("CARGO_PKG_VERSION"), settings, details);
    meta.inputs = [layout.dir(Folder::Features), layout.dir(Folder::Graphs)]
        .map(|p| p.display().to_string())
        .to_vec();
    meta.device = Some(device);
    meta.seconds = started.elapsed().as_secs_f64();
    meta.write(&layout.result(ResultFile::TrainMeta))?;
    let model_weights = match best_epoch {
        Some(_) => npy::read_tensors(&layout.result(ResultFile::Best))?,
        None => weights.clone(),
    };
    write_model(layout, &model_weights, &upstream.classes)
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
