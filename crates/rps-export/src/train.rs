//! Train-step graphs: forward, backward and the Adam update in standard ONNX ops,
//! run by plain ONNX Runtime. Parameters, Adam moments and BatchNorm statistics are
//! inputs; their updated values are outputs named `new_<input>`.
//!
//! Activations are laid out channel-major, `[C, H*W, N]`, batch last, and every
//! convolution is a few big matrix products: ONNX Runtime's `Conv` with weights fed
//! as inputs (as a train step must) loses its fast path.
//! - Strided and 1x1 convolutions: one `Gather` of precomputed indices (out-of-range
//!   taps read one appended zero row) builds the patch matrix `[Cin*k*k, H*W*N]`,
//!   then one `MatMul`; the patch matrix is reused for the weight gradient, and the
//!   input gradient is the same gather run backwards.
//! - Stride-1 3x3 convolutions on maps of a tile or more: Winograd F(4x4, 3x3) (see
//!   [`winograd`]), its backward written as the adjoint of its forward.
//! - Train-mode BatchNorm is written out with reductions (ORT's training-mode
//!   `BatchNormalization` does not return what the backward needs).

use crate::graph::{Attr, Dim, Elem, Graph};
use crate::resnet::{Arch, BN_EPS, BN_MOMENTUM, Block, ConvSpec, HEAD_BIAS, HEAD_WEIGHT};
use crate::{infer, names, winograd};

const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const ADAM_EPS: f32 = 1e-8;

/// Phase 1: pooled `features` `[N,8w]` -> the head's step.
pub fn head_step(arch: &Arch) -> Vec<u8> {
    let mut g = Graph::new();
    let features = infer::pooled_features_input(&mut g, arch);
    let mut step = Step::new(&mut g, arch, Convolutions::Fastest);
    let head = step.head(&mut g, &features);
    let (loss, dlogits) = step.loss(&mut g, &head.logits);
    step.head_backward(&mut g, &head, &dlogits);
    step.finish(&mut g, &loss, &head.logits);
    g.to_bytes("head_step")
}

/// How a step graph computes its convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convolutions {
    /// Winograd F(4x4, 3x3) for the stride-1 3x3 convolutions on maps of at least
    /// one 4x4 tile, patches for the rest.
    Fastest,
    /// Every convolution through a gathered patch matrix: the plain formulation,
    /// for comparison.
    Patches,
}

/// Phase 2: layer3 `features` `[N,4w,s,s]` -> layer4 (BatchNorm in train mode) and the
/// head's step.
pub fn finetune_step(arch: &Arch) -> Vec<u8> {
    finetune_step_with(arch, Convolutions::Fastest)
}

/// [`finetune_step`] with a choice of convolution algorithm.
pub fn finetune_step_with(arch: &Arch, convolutions: Convolutions) -> Vec<u8> {
    let mut g = Graph::new();
    let s = arch.layer3_size();
    let features = infer::layer3_features_input(&mut g, arch);
    let mut step = Step::new(&mut g, arch, convolutions);
    let x = g.transpose(&features, &[1, 2, 3, 0]);
    let mut x = g.reshape(&x, &[arch.layer3_channels() as i64, (s * s) as i64, -1]);
    let mut blocks: Vec<BlockForward> = Vec::new();
    for (i, block) in arch.layer(4).iter().enumerate() {
        let size = blocks.last().map_or(s, |b| b.out_size);
        let forward = step.block_forward(&mut g, block, &x, size, i > 0);
        x = forward.out.clone();
        blocks.push(forward);
    }
    let pooled_cn = g.reduce("ReduceMean", &x, &[1], false);
    let pooled = g.transpose(&pooled_cn, &[1, 0]);
    let head = step.head(&mut g, &pooled);
    let (loss, dlogits) = step.loss(&mut g, &head.logits);
    let dpooled = step.head_backward(&mut g, &head, &dlogits);
    // Average pooling spreads each gradient evenly over the H*W positions.
    let dpooled_cn = g.transpose(&dpooled, &[1, 0]);
    let axis = g.ints(&[1]);
    let dpooled = g.op("Unsqueeze", &[&dpooled_cn, &axis], vec![]);
    let out_size = blocks.last().expect("two blocks").out_size;
    let positions = out_size * out_size;
    let scale = g.scalar(1.0 / positions as f32);
    let mut dout = g.mul(&dpooled, &scale);
    for forward in blocks.iter().rev() {
        match step.block_backward(&mut g, forward, &dout) {
            Some(dx) => dout = dx,
            None => break,
        }
    }
    step.finish(&mut g, &loss, &head.logits);
    g.to_bytes("finetune_step")
}

