//! A network as every stage sees it, whichever it is: [`Arch`] (which [`Net`], its
//! width, image size and classes), the parts its definition is written with
//! ([`Module`] names, [`ConvSpec`], the [`Lowering`] each graph implements), and
//! what the pipeline asks of any network: its stages (where `UNFREEZE` cuts and the
//! per-stage rates divide), its head, its input normalization, the tensors phase 2
//! trains and their counts. Each network's own layout lives in its module
//! ([`crate::resnet`], [`crate::mobilenet_v2`], [`crate::efficientnet_lite`]); this
//! file only dispatches to it.

use std::fmt::Display;

use rps_core::names::RateGroup;
use rps_core::{Normalization, Unfreeze};

use crate::registry::{Description, TensorKind};
use crate::window::Window;
use crate::{efficientnet_lite, mobilenet_v2, resnet};

/// Named tensor shapes, in order.
pub type Shapes = Vec<(String, Vec<usize>)>;

/// A module's path in the state dict, built from parts as candle's `VarBuilder::pp`
/// builds it: `Module::root().pp("layer4").pp(0).pp("bn1").tensor("weight")` is
/// `layer4.0.bn1.weight`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module(pub(crate) String);

impl Module {
    pub fn root() -> Self {
        Self(String::new())
    }

    /// The sub-module `part`.
    pub fn pp(&self, part: impl Display) -> Self {
        if self.0.is_empty() {
            Self(part.to_string())
        } else {
            Self(format!("{}.{part}", self.0))
        }
    }

    /// The module's path: `layer4.0.bn1`.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The tensor `leaf` of this module.
    pub fn tensor(&self, leaf: &str) -> String {
        self.pp(leaf).0
    }

    /// Whether `tensor` belongs to this module or one below it.
    pub fn owns(&self, tensor: &str) -> bool {
        tensor
            .strip_prefix(self.0.as_str())
            .is_some_and(|rest| rest.starts_with('.'))
    }
}

/// A BatchNorm's tensor, by its leaf name: learned scale and shift, then running
/// statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BnTensor(&'static str);

impl BnTensor {
    pub const WEIGHT: BnTensor = BnTensor("weight");
    pub const BIAS: BnTensor = BnTensor("bias");
    pub const RUNNING_MEAN: BnTensor = BnTensor("running_mean");
    pub const RUNNING_VAR: BnTensor = BnTensor("running_var");
    pub const PARAMS: [BnTensor; 2] = [Self::WEIGHT, Self::BIAS];
    pub const BUFFERS: [BnTensor; 2] = [Self::RUNNING_MEAN, Self::RUNNING_VAR];
    pub const ALL: [BnTensor; 4] = [
        Self::WEIGHT,
        Self::BIAS,
        Self::RUNNING_MEAN,
        Self::RUNNING_VAR,
    ];

    /// The leaf name, as in `bn1.running_var`.
    pub fn leaf(self) -> &'static str {
        self.0
    }
}

/// A BatchNorm's constants: the `eps` added to the variance, and the `momentum`
/// with which train mode moves the running statistics toward the batch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BnConstants {
    pub eps: f32,
    pub momentum: f32,
}

/// PyTorch's `nn.BatchNorm2d` defaults, which torchvision's ResNets keep.
pub const TORCH_BN: BnConstants = BnConstants {
    eps: 1e-5,
    momentum: 0.1,
};

/// The networks the pipeline builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Net {
    ResNet18,
    ResNet34,
    ResNet50,
    MobileNetV2,
    EfficientNetLite0,
}

impl Net {
    pub const ALL: [Net; 5] = [
        Net::ResNet18,
        Net::ResNet34,
        Net::ResNet50,
        Net::MobileNetV2,
        Net::EfficientNetLite0,
    ];

    /// The name `ARCH` gives it, torchvision's where it has one: `resnet18`.
    pub fn name(self) -> &'static str {
        match self {
            Net::ResNet18 => "resnet18",
            Net::ResNet34 => "resnet34",
            Net::ResNet50 => "resnet50",
            Net::MobileNetV2 => "mobilenet_v2",
            Net::EfficientNetLite0 => "efficientnet_lite0",
        }
    }

    pub fn parse(name: &str) -> Option<Net> {
        Net::ALL.into_iter().find(|net| net.name() == name)
    }

    /// The width its published weights have: the channels of its first stage.
    pub fn full_width(self) -> usize {
        match self {
            Net::ResNet18 | Net::ResNet34 | Net::ResNet50 => resnet::FULL_WIDTH,
            Net::MobileNetV2 => mobilenet_v2::FULL_WIDTH,
            Net::EfficientNetLite0 => efficientnet_lite::FULL_WIDTH,
        }
    }

    /// `width` if the network can be built that wide, or why not.
    pub fn check_width(self, width: usize) -> Result<usize, String> {
        match self {
            Net::ResNet18 | Net::ResNet34 | Net::ResNet50 => Ok(width),
            Net::MobileNetV2 => mobilenet_v2::check_width(width),
            Net::EfficientNetLite0 => efficientnet_lite::check_width(width),
        }
    }
}

