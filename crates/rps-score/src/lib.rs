//! rps-score: what rps-train and rps-evaluate share. [`Features`] reads a split's
//! extracted features; [`Scorer`] runs an eval graph (`head_eval.onnx`,
//! `finetune_eval.onnx`) on them with the model's current weights as inputs;
//! [`predictions`] turns logits into classes.

mod features;
mod scorer;

pub use features::{Batch, Features};
pub use scorer::{BatchOutput, Scorer, output, predictions, softmax};
