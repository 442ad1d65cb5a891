//! Every path under the pipeline's data folder (`DATA`, default `data/`). Stages ask
//! this type for paths; none formats one itself. The README's "Files" section
//! describes each.

use std::fmt;
use std::path::{Path, PathBuf};

/// A dataset split.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
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

/// An enum of the files in one folder, each variant with its file name.
macro_rules! file_names {
    ($(#[$doc:meta])* $kind:ident { $($(#[$vdoc:meta])* $variant:ident => $file:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $kind {
            $($(#[$vdoc])* $variant,)+
        }

        impl $kind {
            pub const ALL: &[$kind] = &[$($kind::$variant,)+];

            pub fn file_name(self) -> &'static str {
                match self {
                    $($kind::$variant => $file,)+
                }
            }
        }

        impl fmt::Display for $kind {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.file_name())
            }
        }
    };
}

file_names! {
    /// The files rps-export writes into `graphs/`.
    GraphFile {
        /// images -> the frozen layers' output and pooled features (eval mode).
        Backbone => "backbone.onnx",
        /// images -> ImageNet class probabilities (the base model).
        Imagenet => "imagenet.onnx",
        /// The phase 1 train step: pooled features -> the head's Adam step.
        HeadStep => "head_step.onnx",
        /// Phase 1 scoring: pooled features and the head's weights -> loss, logits.
        HeadEval => "head_eval.onnx",
        /// The phase 2 train step: the frozen layers' output (or the images, when
        /// nothing is frozen) -> the Adam step of every trained stage and the head.
        FinetuneStep => "finetune_step.onnx",
        /// The same step with the trained stages' BatchNorm in eval mode (`FT_BN=eval`):
        /// the running statistics normalize and pass through unchanged.
        FinetuneStepBnEval => "finetune_step_bn_eval.onnx",
        /// Phase 2 scoring: the same features and the trained weights -> loss, logits.
        FinetuneEval => "finetune_eval.onnx",
        /// images -> class probabilities, the head still zero: train writes
        /// `results/model.onnx` from it with the trained weights.
        Classifier => "classifier.onnx",
        /// The backbone's weights (`.npz`), where training starts.
        Weights => "weights.npz",
        /// One row per layer: name, kind, output shape, parameters, what trains.
        Summary => "summary.csv",
        /// Settings, parameter counts and every file's digest.
        Meta => "export.json",
    }
}

file_names! {
    /// What rps-extract writes per split into `features/`.
    Feature {
        /// `[N,C,H,W]` f32: the output of the frozen layers, the first trained
        /// stage's input (none when nothing is frozen).
        Frozen => "frozen",
        /// `[N,8w]` f32: layer4 then global average pooling.
        Pooled => "pooled",
        /// `[N]` int64 labels, rows as in the cache.
        Labels => "labels",
    }
}

file_names! {
    /// What rps-train and rps-evaluate write into `results/`.
    ResultFile {
        /// One row per epoch, written as training goes.
        Epochs => "epochs.csv",
        /// Parameter counts per phase.
        Params => "params.csv",
        /// The trained model's weights.
        Weights => "weights.npz",
        /// The weights of the epoch with the lowest validation loss.
        Best => "best.npz",
        /// The last completed epoch's state, to resume from.
        Checkpoint => "checkpoint",
        TrainMeta => "train.json",
        /// images -> class probabilities of the trained model, usable alone.
        Model => "model.onnx",
        Summary => "summary.csv",
        PerClass => "per_class.csv",
        Confusion => "confusion.csv",
        Predictions => "predictions.csv",
        LossPlot => "loss.png",
        AccuracyPlot => "accuracy.png",
        /// The head's learning rate at each epoch's first and last step.
        RatePlot => "lr.png",
        ConfusionPlot => "confusion.png",
        ErrorsPlot => "errors.png",
        /// A copy of `cache/samples.png`, so that the report's folder stands alone.
        SamplesPlot => "samples.png",
        EvaluateMeta => "evaluate.json",
        /// One static page of the whole run.
        Report => "report.html",
        /// `rps-train --lr-find`: each phase's sweep, its plot, and the suggestions.
        LrFindHead => "lr_find_head.csv",
        LrFindFinetune => "lr_find_finetune.csv",
        LrFindHeadPlot => "lr_find_head.png",
        LrFindFinetunePlot => "lr_find_finetune.png",
        LrFindMeta => "lr_find.json",
    }
}

impl ResultFile {
    /// The learning-rate finder's rows and plot of `phase`.
    pub fn lr_find(phase: crate::Phase) -> (ResultFile, ResultFile) {
        match phase {
            crate::Phase::Head => (ResultFile::LrFindHead, ResultFile::LrFindHeadPlot),
            crate::Phase::Finetune => (ResultFile::LrFindFinetune, ResultFile::LrFindFinetunePlot),
        }
    }
}

