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
