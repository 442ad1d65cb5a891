//! torchvision's ResNets (18, 34, 50), laid out as its `resnet.py` is (`ResNet`,
//! `_make_layer`, `BasicBlock`, `Bottleneck`), with their parameter names and a
//! configurable base width (64 = torchvision). Every tensor name comes from
//! [`Module`].
//!
//! Each stage's forward is written once, here ([`Block::forward`], [`stage`]), over
//! a [`Lowering`]: how a graph computes each layer kind (standard ONNX operators,
//! maps by position with folded BatchNorm, or a train step that records each layer
//! for its backward). Graphs differ by their lowering, never by a second walk.

use crate::network::{Arch, ConvSpec, Lowering, Module, Net};
use crate::window::Window;

/// torchvision's base width.
pub const FULL_WIDTH: usize = 64;

/// The classifier: `fc.weight` `[classes, 8w]` and `fc.bias` `[classes]`.
pub const HEAD: &str = "fc";

/// The stages in forward order: the stem (conv1, bn1, max pooling), then
/// torchvision's layer1 to layer4.
pub const STAGES: [&str; 5] = ["stem", "layer1", "layer2", "layer3", "layer4"];

/// torchvision's max pool after the stem: 3x3, stride 2, padding 1.
pub const STEM_POOL: Window = Window::padded(3, 2, 1);

/// Blocks in layer1 to layer4.
fn blocks(net: Net) -> [usize; 4] {
    match net {
        Net::ResNet18 => [2, 2, 2, 2],
        _ => [3, 4, 6, 3],
    }
}

pub fn block_kind(net: Net) -> BlockKind {
    match net {
        Net::ResNet50 => BlockKind::Bottleneck,
        _ => BlockKind::Basic,
    }
}

/// torchvision's `conv3x3` (padding 1) or `conv1x1` (none), by `kernel`.
fn torch_conv(
    modules: (Module, Module),
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
) -> ConvSpec {
    ConvSpec::new(
        modules,
        cin,
        cout,
        Window::padded(kernel, stride, kernel / 2),
    )
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
                torch_conv(conv(1), cin, planes, 3, stride),
                torch_conv(conv(2), planes, planes, 3, 1),
            ],
            BlockKind::Bottleneck => vec![
                torch_conv(conv(1), cin, planes, 1, 1),
                torch_conv(conv(2), planes, planes, 3, stride),
                torch_conv(conv(3), planes, self.cout(), 1, 1),
            ],
        }
    }

    pub fn downsample(&self) -> Option<ConvSpec> {
        let m = self.module.pp("downsample");
        (self.stride != 1 || self.cin != self.cout())
            .then(|| torch_conv((m.pp(0), m.pp(1)), self.cin, self.cout(), 1, self.stride))
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

/// `conv1` (7x7, stride 2, padding 3) and `bn1`; then ReLU and [`STEM_POOL`].
pub fn stem(arch: &Arch) -> ConvSpec {
    let root = Module::root();
    let modules = (root.pp("conv1"), root.pp("bn1"));
    ConvSpec::new(modules, 3, arch.width, Window::padded(7, 2, 3))
}

/// torchvision's `_make_layer(block, planes, blocks, stride)` for `layer{stage}`
/// (1-based): the first block changes width and stride, the others keep them.
pub fn layer(arch: &Arch, stage: usize) -> Vec<Block> {
    let module = Module::root().pp(format!("layer{stage}"));
    let kind = block_kind(arch.net);
    let planes = arch.width << (stage - 1);
    let cin = match stage {
        1 => arch.width,
        _ => (planes / 2) * kind.expansion(),
    };
    let first_stride = if stage == 1 { 1 } else { 2 };
    (0..blocks(arch.net)[stage - 1])
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

/// `ResNet._forward_impl`'s stage `stage`: the stem (conv1, bn1, ReLU, max
/// pooling) for 0, layer`stage`'s blocks for the others.
pub fn stage<L: Lowering>(arch: &Arch, l: &mut L, x: L::Map, stage: usize) -> L::Map {
    if stage == 0 {
        let stem = l.conv_bn(&stem(arch), &x);
        let stem = l.relu(&stem);
        return l.max_pool(&stem, STEM_POOL);
    }
    layer(arch, stage)
        .iter()
        .fold(x, |x, block| block.forward(l, &x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{BnTensor, ParamCounts};
    use rps_core::Unfreeze;

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
        let layer4 = layer(&arch, 4);
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
        assert!(layer(&arch, 1)[0].downsample().is_some());
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
        let downsample = layer(&arch, 4)[0].downsample().unwrap();
        assert_eq!(downsample.weight_shape(), [64, 32, 1, 1]);
        assert_eq!(downsample.weight(), "layer4.0.downsample.0.weight");
        assert_eq!(
            downsample.bn_tensor(BnTensor::RUNNING_VAR),
            "layer4.0.downsample.1.running_var"
        );
        assert!(layer(&arch, 4)[1].downsample().is_none());
    }
}
