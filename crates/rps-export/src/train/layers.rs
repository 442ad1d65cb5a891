//! The layer kinds of a train graph on `[C, H*W, N]` maps: each kind's forward (what
//! it emits, and what it saves) with its backward beside it ([`Backward`]). The
//! forward of a train step pushes each layer onto the tape; its backward is the tape
//! replayed ([`super::tape`]).

use rps_core::Normalization;

use crate::graph::{Elem, Graph, Reduce, Transposed, Value};
use rps_model::network::{BnTensor, ConvSpec};
use rps_model::window::Window;

use super::conv::{self, Algorithm};
use super::tape::{Backward, ParamGrads};

/// A convolution without bias; its weight is an input.
pub struct Conv {
    spec: ConvSpec,
    weight: Value,
    in_size: usize,
    saved: conv::Saved,
}

impl Conv {
    pub fn forward(
        g: &mut Graph,
        spec: &ConvSpec,
        weight: &Value,
        x: &Value,
        in_size: usize,
        algorithm: Algorithm,
    ) -> (Self, Value) {
        let (saved, y) = conv::forward(g, spec, weight, x, in_size, algorithm);
        let layer = Self {
            spec: spec.clone(),
            weight: weight.clone(),
            in_size,
            saved,
        };
        (layer, y)
    }
}

impl Backward for Conv {
    fn backward(
        &self,
        g: &mut Graph,
        params: &mut ParamGrads,
        dy: &Value,
        wanted: &[bool],
    ) -> Vec<Option<Value>> {
        let spec = &self.spec;
        let (dw, dx) = conv::backward(
            g,
            spec,
            &self.saved,
            &self.weight,
            dy,
            self.in_size,
            wanted[0],
        );
        params.record(&spec.weight(), &spec.weight_shape(), &self.weight, dw);
        vec![dx]
    }
}

/// A BatchNorm's inputs: scale and shift (`[C]`, with `[C,1,1]` views), then the
/// running mean and variance.
pub struct BnInputs {
    pub gamma: Value,
    pub beta: Value,
    pub running: [Value; 2],
}

/// BatchNorm with the batch's statistics (PyTorch's train mode), written out with
/// reductions: ORT's training-mode `BatchNormalization` does not return what the
/// backward needs.
pub struct BatchNormTrain {
    spec: ConvSpec,
    gamma: Value,
    beta: Value,
    /// `x - mean`.
    centered: Value,
    /// `1 / sqrt(var + eps)`, `[C,1,1]`.
    invstd: Value,
    /// `gamma * invstd`, `[C,1,1]`.
    scale: Value,
    /// Elements per channel, H*W*N, a float scalar.
    count: Value,
}

impl BatchNormTrain {
    /// The normalized output and the running statistics' new values (unbiased
    /// variance, the layer's momentum, as PyTorch updates them), by tensor.
    pub fn forward(
        g: &mut Graph,
        spec: &ConvSpec,
        inputs: &BnInputs,
        x: &Value,
    ) -> (Self, Value, [(BnTensor, Value); 2]) {
        let c = spec.cout;
        let [gamma3, beta3] = [&inputs.gamma, &inputs.beta].map(|v| per_channel(g, v, c));
        let count = per_channel_count(g, x, c);
        let mean = channel_sum(g, Reduce::Mean, x);
        let centered = g.sub(x, &mean);
        let sum_squares = channel_sum(g, Reduce::SumSquare, &centered);
        let var = g.div(&sum_squares, &count);
        let eps = g.scalar(spec.bn_constants.eps);
        let var_eps = g.add(&var, &eps);
        let std = g.sqrt(&var_eps);
        let invstd = g.reciprocal(&std);
        // gamma * (x - mean) * invstd + beta, with the per-channel factors folded first.
        let scale = g.mul(&gamma3, &invstd);
        let scaled = g.mul(&centered, &scale);
        let out = g.add(&scaled, &beta3);
        // The running variance is unbiased: var * M / (M - 1).
        let one = g.scalar(1.0);
        let count_1 = g.sub(&count, &one);
        let bessel = g.div(&count, &count_1);
        let unbiased = g.mul(&var, &bessel);
        let [running_mean, running_var] = &inputs.running;
        let updates = [
            (BnTensor::RUNNING_MEAN, running_mean, &mean),
            (BnTensor::RUNNING_VAR, running_var, &unbiased),
        ]
        .map(|(tensor, running, batch)| {
            let flat = g.reshape(batch, &[c as i64]);
            (tensor, lerp(g, running, &flat, spec.bn_constants.momentum))
        });
        let layer = Self {
            spec: spec.clone(),
            gamma: inputs.gamma.clone(),
            beta: inputs.beta.clone(),
            centered,
            invstd,
            scale,
            count,
        };
        (layer, out, updates)
    }
}

