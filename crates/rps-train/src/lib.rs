//! rps-train: the recipe's two phases on extracted features, run with the graphs
//! rps-export wrote. Phase 1 trains a new head on pooled features
//! (`head_step.onnx`); phase 2 trains the stages from `UNFREEZE` on (layer4 by
//! default; BatchNorm in train mode) and the head on the frozen layers' output (or
//! the cached images) with a fresh Adam (`finetune_step.onnx`). Every epoch scores the
//! test split with the phase's eval graph and appends a row to `epochs.csv`; a
//! checkpoint after every epoch makes `--resume` continue exactly where a killed run
//! stopped. Last, `model.onnx`: the exported classifier with the trained weights.
//! Beyond the recipe: a schedule per phase ([`schedule`]), a rate per stage, class
//! weights, early stopping (`--patience`), and the learning-rate finder
//! ([`lr_find`]), which writes only its own files.

mod checkpoint;
pub mod data;
mod head;
pub mod lr_find;
mod outputs;
mod phase;
pub mod runner;
pub mod schedule;
pub mod state;

use std::time::Instant;

use anyhow::{Context, Result, bail};
use rps_core::names::{self, StateKind};
use rps_core::progress::{self, Units};
use rps_core::rows::EpochRow;
use rps_core::sidecar::{ExportDetails, HeadNames, TrainSettings};
use rps_core::upstream::Upstream;
use rps_core::{
    CacheFile, ClassList, Device, Feature, Folder, FtBn, GraphFile, Layout, Phase, ResultFile,
    SessionOptions, Split, Tensors, npy, table,
};
use rps_score::{Features, Scorer};

use checkpoint::{Start, save_checkpoint, start_or_resume};
use data::BatchPosition;
use head::new_head;
use outputs::finish;
use phase::{PhaseLoop, PhasePlan, RunProgress, end_of};
use runner::{Optimizer, StepRates, StepRunner};
use schedule::PhaseSchedule;
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

/// The step and eval graphs `phase` runs (phase 2's step by the BatchNorm mode
/// `ft_bn`), and the features they take.
fn phase_graphs(phase: Phase, ft_bn: FtBn) -> (GraphFile, GraphFile, Feature) {
    match phase {
        Phase::Head => (GraphFile::HeadStep, GraphFile::HeadEval, Feature::Pooled),
        Phase::Finetune => {
            let step = match ft_bn {
                FtBn::Train => GraphFile::FinetuneStep,
                FtBn::Eval => GraphFile::FinetuneStepBnEval,
            };
            (step, GraphFile::FinetuneEval, Feature::Frozen)
        }
    }
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
    optimizer: Optimizer,
    /// The new head's tensors, as export names them.
    head: HeadNames,
    /// The sha256 export.json records for the phase 2 step graph.
    graph: String,
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
        let (step, eval, feature) = phase_graphs(phase, run.config.settings.ft_bn);
        let optimizer = run.optimizer.clone();
        let session = run.config.session.for_training();
        let step = StepRunner::open(layout, step, session, optimizer)?;
        run.check_stage_rates(phase, &step)?;
        let eval = Scorer::open(layout, eval, session)?;
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
    let _lock = rps_core::lock::DataLock::acquire(layout, env!("CARGO_PKG_NAME"))?;
    let (run, upstream) = Run::prepare(config)?;
    let results = layout.dir(Folder::Results);
    std::fs::create_dir_all(&results).with_context(|| format!("creating {}", results.display()))?;
    let Start {
        mut weights,
        mut progress,
        state: mut resumed_state,
        epochs,
    } = start_or_resume(&run)?;
    let mut log = table::Appender::create(&layout.result(ResultFile::Epochs))?;
    for row in &epochs {
        log.push(row)?;
    }
    let mut recorder = Recorder {
        layout,
        log,
        epochs,
        stop_after: config.stop_after,
    };
    let mut device = None;
    let mut first = 1;
    for phase in Phase::ALL {
        let plan = run.plan(phase, first);
        if !progress.as_ref().is_some_and(|p| p.finished(phase)) {
            let mut graphs = PhaseGraphs::open(&run, phase)?;
            device = Some(graphs.step.device);
            let mut state = match (resumed_state.take(), &progress) {
                (Some(state), Some(p)) if p.phase == phase => {
                    checkpoint::check_state(layout, &state, p.epoch, &graphs.step, &plan)?;
                    state
                }
                _ => run.fresh_state(&graphs, &mut weights, phase, progress.is_none())?,
            };
            let start = progress
                .as_ref()
                .filter(|p| p.phase == phase)
                .map_or(plan.first, |p| p.epoch + 1);
            let phase_run = (&mut graphs, &mut state, &mut weights);
            run.train_phase(phase_run, &plan, start, &mut progress, |epoch| {
                recorder.record(epoch)
            })?;
        }
        first = end_of(&plan, progress.as_ref()) + 1;
    }
    let epochs = recorder.epochs;
    let device = device.unwrap_or(Device::Cpu);
    finish(
        &run,
        &upstream,
        &weights,
        progress.as_ref(),
        &epochs,
        started,
        device,
    )?;
    Ok(Report { epochs, device })
}

