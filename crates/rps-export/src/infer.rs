//! Inference graphs of the frozen network, the weights as constants: a [`Lowering`]
//! of the network's one forward ([`rps_model::network`]), each convolution and its
//! eval-mode BatchNorm computed as the graph's [`Formulation`] says.

use ndarray::{Array4, ArrayView4, Axis};
use rps_core::Tensors;
use rps_core::names;

use rps_core::Unfreeze;

use crate::graph::{Dim, Elem, Graph, Reduce, Transposed, Value};
use crate::winograd::{self, Tile};
use rps_model::network::{Arch, BnTensor, ConvSpec, Lowering, Module};
use rps_model::window::Window;

/// How a frozen network computes its convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Formulation {
    /// NCHW, standard `Conv` and `BatchNormalization`, the weights as initializers
    /// by PyTorch name: what a reader of the file, or another runtime, expects.
    Standard,
    /// The stem and layer1 as `Standard` (ONNX Runtime's own `Conv` is fastest on
    /// 64 channels); from layer2 on, maps by position, `[N, H*W, C]`, BatchNorm
    /// folded into the weights in float64: stride-1 3x3 convolutions by Winograd
    /// F(4x4, 3x3) ([`winograd::Tiling`]), 1.7-1.8x faster than ORT's `Conv` there,
    /// the others as one gather and one `Gemm`. Dense convolutions only.
    Fastest,
}

/// The first stage that [`Formulation::Fastest`] lays out by position.
const FIRST_STAGE_BY_POSITION: usize = 2;

/// images -> the frozen layers' output (`frozen`, none when `unfreeze` is `all`)
/// and `pooled`, as extract runs it.
pub fn backbone(arch: &Arch, tensors: &Tensors, unfreeze: Unfreeze) -> Vec<u8> {
    let mut net = FrozenGraph::new(tensors, backbone_formulation(arch));
    let images = images_input(&mut net.g, arch);
    let x = arch.frozen(&mut net, images, unfreeze);
    if !unfreeze.from_images() {
        let frozen = net.nchw(&x);
        let dims = Dim::batch_of(&arch.frozen_shape(unfreeze));
        net.g.output(&frozen, names::FROZEN, Elem::F32, &dims);
    }
    let pooled = arch.trained(&mut net, x, unfreeze);
    let pooled_dims = [Dim::Batch, Dim::Fixed(arch.features())];
    net.g
        .output(&pooled.value, names::POOLED, Elem::F32, &pooled_dims);
    net.g.to_bytes("backbone")
}

/// images -> `logits` and `probs` over the classes of `tensors`' fc: the ImageNet
/// model, or the transfer model's template. It carries its image size, so a stage
/// can use it alone.
pub fn classifier(arch: &Arch, tensors: &Tensors, name: &str) -> Vec<u8> {
    let mut net = FrozenGraph::new(tensors, Formulation::Standard);
    let head = arch.head();
    net.g
        .metadata(names::META_IMAGE_SIZE, &arch.image_size.to_string());
    net.g
        .metadata(names::META_NORMALIZATION, &arch.normalization().to_text());
    let images = images_input(&mut net.g, arch);
    let pooled = arch.pooled(&mut net, images, 0);
    let logits = net.classify(&pooled.value, &head);
    let probs = net.g.softmax(&logits, -1);
    let dims = [
        Dim::Batch,
        Dim::Fixed(tensors[&head.tensor("weight")].shape()[0]),
    ];
    net.g.output(&logits, names::LOGITS, Elem::F32, &dims);
    net.g.output(&probs, names::PROBS, Elem::F32, &dims);
    net.g.to_bytes(name)
}

/// Winograd pays for its transforms where the convolutions it suits carry most of
/// the backbone's multiply-adds (basic blocks: 83% of ResNet18's, 92% of
/// ResNet34's). Bottlenecks are mostly 1x1 convolutions (Winograd's share of
/// ResNet50 is 37%), which ONNX Runtime's blocked `Conv` runs faster than a `Gemm`
/// by position (ResNet50's backbone: 24 images/s against 21), and depthwise
/// convolutions have no match by position.
fn backbone_formulation(arch: &Arch) -> Formulation {
    let description = arch.describe();
    let convs = description.convs.iter().map(|(_, spec)| spec);
    let mut suited = 0;
    let mut total = 0;
    for (spec, &size) in convs.zip(&description.conv_inputs) {
        if spec.groups > 1 {
            return Formulation::Standard;
        }
        let out = spec.out_size(size);
        let macs = spec.cin * spec.cout * spec.window.taps() * out * out;
        total += macs;
        if winograd::suits(spec, size) {
            suited += macs;
        }
    }
    match 2 * suited > total {
        true => Formulation::Fastest,
        false => Formulation::Standard,
    }
}

