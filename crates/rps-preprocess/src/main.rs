use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use rps_core::cli::DataArgs;
use rps_core::{Folder, defaults};
use rps_preprocess::Config;

/// Decodes, resizes and augments DATA/rps/{train,test}/<class>/ images into u8 tensors
/// in DATA/cache/: <split>_images.npy, <split>_labels.npy, index.csv, classes.txt,
/// samples.png and meta.json.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    data: DataArgs,
    /// A folder-per-class dataset with train/ and test/ inside (default: DATA/rps).
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Output images are SIZE x SIZE pixels.
    #[arg(long, default_value_t = defaults::IMAGE_SIZE)]
    image_size: u32,
    /// Augmented views made of each training image.
    #[arg(long, default_value_t = defaults::VIEWS)]
    views: usize,
    /// Seeds the augmentation (the same image, view and seed give the same pixels).
    #[arg(long, default_value_t = defaults::SEED)]
    seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(threads) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()?;
    }
    let layout = args.data.layout();
    let dataset = args.dataset.unwrap_or_else(|| layout.dir(Folder::Dataset));
    let config = Config {
        layout,
        dataset,
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