/// The head's forward values the backward needs.
struct Head {
    dropped: String,
    mask: String,
    logits: String,
}

/// A convolution's forward values the backward needs.
struct ConvForward {
    spec: ConvSpec,
    weight: String,
    in_size: usize,
    method: ConvMethod,
}

enum ConvMethod {
    /// A gathered patch matrix and one product.
    Patches {
        /// `[Cin*K, P_out*N]`.
        patches: String,
        /// `[K, P_in]`: for each tap and input position, the output position that
        /// read it (or P_out, the zero row).
        backward_indices: String,
    },
    /// Winograd F(4x4, 3x3), for stride-1 3x3 convolutions on maps of a tile or more.
    Winograd(WinogradForward),
}

/// A Winograd convolution's values the backward needs, for each group of
/// transformed positions.
struct WinogradForward {
    groups: Vec<WinogradGroup>,
}

struct WinogradGroup {
    /// The constants of [`winograd::Group`].
    input: String,
    output: String,
    kernel: String,
    positions: i64,
    tiles: i64,
    /// The transformed kernel, `[positions, 1, Cout, Cin]`.
    u: String,
    /// The transformed input, `[positions, tiles, Cin, N]`.
    x_tiles: String,
}

/// A train-mode BatchNorm's forward values the backward needs.
struct BnForward {
    name: String,
    channels: usize,
    /// `x - mean`.
    centered: String,
    /// `1 / sqrt(var + eps)`, `[C,1,1]`.
    invstd: String,
    /// `gamma * invstd`, `[C,1,1]`.
    scale: String,
    /// Elements per channel, H*W*N, a float scalar.
    count: String,
}

struct BlockForward {
    convs: Vec<(ConvForward, BnForward)>,
    relu1: String,
    out: String,
    out_size: usize,
    needs_input_grad: bool,
}

/// Shared inputs, and the outputs gathered as the graph is built.
struct Step {
    arch: Arch,
    convolutions: Convolutions,
    labels: String,
    step: String,
    lr: String,
    weight_decay: String,
    /// `(name, shape, gradient)` of each parameter, in the order found.
    grads: Vec<(String, Vec<usize>, String)>,
    /// `(input, new value)` of each BatchNorm statistic.
    buffers: Vec<(String, String, usize)>,
}

impl Step {
    fn new(g: &mut Graph, arch: &Arch, convolutions: Convolutions) -> Self {
        Self {
            arch: *arch,
            convolutions,
            labels: g.input(names::LABELS, Elem::I64, &[Dim::Batch]),
            step: g.input(names::STEP, Elem::F32, &[]),
            lr: g.input(names::LR, Elem::F32, &[]),
            weight_decay: g.input(names::WEIGHT_DECAY, Elem::F32, &[]),
            grads: Vec::new(),
            buffers: Vec::new(),
        }
    }

    fn param(&self, g: &mut Graph, name: &str, shape: &[usize]) -> String {
        let dims: Vec<Dim> = shape.iter().map(|&d| Dim::Fixed(d)).collect();
        g.input(&names::param(name), Elem::F32, &dims)
    }

    /// Dropout (by the mask input) then Linear, on `[N, 8w]` features.
    fn head(&mut self, g: &mut Graph, features: &str) -> Head {
        let c = self.arch.features();
        let mask = g.input(names::DROPOUT_MASK, Elem::F32, &[Dim::Batch, Dim::Fixed(c)]);
        let w = self.param(g, HEAD_WEIGHT, &[self.arch.classes, c]);
        let b = self.param(g, HEAD_BIAS, &[self.arch.classes]);
        let dropped = g.mul(features, &mask);
        let logits = g.op("Gemm", &[&dropped, &w, &b], vec![("transB", Attr::Int(1))]);
        Head {
            dropped,
            mask,
            logits,
        }
    }

    /// Mean cross-entropy and its gradient with respect to the logits.
    fn loss(&self, g: &mut Graph, logits: &str) -> (String, String) {
        let [loss, log_prob] = g
            .op_n(
                "SoftmaxCrossEntropyLoss",
                &[logits, &self.labels],
                2,
                vec![],
            )
            .try_into()
            .expect("two outputs");
        let probs = g.op("Exp", &[&log_prob], vec![]);
        let depth = g.ints(&[self.arch.classes as i64]);
        let values = g.const_f32(&[2], &[0.0, 1.0]);
        let one_hot = g.op(
            "OneHot",
            &[&self.labels, &depth, &values],
            vec![("axis", Attr::Int(-1))],
        );
        let diff = g.sub(&probs, &one_hot);
        let batch = batch_size(g, logits);
        (loss, g.div(&diff, &batch))
    }

