//! The row of every CSV file the pipeline writes: each struct is its file's schema
//! (field order = column order). The README's "Files" section lists them.

use serde::{Deserialize, Serialize};

use crate::{Phase, Split};

/// `rps/summary.csv`: images per split and class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetCount {
    pub split: Split,
    #[serde(with = "crate::text::text_cell")]
    pub class: String,
    pub count: usize,
}

/// `rps/split.csv` (`make all IMAGES=DIR`): each image of a person's own folder,
/// read where it is, with its split; its size and time tell a changed file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitRow {
    #[serde(with = "crate::text::text_cell")]
    pub path: String,
    pub split: Split,
    #[serde(with = "crate::text::text_cell")]
    pub class: String,
    pub bytes: u64,
    /// Last changed, in nanoseconds since 1970.
    pub modified_ns: u64,
}

/// `cache/index.csv`: what each tensor row holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexRow {
    /// Row in the split's tensor.
    pub row: usize,
    pub split: Split,
    /// Augmented view number (always 0 for the test split).
    pub view: usize,
    /// `split/class/file` inside the dataset folder.
    #[serde(with = "crate::text::text_cell")]
    pub path: String,
    #[serde(with = "crate::text::text_cell")]
    pub class: String,
    pub label: usize,
}

/// `results/epochs.csv`: one row per epoch, written as training goes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    /// Numbered on across phases (21 to 40 for phase 2 by default).
    pub epoch: usize,
    /// `head` (phase 1) or `finetune` (phase 2).
    pub phase: Phase,
    /// Mean loss over the epoch's training batches, in train mode (dropout on).
    pub train_loss: f64,
    pub train_acc: f64,
    pub test_loss: f64,
    pub test_acc: f64,
    /// The head's learning rate at the epoch's first and last step (the same with
    /// a constant schedule; each earlier stage's is `FT_LR_MULT` times smaller).
    pub lr_first: f64,
    pub lr_last: f64,
    pub seconds: f64,
    /// On the held-out part of the training images (empty without `--val-fraction`).
    pub val_loss: Option<f64>,
    pub val_acc: Option<f64>,
}

/// How phase 2 ended beside phase 1, by test loss: whether fine-tuning helped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseOutcome {
    /// Phase 1's last epoch and its test loss.
    pub head: (usize, f64),
    /// Phase 2's last epoch and its test loss.
    pub finetune: (usize, f64),
}

impl PhaseOutcome {
    /// From a run's epochs; `None` unless both phases ran.
    pub fn of(rows: &[EpochRow]) -> Option<Self> {
        let last = |phase| {
            rows.iter()
                .rev()
                .find(|r| r.phase == phase)
                .map(|r| (r.epoch, r.test_loss))
        };
        Some(Self {
            head: last(Phase::Head)?,
            finetune: last(Phase::Finetune)?,
        })
    }

    /// Phase 2 ended with a higher test loss than phase 1 (or one that is not a
    /// number).
    pub fn worse(&self) -> bool {
        use std::cmp::Ordering::Greater;
        matches!(
            self.finetune.1.partial_cmp(&self.head.1),
            Some(Greater) | None
        )
    }

    /// `phase 2 ended worse than phase 1: test loss 0.8123 at epoch 40 against
    /// 0.6012 at epoch 20`.
    pub fn describe(&self) -> String {
        let verdict = if self.worse() { "worse" } else { "no worse" };
        let ((head_epoch, head_loss), (ft_epoch, ft_loss)) = (self.head, self.finetune);
        format!(
            "phase 2 ended {verdict} than phase 1: test loss {ft_loss:.4} at epoch {ft_epoch} against {head_loss:.4} at epoch {head_epoch}"
        )
    }
}

/// `results/lr_find_head.csv`, `results/lr_find_finetune.csv`: the learning-rate
/// finder's sweep, one step a row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrFindRow {
    /// From 1.
    pub step: usize,
    /// The head's rate at this step.
    pub lr: f64,
    /// The batch's training loss (dropout on).
    pub loss: f64,
    /// fastai's smoothed loss: a debiased moving average, beta 0.98.
    pub smoothed_loss: f64,
}

/// `graphs/summary.csv`: the model, one layer a row, as PyTorch names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRow {
    /// The module's PyTorch name: `conv1`, `layer4.1.bn2`, `fc`.
    pub name: String,
    /// The module's PyTorch class: `Conv2d`, `BatchNorm2d`, `MaxPool2d`, ...
    pub kind: String,
    /// Channels x height x width of one image's output (features for `fc`).
    pub output_shape: String,
    /// Learned parameters, as PyTorch counts them (BatchNorm statistics are not).
    pub params: usize,
    /// Whether phase 1 and phase 2 train them.
    pub trains_head: bool,
    pub trains_finetune: bool,
}

impl LayerRow {
    /// Parameters in all of `rows`, and those phase 1 and phase 2 train: what
    /// `params.csv` counts.
    pub fn totals(rows: &[LayerRow]) -> [usize; 3] {
        let sum =
            |keep: fn(&LayerRow) -> bool| rows.iter().filter(|r| keep(r)).map(|r| r.params).sum();
        [
            sum(|_| true),
            sum(|r| r.trains_head),
            sum(|r| r.trains_finetune),
        ]
    }
}

/// `results/params.csv`: parameter counts per phase, as the recipe prints them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamsRow {
    pub phase: Phase,
    pub total: usize,
    pub trainable: usize,
}

/// `results/summary.csv`: one metric of the test split a row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    pub metric: String,
    #[serde(with = "crate::text::text_cell")]
    pub value: String,
}

/// `results/per_class.csv`: each class's scores on the test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerClassRow {
    #[serde(with = "crate::text::text_cell")]
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: usize, phase: Phase, test_loss: f64) -> EpochRow {
        EpochRow {
            epoch,
            phase,
            test_loss,
            ..EpochRow::default()
        }
    }

    #[test]
    fn phase_two_is_judged_by_its_last_test_loss_against_phase_ones() {
        let mut rows = vec![
            row(1, Phase::Head, 0.9),
            row(2, Phase::Head, 0.6),
            row(3, Phase::Finetune, 0.5),
            row(4, Phase::Finetune, 0.7),
        ];
        let outcome = PhaseOutcome::of(&rows).unwrap();
        assert_eq!((outcome.head, outcome.finetune), ((2, 0.6), (4, 0.7)));
        assert!(outcome.worse());
        assert_eq!(
            outcome.describe(),
            "phase 2 ended worse than phase 1: test loss 0.7000 at epoch 4 against 0.6000 at epoch 2"
        );
        rows[3].test_loss = 0.6;
        assert!(!PhaseOutcome::of(&rows).unwrap().worse());
        rows[3].test_loss = f64::NAN;
        assert!(PhaseOutcome::of(&rows).unwrap().worse());
        assert_eq!(PhaseOutcome::of(&rows[..2]), None);
    }
}
