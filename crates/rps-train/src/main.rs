use anyhow::Result;
use clap::Parser;
use rps_core::cli::StageArgs;
use rps_core::defaults;
use rps_core::sidecar::TrainSettings;
use rps_train::Config;

/// Trains the recipe's two phases on DATA/features/ with the graphs in DATA/graphs/:
/// the new head (phase 1), then layer4 and the head (phase 2). Writes
/// DATA/results/epochs.csv (row by row), params.csv, weights.npz, train.json, a
/// checkpoint after every epoch, and last model.onnx (image -> class probabilities).
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    stage: StageArgs,
    /// Images per training step.
    #[arg(long, default_value_t = defaults::BATCH)]
    batch: usize,
    /// Dropout rate before the head's Linear layer (0 turns it off).
    #[arg(long, default_value_t = defaults::DROPOUT)]
    dropout: f64,
    /// Phase 1 epochs (head only, backbone frozen).
    #[arg(long, default_value_t = defaults::HEAD_EPOCHS)]
    head_epochs: usize,
    /// Phase 1 Adam learning rate.
    #[arg(long, default_value_t = defaults::HEAD_LR)]
    head_lr: f64,
    /// Phase 2 epochs (layer4 and head).
    #[arg(long, default_value_t = defaults::FT_EPOCHS)]
    ft_epochs: usize,
    /// Phase 2 Adam learning rate (a fresh optimizer).
    #[arg(long, default_value_t = defaults::FT_LR)]
    ft_lr: f64,
    /// Decoupled (AdamW) weight decay; 0 is the recipe's plain Adam.
    #[arg(long, default_value_t = defaults::WEIGHT_DECAY)]
    weight_decay: f64,
    /// Seeds the new head, shuffling, dropout and the validation split.
    #[arg(long, default_value_t = defaults::SEED)]
    seed: u64,
    /// Hold out this share of training images (per class) to pick the best epoch by
    /// validation loss, saved as results/best.npz and used for model.onnx. 0 keeps
    /// the recipe.
    #[arg(long, default_value_t = defaults::VAL_FRACTION)]
    val_fraction: f64,
    /// Continue from the last checkpoint in DATA/results/checkpoint/.
    #[arg(long)]
    resume: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !(0.0..1.0).contains(&args.dropout) {
        anyhow::bail!("--dropout must be in [0, 1), not {}", args.dropout);
    }
    if !(0.0..1.0).contains(&args.val_fraction) {
        anyhow::bail!(
            "--val-fraction must be in [0, 1), not {}",
            args.val_fraction
        );
    }
    let config = Config {
        layout: args.stage.data.layout(),
        settings: TrainSettings {
            batch: args.batch.max(1),
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
