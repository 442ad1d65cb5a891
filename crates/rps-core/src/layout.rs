//! Every path under the pipeline's data folder (`DATA`, default `data/`). Stages ask
//! this type for paths; none formats one itself. The README's "Files" section
//! describes each.

use std::fmt;
use std::path::{Path, PathBuf};

/// A dataset split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub const ALL: [Split; 2] = [Split::Train, Split::Test];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The files rps-export writes into the graphs folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFile {
    /// images -> layer3 and pooled features (frozen, eval mode).
    Backbone,
    /// images -> ImageNet class probabilities (the base model).
    Imagenet,
    HeadStep,
    HeadEval,
    FinetuneStep,
    FinetuneEval,
    /// images -> class probabilities of the transfer model.
    Model,
    /// The transfer model's starting weights: backbone and new head (`.npz`).
    Weights,
    /// Settings, weight-file sha256 and parameter counts.
    Meta,
}

impl GraphFile {
    pub fn file_name(self) -> &'static str {
        match self {
            GraphFile::Backbone => "backbone.onnx",
            GraphFile::Imagenet => "imagenet.onnx",
            GraphFile::HeadStep => "head_step.onnx",
            GraphFile::HeadEval => "head_eval.onnx",
            GraphFile::FinetuneStep => "finetune_step.onnx",
            GraphFile::FinetuneEval => "finetune_eval.onnx",
            GraphFile::Model => "model.onnx",
            GraphFile::Weights => "weights.npz",
            GraphFile::Meta => "export.json",
        }
    }
}

/// The data folder and the stage folders under it.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Downloads, as fetched: archives, weights, class names.
    pub fn raw_dir(&self) -> PathBuf {
        self.root.join("raw")
    }

    pub fn raw_file(&self, name: &str) -> PathBuf {
        self.raw_dir().join(name)
    }

    /// `sha256sum`-format checksums of every fetched file.
    pub fn checksums(&self) -> PathBuf {
        self.raw_dir().join("SHA256SUMS")
    }

    /// The extracted dataset: `rps/<split>/<class>/<image>`.
    pub fn dataset_dir(&self) -> PathBuf {
        self.root.join("rps")
    }

    pub fn dataset_split(&self, split: Split) -> PathBuf {
        self.dataset_dir().join(split.name())
    }

    pub fn dataset_summary(&self) -> PathBuf {
        self.dataset_dir().join("summary.csv")
    }

    /// ONNX graphs written by rps-export.
    pub fn graphs_dir(&self) -> PathBuf {
        self.root.join("graphs")
    }

    pub fn graph(&self, file: GraphFile) -> PathBuf {
        self.graphs_dir().join(file.file_name())
    }

    /// Preprocessed image tensors.
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// `[N,3,S,S]` u8 pixels of a split, rows as in `index.csv`.
    pub fn cache_tensor(&self, split: Split) -> PathBuf {
        self.cache_dir().join(format!("{split}_images.npy"))
    }

    pub fn cache_labels(&self, split: Split) -> PathBuf {
        self.cache_dir().join(format!("{split}_labels.npy"))
    }

    pub fn cache_index(&self) -> PathBuf {
        self.cache_dir().join("index.csv")
    }

    pub fn classes(&self) -> PathBuf {
        self.cache_dir().join("classes.txt")
    }

    /// The recipe's first figure: a few training images with their classes.
    pub fn samples(&self) -> PathBuf {
        self.cache_dir().join("samples.png")
    }

    /// Backbone features written by rps-extract.
    pub fn features_dir(&self) -> PathBuf {
        self.root.join("features")
    }

    pub fn features(&self, split: Split, output: &str) -> PathBuf {
        self.features_dir().join(format!("{split}_{output}.npy"))
    }

    /// Training results, metrics, plots and the deployable model.
    pub fn results_dir(&self) -> PathBuf {
        self.root.join("results")
    }

    pub fn result(&self, file_name: &str) -> PathBuf {
        self.results_dir().join(file_name)
    }

    /// The metadata sidecar of a stage's output folder.
    pub fn meta(dir: &Path) -> PathBuf {
        dir.join("meta.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_sit_under_the_root() {
        let layout = Layout::new("/d");
        assert_eq!(
            layout.cache_tensor(Split::Train),
            Path::new("/d/cache/train_images.npy")
        );
        assert_eq!(
            layout.features(Split::Test, "pooled"),
            Path::new("/d/features/test_pooled.npy")
        );
        assert_eq!(layout.dataset_split(Split::Test), Path::new("/d/rps/test"));
        assert_eq!(
            Layout::meta(&layout.graphs_dir()),
            Path::new("/d/graphs/meta.json")
        );
    }
}
