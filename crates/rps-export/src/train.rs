//! The graphs training runs, all with the trained weights as inputs (`param:NAME`,
//! `buffer:NAME`), so one session serves a whole phase:
//! - train steps: forward, backward and the Adam update in standard ONNX ops, run by
//!   plain ONNX Runtime; Adam moments are inputs too, and every updated value is an
//!   output named `new_<input>`;
//! - eval graphs: the same forward with BatchNorm in eval mode, scoring a batch.
//!
//! Activations are laid out channel-major, `[C, H*W, N]`, batch last, and every
//! convolution is a few big matrix products: ONNX Runtime's `Conv` with weights fed
//! as inputs loses its fast path.
//! - Strided and 1x1 convolutions: one `Gather` of precomputed indices (out-of-range
//!   taps read one appended zero row) builds the patch matrix `[Cin*k*k, H*W*N]`,
//!   then one `MatMul`; the patch matrix is reused for the weight gradient, and the
//!   input gradient is the same gather run backwards.
//! - Stride-1 3x3 convolutions on maps of a tile or more: Winograd F(4x4, 3x3) (see
//!   [`winograd`]) in eval graphs; in train steps the forward multiplies patches (see
//!   [`Convolutions::Fastest`] for why) and the backward is the adjoint of the
//!   Winograd forward.
//! - Train-mode BatchNorm is written out with reductions (ORT's training-mode
//!   `BatchNormalization` does not return what the backward needs).

use rps_core::names;

use crate::graph::{Dim, Elem, Graph, Reduce, Transposed, Value};
use crate::resnet::{Arch, BN_EPS, BN_MOMENTUM, Block, BnTensor, ConvSpec, fc};
use crate::winograd;

const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const ADAM_EPS: f32 = 1e-8;

/// How a graph computes its convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convolutions {
    /// Winograd F(4x4, 3x3) for the stride-1 3x3 convolutions on maps of at least
    /// one 4x4 tile, patches for the rest. A train step's forward still multiplies
    /// directly and only its backward uses Winograd: the forward's rounding (about
    /// 1e-6 of the values) would flip ReLUs whose input lies within it of zero, and
    /// each flipped element moves a gradient by about one over the square root of
    /// its element count (1e-3 at full size), a hundred times PyTorch's own float32
    /// error. The backward has no such thresholds.
    Fastest,
    /// Every convolution through a gathered patch matrix: the plain formulation,
    /// for comparison.
    Patches,
}

/// Phase 1: pooled `features` `[N,8w]` -> the head's step.
pub fn head_step(arch: &Arch) -> Vec<u8> {
    let mut b = Builder::new(arch, Convolutions::Fastest, BatchNorm::Train);
    let features = b.pooled_features_input();
    let head = b.head(&features, true);
    let (loss, dlogits) = b.loss_and_gradient(&head.logits);
    b.head_backward(&head, &dlogits);
    b.finish_step(&loss, &head.logits);
    b.g.to_bytes("head_step")
}

/// Phase 1 scoring: pooled `features`, `labels` and the head -> `logits`, `probs`,
/// mean `loss`.
pub fn head_eval(arch: &Arch) -> Vec<u8> {
    let mut b = Builder::new(arch, Convolutions::Fastest, BatchNorm::Eval);
    let features = b.pooled_features_input();
    let head = b.head(&features, false);
    b.finish_eval(&head.logits);
    b.g.to_bytes("head_eval")
}

/// Phase 2: layer3 `features` `[N,4w,s,s]` -> layer4 (BatchNorm in train mode) and
/// the head's step.
pub fn finetune_step(arch: &Arch, convolutions: Convolutions) -> Vec<u8> {
    let mut b = Builder::new(arch, convolutions, BatchNorm::Train);
    let (blocks, pooled) = b.layer4_pooled();
    let head = b.head(&pooled, true);
    let (loss, dlogits) = b.loss_and_gradient(&head.logits);
    let dpooled = b.head_backward(&head, &dlogits);
    // Average pooling spreads each gradient evenly over the H*W positions.
    let g = &mut b.g;
    let dpooled_cn = g.transpose(&dpooled, &[1, 0]);
    let dpooled = g.unsqueeze(&dpooled_cn, &[1]);
    let out_size = blocks.last().expect("two blocks").out_size;
    let scale = g.scalar(1.0 / (out_size * out_size) as f32);
    let mut dout = g.mul(&dpooled, &scale);
    for forward in blocks.iter().rev() {
        match b.block_backward(forward, &dout) {
            Some(dx) => dout = dx,
            None => break,
        }
    }
    b.finish_step(&loss, &head.logits);
    b.g.to_bytes("finetune_step")
}

/// Phase 2 scoring: layer3 `features`, `labels`, layer4's weights and running
/// statistics and the head -> `logits`, `probs`, mean `loss`.
pub fn finetune_eval(arch: &Arch, convolutions: Convolutions) -> Vec<u8> {
    let mut b = Builder::new(arch, convolutions, BatchNorm::Eval);
    let (_, pooled) = b.layer4_pooled();
    let head = b.head(&pooled, false);
    b.finish_eval(&head.logits);
    b.g.to_bytes("finetune_eval")
}