fn images_input(g: &mut Graph, arch: &Arch) -> Map {
    let s = Dim::Fixed(arch.image_size);
    Map {
        value: g.input(names::IMAGES, Elem::F32, &[Dim::Batch, Dim::Fixed(3), s, s]),
        size: arch.image_size,
        channels: 3,
        by_position: false,
    }
}

/// A feature map in the graph and how it is laid out.
#[derive(Clone)]
struct Map {
    value: Value,
    size: usize,
    channels: usize,
    by_position: bool,
}

/// A graph whose weights are `tensors`' values.
struct FrozenGraph<'a> {
    g: Graph,
    tensors: &'a Tensors,
    formulation: Formulation,
}

impl<'a> FrozenGraph<'a> {
    fn new(tensors: &'a Tensors, formulation: Formulation) -> Self {
        Self {
            g: Graph::new(),
            tensors,
            formulation,
        }
    }

    /// `f` on the map's values: an operation that keeps the layout.
    fn map_op(&mut self, x: &Map, f: impl FnOnce(&mut Graph, &Value) -> Value) -> Map {
        Map {
            value: f(&mut self.g, &x.value),
            ..x.clone()
        }
    }

    /// NCHW -> `[N, H*W, C]`.
    fn by_position(&mut self, x: &Map) -> Map {
        let flat = self.g.reshape(&x.value, &[0, x.channels as i64, -1]);
        Map {
            value: self.g.transpose(&flat, &[0, 2, 1]),
            by_position: true,
            ..x.clone()
        }
    }

    /// The map in NCHW, as graph outputs are.
    fn nchw(&mut self, x: &Map) -> Value {
        if !x.by_position {
            return x.value.clone();
        }
        let (c, s) = (x.channels as i64, x.size as i64);
        let channel_major = self.g.transpose(&x.value, &[0, 2, 1]);
        self.g.reshape(&channel_major, &[0, c, s, s])
    }

    /// `[N, P, C]` -> `[N, P, K]` by [`winograd::Tiling`]: gather the 6x6 input tiles,
    /// `Bᵀ` down and across, one product per tile-domain position, `Aᵀ` down and
    /// across, tiles back into the map.
    fn winograd_conv(&mut self, spec: &ConvSpec, x: &Map) -> Value {
        let (weight, bias) = self.folded(spec);
        let tile = Tile::F4;
        let tiling = winograd::Tiling::new(tile, x.size);
        let (t, c, k) = (tiling.per_edge as i64, spec.cin as i64, spec.cout as i64);
        let points = tile.points() as i64;
        let u = winograd::kernel_transform(tile, weight.view());
        let g = &mut self.g;
        let indices = tiling.gather_indices();
        let indices = g.int_constant(&[indices.len()], &indices);
        let tiles = g.gather_padded(&x.value, &indices);
        let tiles = g.reshape(&tiles, &[0, points, t * t * c]);
        let tiles = g.transpose(&tiles, &[1, 0, 2]);
        let v = winograd::both_edges(g, &tile.bt(), &tiles, 0);
        let v = g.reshape(&v, &[points, -1, c]);
        let u = g.constant(u.shape(), u.as_slice().expect("standard layout"));
        let m = g.matmul(&v, &u);
        let y = winograd::from_tiles(g, &tiling, &m, [-1, k]);
        let bias = g.constant(&[bias.len()], &bias);
        g.add(&y, &bias)
    }

    /// `[N, P, C]` -> `[N, P_out, K]` through a gathered patch matrix (the map itself
    /// for a pointwise convolution) and one `Gemm`.
    fn patches_conv(&mut self, spec: &ConvSpec, x: &Map) -> Value {
        let (weight, bias) = self.folded(spec);
        let taps = spec.window.kernel * spec.window.kernel;
        let out = spec.out_size(x.size);
        let by_tap = spec.window.tap_indices(x.size);
        let indices: Vec<i64> = (0..out * out)
            .flat_map(|o| (0..taps).map(move |tap| (tap, o)))
            .map(|(tap, o)| by_tap[tap * out * out + o])
            .collect();
        // Rows (tap, input channel), as the patches' columns run.
        let wm = weight
            .view()
            .into_shape_with_order((spec.cout, spec.cin, taps))
            .expect("a [Cout, Cin, k, k] weight")
            .permuted_axes([2, 1, 0])
            .as_standard_layout()
            .into_shape_with_order((taps * spec.cin, spec.cout))
            .expect("contiguous")
            .mapv(|v| v as f32);
        let g = &mut self.g;
        let patches = if spec.is_pointwise() {
            x.value.clone()
        } else {
            let indices = g.int_constant(&[indices.len()], &indices);
            g.gather_padded(&x.value, &indices)
        };
        let patches = g.reshape(&patches, &[-1, (taps * spec.cin) as i64]);
        let wm = g.matrix(&wm);
        let bias = g.constant(&[bias.len()], &bias);
        let y = g.gemm(&patches, &wm, Some(&bias), Transposed::NONE);
        g.reshape(&y, &[-1, (out * out) as i64, spec.cout as i64])
    }

