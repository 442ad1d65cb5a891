//! The row of every CSV file the pipeline writes: each struct is its file's schema
//! (field order = column order). The README's "Files" section lists them.

use serde::{Deserialize, Serialize};

use crate::Split;

/// `rps/summary.csv`: images per split and class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetCount {
    pub split: Split,
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
    pub path: String,
    pub class: String,
    pub label: usize,
}
