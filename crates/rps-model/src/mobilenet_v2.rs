//! torchvision's MobileNetV2 (`mobilenetv2.py`): `features.0` (3x3 stride-2 conv,
//! BatchNorm, ReLU6), seventeen inverted residuals `features.1` to `features.17`,
//! `features.18` (1x1 conv to 1280, BatchNorm, ReLU6), then global average pooling
//! and `classifier` (Dropout(0.2), Linear), whose `classifier.1` the new head
//! replaces. `WIDTH` is the stem's channels, `width_mult` times 32, and every layer
//! scales as torchvision's `_make_divisible` scales it.

use crate::inverted_residual::{self, InvertedResidual, conv_bn_relu6};
use crate::network::{Arch, ConvSpec, Lowering, Module};
use crate::window::Window;

/// The stem's channels at torchvision's `width_mult=1.0`.
pub const FULL_WIDTH: usize = 32;

pub const HEAD: &str = "classifier.1";

/// The stem, then one stage per map size, each named by its first module: 112x112
/// (`features.1`), 56 (`features.2`-`3`), 28 (`4`-`6`), 14 (`7`-`13`) and 7
/// (`features.14`-`17` and the last 1x1 layer `features.18`) at 224 pixels.
pub const STAGES: [&str; 6] = [
    "stem",
    "features.1",
    "features.2",
    "features.4",
    "features.7",
    "features.14",
];

/// torchvision's `inverted_residual_setting`: expansion, channels, repeats, stride.
const SETTING: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// The first block (index in `features`) of each stage after the stem.
const STAGE_STARTS: [usize; 5] = [1, 2, 4, 7, 14];

/// The last 1x1 layer's channels at `width_mult` up to 1.
const LAST_CHANNELS: usize = 1280;

/// `width` if it is a stem torchvision builds (a multiple of 8), or why not.
pub fn check_width(width: usize) -> Result<usize, String> {
    match width.is_multiple_of(8) && width > 0 {
        true => Ok(width),
        false => Err(format!(
            "mobilenet_v2's width is its stem's channels, a multiple of 8 ({FULL_WIDTH} is \
             torchvision's width_mult 1.0, 16 is 0.5): got {width}"
        )),
    }
}

/// torchvision's `_make_divisible(channels * width_mult, 8)`: the nearest multiple
/// of 8, at least 8, and never below 90% of the value.
fn scaled(channels: usize, width: usize) -> usize {
    let v = (channels * width) as f64 / FULL_WIDTH as f64;
    let rounded = (((v + 4.0) as usize) / 8 * 8).max(8);
    match (rounded as f64) < 0.9 * v {
        true => rounded + 8,
        false => rounded,
    }
}

/// `features.0`: 3x3, stride 2, padding 1.
fn stem(arch: &Arch) -> ConvSpec {
    let m = Module::root().pp("features").pp(0);
    ConvSpec::new((m.pp(0), m.pp(1)), 3, arch.width, Window::padded(3, 2, 1))
}

/// `features.18`: 1x1 to 1280 channels (more above `width_mult` 1).
fn last_conv(arch: &Arch) -> ConvSpec {
    let m = Module::root().pp("features").pp(18);
    let cin = scaled(SETTING[6].1, arch.width);
    let cout = scaled(LAST_CHANNELS, arch.width.max(FULL_WIDTH));
    ConvSpec::new((m.pp(0), m.pp(1)), cin, cout, Window::padded(1, 1, 0))
}

/// `features.1` to `features.17`, each with its index.
pub fn blocks(arch: &Arch) -> Vec<(usize, InvertedResidual)> {
    let mut cin = arch.width;
    let mut index = 1;
    let mut blocks = Vec::new();
    for (expansion, channels, repeats, stride) in SETTING {
        let cout = scaled(channels, arch.width);
        for i in 0..repeats {
            let stride = if i == 0 { stride } else { 1 };
            let module = Module::root().pp("features").pp(index).pp("conv");
            blocks.push((index, block(&module, cin, cout, expansion, stride)));
            cin = cout;
            index += 1;
        }
    }
    blocks
}