impl Backward for BatchNormTrain {
    /// With xhat = (x - mean) * invstd and M elements per channel:
    /// dgamma = Σ dy·xhat, dbeta = Σ dy, and
    /// dx = scale · (dy - dbeta/M - xhat · dgamma/M).
    fn backward(
        &self,
        g: &mut Graph,
        params: &mut ParamGrads,
        dy: &Value,
        _: &[bool],
    ) -> Vec<Option<Value>> {
        let [dbeta, sum_dy_centered] = sums_of_dy(g, dy, &self.centered);
        let dgamma = g.mul(&sum_dy_centered, &self.invstd);
        let grads = [dgamma.clone(), dbeta.clone()];
        record_scale_and_shift(g, params, &self.spec, [&self.gamma, &self.beta], grads);
        let mean_dy = g.div(&dbeta, &self.count);
        // xhat · dgamma/M · scale = centered · (invstd · dgamma/M · scale)
        let mean_dy_xhat = g.div(&dgamma, &self.count);
        let k = g.mul(&self.invstd, &mean_dy_xhat);
        let k = g.mul(&k, &self.scale);
        let centered_dy = g.sub(dy, &mean_dy);
        let scaled = g.mul(&centered_dy, &self.scale);
        let projection = g.mul(&self.centered, &k);
        vec![Some(g.sub(&scaled, &projection))]
    }
}

/// BatchNorm with the running statistics (eval mode): in eval graphs, and in the
/// train steps of `FT_BN=eval` (Keras' `training=False`), where the statistics are
/// constants of the step and only the scale and shift learn:
/// `(x - mean) * (gamma / sqrt(var + eps)) + beta`.
pub struct BatchNormRunning {
    spec: ConvSpec,
    gamma: Value,
    beta: Value,
    /// `x - running_mean`.
    centered: Value,
    /// `sqrt(running_var + eps)`, `[C,1,1]`.
    std: Value,
    /// `gamma / std`, `[C,1,1]`.
    scale: Value,
}

impl BatchNormRunning {
    pub fn forward(g: &mut Graph, spec: &ConvSpec, inputs: &BnInputs, x: &Value) -> (Self, Value) {
        let c = spec.cout;
        let [gamma, beta, mean, var] = [
            &inputs.gamma,
            &inputs.beta,
            &inputs.running[0],
            &inputs.running[1],
        ]
        .map(|v| per_channel(g, v, c));
        let eps = g.scalar(spec.bn_constants.eps);
        let var_eps = g.add(&var, &eps);
        let std = g.sqrt(&var_eps);
        let scale = g.div(&gamma, &std);
        let centered = g.sub(x, &mean);
        let scaled = g.mul(&centered, &scale);
        let out = g.add(&scaled, &beta);
        let layer = Self {
            spec: spec.clone(),
            gamma: inputs.gamma.clone(),
            beta: inputs.beta.clone(),
            centered,
            std,
            scale,
        };
        (layer, out)
    }
}

impl Backward for BatchNormRunning {
    /// An affine map per channel: dgamma = Σ dy·(x - mean) / std, dbeta = Σ dy,
    /// dx = dy · scale.
    fn backward(
        &self,
        g: &mut Graph,
        params: &mut ParamGrads,
        dy: &Value,
        _: &[bool],
    ) -> Vec<Option<Value>> {
        let [dbeta, sum_dy_centered] = sums_of_dy(g, dy, &self.centered);
        let dgamma = g.div(&sum_dy_centered, &self.std);
        record_scale_and_shift(
            g,
            params,
            &self.spec,
            [&self.gamma, &self.beta],
            [dgamma, dbeta],
        );
        vec![Some(g.mul(dy, &self.scale))]
    }
}

/// ReLU, or with a ceiling PyTorch's `ReLU6` (`hardtanh(x, 0, 6)`): the gradient
/// passes where the output lies above 0 (and below the ceiling).
pub struct Relu {
    out: Value,
    ceiling: Option<f32>,
}

