//! A phase's plan (its epochs and the rates of its steps) and a run's progress
//! through the phases: the one loop over a phase's epochs, and early stopping
//! (`--patience`), which checkpoints record and resuming continues.

use anyhow::Result;
use rps_core::Phase;
use rps_core::rows::EpochRow;
use rps_core::sidecar::{EarlyStop, TrainSettings};
use serde::{Deserialize, Serialize};

use crate::runner::StepRates;
use crate::schedule::PhaseSchedule;

/// Where a run stands (phase, epoch, best losses, early stops): what a checkpoint
/// records beside the tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunProgress {
    /// The settings that got here: resuming takes the same.
    pub(crate) settings: TrainSettings,
    pub(crate) phase: Phase,
    /// The last completed epoch.
    pub(crate) epoch: usize,
    /// The lowest validation loss so far and its epoch (with `--val-fraction`).
    pub(crate) best: Option<(f64, usize)>,
    /// This phase's lowest validation loss and its epoch, which `--patience`
    /// counts from.
    pub(crate) phase_best: Option<(f64, usize)>,
    /// The phases `--patience` ended, in order.
    pub(crate) stopped: Vec<EarlyStop>,
    /// The sha256 of the phase 2 step graph it trained with (export.json's): a
    /// checkpoint of another network, depth or class count is not resumed.
    #[serde(default)]
    pub(crate) graph: Option<String>,
}

/// A phase's epochs as a loop: what trains each and what records it come in, so
/// that the loop, early stopping included, is this one.
pub(crate) struct PhaseLoop<'a> {
    pub(crate) plan: &'a PhasePlan,
    pub(crate) settings: &'a TrainSettings,
    /// The phase 2 step graph's sha256, which a checkpoint records.
    pub(crate) graph: &'a str,
}

impl PhaseLoop<'_> {
    /// The epochs from `start`: `train` runs one on `run` and returns its row,
    /// `record` gets it with the progress after it and whether its validation
    /// loss is the best yet; until the plan's last epoch or `--patience` ends the
    /// phase.
    pub(crate) fn run<R>(
        &self,
        run: &mut R,
        start: usize,
        progress: &mut Option<RunProgress>,
        mut train: impl FnMut(&mut R, usize) -> Result<EpochRow>,
        mut record: impl FnMut(&R, &EpochRow, &RunProgress, bool) -> Result<()>,
    ) -> Result<()> {
        for epoch in start..=self.plan.last {
            let row = train(run, epoch)?;
            let (next, improved) = RunProgress::after(
                progress.as_ref(),
                &row,
                self.plan,
                self.settings,
                self.graph,
            );
            record(run, &row, &next, improved)?;
            let finished = next.finished(self.plan.phase);
            *progress = Some(next);
            if finished {
                break;
            }
        }
        Ok(())
    }
}

/// The last epoch of `plan`: where `--patience` ended it, or its last.
pub(crate) fn end_of(plan: &PhasePlan, progress: Option<&RunProgress>) -> usize {
    progress
        .and_then(|p| p.stopped.iter().find(|s| s.phase == plan.phase))
        .map_or(plan.last, |stop| stop.epoch)
}

/// One phase's epochs (numbered on across phases) and the rates of its steps.
pub(crate) struct PhasePlan {
    pub(crate) phase: Phase,
    pub(crate) first: usize,
    pub(crate) last: usize,
    pub(crate) schedule: PhaseSchedule,
    /// Training steps an epoch.
    pub(crate) steps_per_epoch: usize,
}

impl PhasePlan {
    /// The rates of step `step` of `epoch`.
    pub(crate) fn rates(&self, epoch: usize, step: usize) -> StepRates {
        self.schedule
            .at((epoch - self.first) * self.steps_per_epoch + step)
    }

    /// The head's rate at `epoch`'s first and last step.
    pub(crate) fn epoch_rates(&self, epoch: usize) -> (f64, f64) {
        let last = self.steps_per_epoch.saturating_sub(1);
        (self.rates(epoch, 0).lr, self.rates(epoch, last).lr)
    }
}