    /// Records the head's gradients; returns the gradient of its input features.
    fn head_backward(&mut self, g: &mut Graph, head: &Head, dlogits: &str) -> String {
        let w = names::param(HEAD_WEIGHT);
        let dw = g.gemm(dlogits, &head.dropped, true, false);
        let db = g.reduce("ReduceSum", dlogits, &[0], false);
        let c = self.arch.features();
        self.grads
            .push((HEAD_WEIGHT.into(), vec![self.arch.classes, c], dw));
        self.grads
            .push((HEAD_BIAS.into(), vec![self.arch.classes], db));
        let ddropped = g.matmul(dlogits, &w);
        g.mul(&ddropped, &head.mask)
    }

    fn block_forward(
        &mut self,
        g: &mut Graph,
        block: &Block,
        x: &str,
        size: usize,
        needs_input_grad: bool,
    ) -> BlockForward {
        let specs = block.convs();
        let (c1, b1, y1) = self.conv_bn(g, &specs[0], x, size);
        let relu1 = g.relu(&y1);
        let mid = specs[0].out_size(size);
        let (c2, b2, y2) = self.conv_bn(g, &specs[1], &relu1, mid);
        let mut convs = vec![(c1, b1), (c2, b2)];
        let identity = match specs.get(2) {
            Some(spec) => {
                let (cd, bd, yd) = self.conv_bn(g, spec, x, size);
                convs.push((cd, bd));
                yd
            }
            None => x.to_string(),
        };
        let sum = g.add(&y2, &identity);
        let out = g.relu(&sum);
        BlockForward {
            convs,
            relu1,
            out,
            out_size: mid,
            needs_input_grad,
        }
    }

    /// Gradients of a block's parameters; returns the gradient of its input when the
    /// layer before it trains.
    fn block_backward(
        &mut self,
        g: &mut Graph,
        forward: &BlockForward,
        dout: &str,
    ) -> Option<String> {
        let dsum = relu_backward(g, dout, &forward.out);
        let [(c1, b1), (c2, b2)] = &forward.convs[..2] else {
            unreachable!("two convolutions")
        };
        let dy2 = self.bn_backward(g, b2, &dsum);
        let drelu1 = self.conv_backward(g, c2, &dy2, true).expect("asked for");
        let dy1_out = relu_backward(g, &drelu1, &forward.relu1);
        let dy1 = self.bn_backward(g, b1, &dy1_out);
        let dx_main = self.conv_backward(g, c1, &dy1, forward.needs_input_grad);
        let dx_identity = match forward.convs.get(2) {
            Some((cd, bd)) => {
                let dyd = self.bn_backward(g, bd, &dsum);
                self.conv_backward(g, cd, &dyd, forward.needs_input_grad)
            }
            None => Some(dsum),
        };
        match (dx_main, dx_identity) {
            (Some(a), Some(b)) => Some(g.add(&a, &b)),
            _ => None,
        }
    }

    fn conv_bn(
        &mut self,
        g: &mut Graph,
        spec: &ConvSpec,
        x: &str,
        size: usize,
    ) -> (ConvForward, BnForward, String) {
        let (conv, y) = self.conv(g, spec, x, size);
        let (bn, out) = self.bn_train(g, spec, &y);
        (conv, bn, out)
    }

    fn conv(
        &mut self,
        g: &mut Graph,
        spec: &ConvSpec,
        x: &str,
        in_size: usize,
    ) -> (ConvForward, String) {
        let weight = self.param(g, &spec.weight(), &spec.weight_shape());
        let winograd = self.convolutions == Convolutions::Fastest && suits_winograd(spec, in_size);
        let (method, y) = if winograd {
            let (forward, y) = winograd_conv(g, spec, &weight, x, in_size);
            (ConvMethod::Winograd(forward), y)
        } else {
            patches_conv(g, spec, &weight, x, in_size)
        };
        let forward = ConvForward {
            spec: spec.clone(),
            weight,
            in_size,
            method,
        };
        (forward, y)
    }

