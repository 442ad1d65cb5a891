//! rps-image: the recipe's image transforms, as torchvision applies them to PIL images:
//! - test: `Resize((S, S))` (PIL bilinear with antialiasing);
//! - train: `RandomResizedCrop(S, scale=(0.8, 1.0))`, `RandomHorizontalFlip()`,
//!   `RandomRotation(15)` (nearest, fill 0, no expand), `ColorJitter(brightness=0.1,
//!   contrast=0.1)`.
//!
//! Everything stays u8 RGB; scaling to [0, 1] and ImageNet normalization happen
//! where the pixels are fed to the network (`rps_core::imagenet`).

use std::path::Path;

use anyhow::{Context, Result};
use fast_image_resize::images::{TypedImage, TypedImageRef};
use fast_image_resize::pixels::U8x3;
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::{ImageReader, Limits, RgbImage};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// Decoder limits: a bigger image is refused rather than allowed to exhaust memory.
pub const MAX_SIDE: u32 = 16_384;
pub const MAX_DECODE_BYTES: u64 = 1 << 30;

/// Decodes any format the `image` crate reads into RGB, dropping alpha as PIL's
/// `convert('RGB')` does (no compositing).
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let mut reader = ImageReader::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("reading {}", path.display()))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    // The decoder's message alone, on one line: its source repeats it. A decoder's
    // own bug (png 0.18.1 panics on a palette shorter than one colour) is an error
    // about this file, not a crash of the stage.
    let image = rps_core::contain::contained(|| reader.decode())
        .map_err(|panic| {
            anyhow::anyhow!("decoding {}: the decoder failed: {panic}", path.display())
        })?
        .map_err(|e| anyhow::anyhow!("decoding {}: {}", path.display(), one_line(&e)))?;
    Ok(image.to_rgb8())
}

/// The random stream of one view: a function of (seed, stage, image, view) alone, so
/// any scheduling order gives the same bytes.
pub fn view_rng(seed: u64, relative_path: &str, view: usize) -> ChaCha8Rng {
    let digest = Sha256::new()
        .chain_update(seed.to_le_bytes())
        .chain_update(b"preprocess")
        .chain_update(relative_path.as_bytes())
        .chain_update((view as u64).to_le_bytes())
        .finalize();
    ChaCha8Rng::from_seed(digest.into())
}

/// `error`'s message with its line breaks and runs of spaces folded.
fn one_line(error: &impl std::fmt::Display) -> String {
    error
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A crop rectangle in source pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crop {
    pub top: u32,
    pub left: u32,
    pub height: u32,
    pub width: u32,
}

impl Crop {
    pub fn full(image: &RgbImage) -> Self {
        Self {
            top: 0,
            left: 0,
            height: image.height(),
            width: image.width(),
        }
    }
}

/// Resizes (the `crop` of) `image` to `size` x `size` with antialiased bilinear
/// convolution, the filter PIL's bilinear resize uses.
pub fn resize(image: &RgbImage, crop: Crop, size: u32) -> RgbImage {
    let src = TypedImageRef::<U8x3>::from_buffer(image.width(), image.height(), image.as_raw())
        .expect("RGB buffer");
    let mut pixels = vec![0; size as usize * size as usize * 3];
    let mut dst = TypedImage::<U8x3>::from_buffer(size, size, &mut pixels).expect("RGB buffer");
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(
            crop.left as f64,
            crop.top as f64,
            crop.width as f64,
            crop.height as f64,
        );
    // The typed call: the untyped `resize` instantiates the kernels of all thirteen
    // pixel types here, which took most of this crate's compile time.
    Resizer::new()
        .resize_typed(&src, &mut dst, &options)
        .expect("matching pixel types");
    RgbImage::from_raw(size, size, pixels).expect("size matches")
}

/// The test transform.
pub fn test_view(image: &RgbImage, size: u32) -> RgbImage {
    resize(image, Crop::full(image), size)
}

/// The ranges the train transform draws from.
pub const CROP_SCALE: (f64, f64) = (0.8, 1.0);
pub const CROP_RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);
pub const MAX_ROTATION_DEGREES: f64 = 15.0;
pub const JITTER: f64 = 0.1;

