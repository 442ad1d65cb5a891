//! The one ResNet definition, laid out as torchvision's `resnet.py` is (`ResNet`,
//! `_make_layer`, `BasicBlock`, `Bottleneck`), for resnet18, resnet34 and resnet50
//! ([`Net`]), with their parameter names, a configurable base width (64 =
//! torchvision), input size and class count. Every tensor name comes from
//! [`Module`].
//!
//! The forward is written once, here ([`Block::forward`], [`Arch::forward`]), over a
//! [`Lowering`]: how a graph computes each layer kind (standard ONNX operators,
//! maps by position with folded BatchNorm, or a train step that records each layer
//! for its backward). Graphs differ by their lowering, never by a second walk.

use std::fmt::Display;

use rps_core::names::RateGroup;
use rps_core::{Normalization, Unfreeze};

use crate::registry::{Description, TensorKind};
use crate::window::Window;

/// Named tensor shapes, in order.
pub type Shapes = Vec<(String, Vec<usize>)>;

/// A module's path in the state dict, built from parts as candle's `VarBuilder::pp`
/// builds it: `Module::root().pp("layer4").pp(0).pp("bn1").tensor("weight")` is
/// `layer4.0.bn1.weight`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module(String);

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

/// The classifier: `fc.weight` `[classes, 8w]` and `fc.bias` `[classes]`.
pub fn fc() -> Module {
    Module::root().pp("fc")
}

/// The torchvision ResNets the pipeline builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Net {
    ResNet18,
    ResNet34,
    ResNet50,
}

impl Net {
    pub const ALL: [Net; 3] = [Net::ResNet18, Net::ResNet34, Net::ResNet50];

    /// torchvision's name: `resnet18`.
    pub fn name(self) -> &'static str {
        match self {
            Net::ResNet18 => "resnet18",
            Net::ResNet34 => "resnet34",
            Net::ResNet50 => "resnet50",
        }
    }

    pub fn parse(name: &str) -> Option<Net> {
        Net::ALL.into_iter().find(|net| net.name() == name)
    }

    /// Blocks in layer1 to layer4.
    fn blocks(self) -> [usize; 4] {
        match self {
            Net::ResNet18 => [2, 2, 2, 2],
            Net::ResNet34 | Net::ResNet50 => [3, 4, 6, 3],
        }
    }

    pub fn block_kind(self) -> BlockKind {
        match self {
            Net::ResNet18 | Net::ResNet34 => BlockKind::Basic,
            Net::ResNet50 => BlockKind::Bottleneck,
        }
    }
}

/// The shape of a ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arch {
    pub net: Net,
    /// Planes of the first stage; stages have w, 2w, 4w, 8w (times the block's
    /// expansion out of each block).
    pub width: usize,
    /// Input images are `image_size` x `image_size`.
    pub image_size: usize,
    /// Classes of the new head.
    pub classes: usize,
}

/// torchvision's two residual blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// `conv1` (3x3, the stride), `bn1`, ReLU, `conv2` (3x3), `bn2`.
    Basic,
    /// `conv1` (1x1), `bn1`, ReLU, `conv2` (3x3, the stride), `bn2`, ReLU, `conv3`
    /// (1x1, four times the planes), `bn3` (torchvision's "ResNet v1.5").
    Bottleneck,
}

impl BlockKind {
    /// Output channels per plane.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// torchvision's `BasicBlock` or `Bottleneck(inplanes, planes, stride)`: its main
/// path, plus `downsample` (1x1 conv, `stride`, and its BatchNorm) when the shape
/// changes; the output is ReLU(main path + identity).
#[derive(Debug, Clone)]
pub struct Block {
    pub module: Module,
    pub kind: BlockKind,
    pub cin: usize,
    pub planes: usize,
    pub stride: usize,
}

/// How a graph computes the layer kinds the model is made of. `Map` is a feature map
/// as that graph holds it (its value, layout and size).
pub trait Lowering {
    type Map: Clone;

