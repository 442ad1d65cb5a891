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
/// Scalar float: Adam's beta1 (0.9; one-cycle moves it from step to step).
pub const BETA1: &str = "beta1";
/// `[classes]` float: each class's weight in a train step's loss (all ones: the
/// plain mean cross-entropy).
pub const CLASS_WEIGHTS: &str = "class_weights";
/// Scalar float: decoupled weight decay (AdamW); 0 is plain Adam.
pub const WEIGHT_DECAY: &str = "weight_decay";
/// Scalar float: mean cross-entropy of the batch (weighted by `class_weights` in
/// train steps).
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

/// What a learning-rate input of a train step applies to (scalar float inputs
/// `lr:fc`, `lr:layer4`, ... `lr:stem`): the head, or one trained stage, so each
/// stage may have its own rate (`FT_LR_MULT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RateGroup {
    Head,
    /// 0 is the stem (conv1, bn1), k is layerk.
    Stage(usize),
}

impl RateGroup {
    const PREFIX: &str = "lr";
    /// torchvision's stages, as their tensors' names start.
    const STAGES: [&str; 5] = ["stem", "layer1", "layer2", "layer3", "layer4"];

    /// The group of a parameter, by its PyTorch name: `fc.*` is the head, `layerK.*`
    /// stage K, anything else (conv1, bn1) the stem.
    pub fn of(tensor: &str) -> RateGroup {
        let module = tensor.split('.').next().unwrap_or("");
        if HEAD_WEIGHT.starts_with(&format!("{module}.")) {
            return RateGroup::Head;
        }
        RateGroup::Stage(Self::STAGES.iter().position(|s| *s == module).unwrap_or(0))
    }

    fn name(self) -> &'static str {
        match self {
            RateGroup::Head => HEAD_WEIGHT.split('.').next().expect("a module"),
            RateGroup::Stage(stage) => Self::STAGES[stage],
        }
    }

    /// The group's input name.
    pub fn input(self) -> String {
        format!("{}:{}", Self::PREFIX, self.name())
    }

    /// The group an input name is the rate of.
    pub fn parse(input: &str) -> Option<RateGroup> {
        let (prefix, name) = input.split_once(':')?;
        if prefix != Self::PREFIX {
            return None;
        }
        (0..Self::STAGES.len())
            .map(RateGroup::Stage)
            .chain([RateGroup::Head])
            .find(|g| g.name() == name)
    }

    /// The stages between the group and the head: 0 for the head, 1 for layer4, ...
    /// 5 for the stem; `FT_LR_MULT` divides the head's rate by k to this power.
    pub fn depth(self) -> u32 {
        match self {
            RateGroup::Head => 0,
            RateGroup::Stage(stage) => (Self::STAGES.len() - stage) as u32,
        }
    }
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

    #[test]
    fn rate_groups_follow_torchvision_names_and_parse_back() {
        let groups = [
            "conv1.weight",
            "bn1.bias",
            "layer1.0.conv1.weight",
            "layer4.1.bn2.weight",
            "fc.bias",
        ]
        .map(RateGroup::of);
        use RateGroup::*;
        assert_eq!(groups, [Stage(0), Stage(0), Stage(1), Stage(4), Head]);
        let inputs = groups.map(|g| g.input());
        assert_eq!(
            inputs,
            ["lr:stem", "lr:stem", "lr:layer1", "lr:layer4", "lr:fc"]
        );
        for g in groups {
            assert_eq!(RateGroup::parse(&g.input()), Some(g));
        }
        assert_eq!(groups.map(RateGroup::depth), [5, 5, 4, 1, 0]);
        assert_eq!(RateGroup::parse("lr:layer5"), None);
        assert_eq!(RateGroup::parse("param:fc.bias"), None);
    }
}
