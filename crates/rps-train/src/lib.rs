//! rps-train: the recipe's two phases on extracted features. Phase 1 trains the new
//! head on pooled features; phase 2 trains layer4 (BatchNorm in train mode) and the
//! head on layer3 features with a fresh Adam. Every epoch scores the test split and
//! appends a row to `epochs.csv`; a checkpoint after every epoch makes `--resume`
//! continue exactly where a killed run stopped.

pub mod data;
pub mod runner;
pub mod state;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rps_core::rows::{EpochRow, ParamsRow};
use rps_core::{DeviceChoice, GraphFile, Layout, Metadata, Split, atomic, table};
use rps_export::resnet::{Arch, Shapes};
use rps_export::weights::Tensors;
use rps_export::{export, infer, train as graphs};
use serde::{Deserialize, Serialize};

use data::Features;
use runner::{Scorer, StepRunner};
use state::TrainState;

#[derive(Debug, Clone)]
pub struct Config {
    pub layout: Layout,
    pub batch: usize,
    pub dropout: f32,
    pub head_epochs: usize,
    pub head_lr: f64,
    pub ft_epochs: usize,
    pub ft_lr: f64,
    pub weight_decay: f32,
    pub seed: u64,
    /// Share of training images (per class, all views) held out to pick the best epoch.
    pub val_fraction: f64,
    pub resume: bool,
    /// Stop after this epoch, as if killed (for testing `resume`).
    pub stop_after: Option<usize>,
    pub device: DeviceChoice,
    pub threads: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// What a checkpoint records beside the tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    phase: Phase,
    /// The last completed epoch.
    epoch: usize,
    best_val_loss: Option<f64>,
}

#[derive(Debug)]
pub struct Report {
    pub epochs: Vec<EpochRow>,
    pub device: rps_core::Device,
}

/// Everything one run needs that does not change between epochs.
struct Run<'a> {
    config: &'a Config,
    arch: Arch,
    train: Features,
    test: Features,
    train_images: Vec<usize>,
    val_images: Vec<usize>,
}

pub fn run(config: &Config) -> Result<Report> {
    let started = Instant::now();
    let layout = &config.layout;
    let arch = export::exported_arch(layout)?;
    let views = cache_views(layout)?;
    let (pooled, layer3) = (
        arch.features(),
        [
            arch.layer3_channels(),
            arch.layer3_size(),
            arch.layer3_size(),
        ],
    );
    let train = Features::load(layout, Split::Train, views, pooled, layer3)?;
    let test = Features::load(layout, Split::Test, 1, pooled, layer3)?;
    check_labels(&train, &test, &arch)?;
    let (train_images, val_images) =
        data::split_validation(&train, config.val_fraction, config.seed);
    let run = Run {
        config,
        arch,
        train,
        test,
        train_images,
        val_images,
    };

    let results = layout.results_dir();
    std::fs::create_dir_all(&results).with_context(|| format!("creating {}", results.display()))?;
    let (mut weights, mut progress, mut resumed_state, mut epochs) = start_or_resume(&run)?;
    let mut log = table::Appender::create(&layout.result("epochs.csv"))?;
    for row in &epochs {
        log.push(row)?;
    }
    let mut device = None;
    for (phase, first, last, lr) in run.phases() {
        if progress
            .as_ref()
            .is_some_and(|p| p.phase == Phase::Finetune && phase == Phase::Head)
        {
            continue;
        }
        let (params, buffers) = run.trainable(phase);
        let mut state = match resumed_state.take() {
            Some(state) if progress.as_ref().is_some_and(|p| p.phase == phase) => state,
            _ => TrainState::fresh(&weights, &params, &buffers)?,
        };
        let graph = match phase {
            Phase::Head => graphs::head_step(&run.arch),
            Phase::Finetune => graphs::finetune_step(&run.arch),
        };
        let mut runner = StepRunner::new(
            &graph,
            phase.name(),
            config.device,
            config.threads,
            config.weight_decay,
        )?;
        device = Some(runner.device);
        let start = progress
            .as_ref()
            .filter(|p| p.phase == phase)
            .map_or(first, |p| p.epoch + 1);
        for epoch in start..=last {
            let t = Instant::now();
            let (train_loss, train_acc) =
                run.train_epoch(&mut runner, &mut state, phase, epoch, lr)?;
            weights.extend(state.params.clone());
            weights.extend(state.buffers.clone());
            let scorer_graph = run.eval_graph(phase, &weights);
            let mut scorer = Scorer::new(&scorer_graph, "eval", config.device, config.threads)?;
            let test_images: Vec<usize> = (0..run.test.images()).collect();
            let (test_loss, test_acc) = run.score(&mut scorer, &run.test, &test_images, phase)?;
            let val = if run.val_images.is_empty() {
                None
            } else {
                Some(run.score(&mut scorer, &run.train, &run.val_images, phase)?)
            };
            let row = EpochRow {
                epoch,
                phase: phase.name().into(),
                train_loss,
                train_acc,
                test_loss,
                test_acc,
                lr,
                seconds: t.elapsed().as_secs_f64(),
                val_loss: val.map(|v| v.0),
                val_acc: val.map(|v| v.1),
            };
            println!(
                "epoch {epoch:>3} {:<8} train loss {train_loss:.4} acc {train_acc:.4} | test loss {test_loss:.4} acc {test_acc:.4}{}",
                phase.name(),
                val.map_or(String::new(), |(l, a)| format!(
                    " | val loss {l:.4} acc {a:.4}"
                ))
            );
            log.push(&row)?;
            epochs.push(row);
            let best_val_loss = progress.as_ref().and_then(|p| p.best_val_loss);
            let improved = val.is_some_and(|(l, _)| best_val_loss.is_none_or(|b| l < b));
            if improved {
                rps_core::npy::write_npz(
                    &layout.result("best.npz"),
                    weights.iter().map(|(k, v)| (k.as_str(), v)),
                )?;
            }
            let next = Progress {
                phase,
                epoch,
                best_val_loss: if improved {
                    val.map(|v| v.0)
                } else {
                    best_val_loss
                },
            };
            save_checkpoint(layout, &state, &weights, &next)?;
            progress = Some(next);
            if config.stop_after == Some(epoch) {
                bail!("stopped after epoch {epoch} as asked");
            }
        }
    }
    finish(&run, &weights, started, device)?;
    Ok(Report {
        epochs,
        device: device.unwrap_or(rps_core::Device::Cpu),
    })
}

