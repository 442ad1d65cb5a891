//! Convolutions of a train graph through ONNX Runtime's blocked-layout (NCHWc)
//! kernels, fed filters reordered in the graph (its optimizer reorders only constant
//! ones). Depthwise convolutions: the forward, and the input gradient as the same
//! kernel run over the output gradient (spread out by the stride) with the filters
//! flipped. Gathering every tap instead writes kernel² copies of the map; this moves
//! each map a few times. The weight gradient pairs output and input positions in one
//! product batched over channels on small maps, and gathers taps on large ones (where
//! all pairs would cost more). Dense convolutions on large maps whose channels fill
//! blocks (the stride-1 and strided 3x3 ones): the forward ([`dense_forward`]), which
//! gathers no patches at all.

use crate::graph::{Graph, Reduce, Value};
use rps_model::network::ConvSpec;
use rps_model::window::Window;

/// The largest channel block of any machine's NCHWc kernels (16 floats, AVX-512): a
/// depthwise convolution whose channels fill whole blocks on every machine goes
/// through them.
const MAX_BLOCK: usize = 16;

/// The largest map edge whose weight gradient pairs every output position with every
/// padded input position (a `[P_out, P_pad]` product per channel); above it, gathered
/// taps cost less.
const PAIRED_MAX: usize = 14;

/// Whether [`forward`] and [`backward`] compute this depthwise convolution of a
/// `size` x `size` map.
pub fn suits(spec: &ConvSpec, size: usize) -> bool {
    spec.is_depthwise()
        && spec.cout.is_multiple_of(MAX_BLOCK)
        && transposed_pads(spec.window, size).is_some()
}

/// Whether [`dense_forward`] computes this dense convolution: its channels, in and
/// out, fill whole blocks on every machine.
pub fn suits_dense(spec: &ConvSpec) -> bool {
    spec.groups == 1 && spec.cin.is_multiple_of(MAX_BLOCK) && spec.cout.is_multiple_of(MAX_BLOCK)
}

/// A dense convolution `[Cin, P_in, N]` -> `[Cout, P_out, N]`.
pub fn dense_forward(
    g: &mut Graph,
    spec: &ConvSpec,
    weight: &Value,
    x: &Value,
    size: usize,
) -> Value {
    convolve(g, spec, x, size, |g| dense_blocked_filters(g, weight, spec))
}

/// Dense filters `[Cout, Cin, k, k]` in the blocked layout the NCHWc kernel reads
/// (`OIHWBiBo`: `[Cout/B, Cin/B, k, k, B_in, B_out]`, `B` the machine's block), by two
/// reorderings as images: the filters as `Cout` images of `Cin` channels block the
/// input channels (`[Cout, Cin/B, k, k, B_in]`); those rows as one image of `Cout`
/// channels then block the output channels innermost.
fn dense_blocked_filters(g: &mut Graph, weight: &Value, spec: &ConvSpec) -> Value {
    let (cout, cin, k) = (spec.cout as i64, spec.cin as i64, spec.window.kernel as i64);
    let by_input = g.reorder_input(weight);
    let rows = g.reshape(&by_input, &[1, cout, cin * k * k, 1]);
    let blocked = g.reorder_input(&rows);
    g.reshape(&blocked, &[cout, cin, k, k])
}

/// `[C, P_in, N]` -> `[C, P_out, N]`.
pub fn forward(g: &mut Graph, spec: &ConvSpec, weight: &Value, x: &Value, size: usize) -> Value {
    let kernel = spec.window.kernel;
    convolve(g, spec, x, size, |g| {
        blocked_filters(g, weight, spec.cout, kernel)
    })
}

/// `spec`'s convolution of `x` `[Cin, P_in, N]` by the blocked filters `filters`
/// makes (after the map is blocked), in its groups (dense or depthwise), with its
/// window's padding: `[Cout, P_out, N]`.
fn convolve(
    g: &mut Graph,
    spec: &ConvSpec,
    x: &Value,
    size: usize,
    filters: impl FnOnce(&mut Graph) -> Value,
) -> Value {
    let window = spec.window;
    let (before, after) = window.pads(size);
    let x = to_blocked(g, x, spec.cin, size);
    let filters = filters(g);
    let kernel = (window.kernel, window.stride);
    let pads = [before, before, after, after];
    let y = g.nchwc_conv(&x, &filters, kernel, pads, spec.groups);
    from_blocked(g, &y, spec.cout, spec.out_size(size))
}

/// The weight's gradient `[C, K]` and the input's `[C, P_in, N]` when asked, from
/// the forward's input `x`.
pub fn backward(
    g: &mut Graph,
    spec: &ConvSpec,
    weight: &Value,
    x: &Value,
    dy: &Value,
    size: usize,
    input_grad: bool,
) -> (Value, Option<Value>) {
    let dw = if size <= PAIRED_MAX {
        paired_weight_grad(g, spec, x, dy, size)
    } else {
        super::conv::depthwise_weight_grad_from(g, spec, x, dy, size)
    };
    let dx = input_grad.then(|| input_grad_of(g, spec, weight, dy, size));
    (dw, dx)
}

