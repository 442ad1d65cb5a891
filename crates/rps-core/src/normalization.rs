//! How a network wants its input pixels: `(p / 255 - mean) / std` per channel, as
//! torchvision's `ToTensor()` then `Normalize(mean, std)` compute it. Which mean and
//! std is the network's fact (ImageNet's statistics for torchvision's weights, 0.5
//! for weights trained in TensorFlow): export records it in `export.json` and in
//! the classifier graphs' metadata, and every stage that normalizes reads it there.

use serde::{Deserialize, Serialize};

/// A per-channel normalization of RGB pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalization {
    /// Every normalized value a u8 pixel can take, by channel, in float32 as
    /// torchvision computes it. The train graphs that read u8 pixels gather from
    /// this table, so they see the values extract computes.
    pub fn values(&self) -> [[f32; 256]; 3] {
        std::array::from_fn(|c| {
            std::array::from_fn(|p| (p as f32 / 255.0 - self.mean[c]) / self.std[c])
        })
    }

    /// Normalizes `[3, H*W]` channel-major u8 pixels into `out`.
    pub fn normalize_chw(&self, pixels: &[u8], out: &mut [f32]) {
        assert_eq!(pixels.len(), out.len());
        let plane = pixels.len() / 3;
        let table = self.values();
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

    /// As graph metadata holds it ([`crate::names::META_NORMALIZATION`]): the mean,
    /// then the std, each three numbers: `0.485,0.456,0.406/0.229,0.224,0.225`.
    pub fn to_text(&self) -> String {
        let join = |v: &[f32; 3]| v.map(|x| x.to_string()).join(",");
        format!("{}/{}", join(&self.mean), join(&self.std))
    }

    /// The normalization [`Normalization::to_text`] wrote, or what is wrong with it:
    /// finite means, and stds above 0.
    pub fn from_text(text: &str) -> Result<Normalization, String> {
        let triple = |part: &str| -> Option<[f32; 3]> {
            let values: Vec<f32> = part
                .split(',')
                .map(|v| v.parse().ok())
                .collect::<Option<_>>()?;
            values.try_into().ok()
        };
        let (mean, std) = text
            .split_once('/')
            .and_then(|(m, s)| Some((triple(m)?, triple(s)?)))
            .ok_or_else(|| format!("{text:?} is not MEAN,MEAN,MEAN/STD,STD,STD"))?;
        if !mean.iter().all(|m| m.is_finite()) || !std.iter().all(|s| s.is_finite() && *s > 0.0) {
            return Err(format!("{text:?}: means must be finite and stds above 0"));
        }
        Ok(Normalization { mean, std })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGENET: Normalization = Normalization {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };

    #[test]
    fn matches_to_tensor_then_normalize() {
        let pixels = [0u8, 255, 128, 128, 10, 20];
        let mut out = [0.0; 6];
        IMAGENET.normalize_chw(&pixels, &mut out);
        let want = |v: u8, c: usize| (v as f32 / 255.0 - IMAGENET.mean[c]) / IMAGENET.std[c];
        // torchvision's float32 arithmetic, to the bit.
        assert_eq!(out[0], want(0, 0));
        assert_eq!(out[1], want(255, 0));
        assert_eq!(out[5], want(20, 2));
        let half = Normalization {
            mean: [0.5; 3],
            std: [0.5; 3],
        };
        half.normalize_chw(&pixels, &mut out);
        assert_eq!((out[0], out[1]), (-1.0, 1.0));
    }

    #[test]
    fn the_text_form_reads_back_and_refuses_what_is_not_one() {
        let text = IMAGENET.to_text();
        assert_eq!(text, "0.485,0.456,0.406/0.229,0.224,0.225");
        assert_eq!(Normalization::from_text(&text), Ok(IMAGENET));
        for bad in [
            "",
            "0.5,0.5,0.5",
            "1,2/3,4,5",
            "a,b,c/1,1,1",
            "0,0,0/1,0,1",
            "NaN,0,0/1,1,1",
        ] {
            assert!(Normalization::from_text(bad).is_err(), "{bad}");
        }
    }
}
