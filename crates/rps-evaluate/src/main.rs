use anyhow::Result;
use clap::Parser;
use rps_core::cli::{StageArgs, whole};
use rps_core::defaults::ranges;
use rps_core::{Folder, defaults};
use rps_evaluate::Config;
use std::process::ExitCode;

/// Scores the trained model (results/best.npz when a validation split was used, else
/// the last epoch's results/weights.npz) on the test split's features with
/// graphs/finetune_eval.onnx. Writes to DATA/results/: summary.csv, per_class.csv,
/// confusion.csv, predictions.csv, loss.png, accuracy.png, confusion.png, errors.png
/// and evaluate.json.
#[derive(Parser)]
#[command(version, allow_negative_numbers = true)]
struct Args {
    #[command(flatten)]
    stage: StageArgs,
    /// Images per ONNX Runtime call, 1 to 4096.
    #[arg(long, default_value_t = defaults::BATCH, value_parser = whole::<usize>(ranges::BATCH))]
    batch: usize,
}

fn main() -> ExitCode {
    rps_core::cli::main(run)
}

fn run(args: Args) -> Result<()> {
    let config = Config {
        layout: args.stage.data.layout(),
        session: args.stage.ort.options(),
        batch: args.batch,
    };
    let report = rps_evaluate::run(&config)?;
    println!(
        "test accuracy {:.4}, mean loss {:.4} ({})",
        report.accuracy,
        report.loss,
        report.weights.display()
    );
    println!("model.onnx holds epoch {}", report.model_epoch);
    if let Some(warning) = &report.warning {
        eprintln!("evaluate: warning: {warning}");
    }
    println!("wrote {}", config.layout.dir(Folder::Results).display());
    Ok(())
}
