//! Input and output names of the graphs, shared by the builder and the stages that
//! feed them.

/// `[N,3,S,S]` normalized images (backbone, model, imagenet).
pub const IMAGES: &str = "images";
/// `[N,4w,S/16,S/16]`: what layer3 outputs (backbone output, finetune input).
pub const LAYER3: &str = "layer3";
/// `[N,8w]`: layer4 then global average pooling (backbone output, head input).
pub const POOLED: &str = "pooled";
/// The features a head or finetune graph takes (`pooled` or `layer3` values).
pub const FEATURES: &str = "features";
/// `[N]` int64 class indices.
pub const LABELS: &str = "labels";
/// `[N,8w]` dropout mask: 0 for dropped, `1/(1-p)` for kept; all ones turns dropout off.
pub const DROPOUT_MASK: &str = "dropout_mask";
/// Scalar float: the Adam step number, 1 for the first step.
pub const STEP: &str = "step";
/// Scalar float: the learning rate.
pub const LR: &str = "lr";
/// Scalar float: decoupled weight decay (AdamW); 0 is plain Adam.
pub const WEIGHT_DECAY: &str = "weight_decay";
/// Scalar float: mean cross-entropy of the batch.
pub const LOSS: &str = "loss";
/// `[N,classes]` logits.
pub const LOGITS: &str = "logits";
/// `[N,classes]` softmax probabilities.
pub const PROBS: &str = "probs";

/// A trainable parameter's current value (input) by PyTorch name.
pub fn param(name: &str) -> String {
    format!("param:{name}")
}

/// Adam's first moment of a parameter.
pub fn adam_m(name: &str) -> String {
    format!("adam_m:{name}")
}

/// Adam's second moment of a parameter.
pub fn adam_v(name: &str) -> String {
    format!("adam_v:{name}")
}

/// A BatchNorm running statistic.
pub fn buffer(name: &str) -> String {
    format!("buffer:{name}")
}

/// The output holding the updated value of an input named `input`.
pub fn updated(input: &str) -> String {
    format!("new_{input}")
}

/// The gradient of the loss with respect to a parameter (an output of step graphs).
pub fn grad(name: &str) -> String {
    format!("grad:{name}")
}