file_names! {
    /// What a checkpoint folder holds.
    CheckpointFile {
        /// Parameters, Adam moments, BatchNorm statistics and the step count.
        State => "state.npz",
        /// The whole model's weights at that epoch.
        Weights => "weights.npz",
        /// The phase and epoch reached, and the settings that got there.
        Progress => "progress.json",
    }
}

file_names! {
    /// The folders under `DATA`, one a stage (see docs/ARCHITECTURE.md for owners).
    Folder {
        /// Downloads, as fetched: archives, weights, class names.
        Raw => "raw",
        /// The extracted dataset: `rps/<split>/<class>/<image>`.
        Dataset => "rps",
        /// ONNX graphs written by rps-export.
        Graphs => "graphs",
        /// Preprocessed image tensors.
        Cache => "cache",
        /// Backbone features written by rps-extract.
        Features => "features",
        /// Training results, metrics, plots and the deployable model.
        Results => "results",
    }
}

file_names! {
    /// What rps-preprocess writes into `cache/` besides the split tensors.
    CacheFile {
        /// `row,split,view,path,class,label`: what each tensor row holds.
        Index => "index.csv",
        /// Class names, one a line, in label order.
        Classes => "classes.txt",
        /// The recipe's first figure: a few training images with their classes.
        Samples => "samples.png",
        Meta => "meta.json",
    }
}

/// The data folder, and every path under it.
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

    /// What `stage` left, listed for make ([`crate::outputs`]).
    pub fn outputs(&self, stage: &str) -> PathBuf {
        self.root.join(".outputs").join(stage)
    }

    /// What every stage that writes under DATA holds while it runs
    /// ([`crate::lock::DataLock`]).
    pub fn lock(&self) -> PathBuf {
        self.root.join(".lock")
    }

    pub fn dir(&self, folder: Folder) -> PathBuf {
        self.root.join(folder.file_name())
    }

    /// A download in `raw/`, by its file name.
    pub fn raw_file(&self, name: &str) -> PathBuf {
        self.dir(Folder::Raw).join(name)
    }

    /// `sha256sum`-format checksums of every fetched file.
    pub fn checksums(&self) -> PathBuf {
        self.raw_file("SHA256SUMS")
    }

    pub fn dataset_split(&self, split: Split) -> PathBuf {
        self.dir(Folder::Dataset).join(split.name())
    }

    /// A person's own folder's images and their splits (`rps-fetch folder`).
    pub fn dataset_list(&self) -> PathBuf {
        self.dir(Folder::Dataset).join("split.csv")
    }

    /// The class names of a person's own folder, rewritten only when they change
    /// (what export waits on: not each image added).
    pub fn dataset_classes(&self) -> PathBuf {
        self.dir(Folder::Dataset).join("classes.txt")
    }

    /// Images per split and class, written last by rps-fetch.
    pub fn dataset_summary(&self) -> PathBuf {
        self.dir(Folder::Dataset).join("summary.csv")
    }

    pub fn graph(&self, file: GraphFile) -> PathBuf {
        self.dir(Folder::Graphs).join(file.file_name())
    }

    /// `[N,3,S,S]` u8 pixels of a split, rows as in `index.csv`.
    pub fn cache_tensor(&self, split: Split) -> PathBuf {
        self.dir(Folder::Cache).join(format!("{split}_images.npy"))
    }

    /// `[N]` int64 labels of a split.
    pub fn cache_labels(&self, split: Split) -> PathBuf {
        self.dir(Folder::Cache).join(format!("{split}_labels.npy"))
    }

    pub fn cache(&self, file: CacheFile) -> PathBuf {
        self.dir(Folder::Cache).join(file.file_name())
    }

    pub fn features(&self, split: Split, feature: Feature) -> PathBuf {
        self.dir(Folder::Features)
            .join(format!("{split}_{feature}.npy"))
    }

    pub fn features_meta(&self) -> PathBuf {
        self.dir(Folder::Features).join(META)
    }

    pub fn result(&self, file: ResultFile) -> PathBuf {
        self.dir(Folder::Results).join(file.file_name())
    }

    pub fn checkpoint(&self, file: CheckpointFile) -> PathBuf {
        self.result(ResultFile::Checkpoint).join(file.file_name())
    }
}

/// The metadata sidecar of the features folder.
const META: &str = "meta.json";

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
            layout.features(Split::Test, Feature::Pooled),
            Path::new("/d/features/test_pooled.npy")
        );
        assert_eq!(layout.dataset_split(Split::Test), Path::new("/d/rps/test"));
        assert_eq!(layout.features_meta(), Path::new("/d/features/meta.json"));
        assert_eq!(
            layout.cache(CacheFile::Meta),
            Path::new("/d/cache/meta.json")
        );
        assert_eq!(
            layout.checkpoint(CheckpointFile::Progress),
            Path::new("/d/results/checkpoint/progress.json")
        );
    }
}
