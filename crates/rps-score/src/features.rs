//! The extracted features of a split.

use std::path::Path;

use anyhow::{Result, bail};
use ndarray::{Array2, ArrayD, Axis, Ix2};
use rps_core::npy::{self, Mapped};
use rps_core::{Feature, Layout, Split};

/// One split's features: pooled in memory, layer3 memory-mapped.
pub struct Features {
    pub pooled: Array2<f32>,
    layer3: Mapped,
    pub labels: Vec<i64>,
    /// Rows per image (augmented views); rows are image-major.
    pub views: usize,
}

impl Features {
    /// Loads a split; its files must agree in length.
    pub fn load(layout: &Layout, split: Split, views: usize) -> Result<Self> {
        let pooled_path = layout.features(split, Feature::Pooled);
        let pooled = npy::read::<f32>(&pooled_path)?.into_dimensionality::<Ix2>()?;
        let labels_path = layout.features(split, Feature::Labels);
        let labels: Vec<i64> = npy::read::<i64>(&labels_path)?.iter().copied().collect();
        let layer3 = Mapped::open(&layout.features(split, Feature::Layer3))?;
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

    /// Checks that the `feature` rows have the per-image shape `graph` takes as
    /// its `features` input (`graph_dims`, batch first).
    pub fn check_fits(&self, feature: Feature, graph_dims: &[i64], graph: &Path) -> Result<()> {
        let ours: Vec<usize> = match feature {
            Feature::Pooled => vec![self.pooled.ncols()],
            Feature::Layer3 => self.layer3.view::<f32>()?.shape()[1..].to_vec(),
            Feature::Labels => bail!("labels are no graph's features"),
        };
        let fits = graph_dims.len() == ours.len() + 1
            && graph_dims[1..]
                .iter()
                .zip(&ours)
                .all(|(&g, &o)| g == o as i64);
        if !fits {
            bail!(
                "the {feature} features are [N, {}] per image, but {} takes {graph_dims:?}: \
                 `make extract` remakes the features after an export",
                ours.iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                graph.display()
            );
        }
        Ok(())
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

    /// The `feature` values of `rows`.
    pub fn rows(&self, feature: Feature, rows: &[usize]) -> Result<ArrayD<f32>> {
        match feature {
            Feature::Pooled => Ok(self.pooled.select(Axis(0), rows).into_dyn()),
            Feature::Layer3 => Ok(self.layer3.view::<f32>()?.select(Axis(0), rows)),
            Feature::Labels => bail!("labels are no graph's features"),
        }
    }
}
