use anyhow::Result;
use clap::Parser;
use rps_core::cli::{StageArgs, whole};
use rps_core::defaults::{self, ranges};
use rps_core::npy::Precision;
use rps_extract::Config;
use std::process::ExitCode;

/// Runs the frozen backbone (DATA/graphs/backbone.onnx) over the cached images
/// (DATA/cache/) and writes the frozen layers' output (phase 2's input; none with
/// UNFREEZE=all) and the pooled features to DATA/features/.
#[derive(Parser)]
#[command(version, allow_negative_numbers = true)]
struct Args {
    #[command(flatten)]
    stage: StageArgs,
    /// Images per ONNX Runtime call, 1 to 4096 (default: 32 on CPU, 128 on CUDA).
    #[arg(long, value_parser = whole::<usize>(ranges::BATCH))]
    batch: Option<usize>,
    /// How the frozen layers' output is stored: f32, or f16 at half the bytes
    /// (rounded to nearest; phase 2 computes in f32 either way).
    #[arg(long, default_value = defaults::FEATURES, value_parser = Precision::flag)]
    features: Precision,
}

fn main() -> ExitCode {
    rps_core::cli::main(run)
}

fn run(args: Args) -> Result<()> {
    let config = Config {
        layout: args.stage.data.layout(),
        batch: args.batch,
        precision: args.features,
        session: args.stage.ort.options(),
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
