//! The geometry of a 2-D convolution or pooling window: which input position each
//! tap reads, and which output positions reach each input position. Plain index
//! arithmetic, which every lowering of a convolution gathers by.

/// A 2-D convolution or pooling window: square kernel, stride and padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub kernel: usize,
    pub stride: usize,
    pub padding: Padding,
}

/// Zeros around the input, the same on each axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// This many before and after (PyTorch's `padding=`).
    Both(usize),
    /// TensorFlow's `'SAME'`: an output of `ceil(size / stride)`, the padding it
    /// needs split with the odd one after (bottom and right), as ONNX's `SAME_UPPER`.
    Same,
}

impl Window {
    /// A window with `pad` zeros on every side.
    pub const fn padded(kernel: usize, stride: usize, pad: usize) -> Self {
        Self {
            kernel,
            stride,
            padding: Padding::Both(pad),
        }
    }

    /// The zeros before and after the input on each axis, for a `size` x `size` input.
    pub fn pads(&self, size: usize) -> (usize, usize) {
        match self.padding {
            Padding::Both(pad) => (pad, pad),
            Padding::Same => {
                let out = size.div_ceil(self.stride);
                let total = ((out - 1) * self.stride + self.kernel).saturating_sub(size);
                (total / 2, total - total / 2)
            }
        }
    }

    /// The edge of the output of a `size` x `size` input.
    pub fn out_size(&self, size: usize) -> usize {
        let (before, after) = self.pads(size);
        (size + before + after - self.kernel) / self.stride + 1
    }

    /// For each tap k and output position o, the input position the tap reads (P_in for
    /// padding), `[K, P_out]`.
    pub fn tap_indices(&self, in_size: usize) -> Vec<i64> {
        let out_size = self.out_size(in_size);
        let (p_in, p_out) = (in_size * in_size, out_size * out_size);
        let mut forward = vec![p_in as i64; self.taps() * p_out];
        for tap in 0..self.taps() {
            for o in 0..p_out {
                if let Some(i) = self.tap_input(tap, o, in_size) {
                    forward[tap * p_out + o] = i as i64;
                }
            }
        }
        forward
    }

    /// The input gradient's work, split by the phase of the input position (row and
    /// column modulo the stride). Every tap reaches the positions of one phase only,
    /// so at stride 2 a 3x3 kernel reaches a phase with 1, 2, 2 or 4 taps and a 1x1
    /// kernel one phase of four: gathering the output gradient per phase multiplies
    /// each product once, where one gather over all taps for every position would
    /// multiply stride² times as many, most of them with padding.
    pub fn input_grad_phases(&self, in_size: usize) -> Vec<GradPhase> {
        let out_size = self.out_size(in_size);
        let p_out = out_size * out_size;
        let (stride, pad) = (self.stride, self.pads(in_size).0);
        let phase_of = |k: usize| (k + stride * pad - pad) % stride;
        let mut phases = Vec::new();
        for (py, px) in (0..stride).flat_map(|py| (0..stride).map(move |px| (py, px))) {
            let taps: Vec<usize> = (0..self.taps())
                .filter(|tap| {
                    let (ky, kx) = (tap / self.kernel, tap % self.kernel);
                    (phase_of(ky), phase_of(kx)) == (py, px)
                })
                .collect();
            let positions: Vec<usize> = (0..in_size * in_size)
                .filter(|i| (i / in_size % stride, i % in_size % stride) == (py, px))
                .collect();
            // A tap reads only its phase's positions, which lie on a grid `columns` wide.
            let columns = (in_size - px).div_ceil(stride);
            let mut indices = vec![p_out as i64; taps.len() * positions.len()];
            for (t, &tap) in taps.iter().enumerate() {
                for o in 0..p_out {
                    if let Some(i) = self.tap_input(tap, o, in_size) {
                        let at = i / in_size / stride * columns + i % in_size / stride;
                        indices[t * positions.len() + at] = o as i64;
                    }
                }
            }
            phases.push(GradPhase {
                taps,
                positions,
                indices,
            });
        }
        phases
    }

    /// Kernel positions: `kernel²`.
    pub fn taps(&self) -> usize {
        self.kernel * self.kernel
    }

    /// The input position that `tap` reads for output position `o`; none in padding.
    fn tap_input(&self, tap: usize, o: usize, in_size: usize) -> Option<usize> {
        let out_size = self.out_size(in_size);
        let (ky, kx) = (tap / self.kernel, tap % self.kernel);
        let (oy, ox) = (o / out_size, o % out_size);
        let pad = self.pads(in_size).0;
        let iy = (oy * self.stride + ky).checked_sub(pad)?;
        let ix = (ox * self.stride + kx).checked_sub(pad)?;
        (iy < in_size && ix < in_size).then_some(iy * in_size + ix)
    }
}

/// The input positions of one phase and what reaches them: see
/// [`Window::input_grad_phases`].
pub struct GradPhase {
    /// The taps (`ky * kernel + kx`) that reach this phase; none for a phase that no
    /// tap reaches, whose gradient is zero.
    pub taps: Vec<usize>,
    /// Input positions, in raster order.
    pub positions: Vec<usize>,
    /// `[taps, positions]`: the output position each tap read at each position, or
    /// P_out (the zero row) where it read none.
    pub indices: Vec<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_puts_the_odd_zero_after_as_tensorflow_does() {
        let same = |kernel, stride| Window {
            kernel,
            stride,
            padding: Padding::Same,
        };
        // EfficientNet-Lite0's stride-2 layers at 224 pixels: the stem and the 3x3
        // depthwise convolution on 112, the 5x5 ones on 56 and 28.
        assert_eq!(same(3, 2).pads(224), (0, 1));
        assert_eq!(same(3, 2).out_size(224), 112);
        assert_eq!(same(5, 2).pads(56), (1, 2));
        assert_eq!(same(5, 2).out_size(28), 14);
        // Stride 1 pads evenly, as PyTorch's `padding=k//2` does; odd sizes too.
        assert_eq!(same(5, 1).pads(14), (2, 2));
        assert_eq!(same(3, 2).pads(7), (1, 1));
        assert_eq!(same(1, 1).pads(7), (0, 0));
        // The top-left tap of the first output reads the first input (no zero
        // before it), the last reads the zero after.
        let indices = same(3, 2).tap_indices(4);
        assert_eq!(&indices[..4], &[0, 2, 8, 10]);
        assert_eq!(indices[8 * 4 + 3], 16);
    }
}
