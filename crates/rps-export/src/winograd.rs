//! Winograd F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016) for stride-1, padding-1 3x3 convolutions, on gathered tiles
//! ([`Tiling`]): the 6x6 input tiles are gathered by index, transformed by `Bᵀ` one
//! edge at a time, multiplied by the transformed kernel, and brought back by `Aᵀ`; a
//! map whose size is not a multiple of 4 is computed to the next one and cropped.
//! The frozen backbone's kernels are transformed once at export
//! ([`kernel_transform`]); a train graph's, fed as inputs, in the graph
//! ([`kernel_matrix`]).

use ndarray::{Array2, Array3, ArrayView4};

use crate::graph::{Graph, Value};
use rps_model::network::ConvSpec;

/// Output tile edge.
pub const TILE: usize = 4;
/// Input tile edge: TILE + 3 - 1.
const ALPHA: usize = 6;
/// Points of the tile domain.
pub const POINTS: usize = ALPHA * ALPHA;
/// Kernel taps of a 3x3 convolution.
pub const TAPS: usize = 9;

/// Lavin's matrices for the interpolation points 0, 1, -1, 2, -2 and infinity.
pub const BT: [[f32; ALPHA]; ALPHA] = [
    [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
    [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
    [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
    [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
    [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
    [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
];
const G: [[f64; 3]; ALPHA] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];
pub const AT: [[f32; ALPHA]; TILE] = [
    [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
    [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
    [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
];

/// `Bᵀ`, as a matrix for graph constants.
pub fn bt() -> Array2<f32> {
    Array2::from(BT.to_vec())
}

/// `Aᵀ`, as a matrix for graph constants.
pub fn at() -> Array2<f32> {
    Array2::from(AT.to_vec())
}

/// `T d Tᵀ` for each tile of `d`, by the `[m, k]` matrix `t`: `t` down a tile's `k`
/// rows, then, batched over the new rows, across its `k` columns. `d` is `[lead…,
/// k·k·…]`, its first `leading` axes kept (batched over), then the tile's rows,
/// then its columns, then the rest; the result is `[lead…, m, m, …]`.
pub fn both_edges(g: &mut Graph, t: &Array2<f32>, d: &Value, leading: usize) -> Value {
    let (m, k) = (t.nrows() as i64, t.ncols() as i64);
    let keep = vec![0; leading];
    let t = g.matrix(t);
    let by_row = g.reshape(d, &[&keep[..], &[k, -1]].concat());
    let down = g.matmul(&t, &by_row);
    let down = g.reshape(&down, &[&keep[..], &[m, k, -1]].concat());
    g.matmul(&t, &down)
}

/// Every (row, column) of a `rows` x `cols` grid, row-major.
fn grid(rows: usize, cols: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..rows).flat_map(move |r| (0..cols).map(move |c| (r, c)))
}

/// Stride-1 3x3 convolutions on maps of at least one 4x4 tile. Smaller maps (the test
/// models' 2x2 layer4) gain little, and there Winograd's rounding shows: a gradient
/// that is exactly zero (a ReLU row dead across the batch) comes out as rounding
/// noise, which Adam's first step turns into a full step.
pub fn suits(spec: &ConvSpec, size: usize) -> bool {
    let w = spec.window;
    spec.groups == 1 && w.kernel == 3 && w.stride == 1 && w.pads(size) == (1, 1) && size >= TILE
}

/// A `size` x `size` map cut into 4x4 output tiles, `per_edge` each way.
pub struct Tiling {
    pub size: usize,
    pub per_edge: usize,
}

impl Tiling {
    pub fn new(size: usize) -> Self {
        Self {
            size,
            per_edge: size.div_ceil(TILE),
        }
    }

    /// `[6, 6, per_edge, per_edge]`: the map position (row-major) each input tile
    /// reads at each point, `size²` (a zero row) where it falls in the padding.
    pub fn gather_indices(&self) -> Vec<i64> {
        let (size, t) = (self.size, self.per_edge);
        let mut indices = Vec::with_capacity(ALPHA * ALPHA * t * t);
        for (r, c) in grid(ALPHA, ALPHA) {
            for (ty, tx) in grid(t, t) {
                // Input tiles start one before their outputs (padding 1).
                let iy = (TILE * ty + r).checked_sub(1).filter(|&y| y < size);
                let ix = (TILE * tx + c).checked_sub(1).filter(|&x| x < size);
                indices.push(match (iy, ix) {
                    (Some(iy), Some(ix)) => (iy * size + ix) as i64,
                    _ => (size * size) as i64,
                });
            }
        }
        indices
    }

    /// `[4, 4, per_edge, per_edge]`: the map position (row-major) of each output tile's
    /// points, `size²` (a zero row) past the edge of a map that is not a multiple of 4.
    pub fn output_indices(&self) -> Vec<i64> {
        let (size, t) = (self.size, self.per_edge);
        let mut indices = Vec::with_capacity(TILE * TILE * t * t);
        for (i, j) in grid(TILE, TILE) {
            for (ty, tx) in grid(t, t) {
                let (y, x) = (TILE * ty + i, TILE * tx + j);
                indices.push(match y < size && x < size {
                    true => (y * size + x) as i64,
                    false => (size * size) as i64,
                });
            }
        }
        indices
    }
}

/// `[36, 9]`: a 3x3 kernel's taps (row-major) -> `G W Gᵀ` (rows `a * 6 + b`), for a
/// kernel fed as a graph input. `rotated` reads the kernel turned half a turn, as an
/// input gradient convolves with it.
pub fn kernel_matrix(rotated: bool) -> Array2<f32> {
    Array2::from_shape_fn((ALPHA * ALPHA, TAPS), |(point, tap)| {
        let (a, b) = (point / ALPHA, point % ALPHA);
        let tap = if rotated { TAPS - 1 - tap } else { tap };
        (G[a][tap / 3] * G[b][tap % 3]) as f32
    })
}

/// `G W Gᵀ` of each 3x3 kernel of `weight` `[Cout, Cin, 3, 3]`, in float64 and then
/// rounded once: `[36, Cin, Cout]`, the right operand of the channel product.
pub fn kernel_transform(weight: ArrayView4<f64>) -> Array3<f32> {
    let (cout, cin, _, _) = weight.dim();
    let mut u = Array3::zeros((ALPHA * ALPHA, cin, cout));
    for (o, per_input) in weight.outer_iter().enumerate() {
        for (i, kernel) in per_input.outer_iter().enumerate() {
            // `G W` first, then `(G W) Gᵀ`: 162 products a kernel, where each of the
            // 36 values summed over the 9 taps takes 648 (a full-width export's
            // largest cost).
            let gw: [[f64; 3]; ALPHA] = std::array::from_fn(|a| {
                std::array::from_fn(|kx| (0..3).map(|ky| G[a][ky] * kernel[[ky, kx]]).sum())
            });
            for (a, b) in grid(ALPHA, ALPHA) {
                let value: f64 = (0..3).map(|kx| gw[a][kx] * G[b][kx]).sum();
                u[[a * ALPHA + b, i, o]] = value as f32;
            }
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::aview1;

    /// Direct 3x3 cross-correlation, stride 1, zero padding 1.
    fn direct(x: &[f32], w: &[f32], size: usize) -> Vec<f32> {
        let mut y = vec![0.0; size * size];
        for (oy, ox) in grid(size, size) {
            for (ky, kx) in grid(3, 3) {
                let (iy, ix) = (oy + ky, ox + kx);
                if (1..=size).contains(&iy) && (1..=size).contains(&ix) {
                    y[oy * size + ox] += w[ky * 3 + kx] * x[(iy - 1) * size + ix - 1];
                }
            }
        }
        y
    }

    /// One channel the way the backbone graph does it: gather, `Bᵀ` both ways, the
    /// transformed kernel, `Aᵀ` both ways, then crop.
    fn tiled_convolve(size: usize, x: &[f32], w: &[f32]) -> Vec<f32> {
        let tiling = Tiling::new(size);
        let t = tiling.per_edge;
        let weight = ndarray::Array4::from_shape_fn((1, 1, 3, 3), |(_, _, ky, kx)| {
            f64::from(w[ky * 3 + kx])
        });
        let u = kernel_transform(weight.view());
        let read = |i: i64| x.get(i as usize).copied().unwrap_or(0.0);
        let d: Vec<f32> = tiling.gather_indices().into_iter().map(read).collect();
        let at = |r: usize, c: usize, tile: usize| d[(r * ALPHA + c) * t * t + tile];
        let mut y = vec![0.0; size * size];
        for (ty, tx) in grid(t, t) {
            let tile = ty * t + tx;
            let mut m = [[0.0f32; ALPHA]; ALPHA];
            for (a, b) in grid(ALPHA, ALPHA) {
                let mut v = 0.0;
                for (r, c) in grid(ALPHA, ALPHA) {
                    v += BT[a][r] * at(r, c, tile) * BT[b][c];
                }
                m[a][b] = v * u[[a * ALPHA + b, 0, 0]];
            }
            for (i, j) in grid(TILE, TILE) {
                let (oy, ox) = (TILE * ty + i, TILE * tx + j);
                if oy < size && ox < size {
                    y[oy * size + ox] = grid(ALPHA, ALPHA)
                        .map(|(a, b)| AT[i][a] * m[a][b] * AT[j][b])
                        .sum();
                }
            }
        }
        y
    }

    #[test]
    fn tiles_match_direct_convolution_at_every_size() {
        for size in (4..=9).chain([14, 28]) {
            let x: Vec<f32> = (0..size * size)
                .map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0)
                .collect();
            let w: Vec<f32> = (0..9).map(|i| ((i * 5 % 7) as f32 - 3.0) / 2.0).collect();
            let expected = direct(&x, &w, size);
            let got = tiled_convolve(size, &x, &w);
            for (p, (e, g)) in expected.iter().zip(&got).enumerate() {
                assert!(
                    (e - g).abs() < 1e-4 * (1.0 + e.abs()),
                    "size {size} at {p}: {e} vs {g}"
                );
            }
        }
    }

    #[test]
    fn the_kernel_matrix_transforms_a_kernel_as_the_export_does() {
        let taps: Vec<f64> = (0..TAPS)
            .map(|i| ((i * 5 % 7) as f64 - 3.0) / 2.0)
            .collect();
        let kernel = |tap: &dyn Fn(usize) -> usize| {
            ndarray::Array4::from_shape_fn((1, 1, 3, 3), |(_, _, ky, kx)| taps[tap(ky * 3 + kx)])
        };
        let turned = kernel(&|tap| TAPS - 1 - tap);
        let as_input: Vec<f32> = taps.iter().map(|&t| t as f32).collect();
        for (rotated, expected) in [(false, kernel(&|tap| tap)), (true, turned)] {
            let expected = kernel_transform(expected.view());
            let got = kernel_matrix(rotated).dot(&aview1(&as_input));
            for (point, g) in got.iter().enumerate() {
                let e = expected[[point, 0, 0]];
                assert!(
                    (e - g).abs() < 1e-6,
                    "rotated {rotated}, point {point}: {e} vs {g}"
                );
            }
        }
    }

    #[test]
    fn output_tiles_cover_the_map_once() {
        for size in [4, 7, 14, 29] {
            let indices = Tiling::new(size).output_indices();
            let mut seen = vec![0; size * size + 1];
            for &i in &indices {
                seen[i as usize] += 1;
            }
            let per_edge = size.div_ceil(TILE) * TILE;
            assert!(seen[..size * size].iter().all(|&n| n == 1), "size {size}");
            assert_eq!(
                seen[size * size],
                per_edge * per_edge - size * size,
                "size {size}"
            );
        }
    }
}
