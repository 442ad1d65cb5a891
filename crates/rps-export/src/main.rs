use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use rps_export::export::{self, Config, Source};
use rps_export::resnet::Arch;

/// Builds every ONNX graph of the pipeline from ResNet18 weights: the frozen
/// backbone, the base ImageNet model, the head and fine-tune train-step and eval
/// graphs, and the deployable model; plus the starting weights and export.json.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// ResNet18 weights: a PyTorch state dict (.pth, as torchvision saves) or .safetensors.
    #[arg(
        long,
        required_unless_present = "random_init",
        conflicts_with = "random_init"
    )]
    weights: Option<PathBuf>,
    /// Use seeded random-init weights instead of a file (for tests, or without weights).
    #[arg(long, value_name = "SEED")]
    random_init: Option<u64>,
    /// Folder to write the graphs into.
    #[arg(long, default_value = "data/graphs")]
    out: PathBuf,
    /// ResNet base width: 64 is torchvision's ResNet18; small widths make fast tests.
    #[arg(long, default_value_t = 64)]
    width: usize,
    /// Input image size in pixels (square).
    #[arg(long, default_value_t = 224)]
    image_size: usize,
    /// Classes of the new head.
    #[arg(long, default_value_t = 3)]
    classes: usize,
    /// Seeds the new head's initialization.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let source = match (args.weights, args.random_init) {
        (Some(path), _) => Source::File(path),
        (None, Some(seed)) => Source::Random(seed),
        (None, None) => unreachable!("clap requires one"),
    };
    let config = Config {
        source,
        out: args.out,
        arch: Arch {
            width: args.width,
            image_size: args.image_size,
            classes: args.classes,
        },
        seed: args.seed,
    };
    let report = export::run(&config)?;
    let c = report.counts;
    println!("Total parameters: {}", c.total);
    println!("Trainable parameters (phase 1, head): {}", c.head);
    println!(
        "Trainable parameters (phase 2, layer4 + head): {}",
        c.finetune
    );
    for path in &report.written {
        println!("wrote {}", path.display());
    }
    Ok(())
}
