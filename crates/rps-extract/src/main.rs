use anyhow::Result;
use clap::Parser;
use rps_core::cli::StageArgs;
use rps_extract::Config;

/// Runs the frozen backbone (DATA/graphs/backbone.onnx) over the cached images
/// (DATA/cache/) and writes layer3 and pooled features to DATA/features/.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    stage: StageArgs,
    /// Images per ONNX Runtime call (default: 32 on CPU, 128 on CUDA).
    #[arg(long)]
    batch: Option<usize>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let config = Config {
        layout: args.stage.data.layout(),
        batch: args.batch,
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