    /// Records the weight gradient; returns the input gradient when asked.
    fn conv_backward(
        &mut self,
        g: &mut Graph,
        conv: &ConvForward,
        dy: &str,
        input_grad: bool,
    ) -> Option<String> {
        let spec = &conv.spec;
        let shape = spec.weight_shape();
        let (dw, dx) = match &conv.method {
            ConvMethod::Patches {
                patches,
                backward_indices,
            } => {
                let dw = patches_weight_grad(g, spec, patches, dy);
                let dx = input_grad.then(|| {
                    patches_input_grad(g, spec, &conv.weight, backward_indices, dy, conv.in_size)
                });
                (dw, dx)
            }
            ConvMethod::Winograd(forward) => {
                winograd_backward(g, spec, forward, dy, conv.in_size, input_grad)
            }
        };
        let dw = g.reshape(&dw, &shape.iter().map(|&d| d as i64).collect::<Vec<_>>());
        self.grads.push((spec.weight(), shape, dw));
        dx
    }

    /// BatchNorm on `[C, P, N]` with the batch's statistics; running statistics
    /// updated as PyTorch does (unbiased variance, momentum 0.1).
    fn bn_train(&mut self, g: &mut Graph, spec: &ConvSpec, x: &str) -> (BnForward, String) {
        let c = spec.cout;
        let gamma = self.param(g, &format!("{}.weight", spec.bn), &[c]);
        let beta = self.param(g, &format!("{}.bias", spec.bn), &[c]);
        let count = per_channel_count(g, x, c);
        let mean = g.reduce("ReduceMean", x, &[1, 2], true);
        let centered = g.sub(x, &mean);
        let sum_squares = g.reduce("ReduceSumSquare", &centered, &[1, 2], true);
        let var = g.div(&sum_squares, &count);
        let eps = g.scalar(BN_EPS);
        let var_eps = g.add(&var, &eps);
        let std = g.op("Sqrt", &[&var_eps], vec![]);
        let invstd = g.op("Reciprocal", &[&std], vec![]);
        let shape = [c as i64, 1, 1];
        let gamma3 = g.reshape(&gamma, &shape);
        let beta3 = g.reshape(&beta, &shape);
        // gamma * (x - mean) * invstd + beta, with the per-channel factors folded first.
        let scale = g.mul(&gamma3, &invstd);
        let scaled = g.mul(&centered, &scale);
        let out = g.add(&scaled, &beta3);
        self.update_running_stats(g, spec, &count, &mean, &var);
        let forward = BnForward {
            name: spec.bn.clone(),
            channels: c,
            centered,
            invstd,
            scale,
            count,
        };
        (forward, out)
    }

    fn update_running_stats(
        &mut self,
        g: &mut Graph,
        spec: &ConvSpec,
        count: &str,
        mean: &str,
        var: &str,
    ) {
        let c = spec.cout;
        // The running variance is unbiased: var * M / (M - 1).
        let one = g.scalar(1.0);
        let count_1 = g.sub(count, &one);
        let bessel = g.div(count, &count_1);
        let unbiased = g.mul(var, &bessel);
        for (stat, batch_value) in [("running_mean", mean), ("running_var", &unbiased)] {
            let name = format!("{}.{stat}", spec.bn);
            let input = g.input(&names::buffer(&name), Elem::F32, &[Dim::Fixed(c)]);
            let flat = g.reshape(batch_value, &[c as i64]);
            let updated = lerp(g, &input, &flat, BN_MOMENTUM);
            self.buffers.push((names::buffer(&name), updated, c));
        }
    }

    /// With xhat = (x - mean) * invstd and M elements per channel:
    /// dgamma = Σ dy·xhat, dbeta = Σ dy, and
    /// dx = scale · (dy - dbeta/M - xhat · dgamma/M).
    fn bn_backward(&mut self, g: &mut Graph, bn: &BnForward, dy: &str) -> String {
        let c = bn.channels;
        let dbeta = g.reduce("ReduceSum", dy, &[1, 2], true);
        let dy_centered = g.mul(dy, &bn.centered);
        let sum_dy_centered = g.reduce("ReduceSum", &dy_centered, &[1, 2], true);
        let dgamma = g.mul(&sum_dy_centered, &bn.invstd);
        for (param, grad) in [("weight", &dgamma), ("bias", &dbeta)] {
            let flat = g.reshape(grad, &[c as i64]);
            self.grads
                .push((format!("{}.{param}", bn.name), vec![c], flat));
        }
        let mean_dy = g.div(&dbeta, &bn.count);
        // xhat · dgamma/M · scale = centered · (invstd · dgamma/M · scale)
        let mean_dy_xhat = g.div(&dgamma, &bn.count);
        let k = g.mul(&bn.invstd, &mean_dy_xhat);
        let k = g.mul(&k, &bn.scale);
        let centered_dy = g.sub(dy, &mean_dy);
        let scaled = g.mul(&centered_dy, &bn.scale);
        let projection = g.mul(&bn.centered, &k);
        g.sub(&scaled, &projection)
    }