/// Which statistics BatchNorm normalizes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchNorm {
    /// The batch's, updating the running statistics (PyTorch's train mode).
    Train,
    /// The running statistics (eval mode).
    Eval,
}

/// The head's forward values the backward needs.
struct Head {
    weight: Value,
    bias: Value,
    dropped: Value,
    mask: Option<Value>,
    logits: Value,
}

/// A convolution's forward values the backward needs.
struct ConvForward {
    spec: ConvSpec,
    weight: Value,
    in_size: usize,
    method: ConvMethod,
}

enum ConvMethod {
    /// A gathered patch matrix, `[Cin*K, P_out*N]`, and one product.
    Patches(Value),
    /// Winograd F(4x4, 3x3), for stride-1 3x3 convolutions on maps of a tile or more:
    /// the image and kernel transforms the backward multiplies with.
    Winograd(Vec<WinogradGroup>),
}

/// A Winograd convolution's values the backward needs, for one group of transformed
/// positions.
struct WinogradGroup {
    /// The constants of [`winograd::Group`].
    input: Value,
    output: Value,
    kernel: Value,
    positions: i64,
    tiles: i64,
    /// The transformed kernel, `[positions, 1, Cout, Cin]`, or with its channel axes
    /// swapped for the input gradient (see [`KernelFor`]).
    u: Value,
    /// The transformed input, `[positions, tiles, Cin, N]`.
    x_tiles: Value,
}

/// Which product a Winograd convolution's transformed kernel serves.
#[derive(Clone, Copy)]
enum KernelFor {
    /// `U`, `[positions, 1, Cout, Cin]`.
    Forward,
    /// `Uᵀ`, `[positions, 1, Cin, Cout]`, transformed from the weight with its channel
    /// axes swapped: a ninth of the values to move that swapping `U` would.
    InputGradient,
}

/// A train-mode BatchNorm's forward values the backward needs.
struct BnForward {
    spec: ConvSpec,
    affine: Affine,
    /// `x - mean`.
    centered: Value,
    /// `1 / sqrt(var + eps)`, `[C,1,1]`.
    invstd: Value,
    /// `gamma * invstd`, `[C,1,1]`.
    scale: Value,
    /// Elements per channel, H*W*N, a float scalar.
    count: Value,
}

/// A BatchNorm's scale and shift: the `[C]` inputs and their `[C,1,1]` views.
struct Affine {
    gamma: Value,
    beta: Value,
    gamma3: Value,
    beta3: Value,
}

/// A parameter's gradient, with the input it updates.
struct Gradient {
    name: String,
    shape: Vec<usize>,
    param: Value,
    grad: Value,
}

/// A convolution and its BatchNorm (in train mode only) as the backward needs them.
type ConvBn = (ConvForward, Option<BnForward>);

struct BlockForward {
    /// The main path, each convolution with the ReLU after it (all but the last).
    main: Vec<(ConvBn, Option<Value>)>,
    downsample: Option<ConvBn>,
    out: Value,
    out_size: usize,
    needs_input_grad: bool,
}

/// A graph of the trained part of the network, and what a step gathers as it is
/// built: each parameter's gradient and each running statistic's new value.
struct Builder {
    g: Graph,
    arch: Arch,
    convolutions: Convolutions,
    batch_norm: BatchNorm,
    labels: Value,
    /// Each parameter's gradient, in the order found.
    grads: Vec<Gradient>,
    /// `(input, new value, channels)` of each BatchNorm statistic.
    buffers: Vec<(String, Value, usize)>,
}

impl Builder {
    fn new(arch: &Arch, convolutions: Convolutions, batch_norm: BatchNorm) -> Self {
        let mut g = Graph::new();
        let labels = g.input(names::LABELS, Elem::I64, &[Dim::Batch]);
        Self {
            g,
            arch: *arch,
            convolutions,
            batch_norm,
            labels,
            grads: Vec::new(),
            buffers: Vec::new(),
        }
    }

    /// The `features` input of phase 1 graphs: pooled values `[N,8w]`.
    fn pooled_features_input(&mut self) -> Value {
        let dims = [Dim::Batch, Dim::Fixed(self.arch.features())];
        self.g.input(names::FEATURES, Elem::F32, &dims)
    }

    fn param(&mut self, name: &str, shape: &[usize]) -> Value {
        self.g
            .input(&names::param(name), Elem::F32, &Dim::fixed(shape))
    }

    /// layer3 `features` -> layer4 -> global average pool, `[N, 8w]`.
    fn layer4_pooled(&mut self) -> (Vec<BlockForward>, Value) {
        let arch = self.arch;
        let s = arch.layer3_size();
        let dims = Dim::batch_of(&arch.layer3_shape());
        let features = self.g.input(names::FEATURES, Elem::F32, &dims);
        let x = self.g.transpose(&features, &[1, 2, 3, 0]);
        let mut x = self
            .g
            .reshape(&x, &[arch.layer3_channels() as i64, (s * s) as i64, -1]);
        let mut blocks: Vec<BlockForward> = Vec::new();
        for (i, block) in arch.layer(4).iter().enumerate() {
            let size = blocks.last().map_or(s, |b| b.out_size);
            let forward = self.block_forward(block, &x, size, i > 0);
            x = forward.out.clone();
            blocks.push(forward);
        }
        let pooled_cn = self.g.reduce(Reduce::Mean, &x, &[1], false);
        let pooled = self.g.transpose(&pooled_cn, &[1, 0]);
        (blocks, pooled)
    }

