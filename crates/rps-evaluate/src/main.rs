use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use rps_core::{Layout, OrtArgs};
use rps_evaluate::Config;

/// Scores the trained model (results/best.npz when a validation split was used, else
/// the last epoch's results/weights.npz) on the test split. Writes to DATA/results/:
/// summary.csv, per_class.csv, confusion.csv, predictions.csv, loss.png,
/// accuracy.png, confusion.png, errors.png and evaluate.json.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The pipeline's data folder.
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// Images per ONNX Runtime call.
    #[arg(long, default_value_t = 64)]
    batch: usize,
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
    let report = rps_evaluate::run(&config)?;
    println!(
        "test accuracy {:.4}, mean loss {:.4} ({})",
        report.accuracy,
        report.loss,
        report.weights.display()
    );
    println!("wrote {}", config.layout.results_dir().display());
    Ok(())
}