    /// Adam on every recorded gradient, then the graph outputs.
    fn finish(mut self, g: &mut Graph, loss: &str, logits: &str) {
        g.output(loss, names::LOSS, Elem::F32, &[]);
        g.output(
            logits,
            names::LOGITS,
            Elem::F32,
            &[Dim::Batch, Dim::Fixed(self.arch.classes)],
        );
        let adam = AdamScalars::new(g, &self.step, &self.lr, &self.weight_decay);
        // Forward order, as the parameters were declared.
        self.grads
            .sort_by_key(|(name, _, _)| param_order(&self.arch, name));
        for (name, shape, grad) in &self.grads {
            let dims: Vec<Dim> = shape.iter().map(|&d| Dim::Fixed(d)).collect();
            let p = names::param(name);
            let m = g.input(&names::adam_m(name), Elem::F32, &dims);
            let v = g.input(&names::adam_v(name), Elem::F32, &dims);
            let (new_p, new_m, new_v) = adam.update(g, &p, grad, &m, &v);
            g.output(&new_p, &names::updated(&p), Elem::F32, &dims);
            g.output(
                &new_m,
                &names::updated(&names::adam_m(name)),
                Elem::F32,
                &dims,
            );
            g.output(
                &new_v,
                &names::updated(&names::adam_v(name)),
                Elem::F32,
                &dims,
            );
            g.output(grad, &names::grad(name), Elem::F32, &dims);
        }
        for (input, value, c) in &self.buffers {
            g.output(value, &names::updated(input), Elem::F32, &[Dim::Fixed(*c)]);
        }
    }
}

fn param_order(arch: &Arch, name: &str) -> usize {
    arch.finetune_params()
        .iter()
        .position(|(n, _)| n == name)
        .unwrap_or(usize::MAX)
}

/// `(1 - weight) * a + weight * b`
fn lerp(g: &mut Graph, a: &str, b: &str, weight: f32) -> String {
    let keep = g.scalar(1.0 - weight);
    let take = g.scalar(weight);
    let a = g.mul(a, &keep);
    let b = g.mul(b, &take);
    g.add(&a, &b)
}

fn relu_backward(g: &mut Graph, dy: &str, relu_out: &str) -> String {
    // ReLU outputs are >= 0, so ceil(clip(out, 0, 1)) is exactly the 0/1 derivative (0
    // at 0, as PyTorch). ONNX Runtime runs Clip and Ceil vectorized; Sign, Greater and
    // Where take several times longer.
    let zero = g.scalar(0.0);
    let one = g.scalar(1.0);
    let clipped = g.op("Clip", &[relu_out, &zero, &one], vec![]);
    let active = g.op("Ceil", &[&clipped], vec![]);
    g.mul(dy, &active)
}

/// Stride-1 3x3 convolutions on maps of at least one 4x4 tile. Smaller maps (the test
/// models' 2x2 layer4) gain little, and there Winograd's rounding shows: a gradient
/// that is exactly zero (a ReLU row dead across the batch) comes out as rounding
/// noise, which Adam's first step turns into a full step.
fn suits_winograd(spec: &ConvSpec, size: usize) -> bool {
    spec.kernel == 3 && spec.stride == 1 && spec.pad == 1 && size >= winograd::TILE
}

/// `[Cin, P_in, N]` -> `[Cout, P_out, N]` through a gathered patch matrix.
fn patches_conv(
    g: &mut Graph,
    spec: &ConvSpec,
    weight: &str,
    x: &str,
    in_size: usize,
) -> (ConvMethod, String) {
    let (forward_idx, backward_idx) = conv_indices(spec, in_size);
    let taps = spec.kernel * spec.kernel;
    let out_size = spec.out_size(in_size);
    let forward_indices = g.const_i64(&[taps, out_size * out_size], &forward_idx);
    let backward_indices = g.const_i64(&[taps, in_size * in_size], &backward_idx);
    let patches = gather_patches(g, x, &forward_indices, spec.cin * taps);
    let wm = g.reshape(weight, &[spec.cout as i64, (spec.cin * taps) as i64]);
    let y = g.matmul(&wm, &patches);
    let y = g.reshape(&y, &[spec.cout as i64, (out_size * out_size) as i64, -1]);
    let method = ConvMethod::Patches {
        patches,
        backward_indices,
    };
    (method, y)
}

