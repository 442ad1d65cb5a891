//! The recipe's settings, defined once: every binary's flags take their defaults from
//! here, and the Makefile's defaults, `make help` and the README's variables table
//! must say the same (`tests/flags.rs` checks that they do).

/// The pipeline's data folder (`DATA`).
pub const DATA: &str = "data";
/// Seeds augmentation, the new head's initialization, shuffling, dropout and the
/// validation split (`SEED`).
pub const SEED: u64 = 0;
/// Input images are `IMAGE_SIZE` x `IMAGE_SIZE` pixels (`IMAGE_SIZE`).
pub const IMAGE_SIZE: u32 = 224;
/// Augmented views cached per training image (`VIEWS`).
pub const VIEWS: usize = 5;
/// Images per training step, and per scoring call (`BATCH`).
pub const BATCH: usize = 64;
/// Dropout rate before the head's Linear layer (`DROPOUT`).
pub const DROPOUT: f64 = 0.2;
/// Phase 1 (head) epochs and Adam learning rate (`HEAD_EPOCHS`, `HEAD_LR`).
pub const HEAD_EPOCHS: usize = 20;
pub const HEAD_LR: f64 = 1e-4;
/// Phase 2 (the stages from `UNFREEZE` and the head) epochs and Adam learning rate
/// (`FT_EPOCHS`, `FT_LR`).
pub const FT_EPOCHS: usize = 20;
pub const FT_LR: f64 = 1e-7;
/// How each phase's rate moves over its steps (`HEAD_SCHEDULE`, `FT_SCHEDULE`):
/// `constant` (the recipe), `one-cycle` or `cosine`.
pub const HEAD_SCHEDULE: &str = "constant";
pub const FT_SCHEDULE: &str = "constant";
/// The trained stages' BatchNorm in phase 2 (`FT_BN`): `train` (the recipe: batch
/// statistics, running ones updated) or `eval` (running statistics, kept).
pub const FT_BN: &str = "train";
/// Phase 2's rate per stage (`FT_LR_MULT`): each trained stage gets the rate of the
/// one after it divided by this; the head keeps `FT_LR`. 1 gives every stage `FT_LR`.
pub const FT_LR_MULT: f64 = 1.0;
/// A phase ends after this many epochs without a better validation loss
/// (`PATIENCE`, needs `VAL_FRACTION`); 0 never ends one early.
pub const PATIENCE: usize = 0;
/// Each class's weight in the training loss (`CLASS_WEIGHTS`): `none` (the recipe),
/// `balanced`, or one weight per class separated by commas.
pub const CLASS_WEIGHTS: &str = "none";
/// The phases `make lr-find` (`rps-train --lr-find`) sweeps: head, finetune or
/// both (`LR_FIND`).
pub const LR_FIND: &str = "both";
/// Adam's beta1 (PyTorch's default), which one-cycle moves instead.
pub const ADAM_BETA1: f64 = 0.9;
/// The learning-rate finder's sweep, fastai's `lr_find` defaults: the rate rises
/// exponentially from `LR_FIND_START` to `LR_FIND_END` over `LR_FIND_STEPS` steps,
/// stopping early once the smoothed loss exceeds `LR_FIND_DIVERGED` times its
/// minimum.
pub const LR_FIND_START: f64 = 1e-7;
pub const LR_FIND_END: f64 = 10.0;
pub const LR_FIND_STEPS: usize = 100;
pub const LR_FIND_DIVERGED: f64 = 4.0;
/// Decoupled (AdamW) weight decay; the recipe's plain Adam has none.
pub const WEIGHT_DECAY: f64 = 0.0;
/// Share of each class's images tested on when a folder of your own images has no
/// test split (`TEST_FRACTION`).
pub const TEST_FRACTION: f64 = 0.2;
/// Share of training images held out to pick the best epoch (`VAL_FRACTION`).
pub const VAL_FRACTION: f64 = 0.0;
/// The network (`ARCH`): resnet18, resnet34, resnet50, mobilenet_v2 or
/// efficientnet_lite0.
pub const ARCH: &str = "resnet18";
/// Where phase 2 starts training (`UNFREEZE`): `last`, the network's last stage (the
/// recipe: layer4 for the ResNets), `all`, or a stage by its name (`make summary`).
pub const UNFREEZE: &str = "last";
/// The network's width (`WIDTH`): `full`, its published one, or the channels of
/// its first stage.
pub const WIDTH: &str = "full";
/// Where ONNX Runtime runs (`DEVICE`): `auto` (CUDA if a session really runs on
/// it), `cpu` or `cuda`.
pub const DEVICE: &str = "auto";
/// How extract stores the frozen layers' output (`FEATURES`): `f32`, or `f16` at
/// half the bytes.
pub const FEATURES: &str = "f32";
/// Images per backbone call on each device (`EXTRACT_BATCH` overrides both).
pub const EXTRACT_BATCH_CPU: usize = 32;
pub const EXTRACT_BATCH_CUDA: usize = 128;
/// The recipe's dataset archives (`TRAIN_URL`, `TEST_URL`).
pub const TRAIN_URL: &str = "https://storage.googleapis.com/download.tensorflow.org/data/rps.zip";
pub const TEST_URL: &str =
    "https://storage.googleapis.com/download.tensorflow.org/data/rps-test-set.zip";
/// Download attempts before giving up on a URL.
pub const ATTEMPTS: u32 = 6;
/// Zip-bomb guard: the most one archive may unpack to.
pub const MAX_UNPACKED_BYTES: u64 = 4 << 30;

/// What each numeric setting may be; the flags refuse anything else, naming the flag,
/// the value and the range.
pub mod ranges {
    use std::ops::RangeInclusive;

    use crate::cli::Interval;

    /// Below 32 pixels layer4 has nothing left to see; above 1024 a batch of train
    /// steps no longer fits in memory.
    pub const IMAGE_SIZE: RangeInclusive<u64> = 32..=1024;
    pub const WIDTH: RangeInclusive<u64> = 1..=256;
    /// A classifier needs two classes.
    pub const CLASSES: RangeInclusive<u64> = 2..=100_000;
    pub const VIEWS: RangeInclusive<u64> = 1..=100;
    pub const BATCH: RangeInclusive<u64> = 1..=4096;
    pub const EPOCHS: RangeInclusive<u64> = 0..=100_000;
    pub const ATTEMPTS: RangeInclusive<u64> = 1..=100;
    pub const THREADS: RangeInclusive<u64> = 1..=1024;
    pub const MAX_UNPACKED_BYTES: RangeInclusive<u64> = 1..=u64::MAX;
    pub const LR: Interval = Interval::closed(0.0, 10.0);
    pub const DROPOUT: Interval = Interval::half_open(0.0, 1.0);
    pub const WEIGHT_DECAY: Interval = Interval::closed(0.0, 1.0);
    pub const VAL_FRACTION: Interval = Interval::half_open(0.0, 1.0);
    /// Both splits keep images.
    pub const TEST_FRACTION: Interval = Interval::open(0.0, 1.0);
    /// Above 0: a factor of 100 between neighbouring stages is already more than
    /// fastai's `slice` spreads over a whole network.
    pub const FT_LR_MULT: Interval = Interval::closed(0.01, 100.0);
    pub const PATIENCE: RangeInclusive<u64> = 0..=100_000;
}
