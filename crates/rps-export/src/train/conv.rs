//! How a train graph computes a convolution on `[C, H*W, N]` maps, weights fed as
//! inputs (ONNX Runtime's `Conv` loses its fast path then), and that computation's
//! backward. Chosen per convolution by its shape and map size ([`Algorithm::choose`]):
//! - a gathered patch matrix and one product (strided, 1x1, the stem's 7x7, and 3x3
//!   on maps too large for dense Winograd transforms); the patches serve the weight
//!   gradient, and the input gradient gathers the output gradient phase by phase;
//! - Winograd F(4x4, 3x3) by dense transforms over the map's positions
//!   ([`winograd::Transforms`]), for stride-1 3x3 convolutions on maps of a tile up
//!   to [`DENSE_WINOGRAD_MAX`]: in eval graphs forward and back, in train steps the
//!   backward only (see [`super::Convolutions::Fastest`]);
//! - depthwise convolutions (one filter per channel) through ONNX Runtime's blocked
//!   depthwise kernel where the channels fill its blocks ([`blocked`]), else as
//!   gathered taps and a product batched over the channels, whose gathered taps
//!   serve the weight gradient; the input gradient gathers the output gradient
//!   phase by phase, as patches do.

use crate::graph::{Graph, Transposed, Value};
use crate::winograd;
use rps_model::network::ConvSpec;
use rps_model::window::{GradPhase, Window};

use super::Convolutions;
use super::blocked;

/// The largest map edge for dense Winograd transforms: their size grows with the
/// square of the map's positions (fine at 7x7 and 14x14; at 28x28 the transforms
/// cost more than the products they save).
pub const DENSE_WINOGRAD_MAX: usize = 14;

/// The smallest input map edge from which a train step's patch convolution gathers
/// its patches again in the backward instead of keeping them.
pub const GATHER_TWICE_FROM: usize = 28;

/// How one convolution is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Patches,
    /// Winograd forward and backward (eval graphs).
    Winograd,
    /// Patches forward, the adjoint of Winograd's forward backward (train steps).
    PatchesThenWinograd,
    /// One filter per channel: taps gathered per channel.
    Depthwise,
    /// One filter per channel, through ONNX Runtime's blocked depthwise kernel.
    DepthwiseBlocked,
    /// Patches forward, gathered again for the weight gradient (train steps, large
    /// maps).
    PatchesGatheredTwice,
}

impl Algorithm {
    pub fn choose(
        convolutions: Convolutions,
        training: bool,
        spec: &ConvSpec,
        size: usize,
    ) -> Self {
        if spec.groups > 1 {
            return match convolutions == Convolutions::Fastest && blocked::suits(spec, size) {
                true => Algorithm::DepthwiseBlocked,
                false => Algorithm::Depthwise,
            };
        }
        let winograd = convolutions == Convolutions::Fastest
            && winograd::suits(spec, size)
            && size <= DENSE_WINOGRAD_MAX;
        let large = size >= GATHER_TWICE_FROM && !spec.is_pointwise();
        match (winograd, training) {
            (false, true) if large => Algorithm::PatchesGatheredTwice,
            (false, _) => Algorithm::Patches,
            (true, false) => Algorithm::Winograd,
            (true, true) => Algorithm::PatchesThenWinograd,
        }
    }
}

/// What the backward multiplies with.
pub enum Saved {
    /// The patch matrix `[Cin*K, P_out*N]`.
    Patches(Value),
    /// Each group's transforms and transformed values.
    Winograd(Vec<WinogradGroup>),
    /// Each channel's gathered taps, `[C, K, P_out*N]`.
    Taps(Value),
    /// The input `[C, P_in, N]`.
    Input(Value),
    /// The input `[C, P_in, N]`, the patch matrix's source.
    PatchSource(Value),
}