impl Relu {
    pub fn forward(g: &mut Graph, x: &Value, ceiling: Option<f32>) -> (Self, Value) {
        let out = match ceiling {
            None => g.relu(x),
            Some(max) => {
                let (zero, max) = (g.scalar(0.0), g.scalar(max));
                g.clip(x, &zero, &max)
            }
        };
        let layer = Self {
            out: out.clone(),
            ceiling,
        };
        (layer, out)
    }
}

impl Backward for Relu {
    fn backward(
        &self,
        g: &mut Graph,
        _: &mut ParamGrads,
        dy: &Value,
        _: &[bool],
    ) -> Vec<Option<Value>> {
        // The outputs are >= 0, so ceil(clip(out, 0, 1)) is exactly the 0/1
        // derivative (0 at 0, as PyTorch); with a ceiling, the same of
        // out * (max - out), above 0 strictly between 0 and max (one product where
        // masking each side would take two more passes). ONNX Runtime runs Clip
        // and Ceil vectorized; Sign, Greater and Where take several times longer.
        let active = match self.ceiling {
            None => positive(g, &self.out),
            Some(max) => {
                let max = g.scalar(max);
                let headroom = g.sub(&max, &self.out);
                let inside = g.mul(&self.out, &headroom);
                positive(g, &inside)
            }
        };
        vec![Some(g.mul(dy, &active))]
    }
}

/// 1 where `x` is above 0, else 0.
fn positive(g: &mut Graph, x: &Value) -> Value {
    let (zero, one) = (g.scalar(0.0), g.scalar(1.0));
    let clipped = g.clip(x, &zero, &one);
    g.ceil(&clipped)
}

/// A block's residual sum.
pub struct Add;

impl Add {
    pub fn forward(g: &mut Graph, a: &Value, b: &Value) -> (Self, Value) {
        (Self, g.add(a, b))
    }
}

impl Backward for Add {
    fn backward(
        &self,
        _: &mut Graph,
        _: &mut ParamGrads,
        dy: &Value,
        wanted: &[bool],
    ) -> Vec<Option<Value>> {
        wanted.iter().map(|&w| w.then(|| dy.clone())).collect()
    }
}

/// Max pooling by a gather of the window's taps and a reduction. Its input follows
/// a ReLU (>= 0), so padding with zeros gives PyTorch's result (padding with -inf).
pub struct MaxPool {
    window: Window,
    in_size: usize,
    channels: usize,
    /// `[C, 1, P_out, N]`: the first tap holding each window's largest value. Kept
    /// instead of the gathered taps, two ninths of their size for a 3x3 window (the
    /// stem's taps are 462 MB at batch 64).
    first: Value,
}

impl MaxPool {
    pub fn forward(
        g: &mut Graph,
        x: &Value,
        in_size: usize,
        channels: usize,
        window: Window,
    ) -> (Self, Value) {
        let out_size = window.out_size(in_size);
        let indices = g.int_constant(
            &[window.taps(), out_size * out_size],
            &window.tap_indices(in_size),
        );
        let gathered = g.gather_padded(x, &indices);
        // The maximum read at the first largest tap, not reduced apart: ONNX Runtime
        // runs a node when the first value that needs it is computed, so an index
        // only the backward reads would keep the taps alive until then.
        let first = g.arg_max(&gathered, 1);
        let max = g.gather_elements(&gathered, &first, 1);
        let max = g.reshape(&max, &[channels as i64, (out_size * out_size) as i64, -1]);
        let layer = Self {
            window,
            in_size,
            channels,
            first,
        };
        (layer, max)
    }
}

