use anyhow::Result;
use clap::Parser;
use rps_core::cli::{StageArgs, number, whole};
use rps_core::defaults;
use rps_core::defaults::ranges;
use rps_core::sidecar::TrainSettings;
use rps_train::Config;
use std::process::ExitCode;

/// Trains the recipe's two phases on DATA/features/ with the graphs in DATA/graphs/:
/// the new head (phase 1), then the stages export's UNFREEZE names and the head (phase 2). Writes
/// DATA/results/epochs.csv (row by row), params.csv, weights.npz, train.json, a
/// checkpoint after every epoch, and last model.onnx (image -> class probabilities).
#[derive(Parser)]
#[command(version, allow_negative_numbers = true)]
struct Args {
    #[command(flatten)]
    stage: StageArgs,
    /// Images per training step, 1 to 4096.
    #[arg(long, default_value_t = defaults::BATCH, value_parser = whole::<usize>(ranges::BATCH))]
    batch: usize,
    /// Dropout rate before the head's Linear layer, in [0, 1) (0 turns it off).
    #[arg(long, default_value_t = defaults::DROPOUT, value_parser = number(ranges::DROPOUT))]
    dropout: f64,
    /// Phase 1 epochs (head only, backbone frozen), 0 to 100000.
    #[arg(long, default_value_t = defaults::HEAD_EPOCHS, value_parser = whole::<usize>(ranges::EPOCHS))]
    head_epochs: usize,
    /// Phase 1 Adam learning rate, in [0, 10].
    #[arg(long, default_value_t = defaults::HEAD_LR, value_parser = number(ranges::LR))]
    head_lr: f64,
    /// Phase 2 epochs (the trained stages and the head), 0 to 100000.
    #[arg(long, default_value_t = defaults::FT_EPOCHS, value_parser = whole::<usize>(ranges::EPOCHS))]
    ft_epochs: usize,
    /// Phase 2 Adam learning rate (a fresh optimizer), in [0, 10].
    #[arg(long, default_value_t = defaults::FT_LR, value_parser = number(ranges::LR))]
    ft_lr: f64,
    /// Decoupled (AdamW) weight decay, in [0, 1]; 0 is the recipe's plain Adam.
    #[arg(long, default_value_t = defaults::WEIGHT_DECAY, value_parser = number(ranges::WEIGHT_DECAY))]
    weight_decay: f64,
    /// Seeds the new head, shuffling, dropout and the validation split.
    #[arg(long, default_value_t = defaults::SEED)]
    seed: u64,
    /// Hold out this share of training images (per class), in [0, 1), to pick the
    /// best epoch by validation loss, saved as results/best.npz and used for
    /// model.onnx. 0 keeps the recipe.
    #[arg(long, default_value_t = defaults::VAL_FRACTION, value_parser = number(ranges::VAL_FRACTION))]
    val_fraction: f64,
    /// Continue from the last checkpoint in DATA/results/checkpoint/.
    #[arg(long)]
    resume: bool,
}

fn main() -> ExitCode {
    rps_core::cli::main(run)
}

fn run(args: Args) -> Result<()> {
    if args.head_epochs + args.ft_epochs == 0 {
        anyhow::bail!("--head-epochs and --ft-epochs are both 0: nothing to train");
    }
    let config = Config {
        layout: args.stage.data.layout(),
        settings: TrainSettings {
            batch: args.batch,
            dropout: args.dropout,
            head_epochs: args.head_epochs,
            head_lr: args.head_lr,
            ft_epochs: args.ft_epochs,
            ft_lr: args.ft_lr,
            weight_decay: args.weight_decay,
            seed: args.seed,
            val_fraction: args.val_fraction,
        },
        resume: args.resume,
        stop_after: None,
        session: args.stage.ort.options(),
    };
    let report = rps_train::run(&config)?;
    println!("device: {}", report.device);
    Ok(())
}
