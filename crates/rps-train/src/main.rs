use anyhow::Result;
use clap::Parser;
use rps_core::cli::{StageArgs, number, whole};
use rps_core::defaults;
use rps_core::defaults::ranges;
use rps_core::sidecar::TrainSettings;
use rps_core::{ClassWeights, FtBn, Schedule};
use rps_train::Config;
use rps_train::lr_find::Sweeps;
use std::process::ExitCode;

/// Trains the recipe's two phases on DATA/features/ with the graphs in DATA/graphs/:
/// the new head (phase 1), then the stages export's UNFREEZE names and the head (phase 2). Writes
/// DATA/results/epochs.csv (row by row), params.csv, weights.npz, train.json, a
/// checkpoint after every epoch, and last model.onnx (image -> class probabilities).
/// With --lr-find, sweeps the learning rate instead and writes only
/// DATA/results/lr_find_* (rows, plots) and lr_find.json.
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
    /// How phase 1's rate moves over its steps: constant (the recipe), one-cycle
    /// (fastai's fit_one_cycle: warm-up over the first 25% from lr/25, cosine down to
    /// lr/1e5, Adam's beta1 0.95 -> 0.85 -> 0.95) or cosine (down to 0).
    #[arg(long, default_value = defaults::HEAD_SCHEDULE, value_parser = Schedule::flag)]
    head_schedule: Schedule,
    /// How phase 2's rate moves over its steps: constant, one-cycle or cosine.
    #[arg(long, default_value = defaults::FT_SCHEDULE, value_parser = Schedule::flag)]
    ft_schedule: Schedule,
    /// The trained stages' BatchNorm in phase 2: train (the recipe: each batch's
    /// statistics, the running ones updated) or eval (the running statistics,
    /// unchanged, as Keras recommends for fine-tuning; scale and shift still learn).
    #[arg(long, default_value = defaults::FT_BN, value_parser = FtBn::flag)]
    ft_bn: FtBn,
    /// Phase 2's rate per stage, in [0.01, 100]: each trained stage gets the rate of
    /// the one after it divided by this (the head keeps --ft-lr), as fastai's slice
    /// spreads one; 1 gives every stage --ft-lr.
    #[arg(long, default_value_t = defaults::FT_LR_MULT, value_parser = number(ranges::FT_LR_MULT))]
    ft_lr_mult: f64,
    /// End a phase after this many epochs without a better validation loss, 0 to
    /// 100000 (needs --val-fraction); 0 never ends one early.
    #[arg(long, default_value_t = defaults::PATIENCE, value_parser = whole::<usize>(ranges::PATIENCE))]
    patience: usize,
    /// Each class's weight in the training loss: none (the recipe), balanced
    /// (images / (classes x the class's images), as scikit-learn), or one weight per
    /// class in the order of classes.txt, separated by commas (1,2.5,1).
    #[arg(long, default_value = defaults::CLASS_WEIGHTS, value_parser = ClassWeights::flag, allow_hyphen_values = true)]
    class_weights: ClassWeights,
    /// Instead of training, run the learning-rate finder (fastai's lr_find) on
    /// head, finetune or both phases; writes only results/lr_find_*.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = defaults::LR_FIND, value_name = "PHASES")]
    lr_find: Option<Sweeps>,
    /// Continue from the last checkpoint in DATA/results/checkpoint/.
    #[arg(long)]
    resume: bool,
}

fn main() -> ExitCode {
    rps_core::cli::main(run)
}

fn run(args: Args) -> Result<()> {
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
            head_schedule: args.head_schedule,
            ft_schedule: args.ft_schedule,
            ft_bn: args.ft_bn,
            ft_lr_mult: args.ft_lr_mult,
            patience: args.patience,
            class_weights: args.class_weights,
        },
        resume: args.resume,
        stop_after: None,
        session: args.stage.ort.options(),
    };
    if let Some(sweeps) = args.lr_find {
        rps_train::lr_find::run(&config, sweeps)?;
        return Ok(());
    }
    if config.settings.head_epochs + config.settings.ft_epochs == 0 {
        anyhow::bail!("--head-epochs and --ft-epochs are both 0: nothing to train");
    }
    let report = rps_train::run(&config)?;
    println!("device: {}", report.device);
    Ok(())
}
