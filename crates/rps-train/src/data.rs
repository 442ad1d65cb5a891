//! The batches drawn from a split's features: seeded order, dropout masks and the
//! validation split.

use ndarray::Array2;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rps_score::Features;

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

/// An epoch's batches of `order`: `batch` images each, the last one smaller. With
/// `single_dropped` (BatchNorm normalizing with each batch's own statistics) a last
/// batch of one image is left out, as PyTorch's `drop_last` would: one image at a
/// 1x1 map is one value per channel, whose variance is 0/0 (PyTorch refuses such a
/// step).
pub fn batches(order: &[usize], batch: usize, single_dropped: bool) -> Vec<&[usize]> {
    let mut batches: Vec<&[usize]> = order.chunks(batch).collect();
    if single_dropped && batches.len() > 1 && batches.last().is_some_and(|b| b.len() == 1) {
        batches.pop();
    }
    batches
}

/// Where in the run a batch is: it picks the batch's random stream.
#[derive(Debug, Clone, Copy)]
pub struct BatchPosition {
    pub seed: u64,
    pub epoch: usize,
    pub step: usize,
}

/// Inverted dropout: 0 with probability `p`, else `1/(1-p)`; all ones when `p` is 0.
pub fn dropout_mask(rows: usize, width: usize, p: f64, at: BatchPosition) -> Array2<f32> {
    use rand::RngExt;
    let p = p as f32;
    if p <= 0.0 {
        return Array2::ones((rows, width));
    }
    let mut rng = rng(at.seed, DROPOUT, at.epoch, at.step);
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

    fn at(step: usize) -> BatchPosition {
        BatchPosition {
            seed: 0,
            epoch: 1,
            step,
        }
    }

    #[test]
    fn dropout_keeps_the_expected_share_scaled() {
        let mask = dropout_mask(64, 512, 0.2, at(0));
        let kept = mask.iter().filter(|&&v| v > 0.0).count() as f64 / mask.len() as f64;
        assert!((kept - 0.8).abs() < 0.01, "{kept}");
        assert!(mask.iter().all(|&v| v == 0.0 || (v - 1.25).abs() < 1e-6));
        assert_eq!(mask, dropout_mask(64, 512, 0.2, at(0)));
        assert_ne!(mask, dropout_mask(64, 512, 0.2, at(1)));
        assert!(dropout_mask(2, 3, 0.0, at(0)).iter().all(|&v| v == 1.0));
    }

    #[test]
    fn a_last_batch_of_one_image_is_dropped_only_when_asked() {
        let order: Vec<usize> = (0..2520).collect();
        let lens = |batch, dropped| -> Vec<usize> {
            batches(&order, batch, dropped)
                .iter()
                .map(|b| b.len())
                .collect()
        };
        assert_eq!(lens(11, false).len(), 230);
        assert_eq!(lens(11, false).last(), Some(&1));
        assert_eq!(lens(11, true).len(), 229);
        assert_eq!(lens(11, true).last(), Some(&11));
        assert_eq!(lens(64, true), lens(64, false));
        assert_eq!(
            batches(&order[..1], 64, true).len(),
            1,
            "never the only batch"
        );
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
