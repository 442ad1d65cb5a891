//! The row of every CSV file the pipeline writes: each struct is its file's schema
//! (field order = column order). The README's "Files" section lists them.

use serde::{Deserialize, Serialize};

use crate::Split;

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
    pub phase: String,
    /// Mean loss over the epoch's training batches, in train mode (dropout on).
    pub train_loss: f64,
    pub train_acc: f64,
    pub test_loss: f64,
    pub test_acc: f64,
    pub lr: f64,
    pub seconds: f64,
    /// On the held-out part of the training images (empty without `--val-fraction`).
    pub val_loss: Option<f64>,
    pub val_acc: Option<f64>,
}

/// `results/params.csv`: parameter counts per phase, as the recipe prints them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamsRow {
    pub phase: String,
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