/// `[Cin, P_in, N]` -> `[Cout, P_out, N]` by `algorithm`, and what its backward needs.
pub fn forward(
    g: &mut Graph,
    spec: &ConvSpec,
    weight: &Value,
    x: &Value,
    in_size: usize,
    algorithm: Algorithm,
) -> (Saved, Value) {
    match algorithm {
        Algorithm::Patches => {
            let (patches, y) = patches_forward(g, spec, weight, x, in_size);
            (Saved::Patches(patches), y)
        }
        Algorithm::Winograd => {
            let groups = winograd_transforms(g, spec, weight, x, in_size, KernelFor::Forward);
            let y = winograd_forward(g, &groups, in_size, spec.cout as i64);
            (Saved::Winograd(groups), y)
        }
        Algorithm::PatchesThenWinograd => {
            let y = patches_forward(g, spec, weight, x, in_size).1;
            let groups = winograd_transforms(g, spec, weight, x, in_size, KernelFor::InputGradient);
            (Saved::Winograd(groups), y)
        }
        Algorithm::PatchesGatheredTwice => {
            let y = patches_forward(g, spec, weight, x, in_size).1;
            (Saved::PatchSource(x.clone()), y)
        }
        Algorithm::Depthwise => {
            let (taps, y) = depthwise_forward(g, spec, weight, x, in_size);
            (Saved::Taps(taps), y)
        }
        Algorithm::DepthwiseBlocked => {
            let y = blocked::forward(g, spec, weight, x, in_size);
            (Saved::Input(x.clone()), y)
        }
    }
}

/// The weight's gradient `[Cout, Cin, k, k]`, and the input's when asked.
pub fn backward(
    g: &mut Graph,
    spec: &ConvSpec,
    saved: &Saved,
    weight: &Value,
    dy: &Value,
    in_size: usize,
    input_grad: bool,
) -> (Value, Option<Value>) {
    let (dw, dx) = match saved {
        Saved::Patches(patches) => {
            patches_backward(g, spec, (patches, weight), dy, in_size, input_grad)
        }
        Saved::PatchSource(x) => {
            let patches = patch_matrix(g, spec, x, in_size);
            patches_backward(g, spec, (&patches, weight), dy, in_size, input_grad)
        }
        Saved::Winograd(groups) => winograd_backward(g, spec, groups, dy, in_size, input_grad),
        Saved::Taps(taps) => {
            let dw = depthwise_weight_grad(g, spec, taps, dy);
            let dx = input_grad.then(|| depthwise_input_grad(g, spec, weight, dy, in_size));
            (dw, dx)
        }
        Saved::Input(x) => blocked::backward(g, spec, weight, x, dy, in_size, input_grad),
    };
    let shape: Vec<i64> = spec.weight_shape().iter().map(|&d| d as i64).collect();
    (g.reshape(&dw, &shape), dx)
}

