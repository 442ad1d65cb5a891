//! The extracted features of a split, and a batch of them as a graph input.

use std::path::Path;

use anyhow::{Context, Result, bail};
use ndarray::{Array2, ArrayD, Axis, Ix2};
use ort::session::SessionInputValue;
use ort::value::TensorRef;
use rps_core::npy::{self, F16, Mapped};
use rps_core::{Feature, Layout, Split, Unfreeze};

/// One split's features: pooled in memory; what phase 2 reads memory-mapped (the
/// frozen layers' output, or the cached u8 images when nothing is frozen).
pub struct Features {
    pub pooled: Array2<f32>,
    frozen: Frozen,
    pub labels: Vec<i64>,
    /// Rows per image (augmented views); rows are image-major.
    pub views: usize,
}

/// Phase 2's input rows.
enum Frozen {
    /// f32 `features/<split>_frozen.npy`.
    Features(Mapped),
    /// The same stored as f16 (`FEATURES=f16`), computed on as f32.
    Halves(Mapped),
    /// The cache's u8 images: rows as extract read them.
    Pixels(Mapped),
}

/// Rows of features, as a graph takes them.
pub enum Batch {
    F32(ArrayD<f32>),
    U8(ArrayD<u8>),
}

impl Batch {
    /// The bytes it holds.
    fn bytes(&self) -> usize {
        match self {
            Batch::F32(a) => a.len() * std::mem::size_of::<f32>(),
            Batch::U8(a) => a.len(),
        }
    }

    /// The `features` input of a graph.
    pub fn input(&self) -> Result<SessionInputValue<'_>> {
        Ok(match self {
            Batch::F32(a) => TensorRef::from_array_view(a.view())?.into(),
            Batch::U8(a) => TensorRef::from_array_view(a.view())?.into(),
        })
    }
}

impl Frozen {
    fn open(layout: &Layout, split: Split, unfreeze: Unfreeze) -> Result<Self> {
        if !unfreeze.from_images() {
            let mapped = Mapped::open(&layout.features(split, Feature::Frozen))?;
            if mapped.view::<F16>().is_ok() {
                return Ok(Frozen::Halves(mapped));
            }
            mapped.view::<f32>()?;
            return Ok(Frozen::Features(mapped));
        }
        let mapped = Mapped::open(&layout.cache_tensor(split))?;
        if mapped.view::<u8>().is_err() {
            bail!(
                "{}: UNFREEZE=all trains from the cached u8 images, and this cache holds \
                 none: `make preprocess` remakes it",
                mapped.path().display()
            );
        }
        Ok(Frozen::Pixels(mapped))
    }

    fn mapped(&self) -> &Mapped {
        match self {
            Frozen::Features(m) | Frozen::Halves(m) | Frozen::Pixels(m) => m,
        }
    }

    /// The shape of the rows, the row count first.
    fn shape(&self) -> Result<Vec<usize>> {
        Ok(match self {
            Frozen::Features(m) => m.view::<f32>()?.shape().to_vec(),
            Frozen::Halves(m) => m.view::<F16>()?.shape().to_vec(),
            Frozen::Pixels(m) => m.view::<u8>()?.shape().to_vec(),
        })
    }

    fn rows(&self, rows: &[usize]) -> Result<Batch> {
        let batch = self.select(rows)?;
        self.mapped().read_rows(batch.bytes());
        Ok(batch)
    }

    fn select(&self, rows: &[usize]) -> Result<Batch> {
        Ok(match self {
            Frozen::Features(m) => Batch::F32(m.view::<f32>()?.select(Axis(0), rows)),
            Frozen::Halves(m) => Batch::F32(
                m.view::<F16>()?
                    .select(Axis(0), rows)
                    .mapv(|half| half.0.to_f32()),
            ),
            Frozen::Pixels(m) => Batch::U8(m.view::<u8>()?.select(Axis(0), rows)),
        })
    }
}

/// Every label in `0..classes`; else the file, the row and the value.
fn check_labels(labels: &[i64], classes: usize, path: &Path) -> Result<()> {
    let outside = |&label: &i64| usize::try_from(label).map_or(true, |l| l >= classes);
    if let Some(row) = labels.iter().position(outside) {
        let label = labels[row];
        bail!(
            "{}: row {row} has label {label}, but there are {classes} classes (0 to {}): \
             `make extract` remakes the features from the cache",
            path.display(),
            classes.saturating_sub(1)
        );
    }
    Ok(())
}

impl Features {
    /// Loads a split for training from `unfreeze`; its files must agree in length,
    /// and every label be one of the `classes`.
    pub fn load(
        layout: &Layout,
        split: Split,
        views: usize,
        unfreeze: Unfreeze,
        classes: usize,
    ) -> Result<Self> {
        let pooled_path = layout.features(split, Feature::Pooled);
        let pooled = npy::read::<f32>(&pooled_path)?
            .into_dimensionality::<Ix2>()
            .with_context(|| format!("{}: not a [rows, features] array", pooled_path.display()))?;
        let labels_path = layout.features(split, Feature::Labels);
        let labels: Vec<i64> = npy::read::<i64>(&labels_path)?.iter().copied().collect();
        check_labels(&labels, classes, &labels_path)?;
        let frozen = Frozen::open(layout, split, unfreeze)?;
        let frozen_rows = frozen.shape()?[0];
        let rows = pooled.nrows();
        if labels.len() != rows || frozen_rows != rows {
            bail!(
                "{split} features disagree in length: {} has {rows} rows, {} has {}, {} has {} labels",
                pooled_path.display(),
                frozen.mapped().path().display(),
                frozen_rows,
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
            frozen,
            labels,
            views,
        })
    }

    /// Checks that the `feature` rows have the per-image shape `graph` takes as
    /// its `features` input (`graph_dims`, batch first).
    pub fn check_fits(&self, feature: Feature, graph_dims: &[i64], graph: &Path) -> Result<()> {
        let ours: Vec<usize> = match feature {
            Feature::Pooled => vec![self.pooled.ncols()],
            Feature::Frozen => self.frozen.shape()?[1..].to_vec(),
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
    pub fn rows(&self, feature: Feature, rows: &[usize]) -> Result<Batch> {
        match feature {
            Feature::Pooled => Ok(Batch::F32(self.pooled.select(Axis(0), rows).into_dyn())),
            Feature::Frozen => self.frozen.rows(rows),
            Feature::Labels => bail!("labels are no graph's features"),
        }
    }
}