/// What one augmented view did, for checks and the index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augmentation {
    pub crop: Crop,
    pub flip: bool,
    pub degrees: f64,
    pub brightness: f64,
    pub contrast: f64,
    pub brightness_first: bool,
}

impl Augmentation {
    /// Draws the parameters in the order torchvision's transforms do.
    pub fn draw(rng: &mut impl Rng, width: u32, height: u32) -> Self {
        let crop = random_resized_crop(rng, width, height);
        let flip = rng.random_bool(0.5);
        let degrees = rng.random_range(-MAX_ROTATION_DEGREES..=MAX_ROTATION_DEGREES);
        let brightness_first = rng.random_bool(0.5);
        let brightness = rng.random_range(1.0 - JITTER..=1.0 + JITTER);
        let contrast = rng.random_range(1.0 - JITTER..=1.0 + JITTER);
        Self {
            crop,
            flip,
            degrees,
            brightness,
            contrast,
            brightness_first,
        }
    }

    pub fn apply(&self, image: &RgbImage, size: u32) -> RgbImage {
        let mut out = resize(image, self.crop, size);
        if self.flip {
            image::imageops::flip_horizontal_in_place(&mut out);
        }
        out = rotate_nearest(&out, self.degrees);
        if self.brightness_first {
            adjust_brightness(&mut out, self.brightness);
            adjust_contrast(&mut out, self.contrast);
        } else {
            adjust_contrast(&mut out, self.contrast);
            adjust_brightness(&mut out, self.brightness);
        }
        out
    }
}

/// torchvision's `RandomResizedCrop.get_params`: ten tries at a random area and
/// log-uniform aspect ratio, then the central crop clamped to the ratio range.
pub fn random_resized_crop(rng: &mut impl Rng, width: u32, height: u32) -> Crop {
    let (w_img, h_img) = (width as f64, height as f64);
    let area = w_img * h_img;
    let (log_lo, log_hi) = (CROP_RATIO.0.ln(), CROP_RATIO.1.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(CROP_SCALE.0..CROP_SCALE.1);
        let ratio = rng.random_range(log_lo..log_hi).exp();
        let w = (target * ratio).sqrt().round() as u32;
        let h = (target / ratio).sqrt().round() as u32;
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            return Crop {
                top,
                left,
                height: h,
                width: w,
            };
        }
    }
    let in_ratio = w_img / h_img;
    let (w, h) = if in_ratio < CROP_RATIO.0 {
        (width, (w_img / CROP_RATIO.0).round() as u32)
    } else if in_ratio > CROP_RATIO.1 {
        ((h_img * CROP_RATIO.1).round() as u32, height)
    } else {
        (width, height)
    };
    Crop {
        top: (height - h) / 2,
        left: (width - w) / 2,
        height: h,
        width: w,
    }
}

/// Rotates counter-clockwise by `degrees` about the centre, nearest neighbour,
/// corners filled with black, same size (PIL's `rotate(expand=False)`).
pub fn rotate_nearest(image: &RgbImage, degrees: f64) -> RgbImage {
    let (w, h) = image.dimensions();
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let src = image.as_raw();
    let mut out = vec![0u8; src.len()];
    for (y, row) in out.chunks_exact_mut(3 * w as usize).enumerate() {
        // Inverse mapping from each output pixel centre to the source, stepped along
        // the row: x + 1 moves the source point by (cos, sin).
        let dy = y as f64 + 0.5 - cy;
        let mut sx = cos * (0.5 - cx) - sin * dy + cx;
        let mut sy = sin * (0.5 - cx) + cos * dy + cy;
        for pixel in row.chunks_exact_mut(3) {
            if sx >= 0.0 && sy >= 0.0 && sx < w as f64 && sy < h as f64 {
                let at = 3 * (sy as usize * w as usize + sx as usize);
                pixel.copy_from_slice(&src[at..at + 3]);
            }
            sx += cos;
            sy += sin;
        }
    }
    RgbImage::from_raw(w, h, out).expect("same size")
}

