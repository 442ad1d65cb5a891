//! The learning-rate finder, fastai's `lr_find`: from the state a phase of `make
//! train` starts in, steps at a rate rising exponentially (1e-7 to 10 over 100
//! steps), until the last or until the smoothed loss passes 4 times its minimum.
//! Phase 2's sweep starts where phase 1 ends, so phase 1 is trained first, as `make
//! train` trains it, in memory. Writes `results/lr_find_{head,finetune}.csv`, a plot
//! of each and `results/lr_find.json`, and nothing else.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};
use rps_core::rows::LrFindRow;
use rps_core::sidecar::{FileDigest, LrFindDetails, LrFindMeta, LrFinding};
use rps_core::{Device, Folder, GraphFile, Phase, ResultFile, defaults, npy, table};
use rps_plot::{FONT, drawable, render_png, text_style};

use crate::outputs::sidecar;
use crate::phase::{PhasePlan, end_of};
use crate::runner::StepRates;
use crate::state::TrainState;
use crate::{Config, EpochDone, PhaseGraphs, Run, summary_line};

/// Which phases to sweep (`--lr-find`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sweeps {
    Head,
    Finetune,
    Both,
}

impl Sweeps {
    fn includes(self, phase: Phase) -> bool {
        matches!(
            (self, phase),
            (Sweeps::Both, _) | (Sweeps::Head, Phase::Head) | (Sweeps::Finetune, Phase::Finetune)
        )
    }
}

/// fastai's `AvgSmoothLoss`: the debiased moving average of the losses.
#[derive(Debug, Default)]
struct Smoother {
    average: f64,
    count: i32,
}

impl Smoother {
    const BETA: f64 = 0.98;

    fn push(&mut self, loss: f64) -> f64 {
        self.count += 1;
        self.average = Self::BETA * self.average + (1.0 - Self::BETA) * loss;
        self.average / (1.0 - Self::BETA.powi(self.count))
    }
}

/// The head's rate at step `step` (0 first) of the sweep: fastai's `SchedExp`.
pub fn sweep_rate(step: usize) -> f64 {
    let (start, end) = (defaults::LR_FIND_START, defaults::LR_FIND_END);
    start * (end / start).powf(step as f64 / defaults::LR_FIND_STEPS as f64)
}

/// fastai's suggestions from a sweep, over the rows it looks at (the first tenth of
/// the sweep's steps and the last five rows left out): the rate where the smoothed
/// loss falls fastest against log(rate), and the rate of its minimum divided by 10.
pub fn suggestions(rows: &[LrFindRow]) -> (Option<f64>, Option<f64>) {
    let skip_start = defaults::LR_FIND_STEPS / 10;
    let end = rows.len().saturating_sub(5);
    let Some(rows) = rows.get(skip_start..end).filter(|r| r.len() >= 2) else {
        return (None, None);
    };
    let minimum = rows
        .iter()
        .min_by(|a, b| a.smoothed_loss.total_cmp(&b.smoothed_loss))
        .map(|r| r.lr / 10.0);
    let steepest = rows
        .windows(2)
        .map(|w| {
            let slope = (w[1].smoothed_loss - w[0].smoothed_loss) / (w[1].lr.ln() - w[0].lr.ln());
            (slope, w[0].lr)
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, lr)| lr);
    (steepest, minimum)
}

/// Sweeps the phases `sweeps` names; returns what each found.
pub fn run(config: &Config, sweeps: Sweeps) -> Result<Vec<LrFinding>> {
    let started = Instant::now();
    let layout = &config.layout;
    let _lock = rps_core::lock::DataLock::acquire(layout, env!("CARGO_PKG_NAME"))?;
    let (run, _) = Run::prepare(config)?;
    let results = layout.dir(Folder::Results);
    std::fs::create_dir_all(&results).with_context(|| format!("creating {}", results.display()))?;
    let mut weights = npy::read_tensors(&layout.graph(GraphFile::Weights))?;
    let (mut findings, mut progress, mut first) = (Vec::new(), None, 1);
    let mut device = Device::Cpu;
    for phase in Phase::ALL {
        if phase == Phase::Finetune && !sweeps.includes(phase) {
            break;
        }
        let plan = run.plan(phase, first);
        let mut graphs = PhaseGraphs::open(&run, phase)?;
        device = graphs.step.device;
        let mut state = run.fresh_state(&graphs, &mut weights, phase, phase == Phase::Head)?;
        if sweeps.includes(phase) {
            let finding = run.sweep_phase(&mut graphs, state.clone(), &plan)?;
            println!("{}", describe(&finding));
            findings.push(finding);
        }
        if phase == Phase::Head && sweeps.includes(Phase::Finetune) {
            eprintln!(
                "lr-find: training phase 1 as make train does ({} epochs), so that phase 2's sweep starts where phase 2 will",
                plan.last + 1 - plan.first
            );
            let quiet = |done: EpochDone| {
                eprintln!("{}", summary_line(done.row));
                Ok(())
            };
            let phase_run = (&mut graphs, &mut state, &mut weights);
            run.train_phase(phase_run, &plan, plan.first, &mut progress, quiet)?;
            first = end_of(&plan, progress.as_ref()) + 1;
        }
    }
    // Written last, with each sweep's files' digests: a sweep cut short leaves its
    // files beside a json that does not list them.
    let details = LrFindDetails {
        phases: findings,
        graph: Some(run.graph.clone()),
    };
    let meta: LrFindMeta = sidecar(config, details, device, started);
    meta.write(&layout.result(ResultFile::LrFindMeta))?;
    Ok(meta.details.phases)
}