    /// Dropout (by the mask input, in train steps) then Linear, on `[N, 8w]` features.
    fn head(&mut self, features: &Value, dropout: bool) -> Head {
        let (c, classes) = (self.arch.features(), self.arch.classes);
        let w = self.param(&fc().tensor("weight"), &[classes, c]);
        let b = self.param(&fc().tensor("bias"), &[classes]);
        let mask = dropout.then(|| {
            self.g
                .input(names::DROPOUT_MASK, Elem::F32, &[Dim::Batch, Dim::Fixed(c)])
        });
        let dropped = match &mask {
            Some(mask) => self.g.mul(features, mask),
            None => features.clone(),
        };
        let logits = self
            .g
            .gemm(&dropped, &w, Some(&b), Transposed { a: false, b: true });
        Head {
            weight: w,
            bias: b,
            dropped,
            mask,
            logits,
        }
    }

    /// Mean cross-entropy and its gradient with respect to the logits.
    fn loss_and_gradient(&mut self, logits: &Value) -> (Value, Value) {
        let g = &mut self.g;
        let (loss, log_prob) = g.cross_entropy_with_log_prob(logits, &self.labels);
        let probs = g.exp(&log_prob);
        let depth = g.ints(&[self.arch.classes as i64]);
        let values = g.constant(&[2], &[0.0, 1.0]);
        let one_hot = g.one_hot(&self.labels, &depth, &values);
        let diff = g.sub(&probs, &one_hot);
        let batch = batch_size(g, logits);
        (loss, g.div(&diff, &batch))
    }

    /// Records the head's gradients; returns the gradient of its input features.
    fn head_backward(&mut self, head: &Head, dlogits: &Value) -> Value {
        let (c, classes) = (self.arch.features(), self.arch.classes);
        let g = &mut self.g;
        let dw = g.gemm(
            dlogits,
            &head.dropped,
            None,
            Transposed { a: true, b: false },
        );
        let db = g.reduce(Reduce::Sum, dlogits, &[0], false);
        let ddropped = g.matmul(dlogits, &head.weight);
        let dfeatures = match &head.mask {
            Some(mask) => g.mul(&ddropped, mask),
            None => ddropped,
        };
        self.record(&fc().tensor("weight"), &[classes, c], &head.weight, dw);
        self.record(&fc().tensor("bias"), &[classes], &head.bias, db);
        dfeatures
    }

    /// `BasicBlock.forward` on `[C, P, N]`.
    fn block_forward(
        &mut self,
        block: &Block,
        x: &Value,
        size: usize,
        needs_input_grad: bool,
    ) -> BlockForward {
        let path = block.main_path();
        let (mut y, mut y_size) = (x.clone(), size);
        let mut main = Vec::new();
        for (i, spec) in path.iter().enumerate() {
            let (conv, bn, out) = self.conv_bn(spec, &y, y_size);
            y_size = spec.out_size(y_size);
            let relu = (i + 1 < path.len()).then(|| self.g.relu(&out));
            y = relu.clone().unwrap_or(out);
            main.push(((conv, bn), relu));
        }
        let (downsample, identity) = match block.downsample() {
            Some(spec) => {
                let (conv, bn, out) = self.conv_bn(&spec, x, size);
                (Some((conv, bn)), out)
            }
            None => (None, x.clone()),
        };
        let sum = self.g.add(&y, &identity);
        BlockForward {
            main,
            downsample,
            out: self.g.relu(&sum),
            out_size: y_size,
            needs_input_grad,
        }
    }

    /// Gradients of a block's parameters; returns the gradient of its input when the
    /// layer before it trains.
    fn block_backward(&mut self, forward: &BlockForward, dout: &Value) -> Option<Value> {
        let dsum = relu_backward(&mut self.g, dout, &forward.out);
        let mut d = dsum.clone();
        let mut dx_main = None;
        for (i, ((conv, bn), _)) in forward.main.iter().enumerate().rev() {
            let dy = self.bn_backward(bn.as_ref().expect("train-mode BatchNorm"), &d);
            if i == 0 {
                dx_main = self.conv_backward(conv, &dy, forward.needs_input_grad);
            } else {
                let drelu = self.conv_backward(conv, &dy, true).expect("asked for");
                let relu = forward.main[i - 1]
                    .1
                    .as_ref()
                    .expect("a ReLU inside the path");
                d = relu_backward(&mut self.g, &drelu, relu);
            }
        }
        let dx_identity = match &forward.downsample {
            Some((conv, bn)) => {
                let dy = self.bn_backward(bn.as_ref().expect("train-mode BatchNorm"), &dsum);
                self.conv_backward(conv, &dy, forward.needs_input_grad)
            }
            None => Some(dsum),
        };
        match (dx_main, dx_identity) {
            (Some(a), Some(b)) => Some(self.g.add(&a, &b)),
            _ => None,
        }
    }

