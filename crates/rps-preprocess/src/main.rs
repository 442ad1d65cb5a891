use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use rps_core::cli::{DataArgs, whole};
use rps_core::defaults::ranges;
use rps_core::{Folder, defaults};
use rps_preprocess::{Config, Images};

/// Decodes, resizes and augments DATA/rps/{train,test}/<class>/ images (or those --list
/// names) into u8 tensors
/// in DATA/cache/: <split>_images.npy, <split>_labels.npy, index.csv, classes.txt,
/// samples.png and meta.json.
#[derive(Parser)]
#[command(version, allow_negative_numbers = true)]
struct Args {
    #[command(flatten)]
    data: DataArgs,
    /// A folder-per-class dataset with train/ and test/ inside (default: DATA/rps).
    #[arg(long, value_name = "DIR")]
    dataset: Option<PathBuf>,
    /// Instead of a dataset folder, the images listed in FILE, as `rps-fetch folder`
    /// writes DATA/rps/split.csv (path, split and class of each, read where it is).
    #[arg(long, value_name = "FILE", conflicts_with = "dataset")]
    list: Option<PathBuf>,
    /// Output images are SIZE x SIZE pixels, 32 to 1024.
    #[arg(long, default_value_t = defaults::IMAGE_SIZE, value_parser = whole::<u32>(ranges::IMAGE_SIZE))]
    image_size: u32,
    /// Augmented views made of each training image, 1 to 100.
    #[arg(long, default_value_t = defaults::VIEWS, value_parser = whole::<usize>(ranges::VIEWS))]
    views: usize,
    /// Seeds the augmentation (the same image, view and seed give the same pixels).
    #[arg(long, default_value_t = defaults::SEED)]
    seed: u64,
    /// Worker threads, 1 to 1024 (default: all cores).
    #[arg(long, value_parser = whole::<usize>(ranges::THREADS))]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    rps_core::cli::main(run)
}

fn run(args: Args) -> Result<()> {
    if let Some(threads) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()?;
    }
    let layout = args.data.layout();
    let images = match (args.list, args.dataset) {
        (Some(list), _) => Images::List(list),
        (None, dataset) => Images::Folder(dataset.unwrap_or_else(|| layout.dir(Folder::Dataset))),
    };
    let config = Config {
        layout,
        images,
        image_size: args.image_size,
        views: args.views,
        seed: args.seed,
    };
    let report = rps_preprocess::run(&config)?;
    for (split, rows) in &report.rows {
        println!("{split}: {rows} rows");
    }
    println!("classes: {}", report.classes.names().join(", "));
    if !report.skipped.is_empty() {
        println!(
            "skipped {} unreadable files (listed in meta.json)",
            report.skipped.len()
        );
    }
    Ok(())
}