impl Backward for MaxPool {
    /// Each output's gradient goes to the first tap (in raster order) holding the
    /// window's largest value, as PyTorch routes it: ties are common where an image
    /// is flat. The taps' gradients then go back to the input positions they read,
    /// phase by phase.
    fn backward(
        &self,
        g: &mut Graph,
        _: &mut ParamGrads,
        dy: &Value,
        _: &[bool],
    ) -> Vec<Option<Value>> {
        let taps = self.window.taps();
        let out_size = self.window.out_size(self.in_size);
        let p_out = out_size * out_size;
        // One row past each tap's outputs, zero (`dy` padded with zeros, `first`
        // with any tap): the phases read it where no tap reaches. A padded copy of
        // the taps' gradients took 65 ms from `all`; gathering from `by_tap` with a
        // never-chosen tenth tap as the zeros peaked at 3.69 GB against 2.59
        // (docs/benchmarks.md).
        let rows = p_out + 1;
        let first = g.pad(&self.first, &[0, 0, 0, 0, 0, 0, 1, 0]);
        let dy = g.pad_zero_row(dy);
        let tap_ids: Vec<i64> = (0..taps as i64).collect();
        let tap_ids = g.int_constant(&[1, taps, 1, 1], &tap_ids);
        let chosen = g.equal_f32(&first, &tap_ids);
        let dy = g.unsqueeze(&dy, &[1]);
        let by_tap = g.mul(&chosen, &dy);
        let by_tap = g.reshape(&by_tap, &[self.channels as i64, (taps * rows) as i64, -1]);
        let dx = conv::scatter_by_phase(g, self.window, self.in_size, |g, phase| {
            let n = phase.positions.len();
            let flat: Vec<i64> = phase
                .indices
                .chunks(n)
                .zip(&phase.taps)
                .flat_map(|(outputs, &tap)| {
                    outputs.iter().map(move |&o| match o < p_out as i64 {
                        true => (tap * rows) as i64 + o,
                        false => p_out as i64,
                    })
                })
                .collect();
            let indices = g.int_constant(&[phase.taps.len(), n], &flat);
            let gathered = g.gather(&by_tap, &indices, 1);
            g.reduce(Reduce::Sum, &gathered, &[1], false)
        });
        vec![Some(dx)]
    }
}

/// Global average pooling: `[C, P, N]` -> `[N, C]`.
pub struct GlobalAveragePool {
    /// The input, whose shape the gradient is spread back over.
    input: Value,
    positions: usize,
}

impl GlobalAveragePool {
    pub fn forward(g: &mut Graph, x: &Value, size: usize) -> (Self, Value) {
        let pooled_cn = g.reduce(Reduce::Mean, x, &[1], false);
        let pooled = g.transpose(&pooled_cn, &[1, 0]);
        let layer = Self {
            input: x.clone(),
            positions: size * size,
        };
        (layer, pooled)
    }
}

impl Backward for GlobalAveragePool {
    /// Each gradient spread evenly over the H*W positions.
    fn backward(
        &self,
        g: &mut Graph,
        _: &mut ParamGrads,
        dy: &Value,
        _: &[bool],
    ) -> Vec<Option<Value>> {
        let dy_cn = g.transpose(dy, &[1, 0]);
        let dy = g.unsqueeze(&dy_cn, &[1]);
        let scale = g.scalar(1.0 / self.positions as f32);
        let dy = g.mul(&dy, &scale);
        let shape = g.shape(&self.input);
        vec![Some(g.expand(&dy, &shape))]
    }
}

/// Dropout by a mask input (0, or 1/(1-p) for kept values).
pub struct Dropout {
    mask: Value,
}

impl Dropout {
    pub fn forward(g: &mut Graph, x: &Value, mask: &Value) -> (Self, Value) {
        (Self { mask: mask.clone() }, g.mul(x, mask))
    }
}

impl Backward for Dropout {
    fn backward(
        &self,
        g: &mut Graph,
        _: &mut ParamGrads,
        dy: &Value,
        _: &[bool],
    ) -> Vec<Option<Value>> {
        vec![Some(g.mul(dy, &self.mask))]
    }
}

/// `nn.Linear` on `[N, C]`: its weight `[classes, C]` and bias, by name.
pub struct Linear {
    names: [String; 2],
    shapes: [Vec<usize>; 2],
    weight: Value,
    bias: Value,
    input: Value,
}

/// A parameter input: its name, shape and value.
pub type Param = (String, Vec<usize>, Value);

impl Linear {
    pub fn forward(g: &mut Graph, x: &Value, weight: Param, bias: Param) -> (Self, Value) {
        let y = g.gemm(
            x,
            &weight.2,
            Some(&bias.2),
            Transposed { a: false, b: true },
        );
        let layer = Self {
            names: [weight.0, bias.0],
            shapes: [weight.1, bias.1],
            weight: weight.2,
            bias: bias.2,
            input: x.clone(),
        };
        (layer, y)
    }
}

impl Backward for Linear {
    fn backward(
        &self,
        g: &mut Graph,
        params: &mut ParamGrads,
        dy: &Value,
        wanted: &[bool],
    ) -> Vec<Option<Value>> {
        let dw = g.gemm(dy, &self.input, None, Transposed { a: true, b: false });
        let db = g.reduce(Reduce::Sum, dy, &[0], false);
        params.record(&self.names[0], &self.shapes[0], &self.weight, dw);
        params.record(&self.names[1], &self.shapes[1], &self.bias, db);
        vec![wanted[0].then(|| g.matmul(dy, &self.weight))]
    }
}

