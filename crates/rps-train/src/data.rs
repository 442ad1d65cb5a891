//! The extracted features of a split, and the batches drawn from them.

use anyhow::{Result, bail};
use ndarray::{Array2, ArrayD, Axis, Ix2};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rps_core::npy::{self, Mapped};
use rps_core::{Layout, Split};

/// One split's features: pooled in memory, layer3 memory-mapped.
pub struct Features {
    pub pooled: Array2<f32>,
    layer3: Mapped,
    pub labels: Vec<i64>,
    /// Rows per image (augmented views); rows are image-major.
    pub views: usize,
}

impl Features {
    /// Loads a split; lengths and shapes must agree with each other and the model.
    pub fn load(
        layout: &Layout,
        split: Split,
        views: usize,
        pooled_width: usize,
        layer3_dims: [usize; 3],
    ) -> Result<Self> {
        let pooled_path = layout.features(split, "pooled");
        let pooled = npy::read::<f32>(&pooled_path)?.into_dimensionality::<Ix2>()?;
        let labels_path = layout.features(split, "labels");
        let labels = npy::read::<i64>(&labels_path)?
            .iter()
            .copied()
            .collect::<Vec<_>>();
        let layer3 = Mapped::open(&layout.features(split, "layer3"))?;
        let layer3_shape = layer3.view::<f32>()?.shape().to_vec();
        let rows = pooled.nrows();
        if labels.len() != rows || layer3_shape[0] != rows {
            bail!(
                "{split} features disagree in length: {} has {rows} rows, {} has {}, {} has {} labels",
                pooled_path.display(),
                layer3.path().display(),
                layer3_shape[0],
                labels_path.display(),
                labels.len()
            );
        }
        if pooled.ncols() != pooled_width || layer3_shape[1..] != layer3_dims {
            bail!(
                "{split} features have shapes [N,{}] and {:?}, but the graphs expect [N,{pooled_width}] and [N,{:?}] (rerun extract after export)",
                pooled.ncols(),
                layer3_shape,
                layer3_dims
            );
        }
        if views == 0 || rows % views != 0 {
            bail!(
                "{}: {rows} rows is not a whole number of {views} views per image",
                pooled_path.display()
            );
        }
        Ok(Self {
            pooled,
            layer3,
            labels,
            views,
        })
    }

    pub fn images(&self) -> usize {
        self.labels.len() / self.views
    }

    pub fn image_label(&self, image: usize) -> i64 {
        self.labels[image * self.views]
    }

    /// The row of an image's view.
    pub fn row(&self, image: usize, view: usize) -> usize {
        image * self.views + view % self.views
    }

    pub fn labels_of(&self, rows: &[usize]) -> Vec<i64> {
        rows.iter().map(|&r| self.labels[r]).collect()
    }

    pub fn pooled_rows(&self, rows: &[usize]) -> ArrayD<f32> {
        self.pooled.select(Axis(0), rows).into_dyn()
    }

    pub fn layer3_rows(&self, rows: &[usize]) -> Result<ArrayD<f32>> {
        Ok(self.layer3.view::<f32>()?.select(Axis(0), rows))
    }
}

/// A seeded random stream for one purpose of one epoch (and step).
pub fn rng(seed: u64, purpose: u64, epoch: usize, step: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(purpose << 48 | (epoch as u64) << 24 | step as u64);
    rng
}

pub const SHUFFLE: u64 = 1;
pub const DROPOUT: u64 = 2;
pub const VALIDATION: u64 = 3;

/// The images of an epoch in a seeded random order.
pub fn shuffled(images: &[usize], seed: u64, epoch: usize) -> Vec<usize> {
    let mut order = images.to_vec();
    order.shuffle(&mut rng(seed, SHUFFLE, epoch, 0));
    order
}

/// Inverted dropout: 0 with probability `p`, else `1/(1-p)`; all ones when `p` is 0.
pub fn dropout_mask(
    rows: usize,
    width: usize,
    p: f32,
    seed: u64,
    epoch: usize,
    step: usize,
) -> Array2<f32> {
    use rand::RngExt;
    if p <= 0.0 {
        return Array2::ones((rows, width));
    }
    let mut rng = rng(seed, DROPOUT, epoch, step);
    let keep = 1.0 / (1.0 - p);
    Array2::from_shape_simple_fn((rows, width), || {
        if rng.random::<f32>() < p { 0.0 } else { keep }
    })
}

/// Splits images into (train, validation): `fraction` of each class, seeded.
pub fn split_validation(features: &Features, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut train = Vec::new();
    let mut val = Vec::new();
    let mut classes: Vec<i64> = (0..features.images())
        .map(|i| features.image_label(i))
        .collect();
    classes.sort();
    classes.dedup();
    for class in classes {
        let mut images: Vec<usize> = (0..features.images())
            .filter(|&i| features.image_label(i) == class)
            .collect();
        images.shuffle(&mut rng(seed, VALIDATION, class as usize, 0));
        let held = (fraction * images.len() as f64).round() as usize;
        val.extend_from_slice(&images[..held.min(images.len())]);
        train.extend_from_slice(&images[held.min(images.len())..]);
    }
    train.sort();
    val.sort();
    (train, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_keeps_the_expected_share_scaled() {
        let mask = dropout_mask(64, 512, 0.2, 0, 1, 0);
        let kept = mask.iter().filter(|&&v| v > 0.0).count() as f64 / mask.len() as f64;
        assert!((kept - 0.8).abs() < 0.01, "{kept}");
        assert!(mask.iter().all(|&v| v == 0.0 || (v - 1.25).abs() < 1e-6));
        assert_eq!(mask, dropout_mask(64, 512, 0.2, 0, 1, 0));
        assert_ne!(mask, dropout_mask(64, 512, 0.2, 0, 1, 1));
        assert!(dropout_mask(2, 3, 0.0, 0, 1, 0).iter().all(|&v| v == 1.0));
    }

    #[test]
    fn shuffles_are_seeded_per_epoch() {
        let images: Vec<usize> = (0..100).collect();
        assert_eq!(shuffled(&images, 0, 1), shuffled(&images, 0, 1));
        assert_ne!(shuffled(&images, 0, 1), shuffled(&images, 0, 2));
        let mut sorted = shuffled(&images, 0, 1);
        sorted.sort();
        assert_eq!(sorted, images);
    }
}