    /// A convolution and the BatchNorm after it.
    fn conv_bn(&mut self, conv: &ConvSpec, x: &Self::Map) -> Self::Map;
    fn relu(&mut self, x: &Self::Map) -> Self::Map;
    /// The residual sum of a block.
    fn add(&mut self, a: &Self::Map, b: &Self::Map) -> Self::Map;
    fn max_pool(&mut self, x: &Self::Map, window: Window) -> Self::Map;
    /// Global average pooling, then flatten: `[N, C]` values.
    fn global_average_pool(&mut self, x: &Self::Map) -> Self::Map;
    /// Called before `layer{stage}`'s first block, where a lowering may change its
    /// layout.
    fn begin_stage(&mut self, _stage: usize, x: Self::Map) -> Self::Map {
        x
    }
}

impl Block {
    /// `BasicBlock.forward` or `Bottleneck.forward`: the main path (ReLU after each
    /// convolution but the last), plus the identity or its downsample, then ReLU.
    pub fn forward<L: Lowering>(&self, l: &mut L, x: &L::Map) -> L::Map {
        let path = self.main_path();
        let mut out = x.clone();
        for (i, conv) in path.iter().enumerate() {
            out = l.conv_bn(conv, &out);
            if i + 1 < path.len() {
                out = l.relu(&out);
            }
        }
        let identity = match self.downsample() {
            Some(downsample) => l.conv_bn(&downsample, x),
            None => x.clone(),
        };
        let sum = l.add(&out, &identity);
        l.relu(&sum)
    }

    pub fn cout(&self) -> usize {
        self.planes * self.kind.expansion()
    }

    /// The main path's convolutions, each followed by its BatchNorm and, all but
    /// the last, a ReLU.
    pub fn main_path(&self) -> Vec<ConvSpec> {
        let m = &self.module;
        let (cin, planes, stride) = (self.cin, self.planes, self.stride);
        let conv = |i: usize| (m.pp(format!("conv{i}")), m.pp(format!("bn{i}")));
        match self.kind {
            BlockKind::Basic => vec![
                ConvSpec::new(conv(1), cin, planes, 3, stride),
                ConvSpec::new(conv(2), planes, planes, 3, 1),
            ],
            BlockKind::Bottleneck => vec![
                ConvSpec::new(conv(1), cin, planes, 1, 1),
                ConvSpec::new(conv(2), planes, planes, 3, stride),
                ConvSpec::new(conv(3), planes, self.cout(), 1, 1),
            ],
        }
    }

    pub fn downsample(&self) -> Option<ConvSpec> {
        let m = self.module.pp("downsample");
        (self.stride != 1 || self.cin != self.cout())
            .then(|| ConvSpec::new((m.pp(0), m.pp(1)), self.cin, self.cout(), 1, self.stride))
    }

    /// The main path, then the downsample if any.
    pub fn convs(&self) -> Vec<ConvSpec> {
        let mut convs = self.main_path();
        convs.extend(self.downsample());
        convs
    }

    /// The edge of the block's output for a `size` x `size` input.
    pub fn out_size(&self, size: usize) -> usize {
        self.main_path()
            .iter()
            .fold(size, |size, conv| conv.out_size(size))
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
    /// The BatchNorm's constants.
    pub bn_constants: BnConstants,
}

impl ConvSpec {
    /// torchvision's `conv3x3` (padding 1) or `conv1x1` (none), by `kernel`.
    fn new(
        (conv, bn): (Module, Module),
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
    ) -> Self {
        let window = Window {
            kernel,
            stride,
            pad: kernel / 2,
        };
        Self {
            conv,
            bn,
            cin,
            cout,
            window,
            bn_constants: TORCH_BN,
        }
    }

    /// A 1x1, stride-1 convolution: a product over channels at each position.
    pub fn is_pointwise(&self) -> bool {
        self.window.kernel == 1 && self.window.stride == 1
    }

    pub fn weight(&self) -> String {
        self.conv.tensor("weight")
    }