/// The line printed for a sweep.
fn describe(finding: &LrFinding) -> String {
    let rate = |r: Option<f64>| r.map_or("none (too few steps)".into(), |r| format!("{r:.2e}"));
    format!(
        "lr-find {}: {} steps, {}; suggested rate {} (steepest fall), {} (minimum / 10)",
        finding.phase,
        finding.steps,
        finding.ended,
        rate(finding.steepest),
        rate(finding.minimum_over_10)
    )
}

impl Run<'_> {
    /// One phase's sweep from `state`, its rows and plot written.
    fn sweep_phase(
        &self,
        graphs: &mut PhaseGraphs,
        mut state: TrainState,
        plan: &PhasePlan,
    ) -> Result<LrFinding> {
        let layout = &self.config.layout;
        let (rows, ended) = self.sweep(graphs, &mut state, plan)?;
        let (steepest, minimum_over_10) = suggestions(&rows);
        let finding = LrFinding {
            phase: plan.phase,
            steps: rows.len(),
            ended,
            steepest,
            minimum_over_10,
            files: Vec::new(),
        };
        let (csv, png) = ResultFile::lr_find(plan.phase);
        table::write(&layout.result(csv), &rows)?;
        plot(&layout.result(png), &rows, &finding)?;
        let mut files = Vec::new();
        for file in [csv, png] {
            let path = layout.result(file);
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            files.push(FileDigest::of(file.file_name(), &bytes));
        }
        Ok(LrFinding { files, ..finding })
    }

    /// The sweep's rows, and why it ended. Batches come as the phase's epochs would
    /// draw them, on into the next epoch's when one runs out.
    fn sweep(
        &self,
        graphs: &mut PhaseGraphs,
        state: &mut TrainState,
        plan: &PhasePlan,
    ) -> Result<(Vec<LrFindRow>, String)> {
        let s = &self.config.settings;
        let bar = rps_core::progress::Progress::new(
            format!("lr-find {}", plan.phase.name()),
            defaults::LR_FIND_STEPS as u64,
            rps_core::progress::Units::Count("steps"),
        );
        let batches = (plan.first..).flat_map(|epoch| {
            let order = crate::data::shuffled(&self.train_images, s.seed, epoch);
            let chunks: Vec<Vec<usize>> =
                crate::data::batches(&order, s.batch, self.single_dropped(plan.phase))
                    .into_iter()
                    .map(<[usize]>::to_vec)
                    .collect();
            chunks
                .into_iter()
                .enumerate()
                .map(move |(step, images)| (epoch, step, images))
        });
        let (mut rows, mut smoother, mut lowest) = (Vec::new(), Smoother::default(), f64::INFINITY);
        let mut ended = None;
        for (i, (epoch, step, images)) in batches.take(defaults::LR_FIND_STEPS).enumerate() {
            let rates = StepRates::constant(sweep_rate(i));
            let (out, _) = self.train_step(graphs, state, &images, (epoch, step), rates)?;
            bar.inc(1);
            let loss = out.loss as f64;
            if !loss.is_finite() {
                ended = Some(format!("the loss became {loss} at rate {:.2e}", rates.lr));
                break;
            }
            let smoothed_loss = smoother.push(loss);
            rows.push(LrFindRow {
                step: i + 1,
                lr: rates.lr,
                loss,
                smoothed_loss,
            });
            lowest = lowest.min(smoothed_loss);
            if smoothed_loss > defaults::LR_FIND_DIVERGED * lowest {
                ended = Some(format!(
                    "diverged at rate {:.2e} (smoothed loss over {} times its minimum)",
                    rates.lr,
                    defaults::LR_FIND_DIVERGED
                ));
                break;
            }
        }
        let ended = ended.unwrap_or_else(|| {
            let last = rows.last().map_or(0.0, |r| r.lr);
            format!("did not diverge up to rate {last:.2e}")
        });
        Ok((rows, ended))
    }
}

