use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use rps_core::{Layout, OrtArgs};
use rps_extract::Config;

/// Runs the frozen backbone (DATA/graphs/backbone.onnx) over the cached images
/// (DATA/cache/) and writes layer3 and pooled features to DATA/features/.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The pipeline's data folder.
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// Images per ONNX Runtime call (default: 32 on CPU, 128 on CUDA).
    #[arg(long)]
    batch: Option<usize>,
    #[command(flatten)]
    ort: OrtArgs,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let config = Config {
        layout: Layout::new(&args.data),
        batch: args.batch,
        device: args.ort.device,
        threads: args.ort.threads(),
    };
    let report = rps_extract::run(&config)?;
    println!("device: {}", report.device);
    for (split, n, seconds) in &report.splits {
        println!(
            "{split}: {n} images in {seconds:.1} s ({:.1} images/s, {:.2} ms/image)",
            *n as f64 / seconds,
            seconds * 1e3 / *n as f64
        );
    }
    Ok(())
}