/// `[Cout, Cin*K]`: the forward's patches reused.
fn patches_weight_grad(g: &mut Graph, spec: &ConvSpec, patches: &str, dy: &str) -> String {
    let dym = g.reshape(dy, &[spec.cout as i64, -1]);
    g.gemm(&dym, patches, false, true)
}

/// The patch convolution run backwards: gather `dy` by the inverse indices, then
/// multiply by the weight with its channel axes swapped.
fn patches_input_grad(
    g: &mut Graph,
    spec: &ConvSpec,
    weight: &str,
    backward_indices: &str,
    dy: &str,
    in_size: usize,
) -> String {
    let taps = spec.kernel * spec.kernel;
    let gathered = gather_patches(g, dy, backward_indices, spec.cout * taps);
    let w3 = g.reshape(weight, &[spec.cout as i64, spec.cin as i64, taps as i64]);
    let wt = g.transpose(&w3, &[1, 0, 2]);
    let wt = g.reshape(&wt, &[spec.cin as i64, (spec.cout * taps) as i64]);
    let dx = g.matmul(&wt, &gathered);
    g.reshape(&dx, &[spec.cin as i64, (in_size * in_size) as i64, -1])
}

/// `[Cin, P, N]` -> `[Cout, P, N]` by Winograd F(4x4, 3x3). For each group of
/// transformed positions: the image and the kernel to the tile domain, one batched
/// channel product (the kernel broadcast over tiles), and back; the groups' images
/// add up to the convolution.
fn winograd_conv(
    g: &mut Graph,
    spec: &ConvSpec,
    weight: &str,
    x: &str,
    size: usize,
) -> (WinogradForward, String) {
    let (cin, cout) = (spec.cin as i64, spec.cout as i64);
    let w = g.reshape(weight, &[cout * cin, winograd::TAPS as i64]);
    let x_rows = by_position(g, x);
    let mut groups = Vec::new();
    let mut terms = Vec::new();
    for group in winograd::Transforms::new(size).groups {
        let (positions, tiles) = (group.positions() as i64, group.tiles as i64);
        let input = matrix(g, &group.input);
        let output = matrix(g, &group.output);
        let kernel = matrix(g, &group.kernel);
        let u = g.gemm(&kernel, &w, false, true);
        let u = g.reshape(&u, &[positions, 1, cout, cin]);
        let x_tiles = g.matmul(&input, &x_rows);
        let x_tiles = g.reshape(&x_tiles, &[positions, tiles, cin, -1]);
        let m = g.matmul(&u, &x_tiles);
        terms.push((output.clone(), g.reshape(&m, &[positions * tiles, -1])));
        groups.push(WinogradGroup {
            input,
            output,
            kernel,
            positions,
            tiles,
            u,
            x_tiles,
        });
    }
    let y = gemm_sum(g, &terms, false);
    (
        WinogradForward { groups },
        from_positions(g, &y, size, cout),
    )
}