/// An epoch just trained and scored: its row, the progress after it, whether its
/// validation loss is the best yet, and the state it left.
struct EpochDone<'a> {
    row: &'a EpochRow,
    progress: &'a RunProgress,
    improved: bool,
    state: &'a TrainState,
    weights: &'a Tensors,
}

/// What a training run keeps of each epoch: the row printed and appended to
/// `epochs.csv`, the best weights, and a checkpoint.
struct Recorder<'a> {
    layout: &'a Layout,
    log: table::Appender<EpochRow>,
    epochs: Vec<EpochRow>,
    /// Stop after this epoch, as if killed (`Config::stop_after`).
    stop_after: Option<usize>,
}

impl Recorder<'_> {
    fn record(&mut self, done: EpochDone) -> Result<()> {
        let (layout, row, next) = (self.layout, done.row, done.progress);
        println!("{}", summary_line(row));
        self.log.push(row)?;
        if done.improved {
            npy::write_tensors(&layout.result(ResultFile::Best), done.weights)?;
        }
        save_checkpoint(layout, done.state, done.weights, next)?;
        if let Some(stop) = next.stopped.last().filter(|s| s.epoch == row.epoch) {
            println!("{}", stop.describe());
        }
        self.epochs.push(row.clone());
        if self.stop_after == Some(row.epoch) {
            bail!("stopped after epoch {} as asked", row.epoch);
        }
        Ok(())
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

impl<'a> Run<'a> {
    /// The features, the split into training and validation images and the
    /// optimizer's settings, each checked; and what the stages before wrote.
    fn prepare(config: &'a Config) -> Result<(Self, Upstream)> {
        let layout = &config.layout;
        let settings = &config.settings;
        if settings.patience > 0 && settings.val_fraction == 0.0 {
            bail!(
                "--patience {} needs a validation split to watch: set --val-fraction (VAL_FRACTION) too",
                settings.patience
            );
        }
        let upstream = Upstream::read(layout)?;
        if settings.ft_epochs > 0 {
            check_step_memory(settings, &upstream.export.details)?;
        }
        let unfreeze = upstream.export.settings.unfreeze;
        let classes = upstream.classes.len();
        let views = upstream.cache.settings.views;
        let train = Features::load(layout, Split::Train, views, unfreeze, classes)?;
        let test = Features::load(layout, Split::Test, 1, unfreeze, classes)?;
        let (train_images, val_images) =
            data::split_validation(&train, settings.val_fraction, settings.seed);
        let mut per_class = vec![0usize; classes];
        for &image in &train_images {
            per_class[train.image_label(image) as usize] += 1;
        }
        let class_weights = settings.class_weights.resolve(&per_class).map_err(|e| {
            anyhow::anyhow!(
                "--class-weights {}: {e} ({})",
                settings.class_weights,
                layout.cache(CacheFile::Classes).display()
            )
        })?;
        let optimizer = Optimizer {
            weight_decay: settings.weight_decay,
            lr_mult: settings.ft_lr_mult,
            class_weights,
        };
        let run = Run {
            config,
            train,
            test,
            train_images,
            val_images,
            optimizer,
            head: upstream.export.details.head.clone(),
            graph: upstream
                .export
                .sha256(GraphFile::FinetuneStep)
                .unwrap_or_default()
                .to_string(),
        };
        run.check_nothing_empty(&upstream.classes, &per_class)?;
        Ok((run, upstream))
    }

    /// Every stage's rate within the range any rate may take: `FT_LR_MULT` below 1
    /// multiplies the rate once per stage below the head (0.01 at UNFREEZE=all makes
    /// the stem's 1e10 times FT_LR).
    fn check_stage_rates(&self, phase: Phase, step: &StepRunner) -> Result<()> {
        let s = &self.config.settings;
        let lr = match phase {
            Phase::Head => s.head_lr,
            Phase::Finetune => s.ft_lr,
        };
        let range = rps_core::defaults::ranges::LR;
        // The flags hold the head's rate (and every stage's, at FT_LR_MULT=1) to
        // the range already: only what the multiplier makes is checked here.
        if let Some((input, rate)) = step
            .group_rates(lr)
            .into_iter()
            .find(|(_, rate)| *rate != lr && !range.contains(*rate))
        {
            bail!(
                "--ft-lr {} with --ft-lr-mult {} (FT_LR, FT_LR_MULT) gives {input} a rate of {rate:.3e}, outside {range}: raise FT_LR_MULT or lower FT_LR",
                s.ft_lr,
                s.ft_lr_mult
            );
        }
        Ok(())
    }

    /// Whether `phase` leaves out a last batch of one image: where BatchNorm
    /// normalizes with the batch's statistics (phase 2 with `FT_BN=train`).
    fn single_dropped(&self, phase: Phase) -> bool {
        phase == Phase::Finetune && self.config.settings.ft_bn == FtBn::Train
    }

    /// `phase`'s plan, its epochs numbered on from `first`.
    fn plan(&self, phase: Phase, first: usize) -> PhasePlan {
        let s = &self.config.settings;
        let (epochs, lr, schedule) = match phase {
            Phase::Head => (s.head_epochs, s.head_lr, s.head_schedule),
            Phase::Finetune => (s.ft_epochs, s.ft_lr, s.ft_schedule),
        };
        let images: Vec<usize> = (0..self.train_images.len()).collect();
        let steps_per_epoch = data::batches(&images, s.batch, self.single_dropped(phase)).len();
        PhasePlan {
            phase,
            first,
            last: first + epochs - 1,
            schedule: PhaseSchedule {
                schedule,
                lr,
                steps: epochs * steps_per_epoch,
            },
            steps_per_epoch,
        }
    }

    /// The epochs of `plan` from `start`, each handed to `record` as it ends; ends
    /// the phase early when `--patience` says so.
    fn train_phase(
        &self,
        mut phase_run: (&mut PhaseGraphs, &mut TrainState, &mut Tensors),
        plan: &PhasePlan,
        start: usize,
        progress: &mut Option<RunProgress>,
        mut record: impl FnMut(EpochDone) -> Result<()>,
    ) -> Result<()> {
        let phase_loop = PhaseLoop {
            plan,
            settings: &self.config.settings,
            graph: &self.graph,
        };
        phase_loop.run(
            &mut phase_run,
            start,
            progress,
            |(graphs, state, weights), epoch| self.epoch(graphs, state, weights, plan, epoch),
            |(_, state, weights), row, progress, improved| {
                record(EpochDone {
                    row,
                    progress,
                    improved,
                    state,
                    weights,
                })
            },
        )
    }

    /// A phase's fresh optimizer state, drawing the new head first when training
    /// starts (`new_run`).
    fn fresh_state(
        &self,
        graphs: &PhaseGraphs,
        weights: &mut Tensors,
        phase: Phase,
        new_run: bool,
    ) -> Result<TrainState> {
        if new_run && phase == Phase::Head {
            let head_params = graphs.step.state_shapes(StateKind::Param)?;
            weights.extend(new_head(
                &head_params,
                &self.head,
                self.config.settings.seed,
            )?);
        }
        TrainState::fresh(
            weights,
            &graphs.step.state_shapes(StateKind::Param)?,
            &graphs.step.state_shapes(StateKind::Buffer)?,
        )
    }

    /// Refuses to train on nothing: every class needs a training image, and the test
    /// split (and the validation split, when asked for) an image at all.
    fn check_nothing_empty(&self, classes: &ClassList, per_class: &[usize]) -> Result<()> {
        let val_fraction = self.config.settings.val_fraction;
        let held_out = if val_fraction > 0.0 {
            format!(" once --val-fraction {val_fraction} is held out")
        } else {
            String::new()
        };
        for (class, &images) in classes.names().iter().zip(per_class) {
            if images == 0 {
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
        let (train_loss, train_acc) = self.train_epoch(graphs, state, plan, epoch)?;
        let (lr_first, lr_last) = plan.epoch_rates(epoch);
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
            phase: plan.phase,
            train_loss,
            train_acc,
            test_loss,
            test_acc,
            lr_first,
            lr_last,
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
        plan: &PhasePlan,
        epoch: usize,
    ) -> Result<(f64, f64)> {
        let s = &self.config.settings;
        let order = data::shuffled(&self.train_images, s.seed, epoch);
        let steps = progress::Progress::new(
            format!("epoch {epoch}"),
            plan.steps_per_epoch as u64,
            Units::Count("steps"),
        );
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let batches = data::batches(&order, s.batch, self.single_dropped(plan.phase));
        for (step, images) in batches.into_iter().enumerate() {
            let rates = plan.rates(epoch, step);
            let (out, labels) = self.train_step(graphs, state, images, (epoch, step), rates)?;
            // A value that is not finite stops training before it reaches a model.
            let broken = match out.loss.is_finite() {
                false => Some(format!(
                    "loss {} at epoch {epoch}, step {} (is the learning rate too high?)",
                    out.loss,
                    step + 1
                )),
                true => state.first_non_finite().map(|input| {
                    format!(
                        "{input} not finite after the step at epoch {epoch}, step {}",
                        step + 1
                    )
                }),
            };
            if let Some(what) = broken {
                let kept = match epoch - 1 {
                    0 => "no epoch had completed, so nothing was saved".to_string(),
                    last => format!("results/checkpoint keeps epoch {last}"),
                };
                bail!("training diverged: {what}; {kept}");
            }
            loss_sum += out.loss as f64 * images.len() as f64;
            correct += out.correct(&labels);
            seen += images.len();
            steps.inc(1);
        }
        drop(steps);
        let n = seen.max(1) as f64;
        Ok((loss_sum / n, correct as f64 / n))
    }

    /// One Adam step on `images` (the view of `epoch`) at `rates`: the step's output
    /// and the batch's labels.
    fn train_step(
        &self,
        graphs: &mut PhaseGraphs,
        state: &mut TrainState,
        images: &[usize],
        (epoch, step): (usize, usize),
        rates: StepRates,
    ) -> Result<(rps_score::BatchOutput, Vec<i64>)> {
        let s = &self.config.settings;
        let view = epoch - 1;
        let rows: Vec<usize> = images.iter().map(|&i| self.train.row(i, view)).collect();
        let labels = self.train.labels_of(&rows);
        let features = self.train.rows(graphs.feature, &rows)?;
        let at = BatchPosition {
            seed: s.seed,
            epoch,
            step,
        };
        let width = self.train.pooled.ncols();
        let mask = data::dropout_mask(rows.len(), width, s.dropout, at);
        let out = graphs.step.step(state, &features, &labels, &mask, rates)?;
        Ok((out, labels))
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

/// Phase 2's step at `settings`' batch takes at least the trained parameters with
/// their Adam moments and gradients, and the floats each image keeps for the
/// backward (export's lower bound): refused before anything is allocated when even
/// that is more than this machine has free, rather than left to fail in ONNX
/// Runtime.
fn check_step_memory(settings: &TrainSettings, export: &ExportDetails) -> Result<()> {
    let params = 4 * export.params_trainable_finetune as u64;
    let activations = (settings.batch as u64).saturating_mul(export.finetune_floats_per_image);
    let needed = params.saturating_add(activations).saturating_mul(4);
    match rps_core::memory::short_of(needed) {
        Some(free) => bail!(
            "phase 2's step at --batch {} (BATCH) needs at least {} ({} per image for the backward, \
             {} of parameters, moments and gradients), and {} is free: lower BATCH, or start \
             phase 2 at a later stage (UNFREEZE)",
            settings.batch,
            rps_core::memory::describe(needed),
            rps_core::memory::describe(export.finetune_floats_per_image * 4),
            rps_core::memory::describe(params * 4),
            rps_core::memory::describe(free)
        ),
        None => Ok(()),
    }
}
