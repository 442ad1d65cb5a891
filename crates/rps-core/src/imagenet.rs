//! ImageNet: the normalization torchvision applies (`Normalize(mean, std)` after
//! `ToTensor()`), and the names of the 1000 classes of the base model.

pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Every normalized value a u8 pixel can take, by channel: `(p / 255 - mean) / std`
/// in float32, as torchvision computes it. The train graphs that read u8 pixels
/// gather from this table, so they see the values extract computes.
pub fn normalized_values() -> [[f32; 256]; 3] {
    std::array::from_fn(|c| std::array::from_fn(|p| (p as f32 / 255.0 - MEAN[c]) / STD[c]))
}

/// Normalizes `[3, H*W]` channel-major u8 pixels into `out`.
pub fn normalize_chw(pixels: &[u8], out: &mut [f32]) {
    assert_eq!(pixels.len(), out.len());
    let plane = pixels.len() / 3;
    let table = normalized_values();
    for ((src, dst), values) in pixels
        .chunks_exact(plane)
        .zip(out.chunks_exact_mut(plane))
        .zip(&table)
    {
        for (s, d) in src.iter().zip(dst) {
            *d = values[*s as usize];
        }
    }
}

/// The ImageNet class names in the order of the base model's outputs, one a line:
/// torchvision's `_IMAGENET_CATEGORIES` (`torchvision/models/_meta.py`, torchvision
/// 0.29.2), the `categories` its `ResNet18_Weights.IMAGENET1K_V1.meta` lists.
const CLASS_NAMES: &str = include_str!("imagenet_classes.txt");

/// The 1000 ImageNet class names, by output index.
pub fn class_names() -> Vec<String> {
    CLASS_NAMES.lines().map(str::to_string).collect()
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
        // torchvision's float32 arithmetic, to the bit.
        assert_eq!(out[0], want(0, 0));
        assert_eq!(out[1], want(255, 0));
        assert_eq!(out[5], want(20, 2));
    }

    #[test]
    fn the_class_names_are_imagenets_thousand() {
        let names = class_names();
        assert_eq!(names.len(), 1000);
        assert_eq!((names[0].as_str(), names[281].as_str()), ("tench", "tabby"));
        assert_eq!(names[999], "toilet tissue");
    }
}