impl Run<'_> {
    /// `(phase, first epoch, last epoch, lr)`, epochs numbered on across phases.
    fn phases(&self) -> [(Phase, usize, usize, f64); 2] {
        let c = self.config;
        [
            (Phase::Head, 1, c.head_epochs, c.head_lr),
            (
                Phase::Finetune,
                c.head_epochs + 1,
                c.head_epochs + c.ft_epochs,
                c.ft_lr,
            ),
        ]
    }

    fn trainable(&self, phase: Phase) -> (Shapes, Shapes) {
        match phase {
            Phase::Head => (
                self.arch.head_shapes(self.arch.classes).to_vec(),
                Vec::new(),
            ),
            Phase::Finetune => (self.arch.finetune_params(), self.arch.finetune_buffers()),
        }
    }

    /// One epoch over the training images (this epoch's view), in train mode.
    fn train_epoch(
        &self,
        runner: &mut StepRunner,
        state: &mut TrainState,
        phase: Phase,
        epoch: usize,
        lr: f64,
    ) -> Result<(f64, f64)> {
        let c = self.config;
        let view = epoch - 1;
        let order = data::shuffled(&self.train_images, c.seed, epoch);
        let bar = rps_core::progress::bar(
            format!("epoch {epoch} ({})", phase.name()),
            order.len().div_ceil(c.batch),
            "steps",
        );
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for (step, images) in order.chunks(c.batch).enumerate() {
            let rows: Vec<usize> = images.iter().map(|&i| self.train.row(i, view)).collect();
            let labels = self.train.labels_of(&rows);
            let features = self.features(&self.train, &rows, phase)?;
            let mask = data::dropout_mask(
                rows.len(),
                self.arch.features(),
                c.dropout,
                c.seed,
                epoch,
                step,
            );
            let out = runner.step(state, &features, &labels, &mask, lr as f32)?;
            if !out.loss.is_finite() {
                bail!(
                    "training diverged: loss {} at epoch {epoch}, step {}; the last good checkpoint is kept",
                    out.loss,
                    step + 1
                );
            }
            loss_sum += out.loss as f64 * rows.len() as f64;
            correct += out.correct(&labels);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let n = order.len().max(1) as f64;
        Ok((loss_sum / n, correct as f64 / n))
    }

    /// Mean loss and accuracy of `images` (view 0) with the eval graph.
    fn score(
        &self,
        scorer: &mut Scorer,
        split: &Features,
        images: &[usize],
        phase: Phase,
    ) -> Result<(f64, f64)> {
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for chunk in images.chunks(self.config.batch) {
            let rows: Vec<usize> = chunk.iter().map(|&i| split.row(i, 0)).collect();
            let labels = split.labels_of(&rows);
            let out = scorer.score(&self.features(split, &rows, phase)?, &labels)?;
            loss_sum += out.loss as f64 * rows.len() as f64;
            correct += out.correct(&labels);
        }
        let n = images.len().max(1) as f64;
        Ok((loss_sum / n, correct as f64 / n))
    }

    fn features(
        &self,
        split: &Features,
        rows: &[usize],
        phase: Phase,
    ) -> Result<ndarray::ArrayD<f32>> {
        match phase {
            Phase::Head => Ok(split.pooled_rows(rows)),
            Phase::Finetune => split.layer3_rows(rows),
        }
    }

    fn eval_graph(&self, phase: Phase, weights: &Tensors) -> Vec<u8> {
        match phase {
            Phase::Head => infer::head_eval(&self.arch, weights),
            Phase::Finetune => infer::finetune_eval(&self.arch, weights),
        }
    }
}

fn cache_views(layout: &Layout) -> Result<usize> {
    let path = Layout::meta(&layout.cache_dir());
    let meta = Metadata::read(&path).context("run `make preprocess` first")?;
    meta.require("views", &path)?
        .as_u64()
        .map(|v| v as usize)
        .with_context(|| format!("{}: views is not a number", path.display()))
}

