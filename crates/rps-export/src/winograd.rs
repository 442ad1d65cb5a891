//! Winograd F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016) for stride-1, padding-1 3x3 convolutions, in two forms:
//!
//! - [`Transforms`], for the train step's small maps (layer4, 7x7): dense matrices
//!   over a feature map's flattened positions, so that each transform is one matrix
//!   product in the graph. For one input and one output channel,
//!   `Y = Σ output · (U ⊙ (input · X))` over groups of transformed positions, where
//!   `U = kernel · W` holds a group's transformed taps, broadcast over its tiles. A
//!   group's tile-domain axis is ordered (position, tile), position-major, so a
//!   reshape to `[positions, tiles, ...]` lines the tiles up behind their position's
//!   `U`. Groups exist because a map whose size is not a multiple of 4 ends in a
//!   smaller tile that uses fewer of the 36 positions.
//! - [`Tiling`], for the frozen backbone's larger maps (up to 28x28, where a dense
//!   matrix over positions would be mostly zeros): the 6x6 input tiles are gathered
//!   by index, transformed by `Bᵀ` one edge at a time, multiplied by the transformed
//!   kernel ([`kernel_transform`], computed once at export), and brought back by
//!   `Aᵀ`; a map whose size is not a multiple of 4 is computed to the next one and
//!   cropped.

use std::collections::BTreeMap;

use ndarray::{Array2, Array3, ArrayView4};

use rps_model::network::ConvSpec;

/// Output tile edge.
pub const TILE: usize = 4;
/// Input tile edge: TILE + 3 - 1.
const ALPHA: usize = 6;
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

/// One tile along an edge: its first output, and how many of the interpolation
/// points it uses. A last tile with only 3 outputs drops the point at infinity:
/// F(3, 3) with the same points, whose matrices are F(4, 3)'s minus that point.
#[derive(Clone, Copy)]
struct EdgeTile {
    start: usize,
    points: usize,
}

/// Every (row, column) of a `rows` x `cols` grid, row-major.
fn grid(rows: usize, cols: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..rows).flat_map(move |r| (0..cols).map(move |c| (r, c)))
}

fn edge_tiles(size: usize) -> Vec<EdgeTile> {
    (0..size)
        .step_by(TILE)
        .map(|start| EdgeTile {
            start,
            points: if size - start == TILE - 1 {
                ALPHA - 1
            } else {
                ALPHA
            },
        })
        .collect()
}

/// Transformed positions that serve the same number of tiles, so that one batched
/// product covers them: each position's transformed kernel broadcast over its tiles.
pub struct Group {
    /// Tiles each position serves.
    pub tiles: usize,
    /// `[positions, 9]`: 3x3 kernel -> the group's transformed taps.
    pub kernel: Array2<f32>,
    /// `[positions * tiles, size²]`: image -> tile domain, position-major. Padding
    /// reads zero, so it has no column.
    pub input: Array2<f32>,
    /// `[size², positions * tiles]`: tile domain -> image; outputs past the edge are
    /// dropped.
    pub output: Array2<f32>,
}

impl Group {
    pub fn positions(&self) -> usize {
        self.kernel.nrows()
    }
}

/// The transforms of a `size` x `size` feature map (same size in and out), as groups
/// whose outputs add up to the convolution. A 7x7 map takes a 4-output and a
/// 3-output tile each way: 121 products per channel pair (and one wasted) against
/// 441 direct.
pub struct Transforms {
    pub groups: Vec<Group>,
}