/// torchvision's `InvertedResidual(inp, oup, stride, expand_ratio)`, whose `conv`
/// holds the expansion (conv and BatchNorm as `conv.0.0`, `conv.0.1`) when it
/// expands, then the depthwise layer likewise, then the projection's conv and
/// BatchNorm as two modules of their own.
fn block(m: &Module, cin: usize, cout: usize, expansion: usize, stride: usize) -> InvertedResidual {
    let hidden = cin * expansion;
    let expand = (expansion != 1).then(|| {
        ConvSpec::new(
            (m.pp(0).pp(0), m.pp(0).pp(1)),
            cin,
            hidden,
            Window::padded(1, 1, 0),
        )
    });
    let at = usize::from(expand.is_some());
    let depthwise_module = m.pp(at);
    let depthwise = ConvSpec::depthwise(
        (depthwise_module.pp(0), depthwise_module.pp(1)),
        hidden,
        Window::padded(3, stride, 1),
    );
    let project = ConvSpec::new(
        (m.pp(at + 1), m.pp(at + 2)),
        hidden,
        cout,
        Window::padded(1, 1, 0),
    );
    InvertedResidual {
        expand,
        depthwise,
        project,
    }
}

/// Stage `stage`: the stem (conv, BatchNorm, ReLU6), a run of blocks, and in the
/// last stage `features.18`.
pub fn stage<L: Lowering>(arch: &Arch, l: &mut L, x: L::Map, stage: usize) -> L::Map {
    match stage {
        0 => conv_bn_relu6(l, &stem(arch), &x),
        _ => {
            let blocks = blocks(arch);
            inverted_residual::stage(l, x, (&blocks, &STAGE_STARTS), stage, &last_conv(arch))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{Net, TORCH_BN};
    use rps_core::Unfreeze;

    fn arch(width: usize) -> Arch {
        Arch {
            net: Net::MobileNetV2,
            width,
            image_size: 224,
            classes: 1000,
        }
    }

    #[test]
    fn counts_and_names_match_torchvision() {
        // `sum(p.numel())` of torchvision's mobilenet_v2(width_mult=w) for w = 1,
        // 0.5, 0.25 and 1.5 (whose last layer grows to 1920).
        let full = arch(32);
        let totals = [32, 16, 8, 48].map(|w| arch(w).param_counts(Unfreeze::Last).total);
        assert_eq!(totals, [3_504_872, 1_968_680, 1_519_112, 6_858_152]);
        assert_eq!(full.features(), 1280);
        let d = full.describe();
        assert_eq!(d.convs.len(), 52);
        let shape = |name: &str| {
            let t = d.tensors.iter().find(|t| t.name == name);
            t.map(|t| t.shape.clone()).unwrap_or_default()
        };
        assert_eq!(shape("features.1.conv.0.0.weight"), [32, 1, 3, 3]);
        assert_eq!(shape("features.1.conv.1.weight"), [16, 32, 1, 1]);
        assert_eq!(shape("features.1.conv.2.running_var"), [16]);
        assert_eq!(shape("features.2.conv.1.0.weight"), [96, 1, 3, 3]);
        assert_eq!(shape("features.17.conv.3.bias"), [320]);
        assert_eq!(shape("features.18.0.weight"), [1280, 320, 1, 1]);
        assert!(d.convs.iter().all(|(_, c)| c.bn_constants == TORCH_BN));
    }

    #[test]
    fn stages_cut_where_the_map_shrinks() {
        let full = arch(32);
        let edges: Vec<(usize, usize)> = full.describe().stage_inputs;
        assert_eq!(
            edges,
            [(3, 224), (32, 112), (16, 112), (24, 56), (32, 28), (96, 14)]
        );
        assert_eq!(
            full.resolve(Unfreeze::Last).unwrap(),
            Unfreeze::stage("features.14")
        );
        let head = full.rate_group("classifier.1.weight");
        assert_eq!((head.name.as_str(), head.depth), ("classifier.1", 0));
        let last = full.rate_group("features.18.1.bias");
        assert_eq!((last.name.as_str(), last.depth), ("features.14", 1));
        let error = full.first_stage(Unfreeze::stage("layer4")).unwrap_err();
        assert!(error.contains("features.7"), "{error}");
    }

    #[test]
    fn widths_scale_as_make_divisible_does() {
        assert_eq!(scaled(16, 8), 8);
        assert_eq!(scaled(24, 16), 16);
        assert_eq!(scaled(320, 8), 80);
        assert_eq!(scaled(LAST_CHANNELS, 48), 1920);
        assert!(check_width(20).is_err());
        assert_eq!(check_width(16), Ok(16));
    }
}