/// The smoothed loss against the rate (log scale), the suggestions marked.
fn plot(path: &Path, rows: &[LrFindRow], finding: &LrFinding) -> Result<()> {
    // fastai's plot leaves out the last five steps, where the loss shoots up.
    let shown = &rows[..rows.len().saturating_sub(5).max(rows.len().min(2))];
    let losses = shown
        .iter()
        .map(|r| r.smoothed_loss)
        .filter(|l| l.is_finite());
    let (y_min, y_max) = losses.fold((f64::MAX, f64::MIN), |(lo, hi), l| (lo.min(l), hi.max(l)));
    let (y_min, y_max) = if y_min <= y_max {
        let pad = (y_max - y_min).max(1e-6) * 0.05;
        (y_min - pad, y_max + pad)
    } else {
        (0.0, 1.0)
    };
    let x_range = (defaults::LR_FIND_START..defaults::LR_FIND_END).log_scale();
    let title = format!("Learning-rate finder: {}", finding.phase);
    render_png(path, 900, 560, |root| {
        let mut chart = ChartBuilder::on(&root)
            .caption(drawable(&title), (FONT, 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(65)
            .build_cartesian_2d(x_range, y_min..y_max)?;
        chart
            .configure_mesh()
            .x_desc(drawable("learning rate (log scale)"))
            .y_desc(drawable("smoothed training loss"))
            .x_label_formatter(&|x| drawable(&format!("{x:.0e}")))
            .y_label_formatter(&|y| drawable(&format!("{y:.2}")))
            .label_style((FONT, 15))
            .draw()?;
        let points = shown.iter().map(|r| (r.lr, r.smoothed_loss));
        chart.draw_series(LineSeries::new(points, BLUE.stroke_width(2)))?;
        let marks = [
            (finding.steepest, RED, "steepest"),
            (finding.minimum_over_10, GREEN, "minimum / 10"),
        ];
        for (i, (rate, color, name)) in marks.into_iter().enumerate() {
            let Some(rate) = rate else { continue };
            let style = color.mix(0.8).stroke_width(1);
            chart.draw_series(DashedLineSeries::new(
                [(rate, y_min), (rate, y_max)],
                8,
                6,
                style,
            ))?;
            let label = text_style(15, HPos::Left, VPos::Top);
            let top = y_max - (y_max - y_min) * (0.01 + 0.06 * i as f64);
            let text = drawable(&format!(" {name} {rate:.1e}"));
            chart.draw_series([Text::new(text, (rate, top), label)])?;
        }
        Ok(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: usize, lr: f64, smoothed_loss: f64) -> LrFindRow {
        LrFindRow {
            step,
            lr,
            loss: smoothed_loss,
            smoothed_loss,
        }
    }

    #[test]
    fn the_sweep_rises_as_fastai_s_sched_exp() {
        assert_eq!(sweep_rate(0), 1e-7);
        assert!((sweep_rate(50) / 1e-3 - 1.0).abs() < 1e-12);
        // The last of 100 steps is 1e-7 * 1e8^(99/100), short of 10.
        assert!((sweep_rate(99) / 10f64.powf(0.92) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn smoothing_is_fastai_s_debiased_average() {
        let mut s = Smoother::default();
        assert_eq!(s.push(2.0), 2.0);
        // (0.98 * 0.02 * 2 + 0.02 * 1) / (1 - 0.98^2)
        let expected = (0.98 * 0.04 + 0.02) / (1.0 - 0.98f64.powi(2));
        assert!((s.push(1.0) - expected).abs() < 1e-12);
    }

    #[test]
    fn suggestions_skip_the_ends_and_find_the_steepest_fall_and_the_minimum() {
        // A loss flat for 10 rows, falling fastest from row 20 to 21, lowest at
        // row 30, then rising; rows past len - 5 are ignored even when lower.
        let losses: Vec<f64> = (0..40)
            .map(|i| match i {
                0..10 => 0.0,
                10..20 => 2.0 - 0.01 * (i - 10) as f64,
                20 => 1.9,
                21..=30 => 1.0 - 0.01 * (i - 21) as f64,
                35.. => -5.0,
                _ => 1.0 + 0.1 * (i - 30) as f64,
            })
            .collect();
        let rows: Vec<LrFindRow> = losses
            .iter()
            .enumerate()
            .map(|(i, &l)| row(i + 1, sweep_rate(i), l))
            .collect();
        let (steepest, minimum) = suggestions(&rows);
        assert_eq!(steepest, Some(sweep_rate(20)));
        assert_eq!(minimum, Some(sweep_rate(30) / 10.0));
        assert_eq!(suggestions(&rows[..16]), (None, None));
    }
}