impl RunProgress {
    /// The progress after `row`'s epoch of `plan`, and whether its validation loss
    /// is the best yet.
    pub(crate) fn after(
        previous: Option<&RunProgress>,
        row: &EpochRow,
        plan: &PhasePlan,
        settings: &TrainSettings,
        graph: &str,
    ) -> (Self, bool) {
        let phase = plan.phase;
        let best = previous.and_then(|p| p.best);
        let improved = row
            .val_loss
            .is_some_and(|l| best.is_none_or(|(b, _)| l < b));
        let phase_best = previous
            .filter(|p| p.phase == phase)
            .and_then(|p| p.phase_best);
        let phase_best = match (row.val_loss, phase_best) {
            (Some(loss), Some((b, _))) if loss < b => Some((loss, row.epoch)),
            (Some(loss), None) => Some((loss, row.epoch)),
            (_, kept) => kept,
        };
        let mut stopped = previous.map(|p| p.stopped.clone()).unwrap_or_default();
        let patience = settings.patience;
        if let Some((loss, epoch)) = phase_best
            && patience > 0
            && row.epoch - epoch >= patience
            && row.epoch < plan.last
        {
            stopped.push(EarlyStop {
                phase,
                epoch: row.epoch,
                best_epoch: epoch,
                best_val_loss: loss,
                patience,
            });
        }
        let next = RunProgress {
            settings: settings.clone(),
            phase,
            epoch: row.epoch,
            best: match row.val_loss {
                Some(loss) if improved => Some((loss, row.epoch)),
                _ => best,
            },
            phase_best,
            stopped,
            graph: Some(graph.to_string()),
        };
        (next, improved)
    }

    /// Whether `phase` has nothing left to run.
    pub(crate) fn finished(&self, phase: Phase) -> bool {
        self.phase > phase || self.stopped.iter().any(|s| s.phase == phase)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(phase: Phase, first: usize, last: usize) -> PhasePlan {
        PhasePlan {
            phase,
            first,
            last,
            schedule: PhaseSchedule {
                schedule: rps_core::Schedule::Constant,
                lr: 1e-3,
                steps: 10,
            },
            steps_per_epoch: 1,
        }
    }

    /// The epochs `val_losses` run for with `patience`: each phase's curve fed to
    /// `RunProgress::after` until it says the phase is over.
    fn epochs_run(patience: usize, phases: [(&PhasePlan, &[f64]); 2]) -> (Vec<usize>, RunProgress) {
        let settings = TrainSettings {
            patience,
            val_fraction: 0.2,
            ..TrainSettings::default()
        };
        let (mut progress, mut run) = (None::<RunProgress>, Vec::new());
        for (plan, losses) in phases {
            let phase_loop = PhaseLoop {
                plan,
                settings: &settings,
                graph: "",
            };
            let train = |run: &mut Vec<usize>, epoch: usize| {
                run.push(epoch);
                Ok(EpochRow {
                    epoch,
                    val_loss: Some(losses[epoch - plan.first]),
                    ..EpochRow::default()
                })
            };
            let record = |_: &Vec<usize>, _: &EpochRow, _: &RunProgress, _| Ok(());
            phase_loop
                .run(&mut run, plan.first, &mut progress, train, record)
                .unwrap();
        }
        (run, progress.unwrap())
    }

    #[test]
    fn patience_ends_a_phase_after_that_many_epochs_without_a_better_validation_loss() {
        let head = plan(Phase::Head, 1, 8);
        // Best at epoch 2; 3 and 4 are no better (0.8 equals it), so patience 2 ends
        // the phase after epoch 4, before 5's lower loss.
        let head_curve = [1.0, 0.8, 0.9, 0.8, 0.5, 0.4, 0.3, 0.2];
        // Phase 2 counts from its own best: its first epoch, worse than phase 1's.
        let finetune = plan(Phase::Finetune, 5, 10);
        let finetune_curve = [0.95, 0.9, 0.92, 0.91, 0.1, 0.1];
        let (run, progress) = epochs_run(2, [(&head, &head_curve), (&finetune, &finetune_curve)]);
        assert_eq!(run, [1, 2, 3, 4, 5, 6, 7, 8]);
        let stops: Vec<(Phase, usize, usize)> = progress
            .stopped
            .iter()
            .map(|s| (s.phase, s.epoch, s.best_epoch))
            .collect();
        assert_eq!(stops, [(Phase::Head, 4, 2), (Phase::Finetune, 8, 6)]);
        assert_eq!(progress.best, Some((0.8, 2)));
        let text = progress.stopped[0].describe();
        assert!(
            text.contains("after epoch 4") && text.contains("epoch 2's 0.8000"),
            "{text}"
        );
        // Without patience, every epoch runs; a phase whose last epoch would be the
        // stop is not called stopped.
        let (run, progress) = epochs_run(
            0,
            [
                (&head, &head_curve),
                (&plan(Phase::Finetune, 9, 10), &[0.9, 0.9]),
            ],
        );
        assert_eq!(run.len(), 10);
        assert!(progress.stopped.is_empty());
        let (_, progress) = epochs_run(
            2,
            [
                (&plan(Phase::Head, 1, 4), &head_curve),
                (&plan(Phase::Finetune, 5, 4), &[]),
            ],
        );
        assert!(progress.stopped.is_empty(), "{:?}", progress.stopped);
    }
}
