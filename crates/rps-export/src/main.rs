use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use rps_core::cli::{DataArgs, whole};
use rps_core::defaults::ranges;
use rps_core::{Folder, Unfreeze, Width, defaults};
use rps_export::export::{self, Config, Source};
use rps_model::network::Net;

/// Builds every ONNX graph of the pipeline from a network's weights into DATA/graphs/:
/// the frozen backbone, the base ImageNet model, the train-step and eval graphs of
/// both phases, and the classifier template train fills in; plus the backbone's
/// weights, summary.csv (the model, a layer a row) and export.json (settings,
/// parameter counts, each file's sha256).
#[derive(Parser)]
#[command(version, allow_negative_numbers = true)]
struct Args {
    #[command(flatten)]
    data: DataArgs,
    /// The network's weights: a PyTorch state dict (.pth, as torchvision saves it, or
    /// the legacy format before PyTorch 1.6) or .safetensors.
    #[arg(
        long,
        required_unless_present_any = ["random_init", "verify", "summary"],
        conflicts_with = "random_init"
    )]
    weights: Option<PathBuf>,
    /// Use seeded random-init weights instead of a file (for tests, or without weights).
    #[arg(long, value_name = "SEED")]
    random_init: Option<u64>,
    /// The network: resnet18, resnet34, resnet50 (torchvision's), mobilenet_v2
    /// (torchvision's) or efficientnet_lite0.
    #[arg(long, default_value = defaults::ARCH, value_parser = net)]
    arch: Net,
    /// The network's width: full (its published width) or the channels of its first
    /// stage, 1 to 256 (a ResNet's base planes, 64 in torchvision's; MobileNetV2's
    /// stem, a multiple of 8, 32 in torchvision's; EfficientNet-Lite0 has only its
    /// own). Small widths make fast tests.
    #[arg(long, default_value = defaults::WIDTH, value_parser = Width::flag)]
    width: Width,
    /// Input image size in pixels (square), 32 to 1024.
    #[arg(long, default_value_t = defaults::IMAGE_SIZE, value_parser = whole::<u32>(ranges::IMAGE_SIZE))]
    image_size: u32,
    /// Classes of the new head, at least 2 (default: as many as DATA/rps/summary.csv
    /// lists).
    #[arg(long, value_parser = whole::<usize>(ranges::CLASSES))]
    classes: Option<usize>,
    /// Where phase 2 starts training: last (the network's last stage: layer4 for
    /// the ResNets), all, or a stage by name (`--summary` lists them: layer1 to
    /// layer4 for the ResNets, features.1 to features.14 for MobileNetV2). The stages before it are frozen and
    /// run once, in extract.
    #[arg(long, default_value = defaults::UNFREEZE, value_parser = Unfreeze::flag)]
    unfreeze: Unfreeze,
    /// Only check the files in DATA/graphs/ against export.json: exit 1, naming
    /// them, if any is missing, cut or changed.
    #[arg(long, conflicts_with_all = ["weights", "random_init"])]
    verify: bool,
    /// Only print the model summary (what graphs/summary.csv holds): each layer by
    /// PyTorch name with its output shape, parameters and the phases that train it.
    /// Needs no weights and writes nothing.
    #[arg(long, conflicts_with_all = ["verify"])]
    summary: bool,
}

/// `--arch`'s value, or the choices.
fn net(name: &str) -> Result<Net, String> {
    Net::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Net::ALL.iter().map(|n| n.name()).collect();
        format!("expected one of {}", names.join(", "))
    })
}

fn main() -> ExitCode {
    rps_core::cli::main(run)
}

fn run(args: Args) -> Result<()> {
    let layout = args.data.layout();
    if args.verify {
        let problems = export::verify(&layout)?;
        for problem in &problems {
            eprintln!("export: {problem}");
        }
        if !problems.is_empty() {
            anyhow::bail!("the graphs no longer match export.json; `make export` rewrites them");
        }
        return Ok(());
    }
    let source = match (args.weights, args.random_init) {
        (Some(path), _) => Source::File(path),
        (None, Some(seed)) => Source::Random(seed),
        // The summary reads no weights.
        (None, None) => Source::Random(0),
    };
    let config = Config {
        layout,
        source,
        net: args.arch,
        width: args.width,
        image_size: args.image_size,
        classes: args.classes,
        unfreeze: args.unfreeze,
    };
    if args.summary {
        print!("{}", export::summary(&config)?);
        return Ok(());
    }
    let meta = export::run(&config)?;
    let d = &meta.details;
    println!("Total parameters: {}", d.params_total);
    println!(
        "Trainable parameters (phase 1, head): {}",
        d.params_trainable_head
    );
    println!(
        "Trainable parameters (phase 2, from {} with the head): {}",
        meta.settings.unfreeze, d.params_trainable_finetune
    );
    for file in &d.files {
        println!(
            "wrote {}",
            config.layout.dir(Folder::Graphs).join(&file.name).display()
        );
    }
    Ok(())
}