impl Transforms {
    pub fn new(size: usize) -> Self {
        let edge = edge_tiles(size);
        let mut by_count: BTreeMap<usize, Vec<Position>> = BTreeMap::new();
        for (a, b) in grid(ALPHA, ALPHA) {
            let tiles: Vec<(usize, usize)> = grid(edge.len(), edge.len())
                .filter(|&(ty, tx)| a < edge[ty].points && b < edge[tx].points)
                .collect();
            by_count
                .entry(tiles.len())
                .or_default()
                .push(Position { a, b, tiles });
        }
        // A lone position (the corner pair, both points at infinity) joins the next
        // group with zero tiles: one wasted tile product costs less than a group's
        // own transforms.
        if by_count.len() > 1 && by_count.values().next().is_some_and(|p| p.len() == 1) {
            let (_, lone) = by_count.pop_first().expect("more than one group");
            by_count
                .values_mut()
                .next()
                .expect("another group")
                .extend(lone);
        }
        let groups = by_count
            .into_iter()
            .rev()
            .map(|(tiles, positions)| group(size, &edge, tiles, &positions))
            .collect();
        Self { groups }
    }
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

/// A pair of interpolation points and the (row, column) tiles that use it; its group
/// may serve more tiles, which it leaves zero.
struct Position {
    a: usize,
    b: usize,
    tiles: Vec<(usize, usize)>,
}

fn group(size: usize, edge: &[EdgeTile], tiles: usize, positions: &[Position]) -> Group {
    let rows = positions.len() * tiles;
    let mut kernel = Array2::zeros((positions.len(), TAPS));
    let mut input = Array2::zeros((rows, size * size));
    let mut output = Array2::zeros((size * size, rows));
    for (p, position) in positions.iter().enumerate() {
        let (a, b) = (position.a, position.b);
        for (ky, kx) in grid(3, 3) {
            kernel[[p, ky * 3 + kx]] = (G[a][ky] * G[b][kx]) as f32;
        }
        for (t, &(ty, tx)) in position.tiles.iter().enumerate() {
            let q = p * tiles + t;
            let (ey, ex) = (edge[ty], edge[tx]);
            // Input tiles start one before their outputs (padding 1).
            for (r, c) in grid(ey.points, ex.points) {
                let iy = (ey.start + r).checked_sub(1).filter(|&y| y < size);
                let ix = (ex.start + c).checked_sub(1).filter(|&x| x < size);
                if let (Some(iy), Some(ix)) = (iy, ix) {
                    input[[q, iy * size + ix]] = BT[a][r] * BT[b][c];
                }
            }
            for (i, j) in grid(ey.points - 2, ex.points - 2) {
                let (oy, ox) = (ey.start + i, ex.start + j);
                if oy < size && ox < size {
                    output[[oy * size + ox, q]] = AT[i][a] * AT[j][b];
                }
            }
        }
    }
    Group {
        tiles,
        kernel,
        input,
        output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, aview1, s};

    /// One channel through the transforms: `x` [size²], `w` [9] -> [size²].
    fn convolve(t: &Transforms, x: &[f32], w: &[f32]) -> Vec<f32> {
        let mut y = Array1::zeros(x.len());
        for group in &t.groups {
            let u = group.kernel.dot(&aview1(w));
            let mut m = group.input.dot(&aview1(x));
            for (pos, &tap) in u.iter().enumerate() {
                m.slice_mut(s![pos * group.tiles..(pos + 1) * group.tiles])
                    .mapv_inplace(|v| v * tap);
            }
            y += &group.output.dot(&m);
        }
        y.to_vec()
    }

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

    #[test]
    fn matches_direct_convolution_at_every_size() {
        // 7: full-width layer4 at 224 px (a 3-output last tile); 4 and 8: whole tiles;
        // 5, 6 and 9: a last tile hanging over the edge.
        for size in 4..=9 {
            let x: Vec<f32> = (0..size * size)
                .map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0)
                .collect();
            let w: Vec<f32> = (0..9).map(|i| ((i * 5 % 7) as f32 - 3.0) / 2.0).collect();
            let expected = direct(&x, &w, size);
            let got = convolve(&Transforms::new(size), &x, &w);
            for (p, (e, g)) in expected.iter().zip(&got).enumerate() {
                assert!(
                    (e - g).abs() < 1e-4 * (1.0 + e.abs()),
                    "size {size} at {p}: {e} vs {g}"
                );
            }
        }
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
    fn a_7x7_map_takes_122_products_in_two_groups() {
        let t = Transforms::new(7);
        let shape: Vec<(usize, usize)> =
            t.groups.iter().map(|g| (g.positions(), g.tiles)).collect();
        // 121 in use, and the corner position's zero second tile.
        assert_eq!(shape, [(25, 4), (11, 2)]);
        assert_eq!(t.groups[0].input.dim(), (100, 49));
        assert_eq!(t.groups[1].output.dim(), (49, 22));
        assert_eq!(t.groups[1].input.row(21).sum(), 0.0);
    }
}