    fn conv_bn(
        &mut self,
        spec: &ConvSpec,
        x: &Value,
        size: usize,
    ) -> (ConvForward, Option<BnForward>, Value) {
        let (conv, y) = self.conv(spec, x, size);
        match self.batch_norm {
            BatchNorm::Train => {
                let (bn, out) = self.bn_train(spec, &y);
                (conv, Some(bn), out)
            }
            BatchNorm::Eval => (conv, None, self.bn_eval(spec, &y)),
        }
    }

    fn conv(&mut self, spec: &ConvSpec, x: &Value, in_size: usize) -> (ConvForward, Value) {
        let weight = self.param(&spec.weight(), &spec.weight_shape());
        let winograd = self.convolutions == Convolutions::Fastest && winograd::suits(spec, in_size);
        let g = &mut self.g;
        let (method, y) = if !winograd {
            let (patches, y) = patches_forward(g, spec, &weight, x, in_size);
            (ConvMethod::Patches(patches), y)
        } else {
            // A step multiplies directly (see `Convolutions::Fastest`), so its
            // transformed kernel serves only the input gradient.
            let (kernel_for, y) = match self.batch_norm {
                BatchNorm::Train => {
                    let y = patches_forward(g, spec, &weight, x, in_size).1;
                    (KernelFor::InputGradient, Some(y))
                }
                BatchNorm::Eval => (KernelFor::Forward, None),
            };
            let groups = winograd_transforms(g, spec, &weight, x, in_size, kernel_for);
            let y = y.unwrap_or_else(|| winograd_forward(g, &groups, in_size, spec.cout as i64));
            (ConvMethod::Winograd(groups), y)
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
    fn conv_backward(&mut self, conv: &ConvForward, dy: &Value, input_grad: bool) -> Option<Value> {
        let spec = &conv.spec;
        let shape = spec.weight_shape();
        let g = &mut self.g;
        let (dw, dx) = match &conv.method {
            ConvMethod::Patches(patches) => {
                let dw = patches_weight_grad(g, spec, patches, dy);
                let dx =
                    input_grad.then(|| patches_input_grad(g, spec, &conv.weight, dy, conv.in_size));
                (dw, dx)
            }
            ConvMethod::Winograd(groups) => {
                winograd_backward(g, spec, groups, dy, conv.in_size, input_grad)
            }
        };
        let dw = g.reshape(&dw, &shape.iter().map(|&d| d as i64).collect::<Vec<_>>());
        self.record(&spec.weight(), &shape, &conv.weight, dw);
        dx
    }

    /// The BatchNorm's scale and shift inputs.
    fn bn_affine(&mut self, spec: &ConvSpec) -> Affine {
        let c = spec.cout;
        let gamma = self.param(&spec.bn_tensor(BnTensor::WEIGHT), &[c]);
        let beta = self.param(&spec.bn_tensor(BnTensor::BIAS), &[c]);
        let shape = [c as i64, 1, 1];
        let gamma3 = self.g.reshape(&gamma, &shape);
        let beta3 = self.g.reshape(&beta, &shape);
        Affine {
            gamma,
            beta,
            gamma3,
            beta3,
        }
    }

    /// Records `param`'s gradient, for the Adam update and the `grad:` outputs.
    fn record(&mut self, name: &str, shape: &[usize], param: &Value, grad: Value) {
        self.grads.push(Gradient {
            name: name.into(),
            shape: shape.to_vec(),
            param: param.clone(),
            grad,
        });
    }

    /// A running statistic's input `[C]`.
    fn buffer_input(&mut self, spec: &ConvSpec, tensor: BnTensor) -> Value {
        let name = names::buffer(&spec.bn_tensor(tensor));
        self.g.input(&name, Elem::F32, &[Dim::Fixed(spec.cout)])
    }

    /// BatchNorm on `[C, P, N]` with the batch's statistics; running statistics
    /// updated as PyTorch does (unbiased variance, momentum 0.1).
    fn bn_train(&mut self, spec: &ConvSpec, x: &Value) -> (BnForward, Value) {
        let affine = self.bn_affine(spec);
        let g = &mut self.g;
        let count = per_channel_count(g, x, spec.cout);
        let mean = g.reduce(Reduce::Mean, x, &[1, 2], true);
        let centered = g.sub(x, &mean);
        let sum_squares = g.reduce(Reduce::SumSquare, &centered, &[1, 2], true);
        let var = g.div(&sum_squares, &count);
        let eps = g.scalar(BN_EPS);
        let var_eps = g.add(&var, &eps);
        let std = g.sqrt(&var_eps);
        let invstd = g.reciprocal(&std);
        // gamma * (x - mean) * invstd + beta, with the per-channel factors folded first.
        let scale = g.mul(&affine.gamma3, &invstd);
        let scaled = g.mul(&centered, &scale);
        let out = g.add(&scaled, &affine.beta3);
        self.update_running_stats(spec, &count, &mean, &var);
        let forward = BnForward {
            spec: spec.clone(),
            affine,
            centered,
            invstd,
            scale,
            count,
        };
        (forward, out)
    }

    /// BatchNorm on `[C, P, N]` with the running statistics:
    /// `(x - mean) * (gamma / sqrt(var + eps)) + beta`.
    fn bn_eval(&mut self, spec: &ConvSpec, x: &Value) -> Value {
        let affine = self.bn_affine(spec);
        let [mean, var] = BnTensor::BUFFERS.map(|t| self.buffer_input(spec, t));
        let g = &mut self.g;
        let shape = [spec.cout as i64, 1, 1];
        let mean3 = g.reshape(&mean, &shape);
        let var3 = g.reshape(&var, &shape);
        let eps = g.scalar(BN_EPS);
        let var_eps = g.add(&var3, &eps);
        let std = g.sqrt(&var_eps);
        let scale = g.div(&affine.gamma3, &std);
        let centered = g.sub(x, &mean3);
        let scaled = g.mul(&centered, &scale);
        g.add(&scaled, &affine.beta3)
    }

    fn update_running_stats(&mut self, spec: &ConvSpec, count: &Value, mean: &Value, var: &Value) {
        let c = spec.cout;
        // The running variance is unbiased: var * M / (M - 1).
        let g = &mut self.g;
        let one = g.scalar(1.0);
        let count_1 = g.sub(count, &one);
        let bessel = g.div(count, &count_1);
        let unbiased = g.mul(var, &bessel);
        for (tensor, batch_value) in [
            (BnTensor::RUNNING_MEAN, mean),
            (BnTensor::RUNNING_VAR, &unbiased),
        ] {
            let input = self.buffer_input(spec, tensor);
            let flat = self.g.reshape(batch_value, &[c as i64]);
            let updated = lerp(&mut self.g, &input, &flat, BN_MOMENTUM);
            self.buffers
                .push((names::buffer(&spec.bn_tensor(tensor)), updated, c));
        }
    }

    /// With xhat = (x - mean) * invstd and M elements per channel:
    /// dgamma = Σ dy·xhat, dbeta = Σ dy, and
    /// dx = scale · (dy - dbeta/M - xhat · dgamma/M).
    fn bn_backward(&mut self, bn: &BnForward, dy: &Value) -> Value {
        let c = bn.spec.cout;
        let g = &mut self.g;
        let dbeta = g.reduce(Reduce::Sum, dy, &[1, 2], true);
        let dy_centered = g.mul(dy, &bn.centered);
        let sum_dy_centered = g.reduce(Reduce::Sum, &dy_centered, &[1, 2], true);
        let dgamma = g.mul(&sum_dy_centered, &bn.invstd);
        let gradients = [
            (BnTensor::WEIGHT, &bn.affine.gamma, &dgamma),
            (BnTensor::BIAS, &bn.affine.beta, &dbeta),
        ];
        for (tensor, param, grad) in gradients {
            let flat = self.g.reshape(grad, &[c as i64]);
            self.record(&bn.spec.bn_tensor(tensor), &[c], param, flat);
        }
        let g = &mut self.g;
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

    fn logits_dims(&self) -> [Dim; 2] {
        [Dim::Batch, Dim::Fixed(self.arch.classes)]
    }

    /// The loss, logits and softmax probabilities of an eval graph.
    fn finish_eval(&mut self, logits: &Value) {
        let dims = self.logits_dims();
        let loss = self.g.cross_entropy(logits, &self.labels);
        let probs = self.g.softmax(logits, -1);
        self.g.output(logits, names::LOGITS, Elem::F32, &dims);
        self.g.output(&probs, names::PROBS, Elem::F32, &dims);
        self.g.output(&loss, names::LOSS, Elem::F32, &[]);
    }

    /// Adam on every recorded gradient, then the graph outputs.
    fn finish_step(&mut self, loss: &Value, logits: &Value) {
        let dims = self.logits_dims();
        let g = &mut self.g;
        g.output(loss, names::LOSS, Elem::F32, &[]);
        g.output(logits, names::LOGITS, Elem::F32, &dims);
        let adam = AdamScalars::new(g);
        // Forward order, as the parameters were declared.
        let order = self.arch.finetune_params();
        self.grads
            .sort_by_key(|grad| order.iter().position(|(n, _)| *n == grad.name));
        for Gradient {
            name,
            shape,
            param,
            grad,
        } in &self.grads
        {
            let dims = Dim::fixed(shape);
            let m = g.input(&names::adam_m(name), Elem::F32, &dims);
            let v = g.input(&names::adam_v(name), Elem::F32, &dims);
            let (new_p, new_m, new_v) = adam.update(g, shape, [param, grad, &m, &v]);
            for (value, input) in [
                (&new_p, names::param(name)),
                (&new_m, names::adam_m(name)),
                (&new_v, names::adam_v(name)),
            ] {
                g.output(value, &names::updated(&input), Elem::F32, &dims);
            }
            g.output(grad, &names::grad(name), Elem::F32, &dims);
        }
        for (input, value, c) in &self.buffers {
            g.output(value, &names::updated(input), Elem::F32, &[Dim::Fixed(*c)]);
        }
    }
}

/// `(1 - weight) * a + weight * b`
fn lerp(g: &mut Graph, a: &Value, b: &Value, weight: f32) -> Value {
    let keep = g.scalar(1.0 - weight);
    let take = g.scalar(weight);
    let a = g.mul(a, &keep);
    let b = g.mul(b, &take);
    g.add(&a, &b)
}

fn relu_backward(g: &mut Graph, dy: &Value, relu_out: &Value) -> Value {
    // ReLU outputs are >= 0, so ceil(clip(out, 0, 1)) is exactly the 0/1 derivative (0
    // at 0, as PyTorch). ONNX Runtime runs Clip and Ceil vectorized; Sign, Greater and
    // Where take several times longer.
    let zero = g.scalar(0.0);
    let one = g.scalar(1.0);
    let clipped = g.clip(relu_out, &zero, &one);
    let active = g.ceil(&clipped);
    g.mul(dy, &active)
}

/// `[Cin, P_in, N]` -> the patch matrix `[Cin*K, P_out*N]`, which the backward
/// reuses, and `[Cout, P_out, N]`.
fn patches_forward(
    g: &mut Graph,
    spec: &ConvSpec,
    weight: &Value,
    x: &Value,
    in_size: usize,
) -> (Value, Value) {
    let taps = spec.window.kernel * spec.window.kernel;
    let out_size = spec.out_size(in_size);
    let patches = if spec.is_pointwise() {
        g.reshape(x, &[spec.cin as i64, -1])
    } else {
        let forward_idx = spec.tap_indices(in_size);
        let forward_indices = g.int_constant(&[taps, out_size * out_size], &forward_idx);
        gather_patches(g, x, &forward_indices, spec.cin * taps)
    };
    let wm = g.reshape(weight, &[spec.cout as i64, (spec.cin * taps) as i64]);
    let y = g.matmul(&wm, &patches);
    let y = g.reshape(&y, &[spec.cout as i64, (out_size * out_size) as i64, -1]);
    (patches, y)
}

/// `[Cout, Cin*K]`: the forward's patches reused.
fn patches_weight_grad(g: &mut Graph, spec: &ConvSpec, patches: &Value, dy: &Value) -> Value {
    let dym = g.reshape(dy, &[spec.cout as i64, -1]);
    g.gemm(&dym, patches, None, Transposed { a: false, b: true })
}

/// The patch convolution run backwards, phase by phase of the input positions
/// ([`ConvSpec::input_grad_phases`]): gather `dy` by what each tap read there, multiply
/// by the phase's taps of the weight with its channel axes swapped, then put the
/// positions back in raster order (zero where no tap reaches).
fn patches_input_grad(
    g: &mut Graph,
    spec: &ConvSpec,
    weight: &Value,
    dy: &Value,
    in_size: usize,
) -> Value {
    let (cin, cout) = (spec.cin as i64, spec.cout as i64);
    let p_in = in_size * in_size;
    if spec.is_pointwise() {
        let w = g.reshape(weight, &[cout, cin]);
        let dym = g.reshape(dy, &[cout, -1]);
        let dx = g.gemm(&w, &dym, None, Transposed { a: true, b: false });
        return g.reshape(&dx, &[cin, p_in as i64, -1]);
    }
    let taps = spec.window.kernel * spec.window.kernel;
    let w3 = g.reshape(weight, &[cout, cin, taps as i64]);
    let padded_dy = g.pad(dy, &[0, 0, 0, 0, 1, 0]);
    let mut parts = Vec::new();
    // For each input position, its row among the phases' results.
    let mut rows = vec![None; p_in];
    let mut next_row = 0;
    for phase in spec.input_grad_phases(in_size) {
        if phase.taps.is_empty() {
            continue;
        }
        let (t, n) = (phase.taps.len(), phase.positions.len());
        let indices = g.int_constant(&[t, n], &phase.indices);
        let gathered = g.gather(&padded_dy, &indices, 1);
        let gathered = g.reshape(&gathered, &[cout * t as i64, -1]);
        let w_phase = if t == taps {
            w3.clone()
        } else {
            let phase_taps: Vec<i64> = phase.taps.iter().map(|&k| k as i64).collect();
            let phase_taps = g.int_constant(&[t], &phase_taps);
            g.gather(&w3, &phase_taps, 2)
        };
        let wt = g.transpose(&w_phase, &[1, 0, 2]);
        let wt = g.reshape(&wt, &[cin, cout * t as i64]);
        let dx = g.matmul(&wt, &gathered);
        parts.push(g.reshape(&dx, &[cin, n as i64, -1]));
        for &i in &phase.positions {
            rows[i] = Some(next_row);
            next_row += 1;
        }
    }
    let joined = match parts.as_slice() {
        [one] => one.clone(),
        _ => g.concat(&parts, 1),
    };
    let order: Vec<i64> = rows
        .iter()
        .map(|row| row.unwrap_or(next_row) as i64)
        .collect();
    if order.iter().enumerate().all(|(i, &row)| row == i as i64) {
        return joined;
    }
    // Row `next_row` of the padded result is the zero gradient of unreached positions.
    let padded = g.pad(&joined, &[0, 0, 0, 0, 1, 0]);
    let order = g.int_constant(&[p_in], &order);
    g.gather(&padded, &order, 1)
}

/// The image and the kernel in the tile domain of Winograd F(4x4, 3x3), for each
/// group of transformed positions.
fn winograd_transforms(
    g: &mut Graph,
    spec: &ConvSpec,
    weight: &Value,
    x: &Value,
    size: usize,
    kernel_for: KernelFor,
) -> Vec<WinogradGroup> {
    let (cin, cout) = (spec.cin as i64, spec.cout as i64);
    let taps = winograd::TAPS as i64;
    let (w, u_shape) = match kernel_for {
        KernelFor::Forward => (g.reshape(weight, &[cout * cin, taps]), [1, cout, cin]),
        KernelFor::InputGradient => {
            let w = g.reshape(weight, &[cout, cin, taps]);
            let swapped = g.transpose(&w, &[1, 0, 2]);
            (g.reshape(&swapped, &[cin * cout, taps]), [1, cin, cout])
        }
    };
    let x_rows = by_position(g, x);
    let mut groups = Vec::new();
    for group in winograd::Transforms::new(size).groups {
        let (positions, tiles) = (group.positions() as i64, group.tiles as i64);
        let input = g.matrix(&group.input);
        let output = g.matrix(&group.output);
        let kernel = g.matrix(&group.kernel);
        let u = g.gemm(&kernel, &w, None, Transposed { a: false, b: true });
        let u = g.reshape(&u, &[&[positions][..], &u_shape].concat());
        let x_tiles = g.matmul(&input, &x_rows);
        let x_tiles = g.reshape(&x_tiles, &[positions, tiles, cin, -1]);
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
    groups
}

/// `[Cout, P, N]` by Winograd from the transforms: for each group one batched channel
/// product (the kernel broadcast over tiles) and back; the groups' images add up to
/// the convolution.
fn winograd_forward(g: &mut Graph, groups: &[WinogradGroup], size: usize, cout: i64) -> Value {
    let terms: Vec<_> = groups
        .iter()
        .map(|group| {
            let m = g.matmul(&group.u, &group.x_tiles);
            let m = g.reshape(&m, &[group.positions * group.tiles, -1]);
            (group.output.clone(), m)
        })
        .collect();
    let y = gemm_sum(g, &terms, false);
    from_positions(g, &y, size, cout)
}

/// Gradients of a Winograd convolution, as the adjoint of its forward, summed over
/// groups: `dX = Σ inputᵀ · (Uᵀ ⊙ (outputᵀ · dY))`, `dU = Σ (outputᵀ · dY) ⊗
/// (input · X)` over tiles and batch, `dW = Σ kernelᵀ · dU`. Returns
/// `([Cout, Cin, 9], dX)`.
fn winograd_backward(
    g: &mut Graph,
    spec: &ConvSpec,
    groups: &[WinogradGroup],
    dy: &Value,
    size: usize,
    input_grad: bool,
) -> (Value, Option<Value>) {
    let (cin, cout) = (spec.cin as i64, spec.cout as i64);
    let dy_rows = by_position(g, dy);
    let mut dw_terms = Vec::new();
    let mut dx_terms = Vec::new();
    for group in groups {
        let (positions, tiles) = (group.positions, group.tiles);
        let dy_tiles = g.gemm(
            &group.output,
            &dy_rows,
            None,
            Transposed { a: true, b: false },
        );
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
            let dx_tiles = g.matmul(&group.u, &dy_tiles);
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

/// `Σ a · b` over `terms` (each `a` transposed when asked), chained through Gemm's
/// addend.
fn gemm_sum(g: &mut Graph, terms: &[(Value, Value)], trans_a: bool) -> Value {
    let mut sum: Option<Value> = None;
    for (a, b) in terms {
        let t = Transposed {
            a: trans_a,
            b: false,
        };
        sum = Some(g.gemm(a, b, sum.as_ref(), t));
    }
    sum.expect("at least one term")
}

/// `[C, P, N]` -> `[P, C*N]`: positions as rows, for the transforms.
fn by_position(g: &mut Graph, x: &Value) -> Value {
    let transposed = g.transpose(x, &[1, 0, 2]);
    g.reshape(&transposed, &[0, -1])
}

/// `[P, C*N]` -> `[C, P, N]`.
fn from_positions(g: &mut Graph, rows: &Value, size: usize, channels: i64) -> Value {
    let image = g.reshape(rows, &[(size * size) as i64, channels, -1]);
    g.transpose(&image, &[1, 0, 2])
}

/// `[C, P, N]` -> patches `[rows, P_out*N]` (rows = C*K) through `[K, P_out]` indices.
fn gather_patches(g: &mut Graph, x: &Value, indices: &Value, rows: usize) -> Value {
    let padded = g.pad(x, &[0, 0, 0, 0, 1, 0]);
    let gathered = g.gather(&padded, indices, 1);
    g.reshape(&gathered, &[rows as i64, -1])
}

/// Elements per channel of a `[C, P, N]` tensor, P*N, as a float scalar.
fn per_channel_count(g: &mut Graph, x: &Value, channels: usize) -> Value {
    let size = g.size(x);
    let size = g.cast(&size, Elem::F32);
    let channels = g.scalar(channels as f32);
    g.div(&size, &channels)
}

/// The batch size as a float scalar.
fn batch_size(g: &mut Graph, x: &Value) -> Value {
    let shape = g.shape(x);
    let zero = g.int_constant(&[], &[0]);
    let n = g.gather(&shape, &zero, 0);
    g.cast(&n, Elem::F32)
}

/// Adam's per-step scalars, computed once for all parameters from the `step`, `lr`
/// and `weight_decay` inputs.
struct AdamScalars {
    step_size: Value,
    bias_correction2_sqrt: Value,
    decay: Value,
    beta1: Value,
    one_minus_beta1: Value,
    beta2: Value,
    one_minus_beta2: Value,
    eps: Value,
}

impl AdamScalars {
    fn new(g: &mut Graph) -> Self {
        let step = g.input(names::STEP, Elem::F32, &[]);
        let lr = g.input(names::LR, Elem::F32, &[]);
        let weight_decay = g.input(names::WEIGHT_DECAY, Elem::F32, &[]);
        let one = g.scalar(1.0);
        let beta1 = g.scalar(BETA1);
        let beta2 = g.scalar(BETA2);
        let pow1 = g.pow(&beta1, &step);
        let pow2 = g.pow(&beta2, &step);
        let bc1 = g.sub(&one, &pow1);
        let bc2 = g.sub(&one, &pow2);
        let bias_correction2_sqrt = g.sqrt(&bc2);
        let step_size = g.div(&lr, &bc1);
        let lr_wd = g.mul(&lr, &weight_decay);
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

    /// `torch.optim.Adam`'s update (AdamW's decoupled decay when weight_decay > 0)
    /// of a parameter of `shape`.
    fn update(
        &self,
        g: &mut Graph,
        shape: &[usize],
        [p, grad, m, v]: [&Value; 4],
    ) -> (Value, Value, Value) {
        // ONNX Runtime's element-wise kernels go element by element when the last
        // axis is 1 (a 1x1 kernel's [Cout, Cin, 1, 1]): 70 times slower than on the
        // same values flat.
        if shape.len() > 1 && shape.last() == Some(&1) {
            let [p, grad, m, v] = [p, grad, m, v].map(|x| g.reshape(x, &[-1]));
            let flat = [shape.iter().product()];
            let updated = self.update(g, &flat, [&p, &grad, &m, &v]);
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let [p, m, v] = [updated.0, updated.1, updated.2].map(|x| g.reshape(&x, &dims));
            return (p, m, v);
        }
        let m_keep = g.mul(m, &self.beta1);
        let m_new = g.mul(grad, &self.one_minus_beta1);
        let m = g.add(&m_keep, &m_new);
        let v_keep = g.mul(v, &self.beta2);
        let g2 = g.mul(grad, grad);
        let v_new = g.mul(&g2, &self.one_minus_beta2);
        let v = g.add(&v_keep, &v_new);
        let root = g.sqrt(&v);
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
    use crate::resnet::Net;

    #[test]
    fn indices_of_a_strided_3x3_convolution() {
        let spec = strided_3x3();
        let fwd = spec.tap_indices(4);
        // Output (0,0), tap (0,0) reads padding; tap (1,1) reads input (0,0).
        assert_eq!(fwd[0], 16);
        assert_eq!(fwd[4 * 4], 0);
        // Output (1,1), tap (2,2) reads input (2*1+2-1, ..) = (3,3) = 15.
        assert_eq!(fwd[8 * 4 + 3], 15);
    }

    #[test]
    fn input_grad_phases_invert_the_forward_indices() {
        for spec in [strided_3x3(), strided_1x1()] {
            let (in_size, p_out) = (4, 4);
            let fwd = spec.tap_indices(in_size);
            let phases = spec.input_grad_phases(in_size);
            let taps: Vec<usize> = phases.iter().map(|p| p.taps.len()).collect();
            let expected: &[usize] = if spec.window.kernel == 3 {
                &[1, 2, 2, 4]
            } else {
                &[1, 0, 0, 0]
            };
            assert_eq!(taps, expected);
            let mut seen = vec![0; in_size * in_size];
            for phase in &phases {
                phase.positions.iter().for_each(|&i| seen[i] += 1);
                for (t, &tap) in phase.taps.iter().enumerate() {
                    for (at, &i) in phase.positions.iter().enumerate() {
                        let o = phase.indices[t * phase.positions.len() + at];
                        if o < p_out as i64 {
                            assert_eq!(fwd[tap * p_out + o as usize], i as i64);
                        }
                    }
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "each position in one phase");
            // Every (tap, output) read of an input lands in its phase's table.
            let reads = fwd.iter().filter(|&&i| i < 16).count();
            let listed: usize = phases
                .iter()
                .map(|p| p.indices.iter().filter(|&&o| o < p_out as i64).count())
                .sum();
            assert_eq!(reads, listed);
        }
    }

    fn small_arch() -> Arch {
        Arch {
            net: Net::ResNet18,
            width: 8,
            image_size: 64,
            classes: 3,
        }
    }

    /// layer4.0.conv1 of a 64-px model: 3x3, stride 2, pad 1.
    fn strided_3x3() -> ConvSpec {
        small_arch().layer(4)[0].main_path()[0].clone()
    }

    /// layer4.0.downsample: 1x1, stride 2.
    fn strided_1x1() -> ConvSpec {
        small_arch().layer(4)[0]
            .downsample()
            .expect("layer4 downsamples")
    }
}
