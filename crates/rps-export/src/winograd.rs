//! Winograd F(m x m, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016) for stride-1, padding-1 3x3 convolutions, on gathered tiles
//! ([`Tiling`]): the input tiles are gathered by index, transformed by `Bᵀ` on both
//! edges, multiplied by the transformed kernel, and brought back by `Aᵀ`; a map whose
//! size is not a multiple of the tile is computed to the next one and cropped. Two
//! tile sizes ([`Tile`]): F(4x4) multiplies least, F(2x2) rounds about as a direct
//! product does. The frozen backbone's kernels are transformed once at export
//! ([`kernel_transform`]); a train graph's, fed as inputs, in the graph
//! ([`Tile::kernel_matrix`]).

use ndarray::{Array2, Array3, ArrayView4};

use crate::graph::{Graph, Value};
use rps_model::network::ConvSpec;

/// Kernel taps of a 3x3 convolution.
pub const TAPS: usize = 9;

/// Lavin's F(4x4, 3x3) matrices, for the interpolation points 0, 1, -1, 2, -2 and
/// infinity.
const BT4: [[f32; 6]; 6] = [
    [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
    [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
    [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
    [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
    [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
    [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
];
const G4: [[f64; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];
const AT4: [[f32; 6]; 4] = [
    [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
    [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
    [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
];

/// Lavin's F(2x2, 3x3) matrices, for the points 0, 1, -1 and infinity: every entry
/// 0, ±1 or ±1/2, so no value is scaled up before it is rounded.
const BT2: [[f32; 4]; 4] = [
    [1.0, 0.0, -1.0, 0.0],
    [0.0, 1.0, 1.0, 0.0],
    [0.0, -1.0, 1.0, 0.0],
    [0.0, 1.0, 0.0, -1.0],
];
const G2: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];
const AT2: [[f32; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];

/// Which Winograd algorithm: the output tile's edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tile {
    /// F(2x2, 3x3): 16 products for 4 outputs (2.25 times fewer than direct), with
    /// a direct product's rounding (on layer4's convolution, 4.1e-7 of the values
    /// against float64, where PyTorch's own channels_last convolution reads 7.9e-7).
    F2,
    /// F(4x4, 3x3): 36 products for 16 outputs (4 times fewer), rounding about ten
    /// times a direct product's.
    F4,
}

impl Tile {
    /// The output tile's edge.
    pub fn edge(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// The input tile's edge: the output's plus the kernel's less one.
    pub fn alpha(self) -> usize {
        self.edge() + 2
    }

    /// Points of the tile domain.
    pub fn points(self) -> usize {
        self.alpha() * self.alpha()
    }

    /// `Bᵀ`, `[alpha, alpha]`.
    pub fn bt(self) -> Array2<f32> {
        match self {
            Tile::F2 => Array2::from(BT2.to_vec()),
            Tile::F4 => Array2::from(BT4.to_vec()),
        }
    }

    /// `Aᵀ`, `[edge, alpha]`.
    pub fn at(self) -> Array2<f32> {
        match self {
            Tile::F2 => Array2::from(AT2.to_vec()),
            Tile::F4 => Array2::from(AT4.to_vec()),
        }
    }

    /// `G`, `[alpha, 3]`.
    fn g(self) -> Array2<f64> {
        match self {
            Tile::F2 => Array2::from(G2.to_vec()),
            Tile::F4 => Array2::from(G4.to_vec()),
        }
    }

    /// `[points, 9]`: a 3x3 kernel's taps (row-major) -> `G W Gᵀ` (rows `a * alpha +
    /// b`), for a kernel fed as a graph input. `rotated` reads the kernel turned half
    /// a turn, as an input gradient convolves with it.
    pub fn kernel_matrix(self, rotated: bool) -> Array2<f32> {
        let (alpha, g) = (self.alpha(), self.g());
        Array2::from_shape_fn((self.points(), TAPS), |(point, tap)| {
            let (a, b) = (point / alpha, point % alpha);
            let tap = if rotated { TAPS - 1 - tap } else { tap };
            (g[[a, tap / 3]] * g[[b, tap % 3]]) as f32
        })
    }
}

/// The largest tile edge whose `T d Tᵀ` [`both_edges`] computes as one product by
/// `T ⊗ T` (16x16 at most): one pass over the tiles instead of two, where larger
/// tiles' Kronecker products would multiply three times as much.
const ONE_PRODUCT_EDGE: usize = 4;

/// `T d Tᵀ` for each tile of `d`, by the `[m, k]` matrix `t`. `d` is `[lead…,
/// k·k·…]`, its first `leading` axes kept (batched over), then the tile's rows,
/// then its columns, then the rest; the result holds `[lead…, m, m, …]`'s values.
/// Small tiles take one product by `t ⊗ t`; larger ones `t` down a tile's `k` rows,
/// then, batched over the new rows, across its `k` columns.
pub fn both_edges(g: &mut Graph, t: &Array2<f32>, d: &Value, leading: usize) -> Value {
    let (m, k) = (t.nrows(), t.ncols());
    let keep = vec![0; leading];
    if m.max(k) <= ONE_PRODUCT_EDGE {
        let kron = g.matrix(&kronecker_square(t));
        let tiles = g.reshape(d, &[&keep[..], &[(k * k) as i64, -1]].concat());
        return g.matmul(&kron, &tiles);
    }
    let (m, k) = (m as i64, k as i64);
    let t = g.matrix(t);
    let by_row = g.reshape(d, &[&keep[..], &[k, -1]].concat());
    let down = g.matmul(&t, &by_row);
    let down = g.reshape(&down, &[&keep[..], &[m, k, -1]].concat());
    g.matmul(&t, &down)
}

/// `t ⊗ t`, `[m·m, k·k]`: row `i·m + j`, column `r·k + c` is `t[i, r]·t[j, c]`, so a
/// tile flattened row-major comes out as `t d tᵀ` flattened row-major.
fn kronecker_square(t: &Array2<f32>) -> Array2<f32> {
    let (m, k) = t.dim();
    Array2::from_shape_fn((m * m, k * k), |(i, j)| {
        t[[i / m, j / k]] * t[[i % m, j % k]]
    })
}

/// The tile domain `[points, A, tiles, B]` (the tiles row-major) back to the map
/// `[A, P, B]`: `Aᵀ M A` for each tile, the tiles laid side by side, cropped to the
/// map. `[outer, inner]` are `A` and `B`, one of them -1: `[C, -1]` for a train
/// graph's `[C, P, N]`, `[-1, K]` for an eval graph's `[N, P, K]`.
pub fn from_tiles(g: &mut Graph, tiling: &Tiling, m: &Value, [outer, inner]: [i64; 2]) -> Value {
    let (t, edge, s) = (
        tiling.per_edge as i64,
        tiling.tile.edge() as i64,
        tiling.size as i64,
    );
    let y = both_edges(g, &tiling.tile.at(), m, 0);
    let y = g.reshape(&y, &[edge, edge, outer, t, t, inner]);
    let y = g.transpose(&y, &[2, 3, 0, 4, 1, 5]);
    let mut y = g.reshape(&y, &[outer, edge * t, edge * t, inner]);
    if edge * t != s {
        y = g.slice(&y, &[0, 0], &[s, s], &[1, 2]);
    }
    g.reshape(&y, &[outer, s * s, inner])
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
    let large_enough = size >= Tile::F4.edge();
    spec.groups == 1 && w.kernel == 3 && w.stride == 1 && w.pads(size) == (1, 1) && large_enough
}

/// A `size` x `size` map cut into output tiles of `tile`, `per_edge` each way.
pub struct Tiling {
    pub tile: Tile,
    pub size: usize,
    pub per_edge: usize,
}

impl Tiling {
    pub fn new(tile: Tile, size: usize) -> Self {
        Self {
            tile,
            size,
            per_edge: size.div_ceil(tile.edge()),
        }
    }

    /// `[alpha, alpha, per_edge, per_edge]`: the map position (row-major) each input
    /// tile reads at each point, `size²` (a zero row) where it falls in the padding.
    pub fn gather_indices(&self) -> Vec<i64> {
        let (size, t, alpha, edge) = (
            self.size,
            self.per_edge,
            self.tile.alpha(),
            self.tile.edge(),
        );
        let mut indices = Vec::with_capacity(alpha * alpha * t * t);
        for (r, c) in grid(alpha, alpha) {
            for (ty, tx) in grid(t, t) {
                // Input tiles start one before their outputs (padding 1).
                let iy = (edge * ty + r).checked_sub(1).filter(|&y| y < size);
                let ix = (edge * tx + c).checked_sub(1).filter(|&x| x < size);
                indices.push(match (iy, ix) {
                    (Some(iy), Some(ix)) => (iy * size + ix) as i64,
                    _ => (size * size) as i64,
                });
            }
        }
        indices
    }

    /// `[edge, edge, per_edge, per_edge]`: the map position (row-major) of each output
    /// tile's points, `size²` (a zero row) past the edge of a map that is not a
    /// multiple of the tile.
    pub fn output_indices(&self) -> Vec<i64> {
        let (size, t, edge) = (self.size, self.per_edge, self.tile.edge());
        let mut indices = Vec::with_capacity(edge * edge * t * t);
        for (i, j) in grid(edge, edge) {
            for (ty, tx) in grid(t, t) {
                let (y, x) = (edge * ty + i, edge * tx + j);
                indices.push(match y < size && x < size {
                    true => (y * size + x) as i64,
                    false => (size * size) as i64,
                });
            }
        }
        indices
    }
}

/// `G W Gᵀ` of each 3x3 kernel of `weight` `[Cout, Cin, 3, 3]` for `tile`, in float64
/// and then rounded once: `[points, Cin, Cout]`, the right operand of the channel
/// product.
pub fn kernel_transform(tile: Tile, weight: ArrayView4<f64>) -> Array3<f32> {
    let (cout, cin, _, _) = weight.dim();
    let (alpha, g) = (tile.alpha(), tile.g());
    let mut u = Array3::zeros((tile.points(), cin, cout));
    for (o, per_input) in weight.outer_iter().enumerate() {
        for (i, kernel) in per_input.outer_iter().enumerate() {
            // `G W` first, then `(G W) Gᵀ`: for F(4x4), 162 products a kernel, where
            // each of the 36 values summed over the 9 taps takes 648 (a full-width
            // export's largest cost).
            let gw = Array2::from_shape_fn((alpha, 3), |(a, kx)| {
                (0..3).map(|ky| g[[a, ky]] * kernel[[ky, kx]]).sum::<f64>()
            });
            for (a, b) in grid(alpha, alpha) {
                let value: f64 = (0..3).map(|kx| gw[[a, kx]] * g[[b, kx]]).sum();
                u[[a * alpha + b, i, o]] = value as f32;
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

    /// One channel the way the graphs do it: gather, `Bᵀ` both ways, the
    /// transformed kernel, `Aᵀ` both ways, then crop.
    fn tiled_convolve(tile: Tile, size: usize, x: &[f32], w: &[f32]) -> Vec<f32> {
        let tiling = Tiling::new(tile, size);
        let (t, alpha, edge) = (tiling.per_edge, tile.alpha(), tile.edge());
        let (bt, at) = (tile.bt(), tile.at());
        let weight = ndarray::Array4::from_shape_fn((1, 1, 3, 3), |(_, _, ky, kx)| {
            f64::from(w[ky * 3 + kx])
        });
        let u = kernel_transform(tile, weight.view());
        let read = |i: i64| x.get(i as usize).copied().unwrap_or(0.0);
        let d: Vec<f32> = tiling.gather_indices().into_iter().map(read).collect();
        let input = |r: usize, c: usize, tile: usize| d[(r * alpha + c) * t * t + tile];
        let mut y = vec![0.0; size * size];
        for (ty, tx) in grid(t, t) {
            let tile = ty * t + tx;
            let mut m = Array2::zeros((alpha, alpha));
            for (a, b) in grid(alpha, alpha) {
                let mut v = 0.0;
                for (r, c) in grid(alpha, alpha) {
                    v += bt[[a, r]] * input(r, c, tile) * bt[[b, c]];
                }
                m[[a, b]] = v * u[[a * alpha + b, 0, 0]];
            }
            for (i, j) in grid(edge, edge) {
                let (oy, ox) = (edge * ty + i, edge * tx + j);
                if oy < size && ox < size {
                    y[oy * size + ox] = grid(alpha, alpha)
                        .map(|(a, b)| at[[i, a]] * m[[a, b]] * at[[j, b]])
                        .sum();
                }
            }
        }
        y
    }

    #[test]
    fn tiles_match_direct_convolution_at_every_size() {
        for (tile, size) in [Tile::F2, Tile::F4]
            .into_iter()
            .flat_map(|tile| (4..=9).chain([14, 28]).map(move |size| (tile, size)))
        {
            let x: Vec<f32> = (0..size * size)
                .map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0)
                .collect();
            let w: Vec<f32> = (0..9).map(|i| ((i * 5 % 7) as f32 - 3.0) / 2.0).collect();
            let expected = direct(&x, &w, size);
            let got = tiled_convolve(tile, size, &x, &w);
            for (p, (e, g)) in expected.iter().zip(&got).enumerate() {
                assert!(
                    (e - g).abs() < 1e-4 * (1.0 + e.abs()),
                    "{tile:?}, size {size} at {p}: {e} vs {g}"
                );
            }
        }
    }

    #[test]
    fn the_kronecker_square_transforms_a_flattened_tile_on_both_edges() {
        for t in [Tile::F2.bt(), Tile::F2.at()] {
            let k = t.ncols();
            let d = Array2::from_shape_fn((k, k), |(r, c)| ((r * 7 + c * 3) % 5) as f32 - 2.0);
            let expected = t.dot(&d).dot(&t.t());
            let flat = aview1(d.as_slice().unwrap());
            let got = kronecker_square(&t).dot(&flat);
            assert_eq!(got.as_slice().unwrap(), expected.as_slice().unwrap());
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
        for tile in [Tile::F2, Tile::F4] {
            for (rotated, expected) in [(false, kernel(&|tap| tap)), (true, turned.clone())] {
                let expected = kernel_transform(tile, expected.view());
                let got = tile.kernel_matrix(rotated).dot(&aview1(&as_input));
                for (point, g) in got.iter().enumerate() {
                    let e = expected[[point, 0, 0]];
                    assert!(
                        (e - g).abs() < 1e-6,
                        "{tile:?}, rotated {rotated}, point {point}: {e} vs {g}"
                    );
                }
            }
        }
    }

    #[test]
    fn output_tiles_cover_the_map_once() {
        for tile in [Tile::F2, Tile::F4] {
            for size in [4, 7, 14, 29] {
                let indices = Tiling::new(tile, size).output_indices();
                let mut seen = vec![0; size * size + 1];
                for &i in &indices {
                    seen[i as usize] += 1;
                }
                let per_edge = size.div_ceil(tile.edge()) * tile.edge();
                assert!(
                    seen[..size * size].iter().all(|&n| n == 1),
                    "{tile:?} {size}"
                );
                assert_eq!(
                    seen[size * size],
                    per_edge * per_edge - size * size,
                    "{tile:?} {size}"
                );
            }
        }
    }
}