/// PIL `ImageEnhance.Brightness`: blend with black.
pub fn adjust_brightness(image: &mut RgbImage, factor: f64) {
    apply_table(image, |v| v * factor);
}

/// PIL `ImageEnhance.Contrast`: blend with the mean grey level.
pub fn adjust_contrast(image: &mut RgbImage, factor: f64) {
    let luma: f64 = image
        .pixels()
        .map(|p| 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64)
        .sum();
    let mean = (luma / (image.width() * image.height()).max(1) as f64 + 0.5).floor();
    apply_table(image, |v| mean + (v - mean) * factor);
}

/// Maps every value through `f`, rounded and clamped, via a 256-entry table.
fn apply_table(image: &mut RgbImage, f: impl Fn(f64) -> f64) {
    let table: Vec<u8> = (0..256)
        .map(|v| f(v as f64).round().clamp(0.0, 255.0) as u8)
        .collect();
    for v in image.iter_mut() {
        *v = table[*v as usize];
    }
}

/// `[H, W, 3]` -> `[3, H, W]`, the layout tensors use.
pub fn to_chw(image: &RgbImage) -> Vec<u8> {
    let plane = (image.width() * image.height()) as usize;
    let mut out = vec![0u8; 3 * plane];
    for (i, p) in image.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = p[c];
        }
    }
    out
}

/// The inverse of [`to_chw`].
pub fn from_chw(pixels: &[u8], size: u32) -> RgbImage {
    let plane = (size * size) as usize;
    RgbImage::from_fn(size, size, |x, y| {
        let i = (y * size + x) as usize;
        image::Rgb([pixels[i], pixels[plane + i], pixels[2 * plane + i]])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn crops_stay_within_scale_ratio_and_bounds() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..2000 {
            let c = random_resized_crop(&mut rng, 300, 300);
            let scale = (c.width * c.height) as f64 / 90_000.0;
            let ratio = c.width as f64 / c.height as f64;
            assert!(c.left + c.width <= 300 && c.top + c.height <= 300);
            // Rounding to whole pixels moves scale and ratio a little past the bounds.
            assert!((0.79..=1.0).contains(&scale), "scale {scale}");
            assert!((0.74..=1.34).contains(&ratio), "ratio {ratio}");
        }
    }

    #[test]
    fn a_tall_image_falls_back_to_the_central_crop() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        // 10x100 admits no crop of ratio >= 3/4 and area >= 80%.
        let c = random_resized_crop(&mut rng, 10, 100);
        assert_eq!(
            c,
            Crop {
                top: 43,
                left: 0,
                height: 13,
                width: 10
            }
        );
    }

    #[test]
    fn angles_and_factors_stay_in_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let draws: Vec<_> = (0..1000)
            .map(|_| Augmentation::draw(&mut rng, 300, 300))
            .collect();
        assert!(draws.iter().all(|a| a.degrees.abs() <= 15.0));
        assert!(draws.iter().any(|a| a.degrees > 12.0) && draws.iter().any(|a| a.degrees < -12.0));
        assert!(
            draws
                .iter()
                .all(|a| (0.9..=1.1).contains(&a.brightness) && (0.9..=1.1).contains(&a.contrast))
        );
        let flips = draws.iter().filter(|a| a.flip).count();
        assert!((400..600).contains(&flips), "{flips} flips");
    }

    #[test]
    fn rotation_by_90_degrees_moves_corners() {
        let mut img = RgbImage::new(4, 4);
        img.put_pixel(3, 0, image::Rgb([255, 0, 0])); // top right
        let out = rotate_nearest(&img, 90.0);
        // Counter-clockwise: the top-right corner goes to the top-left.
        assert_eq!(out.get_pixel(0, 0), &image::Rgb([255, 0, 0]));
        assert_eq!(out.get_pixel(3, 0), &image::Rgb([0, 0, 0]));
    }

    #[test]
    fn chw_round_trips() {
        let img = RgbImage::from_fn(3, 3, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let chw = to_chw(&img);
        assert_eq!(&chw[..3], &[0, 1, 2]);
        assert_eq!(chw[9 + 3], 1);
        assert_eq!(from_chw(&chw, 3), img);
    }
}
