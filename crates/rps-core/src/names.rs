//! The names of graph inputs, outputs and metadata: the contract between rps-export,
//! which builds the graphs, and the stages that feed them.

/// `[N,3,S,S]` normalized images (backbone, classifier, imagenet).
pub const IMAGES: &str = "images";
/// `[N,C,H,W]`: what the frozen layers output (backbone output, finetune input).
pub const FROZEN: &str = "frozen";
/// `[N,8w]`: layer4 then global average pooling (backbone output, head input).
pub const POOLED: &str = "pooled";
/// The features a head or finetune graph takes: `pooled` values, the `frozen`
/// layers' output, or u8 `[N,3,S,S]` pixels when phase 2 trains the whole network.
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

/// The new head's weight `[classes, features]` and bias `[classes]`, by PyTorch name
/// (torchvision's `fc`; rps-export's model checks it names them so).
pub const HEAD_WEIGHT: &str = "fc.weight";
pub const HEAD_BIAS: &str = "fc.bias";

/// Metadata of classifier graphs: the class names, one a line.
pub const META_CLASSES: &str = "classes";
/// Metadata of classifier graphs: the input image size in pixels.
pub const META_IMAGE_SIZE: &str = "image_size";

/// What a train-step or eval graph input carries besides the batch, by the prefix of
/// its name: `param:layer4.0.conv1.weight`, `adam_m:fc.bias`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StateKind {
    /// A trainable parameter's current value.
    Param,
    /// Adam's first moment of a parameter.
    AdamM,
    /// Adam's second moment of a parameter.
    AdamV,
    /// A BatchNorm running statistic.
    Buffer,
}

impl StateKind {
    pub const ALL: [StateKind; 4] = [
        StateKind::Param,
        StateKind::AdamM,
        StateKind::AdamV,
        StateKind::Buffer,
    ];

    fn prefix(self) -> &'static str {
        match self {
            StateKind::Param => "param",
            StateKind::AdamM => "adam_m",
            StateKind::AdamV => "adam_v",
            StateKind::Buffer => "buffer",
        }
    }

    /// The input name of `tensor` (a PyTorch name) of this kind.
    pub fn input(self, tensor: &str) -> String {
        format!("{}:{tensor}", self.prefix())
    }

    /// Splits an input name into its kind and tensor name.
    pub fn parse(input: &str) -> Option<(StateKind, &str)> {
        let (prefix, tensor) = input.split_once(':')?;
        let kind = Self::ALL.into_iter().find(|k| k.prefix() == prefix)?;
        Some((kind, tensor))
    }
}

/// A trainable parameter's input name.
pub fn param(name: &str) -> String {
    StateKind::Param.input(name)
}

/// Adam's first moment's input name.
pub fn adam_m(name: &str) -> String {
    StateKind::AdamM.input(name)
}

/// Adam's second moment's input name.
pub fn adam_v(name: &str) -> String {
    StateKind::AdamV.input(name)
}

/// A BatchNorm running statistic's input name.
pub fn buffer(name: &str) -> String {
    StateKind::Buffer.input(name)
}

/// The output holding the updated value of an input named `input`.
pub fn updated(input: &str) -> String {
    format!("new_{input}")
}

/// The gradient of the loss with respect to a parameter (an output of step graphs).
pub fn grad(name: &str) -> String {
    format!("grad:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_inputs_parse_back() {
        for kind in StateKind::ALL {
            let name = kind.input("layer4.0.bn1.weight");
            assert_eq!(StateKind::parse(&name), Some((kind, "layer4.0.bn1.weight")));
        }
        assert_eq!(StateKind::parse("features"), None);
        assert_eq!(StateKind::parse("grad:fc.bias"), None);
        assert_eq!(updated(&param("fc.bias")), "new_param:fc.bias");
    }
}
