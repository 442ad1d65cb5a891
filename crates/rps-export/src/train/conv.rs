//! How a train graph computes a convolution on `[C, H*W, N]` maps, weights fed as
//! inputs (ONNX Runtime's `Conv` loses its fast path then), and that computation's
//! backward. Chosen per convolution by its shape and map size ([`Algorithm::choose`]):
//! - a gathered patch matrix and one product (strided, 1x1, the stem's 7x7); the
//!   patches serve the weight gradient, and the input gradient gathers the output
//!   gradient phase by phase. On large maps a 3x3 forward whose channels fill
//!   blocks goes through ONNX Runtime's blocked kernel instead
//!   ([`blocked::dense_forward`]), and the weight gradient gathers its patches;
//! - Winograd on gathered tiles ([`winograd::Tiling`]), for stride-1 3x3
//!   convolutions on maps of at least a tile: F(4x4, 3x3) for the forward in eval
//!   graphs and the backward in train steps, whose forward takes ONNX Runtime's
//!   blocked kernel ([`blocked::dense_forward`]) on maps from [`BLOCKED_FROM`] where
//!   the channels fill its blocks, else F(2x2, 3x3) on maps up to
//!   [`SMALL_TILES_UP_TO`] and patches above (see [`super::Convolutions::Fastest`]);
//! - depthwise convolutions (one filter per channel) through ONNX Runtime's blocked
//!   depthwise kernel where the channels fill its blocks ([`blocked`]), else as
//!   gathered taps and a product batched over the channels, whose gathered taps
//!   serve the weight gradient; the input gradient gathers the output gradient
//!   phase by phase, as patches do.

use crate::graph::{Graph, Transposed, Value};
use crate::winograd::{self, Tile, Tiling};
use rps_model::network::ConvSpec;
use rps_model::window::{GradPhase, Window};

use super::Convolutions;
use super::blocked;

/// The smallest input map edge from which a train step's patch convolution gathers
/// its patches again in the backward instead of keeping them.
pub const GATHER_TWICE_FROM: usize = 28;

/// The largest map edge on which a train step's forward takes Winograd F(2x2, 3x3)
/// rather than patches. Alone, on a batch of 64: 512 channels at 7x7 66 -> 52 ms,
/// 256 at 14x14 97 -> 66, 128 at 28x28 132 -> 98; 64 at 56x56 even (its transforms
/// cost what its products save).
pub const SMALL_TILES_UP_TO: usize = 28;

/// The smallest map edge on which a train step's stride-1 3x3 forward takes ONNX
/// Runtime's blocked kernel where the channels fill its blocks. Alone, on a batch of
/// 64 (patches, F(2x2), blocked): 64 channels at 56x56 178, 131, 85 ms; 128 at 28x28
/// 120, 87, 73; 256 at 14x14 94, 49, 63.
pub const BLOCKED_FROM: usize = 28;

/// How one convolution is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Patches,
    /// Winograd forward (eval graphs).
    Winograd,
    /// Patches forward, Winograd backward from the kept input (train steps, large
    /// maps).
    PatchesThenWinograd,
    /// Winograd F(2x2) forward, Winograd F(4x4) backward from the kept input (train
    /// steps).
    SmallTilesThenWinograd,
    /// ONNX Runtime's blocked kernel forward, Winograd F(4x4) backward from the kept
    /// input (train steps, large maps).
    BlockedThenWinograd,
    /// One filter per channel: taps gathered per channel.
    Depthwise,
    /// One filter per channel, through ONNX Runtime's blocked depthwise kernel.
    DepthwiseBlocked,
    /// Patches forward, gathered again for the weight gradient (train steps, large
    /// maps).
    PatchesGatheredTwice,
    /// ONNX Runtime's blocked kernel forward, patches gathered for the weight
    /// gradient (train steps, large maps).
    BlockedThenPatches,
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
        let winograd = convolutions == Convolutions::Fastest && winograd::suits(spec, size);
        let large = size >= GATHER_TWICE_FROM && !spec.is_pointwise();
        match (winograd, training) {
            (false, true) if large && blocked::suits_dense(spec) => Algorithm::BlockedThenPatches,
            (false, true) if large => Algorithm::PatchesGatheredTwice,
            (false, _) => Algorithm::Patches,
            (true, false) => Algorithm::Winograd,
            (true, true) if size >= BLOCKED_FROM && blocked::suits_dense(spec) => {
                Algorithm::BlockedThenWinograd
            }
            (true, true) if size <= SMALL_TILES_UP_TO => Algorithm::SmallTilesThenWinograd,
            (true, true) => Algorithm::PatchesThenWinograd,
        }
    }
}