/// A network's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arch {
    pub net: Net,
    /// Channels of the first stage ([`Net::full_width`] is the published one):
    /// a ResNet's base planes, MobileNetV2's stem (`width_mult` = width / 32).
    pub width: usize,
    /// Input images are `image_size` x `image_size`.
    pub image_size: usize,
    /// Classes of the new head.
    pub classes: usize,
}

/// How a graph computes the layer kinds the model is made of. `Map` is a feature map
/// as that graph holds it (its value, layout and size).
pub trait Lowering {
    type Map: Clone;

    /// A convolution and the BatchNorm after it.
    fn conv_bn(&mut self, conv: &ConvSpec, x: &Self::Map) -> Self::Map;
    fn relu(&mut self, x: &Self::Map) -> Self::Map;
    /// `min(max(x, 0), 6)`: PyTorch's `ReLU6`.
    fn relu6(&mut self, x: &Self::Map) -> Self::Map;
    /// The residual sum of a block.
    fn add(&mut self, a: &Self::Map, b: &Self::Map) -> Self::Map;
    fn max_pool(&mut self, x: &Self::Map, window: Window) -> Self::Map;
    /// Global average pooling, then flatten: `[N, C]` values.
    fn global_average_pool(&mut self, x: &Self::Map) -> Self::Map;
    /// Called before stage `stage`'s first layer (not the stem's), where a lowering
    /// may change its layout.
    fn begin_stage(&mut self, _stage: usize, x: Self::Map) -> Self::Map {
        x
    }
}

/// A convolution (no bias) followed by its BatchNorm.
#[derive(Debug, Clone)]
pub struct ConvSpec {
    pub conv: Module,
    pub bn: Module,
    pub cin: usize,
    pub cout: usize,
    pub window: Window,
    /// Convolution groups: 1, or `cin` for a depthwise convolution (one filter per
    /// channel).
    pub groups: usize,
    /// The BatchNorm's constants.
    pub bn_constants: BnConstants,
}

impl ConvSpec {
    /// A dense convolution (one group) with PyTorch's BatchNorm constants.
    pub fn new((conv, bn): (Module, Module), cin: usize, cout: usize, window: Window) -> Self {
        Self {
            conv,
            bn,
            cin,
            cout,
            window,
            groups: 1,
            bn_constants: TORCH_BN,
        }
    }

    /// A depthwise convolution of `channels`: one `k` x `k` filter per channel.
    pub fn depthwise(modules: (Module, Module), channels: usize, window: Window) -> Self {
        Self {
            groups: channels,
            ..Self::new(modules, channels, channels, window)
        }
    }

    /// The same convolution with other BatchNorm constants.
    pub fn with_bn(self, bn_constants: BnConstants) -> Self {
        Self {
            bn_constants,
            ..self
        }
    }

    /// One filter per channel.
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.cin && self.cin == self.cout
    }

    /// A dense 1x1, stride-1 convolution: a product over channels at each position.
    pub fn is_pointwise(&self) -> bool {
        self.window.kernel == 1 && self.window.stride == 1 && self.groups == 1
    }

    pub fn weight(&self) -> String {
        self.conv.tensor("weight")
    }

    pub fn weight_shape(&self) -> Vec<usize> {
        let k = self.window.kernel;
        vec![self.cout, self.cin / self.groups, k, k]
    }

    pub fn bn_tensor(&self, tensor: BnTensor) -> String {
        self.bn.tensor(tensor.0)
    }

    pub fn out_size(&self, size: usize) -> usize {
        self.window.out_size(size)
    }
}

/// torchvision's weights were trained on images normalized with ImageNet's mean and
/// std (`transforms.Normalize` in its reference scripts).
pub const IMAGENET_NORMALIZATION: Normalization = Normalization {
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
};

impl Arch {
    /// What the network's input pixels go through: what its weights were
    /// trained on.
    pub fn normalization(&self) -> Normalization {
        match self.net {
            Net::ResNet18 | Net::ResNet34 | Net::ResNet50 | Net::MobileNetV2 => {
                IMAGENET_NORMALIZATION
            }
            Net::EfficientNetLite0 => efficientnet_lite::NORMALIZATION,
        }
    }