    pub fn weight_shape(&self) -> Vec<usize> {
        let k = self.window.kernel;
        vec![self.cout, self.cin, k, k]
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

/// The stages in forward order, by the names `UNFREEZE` and the per-stage rates give
/// them: the stem (conv1, bn1, max pooling), then torchvision's layer1 to layer4.
pub const STAGES: [&str; 5] = ["stem", "layer1", "layer2", "layer3", "layer4"];

/// torchvision's max pool after the stem: 3x3, stride 2, padding 1.
pub const STEM_POOL: Window = Window {
    kernel: 3,
    stride: 2,
    pad: 1,
};

impl Arch {
    /// `conv1` (7x7, stride 2, padding 3) and `bn1`; then ReLU and [`STEM_POOL`].
    pub fn stem(&self) -> ConvSpec {
        let root = Module::root();
        ConvSpec {
            conv: root.pp("conv1"),
            bn: root.pp("bn1"),
            cin: 3,
            cout: self.width,
            window: Window {
                kernel: 7,
                stride: 2,
                pad: 3,
            },
            bn_constants: TORCH_BN,
        }
    }

    /// torchvision's `_make_layer(block, planes, blocks, stride)` for `layer{stage}`
    /// (1-based): the first block changes width and stride, the others keep them.
    pub fn layer(&self, stage: usize) -> Vec<Block> {
        let module = Module::root().pp(format!("layer{stage}"));
        let kind = self.net.block_kind();
        let planes = self.width << (stage - 1);
        let cin = match stage {
            1 => self.width,
            _ => (planes / 2) * kind.expansion(),
        };
        let first_stride = if stage == 1 { 1 } else { 2 };
        (0..self.net.blocks()[stage - 1])
            .map(|i| Block {
                module: module.pp(i),
                kind,
                cin: if i == 0 {
                    cin
                } else {
                    planes * kind.expansion()
                },
                planes,
                stride: if i == 0 { first_stride } else { 1 },
            })
            .collect()
    }

    /// `ResNet._forward_impl` from the start of stage `from` to the end of stage
    /// `to` (0 is the stem: conv1, bn1, ReLU, max pooling; k is layerk).
    pub fn forward<L: Lowering>(&self, l: &mut L, x: L::Map, from: usize, to: usize) -> L::Map {
        let mut x = x;
        for stage in from..=to {
            if stage == 0 {
                let stem = l.conv_bn(&self.stem(), &x);
                let stem = l.relu(&stem);
                x = l.max_pool(&stem, STEM_POOL);
                continue;
            }
            x = l.begin_stage(stage, x);
            for block in self.layer(stage) {
                x = block.forward(l, &x);
            }
        }
        x
    }

    /// From stage `from` through the last stage and the global average pool: `[N, 8w]`.
    pub fn pooled<L: Lowering>(&self, l: &mut L, x: L::Map, from: usize) -> L::Map {
        let x = self.forward(l, x, from, STAGES.len() - 1);
        l.global_average_pool(&x)
    }

    /// What the network's input pixels go through.
    pub fn normalization(&self) -> Normalization {
        IMAGENET_NORMALIZATION
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
            Unfreeze::Last => Ok(STAGES.len() - 1),
            Unfreeze::Stage(name) => STAGES
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
        let stages = STAGES[1..].iter().map(|name| Unfreeze::stage(name));
        std::iter::once(Unfreeze::All)
            .chain(stages)
            .chain([Unfreeze::Last])
            .collect()
    }

    /// `unfreeze` as the stage it starts at (`last` named), once checked.
    pub fn resolve(&self, unfreeze: Unfreeze) -> Result<Unfreeze, String> {
        Ok(match self.first_stage(unfreeze)? {
            0 => Unfreeze::All,
            stage => Unfreeze::stage(STAGES[stage]),
        })
    }

    /// The learning-rate group of a tensor phase 2 trains: the head, or its stage
    /// as [`STAGES`] names it, as many stages below the head as it lies.
    pub fn rate_group(&self, tensor: &str) -> RateGroup {
        if fc().owns(tensor) {
            return RateGroup {
                depth: 0,
                name: fc().name().into(),
            };
        }
        let stage = self
            .describe()
            .tensors
            .iter()
            .find(|t| t.name == tensor)
            .map(|t| t.stage)
            .expect("a tensor of the network");
        RateGroup {
            depth: (STAGES.len() - stage) as u32,
            name: STAGES[stage].into(),
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

    /// What phase 2 reads per image when it trains from `unfreeze`: the frozen
    /// layers' output `[C, H, W]`, or the image.
    pub fn frozen_shape(&self, unfreeze: Unfreeze) -> [usize; 3] {
        let (c, s) = self.describe().stage_inputs[self.stage_index(unfreeze)];
        [c, s, s]
    }

    /// `ResNet._forward_impl` from where phase 2 starts training at `unfreeze`
    /// through the global average pool: `[N, 8w]`.
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
            (fc().tensor("weight"), vec![classes, self.features()]),
            (fc().tensor("bias"), vec![classes]),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_width_counts_match_the_recipe() {
        let arch = Arch {
            net: Net::ResNet18,
            width: 64,
            image_size: 224,
            classes: 3,
        };
        assert_eq!(
            arch.param_counts(Unfreeze::stage("layer4")),
            ParamCounts {
                total: 11_178_051,
                head: 1_539,
                finetune: 8_395_267
            }
        );
        assert_eq!(
            arch.describe().stage_inputs,
            [(3, 224), (64, 56), (64, 56), (128, 28), (256, 14)]
        );
        // layer3 (2,099,712 parameters: convolutions and BatchNorm) joins layer4,
        // then layer2 and layer1; the stem is conv1 (9,408) and bn1 (128).
        let finetune: Vec<usize> = arch
            .unfreeze_choices()
            .iter()
            .map(|&u| arch.param_counts(u).finetune)
            .collect();
        assert_eq!(
            finetune,
            [
                11_178_051, 11_168_515, 11_020_547, 10_494_979, 8_395_267, 8_395_267
            ]
        );
        let shapes: Vec<[usize; 3]> = arch
            .unfreeze_choices()
            .iter()
            .map(|&u| arch.frozen_shape(u))
            .collect();
        assert_eq!(
            shapes,
            [
                [3, 224, 224],
                [64, 56, 56],
                [64, 56, 56],
                [128, 28, 28],
                [256, 14, 14],
                [256, 14, 14]
            ]
        );
    }

    #[test]
    fn rate_groups_are_stages_counted_back_from_the_head() {
        let arch = Arch {
            net: Net::ResNet18,
            width: 8,
            image_size: 64,
            classes: 3,
        };
        let groups = [
            "conv1.weight",
            "bn1.bias",
            "layer1.0.conv1.weight",
            "layer4.1.bn2.weight",
            "fc.bias",
        ]
        .map(|tensor| arch.rate_group(tensor));
        let named = groups.map(|g| (g.name, g.depth));
        let expected = [
            ("stem", 5),
            ("stem", 5),
            ("layer1", 4),
            ("layer4", 1),
            ("fc", 0),
        ];
        assert_eq!(
            named,
            expected.map(|(name, depth)| (name.to_string(), depth))
        );
    }

    #[test]
    fn counts_match_torchvision_for_every_net() {
        // torchvision's models with their 1000-class fc, as `sum(p.numel())` counts.
        for (net, total) in [
            (Net::ResNet18, 11_689_512),
            (Net::ResNet34, 21_797_672),
            (Net::ResNet50, 25_557_032),
        ] {
            let arch = Arch {
                net,
                width: 64,
                image_size: 224,
                classes: 1000,
            };
            assert_eq!(
                arch.param_counts(Unfreeze::stage("layer4")).total,
                total,
                "{}",
                net.name()
            );
        }
    }

    #[test]
    fn resnet50_blocks_are_bottlenecks() {
        let arch = Arch {
            net: Net::ResNet50,
            width: 64,
            image_size: 224,
            classes: 3,
        };
        assert_eq!(
            (
                arch.frozen_shape(Unfreeze::stage("layer4"))[0],
                arch.features()
            ),
            (1024, 2048)
        );
        let layer4 = arch.layer(4);
        assert_eq!(layer4.len(), 3);
        let first: Vec<_> = layer4[0].convs().iter().map(|c| c.weight_shape()).collect();
        assert_eq!(
            first,
            [
                vec![512, 1024, 1, 1],
                vec![512, 512, 3, 3],
                vec![2048, 512, 1, 1],
                vec![2048, 1024, 1, 1],
            ]
        );
        assert_eq!(layer4[0].main_path()[1].window.stride, 2);
        assert!(layer4[1].downsample().is_none());
        assert_eq!(layer4[2].main_path()[2].weight(), "layer4.2.conv3.weight");
        // layer1's first block changes channels (64 -> 256) at stride 1.
        assert!(arch.layer(1)[0].downsample().is_some());
    }

    #[test]
    fn mini_sizes_follow_the_strides() {
        let arch = Arch {
            net: Net::ResNet18,
            width: 8,
            image_size: 64,
            classes: 3,
        };
        let edges: Vec<usize> = arch.describe().stage_inputs.iter().map(|s| s.1).collect();
        assert_eq!(edges, [64, 16, 16, 8, 4]);
        assert_eq!(arch.features(), 64);
        let downsample = arch.layer(4)[0].downsample().unwrap();
        assert_eq!(downsample.weight_shape(), [64, 32, 1, 1]);
        assert_eq!(downsample.weight(), "layer4.0.downsample.0.weight");
        assert_eq!(
            downsample.bn_tensor(BnTensor::RUNNING_VAR),
            "layer4.0.downsample.1.running_var"
        );
        assert!(arch.layer(4)[1].downsample().is_none());
    }
}