/// What the backward multiplies with.
pub enum Saved {
    /// The patch matrix `[Cin*K, P_out*N]`.
    Patches(Value),
    /// Each channel's gathered taps, `[C, K, P_out*N]`.
    Taps(Value),
    /// The input `[C, P_in, N]`.
    Input(Value),
    /// The input `[C, P_in, N]`, the patch matrix's source.
    PatchSource(Value),
    /// The input `[Cin, P, N]`, whose tiles a Winograd backward gathers.
    TileSource(Value),
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
            let y = winograd_forward(g, spec, weight, x, Tiling::new(Tile::F4, in_size));
            (Saved::TileSource(x.clone()), y)
        }
        Algorithm::SmallTilesThenWinograd => {
            let y = winograd_forward(g, spec, weight, x, Tiling::new(Tile::F2, in_size));
            (Saved::TileSource(x.clone()), y)
        }
        Algorithm::BlockedThenWinograd => {
            let y = blocked::dense_forward(g, spec, weight, x, in_size);
            (Saved::TileSource(x.clone()), y)
        }
        Algorithm::PatchesThenWinograd => {
            let y = patches_forward(g, spec, weight, x, in_size).1;
            (Saved::TileSource(x.clone()), y)
        }
        Algorithm::PatchesGatheredTwice => {
            let y = patches_forward(g, spec, weight, x, in_size).1;
            (Saved::PatchSource(x.clone()), y)
        }
        Algorithm::BlockedThenPatches => {
            let y = blocked::dense_forward(g, spec, weight, x, in_size);
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
        Saved::TileSource(x) => winograd_backward(g, spec, (x, weight), dy, in_size, input_grad),
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
    let padded_dy = g.pad_zero_row(dy);
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
    let padded_dy = g.pad_zero_row(dy);
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
    let source = match order.contains(&(next_row as i64)) {
        // Row `next_row` of the padded result is the zero gradient of unreached
        // positions; where every position is reached, no copy.
        true => g.pad_zero_row(&joined),
        false => joined,
    };
    let order = g.int_constant(&[p_in], &order);
    g.gather(&source, &order, 1)
}

/// Gradients of a stride-1 3x3 convolution by Winograd F(4x4, 3x3) on gathered tiles
/// ([`winograd::Tiling`]), from its input `x` `[Cin, P, N]`: `dW = Gᵀ [Σ (A dY Aᵀ) ⊙
/// (Bᵀ X B)] G` over tiles and batch (the adjoint of Winograd's forward), one channel
/// product per tile-domain point; `dX` the convolution of `dY` with the kernel turned
/// half a turn and its channel axes swapped, by Winograd's forward. Returns `([Cout *
/// Cin, 9], dX)`.
fn winograd_backward(
    g: &mut Graph,
    spec: &ConvSpec,
    (x, weight): (&Value, &Value),
    dy: &Value,
    size: usize,
    input_grad: bool,
) -> (Value, Option<Value>) {
    let (cin, cout) = (spec.cin as i64, spec.cout as i64);
    let tiling = Tiling::new(Tile::F4, size);
    let points = tiling.tile.points() as i64;
    let x_tiles = input_tiles(g, &tiling, x);
    let x_tiles = g.transpose(&x_tiles, &[1, 2, 0]);
    let dy_tiles = output_tiles(g, &tiling, dy);
    let dy_tiles = g.transpose(&dy_tiles, &[1, 0, 2]);
    let du = g.matmul(&dy_tiles, &x_tiles);
    let du = g.reshape(&du, &[points, cout * cin]);
    let kernel = g.matrix(&tiling.tile.kernel_matrix(false));
    // `[Cout * Cin, 9]`, the weight's own order: no transpose of the gradient.
    let dw = g.gemm(&du, &kernel, None, Transposed { a: true, b: false });
    let dx = input_grad.then(|| {
        let u = transformed_kernel(g, spec, weight, KernelFor::InputGradient, tiling.tile);
        winograd_convolve(g, &tiling, &u, dy, cin)
    });
    (dw, dx)
}

