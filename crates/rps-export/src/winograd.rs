//! Winograd F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016) for the stride-1, padding-1 3x3 convolutions of the train step,
//! written as dense matrices over a feature map's flattened positions so that each
//! transform is one matrix product in the graph.
//!
//! For one input and one output channel, `Y = output · (U ⊙ (input · X))`, where
//! `U = kernel · W` holds the 36 transformed taps, broadcast over the tiles. The
//! tile-domain axis is ordered (transformed position, tile), position-major, so a
//! reshape to `[36, tiles, ...]` lines the tiles up behind their position's `U`.

use ndarray::Array2;

/// Output tile edge.
const TILE: usize = 4;
/// Input tile edge: TILE + 3 - 1.
const ALPHA: usize = 6;
/// Transformed positions per tile.
pub const POSITIONS: usize = ALPHA * ALPHA;
/// Kernel taps of a 3x3 convolution.
pub const TAPS: usize = 9;

/// Lavin's matrices for the interpolation points 0, 1, -1, 2, -2 and infinity.
const BT: [[f32; ALPHA]; ALPHA] = [
    [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
    [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
    [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
    [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
    [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
    [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
];
const G: [[f32; 3]; ALPHA] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];
const AT: [[f32; ALPHA]; TILE] = [
    [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
    [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
    [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
];

/// The transforms of a `size` x `size` feature map (same size in and out).
pub struct Transforms {
    /// Tiles per image: ceil(size / 4) squared.
    pub tiles: usize,
    /// `[36 * tiles, size²]`: image -> tile domain; padding reads zero, so it has no
    /// column.
    pub input: Array2<f32>,
    /// `[size², 36 * tiles]`: tile domain -> image; outputs past the edge are dropped.
    pub output: Array2<f32>,
    /// `[36, 9]`: 3x3 kernel -> transformed taps.
    pub kernel: Array2<f32>,
}

impl Transforms {
    /// Tiles a `size` x `size` map takes.
    pub fn tiles_for(size: usize) -> usize {
        size.div_ceil(TILE).pow(2)
    }

    pub fn new(size: usize) -> Self {
        let per_edge = size.div_ceil(TILE);
        let tiles = Self::tiles_for(size);
        let positions = size * size;
        let mut input = Array2::zeros((POSITIONS * tiles, positions));
        let mut output = Array2::zeros((positions, POSITIONS * tiles));
        for (a, b) in (0..ALPHA).flat_map(|a| (0..ALPHA).map(move |b| (a, b))) {
            for (ty, tx) in (0..per_edge).flat_map(|y| (0..per_edge).map(move |x| (y, x))) {
                let q = (a * ALPHA + b) * tiles + ty * per_edge + tx;
                // Input tile rows/columns start one before the output tile (padding 1).
                for (r, c) in (0..ALPHA).flat_map(|r| (0..ALPHA).map(move |c| (r, c))) {
                    let iy = (TILE * ty + r).checked_sub(1).filter(|&y| y < size);
                    let ix = (TILE * tx + c).checked_sub(1).filter(|&x| x < size);
                    if let (Some(iy), Some(ix)) = (iy, ix) {
                        input[[q, iy * size + ix]] = BT[a][r] * BT[b][c];
                    }
                }
                for (i, j) in (0..TILE).flat_map(|i| (0..TILE).map(move |j| (i, j))) {
                    let (oy, ox) = (TILE * ty + i, TILE * tx + j);
                    if oy < size && ox < size {
                        output[[oy * size + ox, q]] = AT[i][a] * AT[j][b];
                    }
                }
            }
        }
        let mut kernel = Array2::zeros((POSITIONS, TAPS));
        for (a, b) in (0..ALPHA).flat_map(|a| (0..ALPHA).map(move |b| (a, b))) {
            for (ky, kx) in (0..3).flat_map(|y| (0..3).map(move |x| (y, x))) {
                kernel[[a * ALPHA + b, ky * 3 + kx]] = G[a][ky] * G[b][kx];
            }
        }
        Self {
            tiles,
            input,
            output,
            kernel,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{aview1, s};

    /// One channel through the transforms: `x` [size²], `w` [9] -> [size²].
    fn convolve(t: &Transforms, x: &[f32], w: &[f32]) -> Vec<f32> {
        let u = t.kernel.dot(&aview1(w));
        let mut m = t.input.dot(&aview1(x));
        for (pos, &tap) in u.iter().enumerate() {
            m.slice_mut(s![pos * t.tiles..(pos + 1) * t.tiles])
                .mapv_inplace(|v| v * tap);
        }
        t.output.dot(&m).to_vec()
    }

    /// Direct 3x3 cross-correlation, stride 1, zero padding 1.
    fn direct(x: &[f32], w: &[f32], size: usize) -> Vec<f32> {
        let mut y = vec![0.0; size * size];
        for (oy, ox) in (0..size).flat_map(|y| (0..size).map(move |x| (y, x))) {
            for (ky, kx) in (0..3).flat_map(|y| (0..3).map(move |x| (y, x))) {
                let (iy, ix) = (oy + ky, ox + kx);
                if (1..=size).contains(&iy) && (1..=size).contains(&ix) {
                    y[oy * size + ox] += w[ky * 3 + kx] * x[(iy - 1) * size + ix - 1];
                }
            }
        }
        y
    }

    #[test]
    fn matches_direct_convolution_at_every_size_used() {
        // 7: full-width layer4 at 224 px; 2 and 4: the test models; 5 and 9: ragged tiles.
        for size in [2, 4, 5, 7, 9] {
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

    #[test]
    fn a_7x7_map_takes_four_tiles() {
        let t = Transforms::new(7);
        assert_eq!(t.tiles, 4);
        assert_eq!(t.input.dim(), (144, 49));
        assert_eq!(t.output.dim(), (49, 144));
    }
}
