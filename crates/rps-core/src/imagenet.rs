//! ImageNet normalization, as torchvision's `Normalize(mean, std)` after `ToTensor()`.

pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Normalizes `[3, H*W]` channel-major u8 pixels into `out`.
pub fn normalize_chw(pixels: &[u8], out: &mut [f32]) {
    assert_eq!(pixels.len(), out.len());
    let plane = pixels.len() / 3;
    for (c, (src, dst)) in pixels
        .chunks_exact(plane)
        .zip(out.chunks_exact_mut(plane))
        .enumerate()
    {
        let scale = 1.0 / (255.0 * STD[c]);
        let shift = MEAN[c] / STD[c];
        for (s, d) in src.iter().zip(dst) {
            *d = *s as f32 * scale - shift;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_to_tensor_then_normalize() {
        let pixels = [0u8, 255, 128, 128, 10, 20];
        let mut out = [0.0; 6];
        normalize_chw(&pixels, &mut out);
        let want = |v: u8, c: usize| (v as f32 / 255.0 - MEAN[c]) / STD[c];
        assert!((out[0] - want(0, 0)).abs() < 1e-6);
        assert!((out[1] - want(255, 0)).abs() < 1e-6);
        assert!((out[5] - want(20, 2)).abs() < 1e-6);
    }
}