/// `[Cin, P, N]` -> `[Cout, P, N]` by Winograd's forward on `tiling`.
fn winograd_forward(
    g: &mut Graph,
    spec: &ConvSpec,
    weight: &Value,
    x: &Value,
    tiling: Tiling,
) -> Value {
    let u = transformed_kernel(g, spec, weight, KernelFor::Forward, tiling.tile);
    winograd_convolve(g, &tiling, &u, x, spec.cout as i64)
}

/// Which convolution a transformed kernel serves.
#[derive(Clone, Copy)]
enum KernelFor {
    /// The forward: `G W Gᵀ`, `[points, Cout, Cin]`.
    Forward,
    /// The input gradient: the kernel turned half a turn, its channel axes swapped,
    /// `[points, Cin, Cout]`.
    InputGradient,
}

/// The weight `[Cout, Cin, 3, 3]` in `tile`'s domain, one product for every kernel.
fn transformed_kernel(
    g: &mut Graph,
    spec: &ConvSpec,
    weight: &Value,
    of: KernelFor,
    tile: Tile,
) -> Value {
    let (cin, cout) = (spec.cin as i64, spec.cout as i64);
    let taps = winograd::TAPS as i64;
    let (w, rotated, out) = match of {
        KernelFor::Forward => (g.reshape(weight, &[cout * cin, taps]), false, [cout, cin]),
        KernelFor::InputGradient => {
            let w = g.reshape(weight, &[cout, cin, taps]);
            let swapped = g.transpose(&w, &[1, 0, 2]);
            (g.reshape(&swapped, &[cin * cout, taps]), true, [cin, cout])
        }
    };
    let kernel = g.matrix(&tile.kernel_matrix(rotated));
    let u = g.gemm(&kernel, &w, None, Transposed { a: false, b: true });
    g.reshape(&u, &[tile.points() as i64, out[0], out[1]])
}

/// `x` `[C, P, N]` convolved with the transformed kernel `u` `[points, K, C]`: `[K,
/// P, N]`.
fn winograd_convolve(
    g: &mut Graph,
    tiling: &Tiling,
    u: &Value,
    x: &Value,
    out_channels: i64,
) -> Value {
    let x_tiles = input_tiles(g, tiling, x);
    let x_tiles = g.transpose(&x_tiles, &[1, 0, 2]);
    let m = g.matmul(u, &x_tiles);
    winograd::from_tiles(g, tiling, &m, [out_channels, -1])
}

/// `[C, P, N]` -> its overlapping input tiles in the tile domain, `Bᵀ d B`, `[C,
/// points, tiles * N]`.
fn input_tiles(g: &mut Graph, tiling: &Tiling, x: &Value) -> Value {
    let indices = tiling.gather_indices();
    let indices = g.int_constant(&[indices.len()], &indices);
    let d = g.gather_padded(x, &indices);
    let v = winograd::both_edges(g, &tiling.tile.bt(), &d, 1);
    g.reshape(&v, &[0, tiling.tile.points() as i64, -1])
}

/// `[C, P, N]` -> its output tiles in the tile domain, `A dY Aᵀ`, `[C, points, tiles
/// * N]` (zeros past the edge of a map that is not a multiple of the tile).
fn output_tiles(g: &mut Graph, tiling: &Tiling, dy: &Value) -> Value {
    let indices = tiling.output_indices();
    let indices = g.int_constant(&[indices.len()], &indices);
    let d = g.gather_padded(dy, &indices);
    let v = winograd::both_edges(g, &tiling.tile.at().reversed_axes(), &d, 1);
    g.reshape(&v, &[0, tiling.tile.points() as i64, -1])
}

/// `[C, P_in, N]` -> what each tap of `window` reads at each output position,
/// `[C, K, P_out, N]` (zeros in the padding).
fn gather_taps(g: &mut Graph, window: Window, x: &Value, in_size: usize) -> Value {
    let out_size = window.out_size(in_size);
    let indices = window.tap_indices(in_size);
    let indices = g.int_constant(&[window.taps(), out_size * out_size], &indices);
    g.gather_padded(x, &indices)
}