/// u8 pixels `[N, 3, S, S]` -> `[3, S*S, N]` normalized as the network wants:
/// gathered from [`Normalization::values`], so the values are extract's (and
/// torchvision's) to the bit.
pub fn normalized_pixels(
    g: &mut Graph,
    pixels: &Value,
    size: usize,
    normalization: &Normalization,
) -> Value {
    const LEVELS: usize = 256;
    let table: Vec<f32> = normalization.values().concat();
    let table = g.constant(&[3 * LEVELS], &table);
    let offsets: Vec<i64> = (0..3).map(|c| (c * LEVELS) as i64).collect();
    let offsets = g.int_constant(&[3, 1, 1], &offsets);
    let x = g.transpose(pixels, &[1, 2, 3, 0]);
    let x = g.reshape(&x, &[3, (size * size) as i64, -1]);
    let levels = g.cast(&x, Elem::I64);
    let indices = g.add(&levels, &offsets);
    g.gather(&table, &indices, 0)
}

/// `reduce` over each channel of `[C, P, N]`, kept as `[C, 1, 1]`: over each
/// position's batch in float32, then over the positions in float64. A float32 sum
/// over all P*N values errs by about sqrt(P*N/16) ulps as ONNX Runtime's vectorized
/// reductions add them (7e-6 of the mean at 112x112 x 16 images), and that error
/// moves every value of the channel: ReLU inputs near a threshold flip, and
/// gradients move by 1e-3 (the genuine EfficientNet-Lite0 weights from `_blocks.5`
/// went twice past the bound with float32 sums on 14x14 maps). Summing the batch
/// first keeps each float32 sum to N values, and casts P*C partial sums instead of
/// the whole map, which cost a tenth of a step.
fn channel_sum(g: &mut Graph, reduce: Reduce, x: &Value) -> Value {
    let per_position = g.reduce(reduce, x, &[2], true);
    let wide = g.cast(&per_position, Elem::F64);
    let across = match reduce {
        Reduce::Mean => Reduce::Mean,
        Reduce::Sum | Reduce::SumSquare => Reduce::Sum,
        Reduce::Max => Reduce::Max,
    };
    let sum = g.reduce(across, &wide, &[1], true);
    g.cast(&sum, Elem::F32)
}

/// What both BatchNorm backwards sum per channel: `Σ dy` (the shift's gradient) and
/// `Σ dy·(x - mean)`.
fn sums_of_dy(g: &mut Graph, dy: &Value, centered: &Value) -> [Value; 2] {
    let dy_centered = g.mul(dy, centered);
    [
        channel_sum(g, Reduce::Sum, dy),
        channel_sum(g, Reduce::Sum, &dy_centered),
    ]
}

/// A BatchNorm's scale and shift gradients, `[C,1,1]` sums, recorded as `[C]`.
fn record_scale_and_shift(
    g: &mut Graph,
    params: &mut ParamGrads,
    spec: &ConvSpec,
    [gamma, beta]: [&Value; 2],
    [dgamma, dbeta]: [Value; 2],
) {
    let c = spec.cout;
    for (tensor, param, grad) in [
        (BnTensor::WEIGHT, gamma, dgamma),
        (BnTensor::BIAS, beta, dbeta),
    ] {
        let flat = g.reshape(&grad, &[c as i64]);
        params.record(&spec.bn_tensor(tensor), &[c], param, flat);
    }
}

/// A `[C]` input as `[C,1,1]`, to broadcast over positions and batch.
fn per_channel(g: &mut Graph, v: &Value, c: usize) -> Value {
    g.reshape(v, &[c as i64, 1, 1])
}

/// Elements per channel of a `[C, P, N]` tensor, P*N, as a float scalar.
fn per_channel_count(g: &mut Graph, x: &Value, channels: usize) -> Value {
    let size = g.size(x);
    let size = g.cast(&size, Elem::F32);
    let channels = g.scalar(channels as f32);
    g.div(&size, &channels)
}

/// `(1 - weight) * a + weight * b`
fn lerp(g: &mut Graph, a: &Value, b: &Value, weight: f32) -> Value {
    let keep = g.scalar(1.0 - weight);
    let take = g.scalar(weight);
    let a = g.mul(a, &keep);
    let b = g.mul(b, &take);
    g.add(&a, &b)
}