/// A Winograd convolution's values the backward needs, for one group of transformed
/// positions.
pub struct WinogradGroup {
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

/// `[Cin, P_in, N]` -> the patch matrix `[Cin*K, P_out*N]`.
fn patch_matrix(g: &mut Graph, spec: &ConvSpec, x: &Value, in_size: usize) -> Value {
    if spec.is_pointwise() {
        return g.reshape(x, &[spec.cin as i64, -1]);
    }
    let gathered = gather_taps(g, spec.window, x, in_size);
    g.reshape(&gathered, &[(spec.cin * spec.window.taps()) as i64, -1])
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
    let taps = spec.window.taps();
    let out_size = spec.out_size(in_size);
    let patches = patch_matrix(g, spec, x, in_size);
    let wm = g.reshape(weight, &[spec.cout as i64, (spec.cin * taps) as i64]);
    let y = g.matmul(&wm, &patches);
    let y = g.reshape(&y, &[spec.cout as i64, (out_size * out_size) as i64, -1]);
    (patches, y)
}

/// A patch convolution's weight gradient from its patch matrix, and its input's
/// when asked.
fn patches_backward(
    g: &mut Graph,
    spec: &ConvSpec,
    (patches, weight): (&Value, &Value),
    dy: &Value,
    in_size: usize,
    input_grad: bool,
) -> (Value, Option<Value>) {
    let dw = patches_weight_grad(g, spec, patches, dy);
    let dx = input_grad.then(|| patches_input_grad(g, spec, weight, dy, in_size));
    (dw, dx)
}

/// `[Cout, Cin*K]` from the patch matrix.
fn patches_weight_grad(g: &mut Graph, spec: &ConvSpec, patches: &Value, dy: &Value) -> Value {
    let dym = g.reshape(dy, &[spec.cout as i64, -1]);
    g.gemm(&dym, patches, None, Transposed { a: false, b: true })
}

/// The patch convolution run backwards, phase by phase of the input positions
/// ([`crate::graph::Window::input_grad_phases`]): gather `dy` by what each tap read
/// there, multiply by the phase's taps of the weight with its channel axes swapped,
/// then put the positions back in raster order (zero where no tap reaches).
fn patches_input_grad(
    g: &mut Graph,
    spec: &ConvSpec,
    weight: &Value,
    dy: &Value,
    in_size: usize,
) -> Value {
    let (cin, cout) = (spec.cin as i64, spec.cout as i64);
    if spec.is_pointwise() {
        let w = g.reshape(weight, &[cout, cin]);
        let dym = g.reshape(dy, &[cout, -1]);
        let dx = g.gemm(&w, &dym, None, Transposed { a: true, b: false });
        return g.reshape(&dx, &[cin, (in_size * in_size) as i64, -1]);
    }
    let taps = spec.window.taps();
    let w3 = g.reshape(weight, &[cout, cin, taps as i64]);
    let padded_dy = g.pad(dy, &[0, 0, 0, 0, 1, 0]);
    scatter_by_phase(g, spec.window, in_size, |g, phase| {
        let (gathered, w_phase) = phase_operands(g, phase, &padded_dy, &w3, taps);
        let t = phase.taps.len() as i64;
        let gathered = g.reshape(&gathered, &[cout * t, -1]);
        let wt = g.transpose(&w_phase, &[1, 0, 2]);
        let wt = g.reshape(&wt, &[cin, cout * t]);
        let dx = g.matmul(&wt, &gathered);
        g.reshape(&dx, &[cin, phase.positions.len() as i64, -1])
    })
}

/// What one phase of an input gradient multiplies: the output gradient each of the
/// phase's taps read at its positions, `[C, taps, positions, N]` (from `dy` padded
/// with a zero row), and those taps of the weight `w3`, `[C, ·, taps]` (`taps`
/// being all the window has).
fn phase_operands(
    g: &mut Graph,
    phase: &GradPhase,
    padded_dy: &Value,
    w3: &Value,
    taps: usize,
) -> (Value, Value) {
    let phase_taps = &phase.taps;
    let indices = g.int_constant(&[phase_taps.len(), phase.positions.len()], &phase.indices);
    let gathered = g.gather(padded_dy, &indices, 1);
    let w_phase = if phase_taps.len() == taps {
        w3.clone()
    } else {
        let list: Vec<i64> = phase_taps.iter().map(|&k| k as i64).collect();
        let list = g.int_constant(&[phase_taps.len()], &list);
        g.gather(w3, &list, 2)
    };
    (gathered, w_phase)
}

/// `[C, P_in, N]` -> each channel's taps `[C, K, P_out*N]`, which the backward
/// reuses, and `[C, P_out, N]`: per channel, its `[1, K]` filter times its taps.
fn depthwise_forward(
    g: &mut Graph,
    spec: &ConvSpec,
    weight: &Value,
    x: &Value,
    in_size: usize,
) -> (Value, Value) {
    let (c, taps) = (spec.cout as i64, spec.window.taps());
    let out_size = spec.out_size(in_size);
    let gathered = channel_taps(g, spec, x, in_size);
    let filters = g.reshape(weight, &[c, 1, taps as i64]);
    let y = g.matmul(&filters, &gathered);
    let y = g.reshape(&y, &[c, (out_size * out_size) as i64, -1]);
    (gathered, y)
}

/// `[C, K, 1]`: each channel's taps times its output gradient.
fn depthwise_weight_grad(g: &mut Graph, spec: &ConvSpec, taps: &Value, dy: &Value) -> Value {
    let column = g.reshape(dy, &[spec.cout as i64, -1, 1]);
    g.matmul(taps, &column)
}

/// `[C, K, 1]` from the forward's input `[C, P_in, N]`, its taps gathered here.
pub(super) fn depthwise_weight_grad_from(
    g: &mut Graph,
    spec: &ConvSpec,
    x: &Value,
    dy: &Value,
    in_size: usize,
) -> Value {
    let taps = channel_taps(g, spec, x, in_size);
    depthwise_weight_grad(g, spec, &taps, dy)
}

/// `[C, P_in, N]` -> each channel's gathered taps, `[C, K, P_out*N]`.
fn channel_taps(g: &mut Graph, spec: &ConvSpec, x: &Value, in_size: usize) -> Value {
    let gathered = gather_taps(g, spec.window, x, in_size);
    let taps = spec.window.taps() as i64;
    g.reshape(&gathered, &[spec.cout as i64, taps, -1])
}

/// The depthwise convolution run backwards phase by phase, as
/// [`patches_input_grad`]: per channel, the phase's taps of its filter times the
/// output gradient each tap read there.
fn depthwise_input_grad(
    g: &mut Graph,
    spec: &ConvSpec,
    weight: &Value,
    dy: &Value,
    in_size: usize,
) -> Value {
    let (c, taps) = (spec.cout as i64, spec.window.taps());
    let filters = g.reshape(weight, &[c, 1, taps as i64]);
    let padded_dy = g.pad(dy, &[0, 0, 0, 0, 1, 0]);
    scatter_by_phase(g, spec.window, in_size, |g, phase| {
        let (gathered, phase_filters) = phase_operands(g, phase, &padded_dy, &filters, taps);
        let gathered = g.reshape(&gathered, &[c, phase.taps.len() as i64, -1]);
        let dx = g.matmul(&phase_filters, &gathered);
        g.reshape(&dx, &[c, phase.positions.len() as i64, -1])
    })
}

/// The gradient of a windowed layer's input `[C, P_in, N]`, built phase by phase of
/// the input positions: `phase_grad` returns a phase's `[C, n, N]` (its n positions
/// in raster order); the phases are joined and put back in raster order, zero where no tap
/// reaches.
pub fn scatter_by_phase(
    g: &mut Graph,
    window: Window,
    in_size: usize,
    mut phase_grad: impl FnMut(&mut Graph, &GradPhase) -> Value,
) -> Value {
    let p_in = in_size * in_size;
    let mut parts = Vec::new();
    // For each input position, its row among the phases' results.
    let mut rows = vec![None; p_in];
    let mut next_row = 0;
    for phase in window.input_grad_phases(in_size) {
        if phase.taps.is_empty() {
            continue;
        }
        parts.push(phase_grad(g, &phase));
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

/// `[C, P_in, N]` -> what each tap of `window` reads at each output position,
/// `[C, K, P_out, N]` (zeros in the padding).
fn gather_taps(g: &mut Graph, window: Window, x: &Value, in_size: usize) -> Value {
    let out_size = window.out_size(in_size);
    let indices = window.tap_indices(in_size);
    let indices = g.int_constant(&[window.taps(), out_size * out_size], &indices);
    gather_padded(g, x, &indices)
}

/// `[C, P, N]` -> `[C, len(indices), N]`; index P reads the appended zero row.
pub fn gather_padded(g: &mut Graph, x: &Value, indices: &Value) -> Value {
    let padded = g.pad(x, &[0, 0, 0, 0, 1, 0]);
    g.gather(&padded, indices, 1)
}