/// Gradients of a Winograd convolution, as the adjoint of its forward, summed over
/// groups: `dX = Σ inputᵀ · (Uᵀ ⊙ (outputᵀ · dY))`, `dU = Σ (outputᵀ · dY) ⊗
/// (input · X)` over tiles and batch, `dW = Σ kernelᵀ · dU`. Returns
/// `([Cout, Cin, 9], dX)`.
fn winograd_backward(
    g: &mut Graph,
    spec: &ConvSpec,
    forward: &WinogradForward,
    dy: &str,
    size: usize,
    input_grad: bool,
) -> (String, Option<String>) {
    let (cin, cout) = (spec.cin as i64, spec.cout as i64);
    let dy_rows = by_position(g, dy);
    let mut dw_terms = Vec::new();
    let mut dx_terms = Vec::new();
    for group in &forward.groups {
        let (positions, tiles) = (group.positions, group.tiles);
        let dy_tiles = g.gemm(&group.output, &dy_rows, true, false);
        let dy_tiles = g.reshape(&dy_tiles, &[positions, tiles, cout, -1]);
        // dU [positions, Cout, Cin]: contract over (tile, batch).
        let dy_by_channel = g.transpose(&dy_tiles, &[0, 2, 1, 3]);
        let dy_by_channel = g.reshape(&dy_by_channel, &[positions, cout, -1]);
        let x_by_sample = g.transpose(&group.x_tiles, &[0, 1, 3, 2]);
        let x_by_sample = g.reshape(&x_by_sample, &[positions, -1, cin]);
        let du = g.matmul(&dy_by_channel, &x_by_sample);
        dw_terms.push((
            group.kernel.clone(),
            g.reshape(&du, &[positions, cout * cin]),
        ));
        if input_grad {
            // Uᵀ: the forward's transformed kernel with its channel axes swapped.
            let u = g.reshape(&group.u, &[positions, cout, cin]);
            let ut = g.transpose(&u, &[0, 2, 1]);
            let ut = g.reshape(&ut, &[positions, 1, cin, cout]);
            let dx_tiles = g.matmul(&ut, &dy_tiles);
            let dx_tiles = g.reshape(&dx_tiles, &[positions * tiles, -1]);
            dx_terms.push((group.input.clone(), dx_tiles));
        }
    }
    // kernelᵀ · dU then a transpose run faster in ONNX Runtime than one Gemm reading
    // dU transposed; the 3-D transpose keeps ORT from fusing them into that Gemm.
    let dw = gemm_sum(g, &dw_terms, true);
    let dw = g.reshape(&dw, &[winograd::TAPS as i64, cout, cin]);
    let dw = g.transpose(&dw, &[1, 2, 0]);
    let dx = input_grad.then(|| {
        let dx = gemm_sum(g, &dx_terms, true);
        from_positions(g, &dx, size, cin)
    });
    (dw, dx)
}

/// A constant holding `m`.
fn matrix(g: &mut Graph, m: &ndarray::Array2<f32>) -> String {
    let (rows, cols) = m.dim();
    g.const_f32(&[rows, cols], m.as_slice().expect("standard layout"))
}

/// `Σ a · b` over `terms` (each `a` transposed when asked), chained through Gemm's
/// addend.
fn gemm_sum(g: &mut Graph, terms: &[(String, String)], trans_a: bool) -> String {
    let mut sum: Option<String> = None;
    for (a, b) in terms {
        let attrs = vec![("transA", Attr::Int(trans_a as i64))];
        let inputs: Vec<&str> = [a.as_str(), b.as_str()]
            .into_iter()
            .chain(sum.as_deref())
            .collect();
        sum = Some(g.op("Gemm", &inputs, attrs));
    }
    sum.expect("at least one term")
}

/// `[C, P, N]` -> `[P, C*N]`: positions as rows, for the transforms.
fn by_position(g: &mut Graph, x: &str) -> String {
    let transposed = g.transpose(x, &[1, 0, 2]);
    g.reshape(&transposed, &[0, -1])
}

/// `[P, C*N]` -> `[C, P, N]`.
fn from_positions(g: &mut Graph, rows: &str, size: usize, channels: i64) -> String {
    let image = g.reshape(rows, &[(size * size) as i64, channels, -1]);
    g.transpose(&image, &[1, 0, 2])
}

/// `[C, P, N]` -> patches `[rows, P_out*N]` (rows = C*K) through `[K, P_out]` indices.
fn gather_patches(g: &mut Graph, x: &str, indices: &str, rows: usize) -> String {
    let pads = g.ints(&[0, 0, 0, 0, 1, 0]);
    let padded = g.op("Pad", &[x, &pads], vec![]);
    let gathered = g.gather(&padded, indices, 1);
    g.reshape(&gathered, &[rows as i64, -1])
}

/// Elements per channel of a `[C, P, N]` tensor, P*N, as a float scalar.
fn per_channel_count(g: &mut Graph, x: &str, channels: usize) -> String {
    let size = g.op("Size", &[x], vec![]);
    let size = g.op("Cast", &[&size], vec![("to", Attr::Int(1))]);
    let channels = g.scalar(channels as f32);
    g.div(&size, &channels)
}

/// The batch size as a float scalar.
fn batch_size(g: &mut Graph, x: &str) -> String {
    let shape = g.op("Shape", &[x], vec![]);
    let zero = g.const_i64(&[], &[0]);
    let n = g.gather(&shape, &zero, 0);
    g.op("Cast", &[&n], vec![("to", Attr::Int(1))])
}

