//! The whole pipeline: `make all` on the shared archives with a short recipe, timed
//! from outside, and from its sidecars the projected time of the default recipe.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rps_core::rows::EpochRow;
use rps_core::sidecar::{ExtractMeta, PreprocessMeta, TrainMeta};
use rps_core::{CacheFile, Layout, ResultFile, Split, defaults, table};
use rps_model::network::Net;

/// The settings of a run that change its length.
pub struct Recipe {
    pub views: usize,
    pub head_epochs: usize,
    pub ft_epochs: usize,
}

impl Recipe {
    /// What the issue compares: one view, two epochs of each phase.
    pub const SHORT: Recipe = Recipe {
        views: 1,
        head_epochs: 2,
        ft_epochs: 2,
    };
    pub const DEFAULT: Recipe = Recipe {
        views: defaults::VIEWS,
        head_epochs: defaults::HEAD_EPOCHS,
        ft_epochs: defaults::FT_EPOCHS,
    };
}

/// Wall seconds of `make all` into `data`; its output goes to `data`'s `make.log`.
pub fn make_all(
    net: Net,
    data: &Path,
    archives: &Path,
    weights: &Path,
    threads: usize,
    recipe: &Recipe,
) -> Result<f64> {
    std::fs::create_dir_all(data)?;
    let log_path = data.join("make.log");
    let log = std::fs::File::create(&log_path)?;
    let start = Instant::now();
    let status = make_all_command(net, data, (archives, weights), threads, recipe)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("running make")?;
    let seconds = start.elapsed().as_secs_f64();
    if !status.success() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        bail!("make all failed ({status}): {}", tail.join(" / "));
    }
    Ok(seconds)
}

/// `make all` on `archives` with `weights` and `recipe`, into `data`, at the recipe's
/// own depth: under `make bench UNFREEZE=...` make hands its command line's settings
/// down to this make (in `MAKEFLAGS` and the environment), and the whole pipeline
/// then trained from that depth while PyTorch's script trained from the last stage.
fn make_all_command(
    net: Net,
    data: &Path,
    (archives, weights): (&Path, &Path),
    threads: usize,
    recipe: &Recipe,
) -> Command {
    let mut command = Command::new("make");
    command
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .arg("all")
        .arg(format!("ARCH={}", net.name()))
        .arg(format!("UNFREEZE={}", defaults::UNFREEZE))
        .arg(format!("DATA={}", data.display()))
        .arg(format!("FROM={}", archives.display()))
        .arg(format!("WEIGHTS={}", weights.display()))
        .arg(format!("THREADS={threads}"))
        .arg(format!("VIEWS={}", recipe.views))
        .arg(format!("HEAD_EPOCHS={}", recipe.head_epochs))
        .arg(format!("FT_EPOCHS={}", recipe.ft_epochs));
    command
}

/// Where the time of a finished run went, from its sidecars.
pub struct RunTimes {
    pub wall: f64,
    preprocess: f64,
    extract: f64,
    /// Training images (one view each) and extract's rate on them.
    train_images: usize,
    test_images: usize,
    extract_rate: f64,
    train: f64,
    epochs: Vec<EpochRow>,
}

impl RunTimes {
    pub fn read(layout: &Layout, wall: f64) -> Result<Self> {
        let preprocess = PreprocessMeta::read(&layout.cache(CacheFile::Meta))?;
        let extract = ExtractMeta::read(&layout.features_meta())?;
        let train = TrainMeta::read(&layout.result(ResultFile::TrainMeta))?;
        let split = |split: Split| {
            extract
                .details
                .splits
                .get(&split)
                .copied()
                .with_context(|| format!("features/meta.json has no {split} split"))
        };
        let (train_split, test_split) = (split(Split::Train)?, split(Split::Test)?);
        Ok(Self {
            wall,
            preprocess: preprocess.seconds,
            extract: extract.seconds,
            train_images: train_split.images / preprocess.settings.views.max(1),
            test_images: test_split.images,
            extract_rate: train_split.images_per_second,
            train: train.seconds,
            epochs: table::read(&layout.result(ResultFile::Epochs))?,
        })
    }

    /// The default recipe's seconds on the same images, by stage: what does not
    /// depend on the recipe (fetch, export, evaluate, start-ups) as measured;
    /// preprocess at `preprocess_rates` (test, train images/s, measured on full-size
    /// PNGs, as the shared archives' are small); extract at this run's rate;
    /// training at this run's mean epoch of each phase, plus its start and finish.
    pub fn projected(&self, preprocess_rates: (f64, f64), recipe: &Recipe) -> Projection {
        let fixed = self.wall - self.preprocess - self.extract - self.train;
        let train_views = (self.train_images * recipe.views) as f64;
        let preprocess =
            train_views / preprocess_rates.1 + self.test_images as f64 / preprocess_rates.0;
        let extract = (train_views + self.test_images as f64) / self.extract_rate;
        let mean_epoch = |phase: rps_core::Phase| {
            let rows: Vec<f64> = self
                .epochs
                .iter()
                .filter(|r| r.phase == phase)
                .map(|r| r.seconds)
                .collect();
            rows.iter().sum::<f64>() / rows.len().max(1) as f64
        };
        let epochs: f64 = self.epochs.iter().map(|r| r.seconds).sum();
        let train = (self.train - epochs)
            + recipe.head_epochs as f64 * mean_epoch(rps_core::Phase::Head)
            + recipe.ft_epochs as f64 * mean_epoch(rps_core::Phase::Finetune);
        Projection {
            fixed,
            preprocess,
            extract,
            train,
        }
    }
}

/// Seconds of each part of a projected run.
pub struct Projection {
    pub fixed: f64,
    pub preprocess: f64,
    pub extract: f64,
    pub train: f64,
}

impl Projection {
    pub fn total(&self) -> f64 {
        self.fixed + self.preprocess + self.extract + self.train
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_pipeline_trains_from_the_recipes_depth_whatever_make_bench_was_given() {
        let paths = (Path::new("archives"), Path::new("weights.pth"));
        let command = make_all_command(Net::ResNet50, Path::new("d"), paths, 2, &Recipe::SHORT);
        let args: Vec<String> = command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        for setting in ["UNFREEZE=last", "ARCH=resnet50", "VIEWS=1", "FT_EPOCHS=2"] {
            assert!(
                args.iter().any(|arg| arg == setting),
                "{setting} in {args:?}"
            );
        }
    }
}
