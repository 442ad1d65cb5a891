//! Classifying photos of any format and size with a classifier graph alone: it
//! carries its image size, its input normalization and class names (or the names
//! come from a file, or are ImageNet's).

use std::path::Path;

use anyhow::{Context, Result, bail};
use image::RgbImage;
use ort::session::Session;
use ort::value::Tensor;
use rps_core::defaults::ranges;
use rps_core::names as graph_names;
use rps_core::{Device, Normalization, SessionOptions, imagenet, text};
use rps_image as transform;
use rps_runtime::Runtime;

pub struct Classifier {
    session: Session,
    pub classes: Vec<String>,
    pub image_size: u32,
    /// What a photo's pixels go through, as the network needs.
    pub normalization: Normalization,
    pub device: Device,
}

/// Where a classifier's class names come from.
pub enum ClassNames<'a> {
    /// The model's own metadata (what train writes into `model.onnx`).
    Model,
    /// A file of one name a line.
    File(&'a Path),
    /// The 1000 ImageNet names the project carries.
    Imagenet,
}

/// One photo's result.
pub struct Prediction {
    /// The photo as the network saw it (resized).
    pub seen: RgbImage,
    pub probs: Vec<f32>,
}

impl Classifier {
    /// Opens `model`, its class names from `names`.
    pub fn open(model: &Path, names: ClassNames, options: SessionOptions) -> Result<Self> {
        let (session, device) = Runtime::get()?.session(model, options)?;
        let metadata = session.metadata()?;
        let image_size: u32 = metadata
            .custom(graph_names::META_IMAGE_SIZE)
            .and_then(|s| s.parse().ok())
            .with_context(|| {
                format!("{}: no image size in the model's metadata", model.display())
            })?;
        // A model file is a stranger's: its size must be one export could make.
        if !ranges::IMAGE_SIZE.contains(&u64::from(image_size)) {
            bail!(
                "{}: the model's metadata says image size {image_size}; export makes {} to {} pixels",
                model.display(),
                ranges::IMAGE_SIZE.start(),
                ranges::IMAGE_SIZE.end()
            );
        }
        let key = graph_names::META_NORMALIZATION;
        let text = metadata.custom(key).with_context(|| {
            format!(
                "{}: no {key} in the model's metadata (made before it was recorded): `make export` and `make train` remake it",
                model.display()
            )
        })?;
        let normalization = Normalization::from_text(&text)
            .map_err(|why| anyhow::anyhow!("{}: metadata {key}: {why}", model.display()))?;
        let classes: Vec<String> = match names {
            ClassNames::File(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .lines()
                .map(str::to_string)
                .collect(),
            ClassNames::Imagenet => imagenet::class_names(),
            ClassNames::Model => metadata
                .custom(graph_names::META_CLASSES)
                .with_context(|| {
                    format!(
                        "{}: the model names no classes; pass a class list",
                        model.display()
                    )
                })?
                .lines()
                .map(str::to_string)
                .collect(),
        };
        // Printed on the terminal and drawn: no name may carry control characters.
        let classes = classes
            .iter()
            .map(|name| text::printable(name).into_owned())
            .collect();
        drop(metadata);
        Ok(Self {
            session,
            classes,
            image_size,
            normalization,
            device,
        })
    }

    pub fn classify(&mut self, photo: &Path) -> Result<Prediction> {
        let image = transform::load_rgb(photo)?;
        let seen = transform::test_view(&image, self.image_size);
        let pixels = transform::to_chw(&seen);
        let mut input = vec![0.0f32; pixels.len()];
        self.normalization.normalize_chw(&pixels, &mut input);
        let s = self.image_size as usize;
        let outputs = self
            .session
            .run(ort::inputs![graph_names::IMAGES => Tensor::from_array(([1, 3, s, s], input))?])?;
        let probs: Vec<f32> = outputs[graph_names::PROBS]
            .try_extract_tensor::<f32>()?
            .1
            .to_vec();
        if probs.len() != self.classes.len() {
            bail!(
                "the model gives {} probabilities for {} class names",
                probs.len(),
                self.classes.len()
            );
        }
        Ok(Prediction { seen, probs })
    }
}

/// The `k` most probable classes, best first.
pub fn top_k(probs: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_ranks_best_first() {
        assert_eq!(top_k(&[0.1, 0.6, 0.3], 2), [(1, 0.6), (2, 0.3)]);
    }
}
