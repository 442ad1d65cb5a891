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

/// Metadata of classifier graphs: the class names, one a line.
pub const META_CLASSES: &str = "classes";
/// Metadata of classifier graphs: the input normalization the network needs
/// (`Normalization::to_text`).
pub const META_NORMALIZATION: &str = "normalization";
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

/// A group of parameters that share a learning rate in a train step: the head, or
/// one trained stage, as the network names it. Its rate is the input `lr:NAME`, the
/// head's rate divided by `FT_LR_MULT` to the power `depth`. Which groups a step has
/// is the network's fact: the step graph lists them in its metadata
/// ([`META_RATE_GROUPS`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RateGroup {
    /// Stages between the group and the head: 0 for the head, 1 for the last stage.
    pub depth: u32,
    /// The network's name for it: `fc`, `layer4`, `stem`.
    pub name: String,
}

/// Metadata of train-step graphs: their rate groups, `NAME:DEPTH` separated by
/// commas (`fc:0,layer4:1`).
pub const META_RATE_GROUPS: &str = "rate_groups";

impl RateGroup {
    const PREFIX: &str = "lr:";

    /// The group's input name: `lr:layer4`.
    pub fn input(&self) -> String {
        format!("{}{}", Self::PREFIX, self.name)
    }

    /// Whether `input` is a learning rate's.
    pub fn is_rate(input: &str) -> bool {
        input.starts_with(Self::PREFIX)
    }

    /// `groups` as [`META_RATE_GROUPS`] holds them.
    pub fn list(groups: &[RateGroup]) -> String {
        let items: Vec<String> = groups
            .iter()
            .map(|g| format!("{}:{}", g.name, g.depth))
            .collect();
        items.join(",")
    }

    /// The groups [`META_RATE_GROUPS`] lists, or what is wrong with the text.
    pub fn parse_list(text: &str) -> Result<Vec<RateGroup>, String> {
        text.split(',')
            .map(|item| {
                let (name, depth) = item
                    .rsplit_once(':')
                    .filter(|(name, _)| !name.is_empty())
                    .ok_or_else(|| format!("{item:?} is not NAME:DEPTH"))?;
                let depth = depth
                    .parse()
                    .map_err(|_| format!("{item:?}: the depth is not a whole number"))?;
                Ok(RateGroup {
                    depth,
                    name: name.to_string(),
                })
            })
            .collect()
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
    fn rate_group_lists_parse_back_and_refuse_what_is_not_one() {
        let groups = [("fc", 0), ("layer4", 1), ("_blocks.11", 2)].map(|(name, depth)| RateGroup {
            depth,
            name: name.into(),
        });
        let text = RateGroup::list(&groups);
        assert_eq!(text, "fc:0,layer4:1,_blocks.11:2");
        assert_eq!(RateGroup::parse_list(&text).unwrap(), groups);
        assert_eq!(groups[1].input(), "lr:layer4");
        assert!(RateGroup::is_rate("lr:fc") && !RateGroup::is_rate("param:fc.bias"));
        for bad in ["", "fc", ":1", "fc:-1", "fc:one", "fc:0,"] {
            assert!(RateGroup::parse_list(bad).is_err(), "{bad}");
        }
    }
}