fn check_labels(train: &Features, test: &Features, arch: &Arch) -> Result<()> {
    let max = train
        .labels
        .iter()
        .chain(&test.labels)
        .copied()
        .max()
        .unwrap_or(0);
    if max < 0 || max as usize >= arch.classes {
        bail!(
            "labels go up to {max}, but the graphs were exported for {} classes (set CLASSES and rerun export)",
            arch.classes
        );
    }
    if train.images() == 0 || test.images() == 0 {
        bail!("no training or no test images");
    }
    Ok(())
}

type Resumed = (Tensors, Option<Progress>, Option<TrainState>, Vec<EpochRow>);

/// The exported starting weights, or with `--resume` the last checkpoint and the
/// epochs.csv rows up to it.
fn start_or_resume(run: &Run) -> Result<Resumed> {
    let layout = &run.config.layout;
    let checkpoint = checkpoint_dir(layout);
    if run.config.resume && checkpoint.join("progress.json").exists() {
        let text = std::fs::read_to_string(checkpoint.join("progress.json"))?;
        let progress: Progress = serde_json::from_str(&text)
            .with_context(|| format!("reading {}", checkpoint.display()))?;
        let weights = export::read_weights(&checkpoint.join("weights.npz"))?;
        let state = TrainState::load(&checkpoint.join("state.npz"))?;
        let rows: Vec<EpochRow> = table::read(&layout.result("epochs.csv")).unwrap_or_default();
        let rows: Vec<EpochRow> = rows
            .into_iter()
            .filter(|r| r.epoch <= progress.epoch)
            .collect();
        if rows.len() != progress.epoch {
            bail!(
                "{}: has {} rows up to epoch {}; cannot resume",
                layout.result("epochs.csv").display(),
                rows.len(),
                progress.epoch
            );
        }
        eprintln!(
            "train: resuming after epoch {} ({})",
            progress.epoch,
            progress.phase.name()
        );
        return Ok((weights, Some(progress), Some(state), rows));
    }
    let weights = export::read_weights(&layout.graph(GraphFile::Weights))?;
    Ok((weights, None, None, Vec::new()))
}

fn checkpoint_dir(layout: &Layout) -> PathBuf {
    layout.results_dir().join("checkpoint")
}

/// Writes the checkpoint as a whole folder, replaced by rename.
fn save_checkpoint(
    layout: &Layout,
    state: &TrainState,
    weights: &Tensors,
    progress: &Progress,
) -> Result<()> {
    let dir = checkpoint_dir(layout);
    let tmp = atomic::TempDir::beside(&dir)?;
    state.save(&tmp.path().join("state.npz"))?;
    rps_core::npy::write_npz(
        &tmp.path().join("weights.npz"),
        weights.iter().map(|(k, v)| (k.as_str(), v)),
    )?;
    atomic::write_bytes(
        &tmp.path().join("progress.json"),
        serde_json::to_string_pretty(progress)?.as_bytes(),
    )?;
    tmp.commit()?;
    Ok(())
}

/// The trained weights, the deployable model, parameter counts and metadata; the
/// model is written last, as make's sign that training finished.
fn finish(
    run: &Run,
    weights: &Tensors,
    started: Instant,
    device: Option<rps_core::Device>,
) -> Result<()> {
    let layout = &run.config.layout;
    let c = run.config;
    rps_core::npy::write_npz(
        &layout.result("weights.npz"),
        weights.iter().map(|(k, v)| (k.as_str(), v)),
    )?;
    let counts = run.arch.param_counts();
    let params = [
        ParamsRow {
            phase: Phase::Head.name().into(),
            total: counts.total,
            trainable: counts.head,
        },
        ParamsRow {
            phase: Phase::Finetune.name().into(),
            total: counts.total,
            trainable: counts.finetune,
        },
    ];
    table::write(&layout.result("params.csv"), &params)?;
    let mut meta = Metadata::new("train", env!("CARGO_PKG_VERSION"))
        .setting("batch", c.batch)
        .setting("dropout", c.dropout)
        .setting("head_epochs", c.head_epochs)
        .setting("head_lr", c.head_lr)
        .setting("ft_epochs", c.ft_epochs)
        .setting("ft_lr", c.ft_lr)
        .setting("weight_decay", c.weight_decay)
        .setting("seed", c.seed)
        .setting("val_fraction", c.val_fraction)
        .input(&layout.features_dir())
        .input(&layout.graph(GraphFile::Weights));
    meta.device = device.map(|d| d.name().to_string());
    meta.detail("train_images", run.train_images.len());
    meta.detail("val_images", run.val_images.len());
    meta.seconds = started.elapsed().as_secs_f64();
    meta.write(&layout.result("train.json"))?;
    let classes = rps_core::ClassList::read(&layout.classes())?;
    let model = infer::classifier(&run.arch, weights, "model", Some(classes.names()));
    atomic::write_bytes(&layout.result(GraphFile::Model.file_name()), &model)?;
    Ok(())
}