    /// The convolution's weight `[Cout, Cin, k, k]` and bias with its eval-mode
    /// BatchNorm folded in, in float64.
    fn folded(&self, spec: &ConvSpec) -> (Array4<f64>, Vec<f32>) {
        let tensor = |name: String| self.tensors[&name].mapv(f64::from);
        let [gamma, beta, mean, var] = BnTensor::ALL.map(|t| tensor(spec.bn_tensor(t)));
        let scale = gamma / (var + f64::from(spec.bn_constants.eps)).sqrt();
        let bias = (beta - &mean * &scale).mapv(|v| v as f32);
        let weight: ArrayView4<f32> = self.tensors[&spec.weight()]
            .view()
            .into_dimensionality()
            .expect("a 4-D convolution weight");
        let mut weight = weight.mapv(f64::from);
        for (mut filter, &s) in weight.axis_iter_mut(Axis(0)).zip(scale.iter()) {
            filter *= s;
        }
        (weight, bias.into_raw_vec_and_offset().0)
    }

    /// The classifier `head` on pooled features.
    fn classify(&mut self, x: &Value, head: &Module) -> Value {
        let w = self.weight(&head.tensor("weight"));
        let b = self.weight(&head.tensor("bias"));
        self.g
            .gemm(x, &w, Some(&b), Transposed { a: false, b: true })
    }

    /// `tensors[name]` as an initializer of that name.
    fn weight(&mut self, name: &str) -> Value {
        let t = &self.tensors[name];
        self.g.initializer(
            name,
            t.shape(),
            t.as_standard_layout().as_slice().expect("standard layout"),
        )
    }
}

impl Lowering for FrozenGraph<'_> {
    type Map = Map;

    fn conv_bn(&mut self, spec: &ConvSpec, x: &Map) -> Map {
        let size = spec.out_size(x.size);
        let value = if !x.by_position {
            let w = self.weight(&spec.weight());
            let y = self.g.conv(&x.value, &w, spec.window, x.size, spec.groups);
            let [scale, bias, mean, var] = BnTensor::ALL.map(|t| self.weight(&spec.bn_tensor(t)));
            self.g
                .batch_norm(&y, [&scale, &bias, &mean, &var], spec.bn_constants.eps)
        } else if spec.groups > 1 {
            unreachable!("Formulation::Fastest is for dense convolutions (backbone_formulation)")
        } else if winograd::suits(spec, x.size) {
            self.winograd_conv(spec, x)
        } else {
            self.patches_conv(spec, x)
        };
        Map {
            value,
            size,
            channels: spec.cout,
            by_position: x.by_position,
        }
    }

    fn relu(&mut self, x: &Map) -> Map {
        self.map_op(x, |g, x| g.relu(x))
    }

    fn relu6(&mut self, x: &Map) -> Map {
        self.map_op(x, |g, x| {
            let (zero, six) = (g.scalar(0.0), g.scalar(6.0));
            g.clip(x, &zero, &six)
        })
    }

    fn add(&mut self, a: &Map, b: &Map) -> Map {
        self.map_op(a, |g, a| g.add(a, &b.value))
    }

    /// Only the stem pools, before any map is laid out by position.
    fn max_pool(&mut self, x: &Map, window: Window) -> Map {
        assert!(!x.by_position, "max pooling on an NCHW map");
        Map {
            value: self.g.max_pool(&x.value, window, x.size),
            size: window.out_size(x.size),
            ..x.clone()
        }
    }

    fn global_average_pool(&mut self, x: &Map) -> Map {
        let value = if x.by_position {
            self.g.reduce(Reduce::Mean, &x.value, &[1], false)
        } else {
            let pooled = self.g.global_average_pool(&x.value);
            self.g.flatten(&pooled, 1)
        };
        Map {
            value,
            size: 1,
            by_position: false,
            ..x.clone()
        }
    }

    fn begin_stage(&mut self, stage: usize, x: Map) -> Map {
        let lays_out = self.formulation == Formulation::Fastest
            && stage >= FIRST_STAGE_BY_POSITION
            && !x.by_position;
        if lays_out { self.by_position(&x) } else { x }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rps_model::network::Net;

    #[test]
    fn winograd_lays_out_the_networks_whose_work_it_suits() {
        let formulation = |net: Net| {
            backbone_formulation(&Arch {
                net,
                width: net.full_width(),
                image_size: 224,
                classes: 3,
            })
        };
        for (net, expected) in [
            (Net::ResNet18, Formulation::Fastest),
            (Net::ResNet34, Formulation::Fastest),
            (Net::ResNet50, Formulation::Standard),
            (Net::MobileNetV2, Formulation::Standard),
            (Net::EfficientNetLite0, Formulation::Standard),
        ] {
            assert_eq!(formulation(net), expected, "{net:?}");
        }
    }
}