/// The zeros (before, after) around the output gradient, spread out by the stride
/// (`stride - 1` zeros after each value), that make the flipped filters' convolution
/// of it the input gradient; none where that needs cropping instead.
fn transposed_pads(window: Window, size: usize) -> Option<(usize, usize)> {
    let k = window.kernel;
    let spread = window.out_size(size) * window.stride;
    let before = (k - 1).checked_sub(window.pads(size).0)?;
    let after = (size + k - 1).checked_sub(spread + before)?;
    Some((before, after))
}

/// `dx[i] = Σ_t w[t] spread[i + pad - t]` on each axis, `pad` being the forward's
/// zeros before the input and `spread[o * stride] = dy[o]`: the flipped filters'
/// convolution of the spread output gradient, padded by [`transposed_pads`].
fn input_grad_of(g: &mut Graph, spec: &ConvSpec, weight: &Value, dy: &Value, size: usize) -> Value {
    let window = spec.window;
    let (c, k, stride) = (spec.cout as i64, window.kernel, window.stride);
    let out = spec.out_size(size) as i64;
    let spread = if stride == 1 {
        dy.clone()
    } else {
        let s = stride as i64;
        let grid = g.reshape(dy, &[c, out, 1, out, 1, -1]);
        let spaced = g.pad(&grid, &[0, 0, 0, 0, 0, 0, 0, 0, s - 1, 0, s - 1, 0]);
        g.reshape(&spaced, &[c, out * s * out * s, -1])
    };
    let spread = to_blocked(g, &spread, spec.cout, out as usize * stride);
    let taps = (k * k) as i64;
    let reversed: Vec<i64> = (0..taps).rev().collect();
    let reversed = g.ints(&reversed);
    let w = g.reshape(weight, &[c, taps]);
    let flipped = g.gather(&w, &reversed, 1);
    let filters = blocked_filters(g, &flipped, spec.cout, k);
    let (before, after) = transposed_pads(window, size).expect("suits() checked it");
    let pads = [before, before, after, after];
    let dx = g.nchwc_conv(&spread, &filters, (k, 1), pads, spec.cout);
    from_blocked(g, &dx, spec.cout, size)
}

/// `[C, K]`: every output position's gradient times every padded input position,
/// summed over the batch in one product per channel (`[P_out, N] · [N, P_pad]`), then
/// each tap's pairs summed.
fn paired_weight_grad(g: &mut Graph, spec: &ConvSpec, x: &Value, dy: &Value, size: usize) -> Value {
    let window = spec.window;
    let c = spec.cout as i64;
    let (before, after) = window.pads(size);
    let padded_size = size + before + after;
    let (b, a) = (before as i64, after as i64);
    let grid = g.reshape(x, &[c, size as i64, size as i64, -1]);
    let padded = g.pad(&grid, &[0, b, b, 0, 0, a, a, 0]);
    let padded = g.reshape(&padded, &[c, (padded_size * padded_size) as i64, -1]);
    let by_sample = g.transpose(&padded, &[0, 2, 1]);
    let pairs = g.matmul(dy, &by_sample);
    let pairs = g.reshape(&pairs, &[c, -1]);
    let indices = tap_pairs(window, size, padded_size);
    let p_out = spec.out_size(size) * spec.out_size(size);
    let indices = g.int_constant(&[window.taps(), p_out], &indices);
    let per_tap = g.gather(&pairs, &indices, 1);
    g.reduce(Reduce::Sum, &per_tap, &[2], false)
}

/// `[K, P_out]`: where each tap's (output, padded input) pair lies in the flattened
/// `[P_out, P_pad]` products.
fn tap_pairs(window: Window, size: usize, padded_size: usize) -> Vec<i64> {
    let out = window.out_size(size);
    let p_pad = padded_size * padded_size;
    let mut indices = Vec::with_capacity(window.taps() * out * out);
    for (ky, kx) in (0..window.kernel).flat_map(|ky| (0..window.kernel).map(move |kx| (ky, kx))) {
        for (oy, ox) in (0..out).flat_map(|oy| (0..out).map(move |ox| (oy, ox))) {
            let read = (oy * window.stride + ky) * padded_size + ox * window.stride + kx;
            indices.push(((oy * out + ox) * p_pad + read) as i64);
        }
    }
    indices
}

/// `[C, P, N]` -> the blocked `[N, C, H, W]` (see [`Graph::reorder_input`]): one
/// plain transpose to `[N, C, P]`, then ONNX Runtime's reordering (both fast, where
/// one transpose straight to blocks of 16 floats is seven times slower in ONNX Runtime).
fn to_blocked(g: &mut Graph, x: &Value, channels: usize, size: usize) -> Value {
    let (c, s) = (channels as i64, size as i64);
    let rows = g.reshape(x, &[c * s * s, -1]);
    let by_sample = g.transpose(&rows, &[1, 0]);
    let image = g.reshape(&by_sample, &[-1, c, s, s]);
    g.reorder_input(&image)
}

