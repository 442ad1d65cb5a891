//! The inverted-residual block MobileNetV2 and EfficientNet-Lite are built from
//! (torchvision's `InvertedResidual`, EfficientNet-PyTorch's `MBConvBlock` without
//! squeeze-excitation): a 1x1 expansion with ReLU6 (none at expansion 1), a
//! depthwise convolution with ReLU6, a linear 1x1 projection, and the input added
//! back when the shape is kept. Each network names its convolutions; the forward is
//! written here once.

use crate::network::{ConvSpec, Lowering};

/// One block, its convolutions named and sized by the network that holds it.
#[derive(Debug, Clone)]
pub struct InvertedResidual {
    /// 1x1, `cin` -> `cin * expansion`, then ReLU6; none at expansion 1.
    pub expand: Option<ConvSpec>,
    /// One `k` x `k` filter per channel, the block's stride, then ReLU6.
    pub depthwise: ConvSpec,
    /// 1x1 to the block's output channels, no activation.
    pub project: ConvSpec,
}

impl InvertedResidual {
    /// The residual: only where the block keeps the map's size and channels.
    pub fn has_skip(&self) -> bool {
        let input = self.expand.as_ref().unwrap_or(&self.depthwise);
        self.depthwise.window.stride == 1 && input.cin == self.project.cout
    }

    pub fn forward<L: Lowering>(&self, l: &mut L, x: &L::Map) -> L::Map {
        let mut h = x.clone();
        for conv in self.expand.iter().chain([&self.depthwise]) {
            h = l.conv_bn(conv, &h);
            h = l.relu6(&h);
        }
        let out = l.conv_bn(&self.project, &h);
        match self.has_skip() {
            true => l.add(&out, x),
            false => out,
        }
    }

    /// Its convolutions in forward order.
    pub fn convs(&self) -> Vec<&ConvSpec> {
        let mut convs: Vec<&ConvSpec> = self.expand.iter().collect();
        convs.extend([&self.depthwise, &self.project]);
        convs
    }
}

/// A convolution, its BatchNorm and ReLU6: the stem and the last 1x1 layer of both
/// networks.
pub fn conv_bn_relu6<L: Lowering>(l: &mut L, conv: &ConvSpec, x: &L::Map) -> L::Map {
    let y = l.conv_bn(conv, x);
    l.relu6(&y)
}

/// Stage `stage` (1 on; the stem is the network's own) of a network built of
/// `blocks`, each with its index, whose stages start at the blocks `starts`: its run
/// of blocks, then in the last stage `last`, the 1x1 layer with ReLU6 that widens
/// the map for pooling.
pub fn stage<L: Lowering>(
    l: &mut L,
    x: L::Map,
    (blocks, starts): (&[(usize, InvertedResidual)], &[usize]),
    stage: usize,
    last: &ConvSpec,
) -> L::Map {
    let first = starts[stage - 1];
    let end = starts.get(stage).copied().unwrap_or(usize::MAX);
    let x = blocks
        .iter()
        .filter(|(index, _)| (first..end).contains(index))
        .fold(x, |x, (_, block)| block.forward(l, &x));
    match stage == starts.len() {
        true => conv_bn_relu6(l, last, &x),
        false => x,
    }
}