    /// Its stages in forward order, by the names `UNFREEZE` and the per-stage rates
    /// give them: the stem first, each then named by its first module.
    pub fn stages(&self) -> &'static [&'static str] {
        match self.net {
            Net::ResNet18 | Net::ResNet34 | Net::ResNet50 => &resnet::STAGES,
            Net::MobileNetV2 => &mobilenet_v2::STAGES,
            Net::EfficientNetLite0 => &efficientnet_lite::STAGES,
        }
    }

    /// The classifier the new head replaces: `NAME.weight` `[classes, features]`
    /// and `NAME.bias` `[classes]`, after dropout.
    pub fn head(&self) -> Module {
        let name = match self.net {
            Net::ResNet18 | Net::ResNet34 | Net::ResNet50 => resnet::HEAD,
            Net::MobileNetV2 => mobilenet_v2::HEAD,
            Net::EfficientNetLite0 => efficientnet_lite::HEAD,
        };
        Module(name.into())
    }

    /// Stage `stage` (0 is the stem) of the network's forward.
    fn stage<L: Lowering>(&self, l: &mut L, x: L::Map, stage: usize) -> L::Map {
        match self.net {
            Net::ResNet18 | Net::ResNet34 | Net::ResNet50 => resnet::stage(self, l, x, stage),
            Net::MobileNetV2 => mobilenet_v2::stage(self, l, x, stage),
            Net::EfficientNetLite0 => efficientnet_lite::stage(self, l, x, stage),
        }
    }

    /// The forward from the start of stage `from` to the end of stage `to` (0 is
    /// the stem).
    pub fn forward<L: Lowering>(&self, l: &mut L, x: L::Map, from: usize, to: usize) -> L::Map {
        let mut x = x;
        for stage in from..=to {
            if stage > 0 {
                x = l.begin_stage(stage, x);
            }
            x = self.stage(l, x, stage);
        }
        x
    }

    /// From stage `from` through the last stage and the global average pool:
    /// `[N, features]`.
    pub fn pooled<L: Lowering>(&self, l: &mut L, x: L::Map, from: usize) -> L::Map {
        let x = self.forward(l, x, from, self.stages().len() - 1);
        l.global_average_pool(&x)
    }

    /// What the forward asks for: every tensor by stage, each stage's input, the
    /// pooled features.
    pub fn describe(&self) -> Description {
        Description::of(self)
    }

    /// The first stage phase 2 trains from `unfreeze` (0 is the stem, for `all`;
    /// k is layerk), or why this network has no such stage, with the choices.
    pub fn first_stage(&self, unfreeze: Unfreeze) -> Result<usize, String> {
        match unfreeze {
            Unfreeze::All => Ok(0),
            Unfreeze::Last => Ok(self.stages().len() - 1),
            Unfreeze::Stage(name) => self
                .stages()
                .iter()
                .skip(1)
                .position(|stage| *stage == name.as_str())
                .map(|at| at + 1)
                .ok_or_else(|| {
                    let choices: Vec<String> = self
                        .unfreeze_choices()
                        .iter()
                        .map(Unfreeze::to_string)
                        .collect();
                    format!(
                        "{} has no stage {name:?} to start phase 2 from: expected one of {}",
                        self.net.name(),
                        choices.join(", ")
                    )
                }),
        }
    }

    /// What `UNFREEZE` may name, the whole network first, then each stage.
    pub fn unfreeze_choices(&self) -> Vec<Unfreeze> {
        let stages = self.stages()[1..].iter().map(|name| Unfreeze::stage(name));
        std::iter::once(Unfreeze::All)
            .chain(stages)
            .chain([Unfreeze::Last])
            .collect()
    }

    /// `unfreeze` as the stage it starts at (`last` named), once checked.
    pub fn resolve(&self, unfreeze: Unfreeze) -> Result<Unfreeze, String> {
        Ok(match self.first_stage(unfreeze)? {
            0 => Unfreeze::All,
            stage => Unfreeze::stage(self.stages()[stage]),
        })
    }

    /// The learning-rate group of a tensor phase 2 trains: the head, or its stage
    /// as [`Arch::stages`] names it, as many stages below the head as it lies.
    pub fn rate_group(&self, tensor: &str) -> RateGroup {
        let head = self.head();
        if head.owns(tensor) {
            return RateGroup {
                depth: 0,
                name: head.name().into(),
            };
        }
        let stage = self
            .describe()
            .tensors
            .iter()
            .find(|t| t.name == tensor)
            .map(|t| t.stage)
            .expect("a tensor of the network");
        let stages = self.stages();
        RateGroup {
            depth: (stages.len() - stage) as u32,
            name: stages[stage].into(),
        }
    }

    /// [`Arch::first_stage`] of a setting export has checked.
    fn stage_index(&self, unfreeze: Unfreeze) -> usize {
        self.first_stage(unfreeze)
            .expect("UNFREEZE is checked against the network where it enters (export::Config)")
    }

    /// A lower bound of the floats one image keeps for the backward of phase 2's
    /// step from `unfreeze` ([`Description::step_floats_per_image`]).
    pub fn step_floats_per_image(&self, unfreeze: Unfreeze) -> u64 {
        self.describe()
            .step_floats_per_image(self.stage_index(unfreeze))
    }

    /// A lower bound of the floats one image holds at once in an inference forward
    /// from where phase 2 starts at `unfreeze` ([`Unfreeze::All`]: the whole
    /// backbone, as extract runs it).
    pub fn forward_floats_per_image(&self, unfreeze: Unfreeze) -> u64 {
        self.describe()
            .forward_floats_per_image(self.stage_index(unfreeze))
    }

    /// What phase 2 reads per image when it trains from `unfreeze`: the frozen
    /// layers' output `[C, H, W]`, or the image.
    pub fn frozen_shape(&self, unfreeze: Unfreeze) -> [usize; 3] {
        let (c, s) = self.describe().stage_inputs[self.stage_index(unfreeze)];
        [c, s, s]
    }

    /// The forward from where phase 2 starts training at `unfreeze` through the
    /// global average pool: `[N, features]`.
    pub fn trained<L: Lowering>(&self, l: &mut L, x: L::Map, unfreeze: Unfreeze) -> L::Map {
        self.pooled(l, x, self.stage_index(unfreeze))
    }

    /// The frozen stages, from the image to where phase 2 starts at `unfreeze`.
    pub fn frozen<L: Lowering>(&self, l: &mut L, x: L::Map, unfreeze: Unfreeze) -> L::Map {
        match self.stage_index(unfreeze) {
            0 => x,
            first => self.forward(l, x, 0, first - 1),
        }
    }

    /// Channels after the last stage: the pooled features.
    pub fn features(&self) -> usize {
        self.describe().features
    }

    /// Every backbone tensor with its shape, BatchNorm statistics included, in
    /// forward order.
    pub fn backbone_shapes(&self) -> Shapes {
        self.describe().shapes(None, 0)
    }

    /// A head for `classes` classes.
    pub fn head_shapes(&self, classes: usize) -> [(String, Vec<usize>); 2] {
        [
            (self.head().tensor("weight"), vec![classes, self.features()]),
            (self.head().tensor("bias"), vec![classes]),
        ]
    }

    /// What phase 2 trains from `unfreeze`: every trained convolution's weight and
    /// BatchNorm scale and shift, in forward order, then the head.
    pub fn finetune_params(&self, unfreeze: Unfreeze) -> Shapes {
        let first = self.stage_index(unfreeze);
        let mut params = self.describe().shapes(Some(TensorKind::Param), first);
        params.extend(self.head_shapes(self.classes));
        params
    }

    /// The trained stages' BatchNorm running statistics, which phase 2 updates.
    pub fn finetune_buffers(&self, unfreeze: Unfreeze) -> Shapes {
        let first = self.stage_index(unfreeze);
        self.describe().shapes(Some(TensorKind::Buffer), first)
    }

    /// Learned parameters (BatchNorm statistics are not parameters), as PyTorch
    /// counts, phase 2 training from `unfreeze`.
    pub fn param_counts(&self, unfreeze: Unfreeze) -> ParamCounts {
        let count = |shapes: &[(String, Vec<usize>)]| -> usize {
            shapes
                .iter()
                .map(|(_, s)| s.iter().product::<usize>())
                .sum()
        };
        let head = count(&self.head_shapes(self.classes));
        let backbone = self.describe().shapes(Some(TensorKind::Param), 0);
        ParamCounts {
            total: count(&backbone) + head,
            head,
            finetune: count(&self.finetune_params(unfreeze)),
        }
    }
}

/// Parameter counts as the recipe prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCounts {
    pub total: usize,
    /// Trainable in phase 1 (the head).
    pub head: usize,
    /// Trainable in phase 2 (the trained stages and the head).
    pub finetune: usize,
}