/// The blocked `[N, C, H, W]` -> `[C, P, N]`, as [`to_blocked`] backwards.
fn from_blocked(g: &mut Graph, y: &Value, channels: usize, size: usize) -> Value {
    let (c, p) = (channels as i64, (size * size) as i64);
    let image = g.reorder_output(y, channels);
    let by_sample = g.reshape(&image, &[-1, c * p]);
    let rows = g.transpose(&by_sample, &[1, 0]);
    g.reshape(&rows, &[c, p, -1])
}

/// Depthwise filters (`[C, ...]`, `kernel`² taps each) in the blocked layout the
/// NCHWc kernel reads: each block's filters interleaved tap by tap, which is how
/// reordering them as one `[1, C, k, k]` image lays them out.
fn blocked_filters(g: &mut Graph, weight: &Value, channels: usize, kernel: usize) -> Value {
    let (c, k) = (channels as i64, kernel as i64);
    let image = g.reshape(weight, &[1, c, k, k]);
    let blocked = g.reorder_input(&image);
    g.reshape(&blocked, &[c, 1, k, k])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::{Convolutions, Gradients, finetune_step};
    use prost::Message;
    use rps_core::{FtBn, Unfreeze};
    use rps_model::network::{Arch, Net};
    use rps_onnx::proto::ModelProto;

    /// The blocked depthwise convolutions of a step of the whole network.
    fn blocked_convs(net: Net, width: usize, convolutions: Convolutions) -> usize {
        let arch = Arch {
            net,
            width,
            image_size: 224,
            classes: 3,
        };
        let step = finetune_step(
            &arch,
            Unfreeze::All,
            convolutions,
            FtBn::Train,
            Gradients::Internal,
        );
        let model = ModelProto::decode(step.as_slice()).unwrap();
        let graph = model.graph.unwrap();
        graph
            .node
            .iter()
            .filter(|n| n.domain() == crate::graph::NCHWC_DOMAIN && n.op_type() == "Conv")
            .count()
    }

    #[test]
    fn every_depthwise_convolution_of_the_published_widths_runs_blocked() {
        // Forward and input gradient of each: Lite0's 16 blocks, MobileNetV2's 17,
        // strides 1 and 2, 3x3 and 5x5, both kinds of padding, maps of 7 to 112.
        let fastest = Convolutions::Fastest;
        assert_eq!(blocked_convs(Net::EfficientNetLite0, 32, fastest), 2 * 16);
        assert_eq!(blocked_convs(Net::MobileNetV2, 32, fastest), 2 * 17);
        assert_eq!(
            blocked_convs(Net::MobileNetV2, 32, Convolutions::Patches),
            0
        );
        // At width 8 the first block's 8 channels fill no block; the rest still do.
        assert_eq!(blocked_convs(Net::MobileNetV2, 8, fastest), 2 * 16);
    }

    #[test]
    fn the_spread_gradient_lines_up_with_what_each_tap_read() {
        // Every (input, tap, output) the flipped filters' convolution of the spread
        // gradient sums must be one the forward read, and all of them.
        for window in [
            Window::padded(3, 2, 1),
            Window::padded(3, 1, 1),
            Window {
                kernel: 5,
                stride: 2,
                padding: rps_model::window::Padding::Same,
            },
        ] {
            for size in [7, 14, 28, 112] {
                let (before, _) = transposed_pads(window, size).unwrap();
                let out = window.out_size(size);
                let reads = window.tap_indices(size);
                let mut forward = Vec::new();
                let mut transposed = Vec::new();
                for (oy, ox) in (0..out).flat_map(|y| (0..out).map(move |x| (y, x))) {
                    for tap in 0..window.taps() {
                        let read = reads[tap * out * out + oy * out + ox] as usize;
                        if read < size * size {
                            forward.push((read, tap, oy * out + ox));
                        }
                    }
                }
                // The graph: the flipped filters' tap f reads the spread gradient,
                // padded with `before` zeros, at i + f; that is the original tap
                // k - 1 - f (on each axis), and output j / stride where j lands on
                // the stride's grid.
                let k = window.kernel;
                let spread_at = |i: usize, f: usize| {
                    let j = (i + f).checked_sub(before)?;
                    (j % window.stride == 0 && j / window.stride < out).then_some(j / window.stride)
                };
                for (iy, ix) in (0..size).flat_map(|y| (0..size).map(move |x| (y, x))) {
                    for (fy, fx) in (0..k).flat_map(|y| (0..k).map(move |x| (y, x))) {
                        if let (Some(oy), Some(ox)) = (spread_at(iy, fy), spread_at(ix, fx)) {
                            let tap = (k - 1 - fy) * k + (k - 1 - fx);
                            transposed.push((iy * size + ix, tap, oy * out + ox));
                        }
                    }
                }
                forward.sort();
                transposed.sort();
                assert_eq!(forward, transposed, "{window:?} on {size}");
            }
        }
    }
}
