//! The JSON sidecar written beside every stage's output: which stage made it, with
//! which settings, from which inputs, with which tool version, on which device, how
//! long it took, and what it found. One typed struct per stage: the struct is the
//! file's schema, read back by the stages after it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result, io};
use crate::{
    ClassWeights, Device, FtBn, GraphFile, Normalization, Phase, Schedule, Split, Unfreeze, atomic,
    defaults,
};

/// The stages that write a sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Export,
    Preprocess,
    Extract,
    Train,
    Evaluate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar<S, D> {
    pub stage: Stage,
    /// The version of the crate that wrote the output.
    pub tool_version: String,
    /// Every setting that shapes the output.
    pub settings: S,
    /// The files the output was made from.
    pub inputs: Vec<String>,
    /// For stages that run ONNX Runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
    pub seconds: f64,
    /// What the stage found and made (counts, skipped files, digests).
    pub details: D,
}

impl<S: Serialize + DeserializeOwned, D: Serialize + DeserializeOwned> Sidecar<S, D> {
    pub fn new(stage: Stage, tool_version: &str, settings: S, details: D) -> Self {
        Self {
            stage,
            tool_version: tool_version.into(),
            settings,
            inputs: Vec::new(),
            device: None,
            seconds: 0.0,
            details,
        }
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        atomic::write_bytes(path, format!("{text}\n").as_bytes())
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io("reading", path))?;
        serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// `graphs/export.json`.
pub type ExportMeta = Sidecar<ExportSettings, ExportDetails>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportSettings {
    /// torchvision's name of the ResNet: `resnet18`, `resnet34` or `resnet50`.
    #[serde(default = "default_arch")]
    pub arch: String,
    /// ResNet base width (64 = torchvision's).
    pub width: usize,
    /// Input images are `image_size` x `image_size` pixels.
    pub image_size: u32,
    /// Classes of the new head.
    pub classes: usize,
    pub weights: WeightsSource,
    /// The first stage phase 2 trains.
    #[serde(default = "default_unfreeze")]
    pub unfreeze: Unfreeze,
}

/// Exports written before `UNFREEZE` existed trained the last stage.
fn default_unfreeze() -> Unfreeze {
    Unfreeze::flag(defaults::UNFREEZE).expect("a valid default")
}

/// Exports written before the choice of ResNet were resnet18s.
fn default_arch() -> String {
    defaults::ARCH.into()
}

/// Where the backbone's weights came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum WeightsSource {
    File { path: String, sha256: String },
    Random { seed: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportDetails {
    /// Learned parameters of the transfer model, as PyTorch counts them.
    pub params_total: usize,
    pub params_trainable_head: usize,
    pub params_trainable_finetune: usize,
    /// The new head's tensors, as the network names them.
    pub head: HeadNames,
    /// What the network's input pixels go through.
    pub normalization: Normalization,
    /// A lower bound of the floats phase 2's step keeps per image for its backward:
    /// with the batch and the trained parameters, the least memory a step takes.
    pub finetune_floats_per_image: u64,
    /// A lower bound of the floats the backbone's forward holds per image at once:
    /// with extract's batch, the least memory it takes.
    pub backbone_floats_per_image: u64,
    /// The same for the eval graph of the trained stages, which evaluate runs.
    pub eval_floats_per_image: u64,
    /// Every file written, so that a changed or cut one can be told apart.
    pub files: Vec<FileDigest>,
}

/// A network's new head, a Linear layer: its weight `[classes, features]` and bias
/// `[classes]`, by name (torchvision's ResNets: `fc.weight`, `fc.bias`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadNames {
    pub weight: String,
    pub bias: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

impl FileDigest {
    /// The digest of `bytes` as the file `name`.
    pub fn of(name: &str, bytes: &[u8]) -> Self {
        Self {
            name: name.into(),
            bytes: bytes.len() as u64,
            sha256: format!("{:x}", Sha256::digest(bytes)),
        }
    }

    /// What differs between `bytes` and the file this digest records; `None` when
    /// they are the same.
    pub fn mismatch(&self, bytes: &[u8]) -> Option<String> {
        let found = Self::of(&self.name, bytes);
        if found.bytes != self.bytes {
            Some(format!(
                "{} bytes where export.json records {}",
                found.bytes, self.bytes
            ))
        } else if found.sha256 != self.sha256 {
            Some("changed since export (its sha256 differs from export.json's)".into())
        } else {
            None
        }
    }
}

impl ExportMeta {
    /// The sha256 recorded for the exported `file`.
    pub fn sha256(&self, file: GraphFile) -> Option<&str> {
        self.details
            .files
            .iter()
            .find(|f| f.name == file.file_name())
            .map(|f| f.sha256.as_str())
    }

    /// Checks `bytes` as the exported `file` against the digest recorded here,
    /// `path` naming it in the error.
    pub fn check_file(&self, file: GraphFile, path: &Path, bytes: &[u8]) -> Result<()> {
        let name = file.file_name();
        let problem = match self.details.files.iter().find(|f| f.name == name) {
            None => Some("export.json records no such file".to_string()),
            Some(digest) => digest.mismatch(bytes),
        };
        match problem {
            None => Ok(()),
            Some(message) => Err(Error::Invalid {
                path: path.to_path_buf(),
                message,
            }
            .made_by("export")),
        }
    }
}

/// `cache/meta.json`.
pub type PreprocessMeta = Sidecar<PreprocessSettings, PreprocessDetails>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessSettings {
    pub image_size: u32,
    /// Augmented views per training image.
    pub views: usize,
    pub seed: u64,
    /// How the tensors are stored, and the transforms that made them.
    pub storage: String,
    pub test_transform: String,
    pub train_transform: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PreprocessDetails {
    pub classes: Vec<String>,
    /// Tensor rows per split.
    pub rows: BTreeMap<Split, usize>,
    /// Files that could not be read, with why.
    pub skipped: Vec<String>,
}

impl PreprocessSettings {
    /// The settings of a cache of `image_size` pixels with `views` training views,
    /// with the storage and transforms rps-preprocess uses.
    pub fn new(image_size: u32, views: usize, seed: u64) -> Self {
        Self {
            image_size,
            views,
            seed,
            storage: "u8 [N,3,S,S], RGB, unnormalized; rows image-major (image i, view v at \
                      i*views+v)"
                .into(),
            test_transform: "Resize((S,S)) bilinear with antialiasing".into(),
            train_transform: "RandomResizedCrop(S, scale=(0.8,1.0), ratio=(3/4,4/3)), \
                              RandomHorizontalFlip(0.5), RandomRotation(15, nearest, fill 0), \
                              ColorJitter(brightness=0.1, contrast=0.1)"
                .into(),
        }
    }
}

/// `features/meta.json`.
pub type ExtractMeta = Sidecar<ExtractSettings, ExtractDetails>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractSettings {
    /// Images per backbone call.
    pub batch: usize,
    pub storage: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractDetails {
    pub splits: BTreeMap<Split, SplitRate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitRate {
    pub images: usize,
    pub images_per_second: f64,
}

/// `results/train.json`.
pub type TrainMeta = Sidecar<TrainSettings, TrainDetails>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    pub batch: usize,
    pub dropout: f64,
    pub head_epochs: usize,
    pub head_lr: f64,
    pub ft_epochs: usize,
    pub ft_lr: f64,
    pub weight_decay: f64,
    pub seed: u64,
    pub val_fraction: f64,
    pub head_schedule: Schedule,
    pub ft_schedule: Schedule,
    /// The trained stages' BatchNorm in phase 2.
    pub ft_bn: FtBn,
    pub ft_lr_mult: f64,
    pub patience: usize,
    pub class_weights: ClassWeights,
}

impl TrainSettings {
    /// `NAME: A then, B now` for each setting of `self` (then) that `now` changes.
    pub fn differences(&self, now: &TrainSettings) -> Vec<String> {
        let as_map = |settings: &TrainSettings| match serde_json::to_value(settings) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => unreachable!("settings serialize as an object"),
        };
        let (then, now) = (as_map(self), as_map(now));
        then.iter()
            .filter(|(name, value)| now.get(*name) != Some(value))
            .map(|(name, value)| {
                let current = now.get(name).map_or("nothing".into(), |v| v.to_string());
                format!("{name}: {value} then, {current} now")
            })
            .collect()
    }
}

impl Default for TrainSettings {
    /// The recipe's settings.
    fn default() -> Self {
        Self {
            batch: defaults::BATCH,
            dropout: defaults::DROPOUT,
            head_epochs: defaults::HEAD_EPOCHS,
            head_lr: defaults::HEAD_LR,
            ft_epochs: defaults::FT_EPOCHS,
            ft_lr: defaults::FT_LR,
            weight_decay: defaults::WEIGHT_DECAY,
            seed: defaults::SEED,
            val_fraction: defaults::VAL_FRACTION,
            head_schedule: Schedule::parse(defaults::HEAD_SCHEDULE).expect("a schedule"),
            ft_schedule: Schedule::parse(defaults::FT_SCHEDULE).expect("a schedule"),
            ft_bn: FtBn::flag(defaults::FT_BN).expect("a BatchNorm mode"),
            ft_lr_mult: defaults::FT_LR_MULT,
            patience: defaults::PATIENCE,
            class_weights: ClassWeights::flag(defaults::CLASS_WEIGHTS).expect("class weights"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainDetails {
    pub train_images: usize,
    pub val_images: usize,
    /// Which epoch's weights `weights.npz` and `model.onnx` hold.
    pub model_epoch: usize,
    /// Each class's weight in the training loss, in the order of `classes.txt`.
    pub class_weights: Vec<f64>,
    /// The phases `PATIENCE` ended before their last epoch.
    pub stopped_early: Vec<EarlyStop>,
}

/// A phase that `PATIENCE` ended early: where, and the epoch it waited on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStop {
    pub phase: Phase,
    /// The phase's last epoch.
    pub epoch: usize,
    /// The phase's epoch with the lowest validation loss, and that loss.
    pub best_epoch: usize,
    pub best_val_loss: f64,
    /// Epochs without a better validation loss that ended it (`PATIENCE`).
    pub patience: usize,
}

impl EarlyStop {
    /// What the report and the terminal say.
    pub fn describe(&self) -> String {
        format!(
            "{} stopped after epoch {}: no validation loss below epoch {}'s {:.4} for {} epochs (PATIENCE={})",
            self.phase,
            self.epoch,
            self.best_epoch,
            self.best_val_loss,
            self.patience,
            self.patience
        )
    }
}

/// `results/lr_find.json`: what `rps-train --lr-find` swept and suggests.
pub type LrFindMeta = Sidecar<TrainSettings, LrFindDetails>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrFindDetails {
    pub phases: Vec<LrFinding>,
    /// The sha256 of the phase 2 step graph the sweeps ran on (export.json's): a
    /// later export makes them another model's.
    #[serde(default)]
    pub graph: Option<String>,
}

/// One phase's sweep: its length, why it ended, and fastai's two suggestions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrFinding {
    pub phase: Phase,
    pub steps: usize,
    /// Why the sweep ended: it reached the last rate, or the loss diverged.
    pub ended: String,
    /// Where the smoothed loss falls fastest against log(rate) (fastai's `steep`).
    pub steepest: Option<f64>,
    /// The rate at the lowest smoothed loss, divided by 10 (fastai's `minimum`).
    pub minimum_over_10: Option<f64>,
    /// The sweep's rows and plot as written: `lr_find.json`, written last, says
    /// which files belong to it.
    #[serde(default)]
    pub files: Vec<FileDigest>,
}

/// `results/evaluate.json`.
pub type EvaluateMeta = Sidecar<EvaluateSettings, EvaluateDetails>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluateSettings {
    /// Images per scoring call.
    pub batch: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluateDetails {
    pub test_images: usize,
    pub accuracy: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecars_round_trip_and_keep_floats_as_given() {
        let (_dir, path) = crate::testing::temp_path("train.json");
        let settings = TrainSettings::default();
        let details = TrainDetails {
            train_images: 2520,
            val_images: 0,
            model_epoch: 40,
            class_weights: vec![1.0; 3],
            stopped_early: Vec::new(),
        };
        let mut meta = TrainMeta::new(Stage::Train, "0.0.0", settings, details);
        meta.device = Some(Device::Cpu);
        meta.inputs.push("data/features".into());
        meta.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"dropout\": 0.2,"), "{text}");
        assert!(text.contains("\"ft_schedule\": \"constant\","), "{text}");
        assert!(text.contains("\"class_weights\": \"none\"\n"), "{text}");
        assert!(text.contains("\"stage\": \"train\""), "{text}");
        assert_eq!(TrainMeta::read(&path).unwrap(), meta);
        let err = ExportMeta::read(&path).unwrap_err().to_string();
        assert!(err.contains("train.json"), "{err}");
    }
}