/// For each tap k and output position o, the input position the tap reads (P_in for
/// padding); and the inverse: for each tap and input position, the output position
/// that read it (P_out if none).
pub fn conv_indices(spec: &ConvSpec, in_size: usize) -> (Vec<i64>, Vec<i64>) {
    let out_size = spec.out_size(in_size);
    let (p_in, p_out) = (in_size * in_size, out_size * out_size);
    let taps = spec.kernel * spec.kernel;
    let mut forward = vec![p_in as i64; taps * p_out];
    let mut backward = vec![p_out as i64; taps * p_in];
    for tap in 0..taps {
        let (ky, kx) = (tap / spec.kernel, tap % spec.kernel);
        for oy in 0..out_size {
            for ox in 0..out_size {
                let iy = (oy * spec.stride + ky) as isize - spec.pad as isize;
                let ix = (ox * spec.stride + kx) as isize - spec.pad as isize;
                if (0..in_size as isize).contains(&iy) && (0..in_size as isize).contains(&ix) {
                    let (i, o) = (iy as usize * in_size + ix as usize, oy * out_size + ox);
                    forward[tap * p_out + o] = i as i64;
                    backward[tap * p_in + i] = o as i64;
                }
            }
        }
    }
    (forward, backward)
}

/// Adam's per-step scalars, computed once for all parameters.
struct AdamScalars {
    step_size: String,
    bias_correction2_sqrt: String,
    decay: String,
    beta1: String,
    one_minus_beta1: String,
    beta2: String,
    one_minus_beta2: String,
    eps: String,
}

impl AdamScalars {
    fn new(g: &mut Graph, step: &str, lr: &str, weight_decay: &str) -> Self {
        let one = g.scalar(1.0);
        let beta1 = g.scalar(BETA1);
        let beta2 = g.scalar(BETA2);
        let pow1 = g.op("Pow", &[&beta1, step], vec![]);
        let pow2 = g.op("Pow", &[&beta2, step], vec![]);
        let bc1 = g.sub(&one, &pow1);
        let bc2 = g.sub(&one, &pow2);
        let bias_correction2_sqrt = g.op("Sqrt", &[&bc2], vec![]);
        let step_size = g.div(lr, &bc1);
        let lr_wd = g.mul(lr, weight_decay);
        let decay = g.sub(&one, &lr_wd);
        Self {
            step_size,
            bias_correction2_sqrt,
            decay,
            beta1,
            one_minus_beta1: g.scalar(1.0 - BETA1),
            beta2,
            one_minus_beta2: g.scalar(1.0 - BETA2),
            eps: g.scalar(ADAM_EPS),
        }
    }

    /// `torch.optim.Adam`'s update (AdamW's decoupled decay when weight_decay > 0).
    fn update(
        &self,
        g: &mut Graph,
        p: &str,
        grad: &str,
        m: &str,
        v: &str,
    ) -> (String, String, String) {
        let m_keep = g.mul(m, &self.beta1);
        let m_new = g.mul(grad, &self.one_minus_beta1);
        let m = g.add(&m_keep, &m_new);
        let v_keep = g.mul(v, &self.beta2);
        let g2 = g.mul(grad, grad);
        let v_new = g.mul(&g2, &self.one_minus_beta2);
        let v = g.add(&v_keep, &v_new);
        let root = g.op("Sqrt", &[&v], vec![]);
        let corrected = g.div(&root, &self.bias_correction2_sqrt);
        let denom = g.add(&corrected, &self.eps);
        let ratio = g.div(&m, &denom);
        let delta = g.mul(&ratio, &self.step_size);
        let decayed = g.mul(p, &self.decay);
        (g.sub(&decayed, &delta), m, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_of_a_strided_3x3_convolution() {
        let arch = Arch {
            width: 8,
            image_size: 64,
            classes: 3,
        };
        let spec = arch.layer(4)[0].convs()[0].clone(); // 3x3, stride 2, pad 1
        let (fwd, bwd) = conv_indices(&spec, 4);
        // Output (0,0), tap (0,0) reads padding; tap (1,1) reads input (0,0).
        assert_eq!(fwd[0], 16);
        assert_eq!(fwd[4 * 4], 0);
        // Output (1,1), tap (2,2) reads input (4,4)?  No: (2*1+2-1) = 3 -> (3,3) = 15.
        assert_eq!(fwd[8 * 4 + 3], 15);
        // Each tap reads each input at most once, and the inverse table agrees.
        for tap in 0..9 {
            for i in 0..16 {
                let o = bwd[tap * 16 + i];
                if o < 4 {
                    assert_eq!(fwd[tap * 4 + o as usize], i as i64);
                }
            }
        }
    }
}
