use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use rps_core::cli::{DataArgs, number, whole};
use rps_core::defaults;
use rps_core::defaults::ranges;
use rps_fetch::{DatasetConfig, FolderConfig, Source};

/// Fetches the pipeline's inputs into DATA/raw/ (verified against DATA/raw/SHA256SUMS)
/// and extracts the dataset into DATA/rps/<split>/<class>/, or lists a folder of
/// your own images in DATA/rps/split.csv.
#[derive(Parser)]
#[command(version, allow_negative_numbers = true)]
struct Args {
    #[command(flatten)]
    data: DataArgs,
    /// Take files from this local folder (under their URL names) instead of the network.
    #[arg(long, value_name = "DIR")]
    from: Option<PathBuf>,
    /// Download attempts before giving up on a URL (connection errors, timeouts, 5xx,
    /// short bodies), 1 to 100.
    #[arg(long, default_value_t = defaults::ATTEMPTS, value_parser = whole::<u32>(ranges::ATTEMPTS))]
    attempts: u32,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// The train and test archives, extracted, with DATA/rps/summary.csv.
    Dataset {
        /// The training archive (http(s):// or file://).
        #[arg(long, default_value = defaults::TRAIN_URL)]
        train_url: String,
        /// The test archive.
        #[arg(long, default_value = defaults::TEST_URL)]
        test_url: String,
        /// Refuse an archive that unpacks to more than this many bytes (zip-bomb guard).
        #[arg(long, default_value_t = defaults::MAX_UNPACKED_BYTES, value_parser = whole::<u64>(ranges::MAX_UNPACKED_BYTES))]
        max_unpacked_bytes: u64,
    },
    /// Your own images, read where they are: DIR holds a folder per class (split
    /// here, by class, seeded), or train/ and test/ (or val/, valid/) that each hold
    /// one (used as given). Writes DATA/rps/split.csv (path, split, class, size,
    /// time) and DATA/rps/summary.csv, each only when it changed.
    Folder {
        /// The folder of images.
        #[arg(value_name = "DIR")]
        images: PathBuf,
        /// Share of each class's images the seeded split tests on, above 0 and
        /// below 1 (at least one image each way).
        #[arg(long, default_value_t = defaults::TEST_FRACTION, value_parser = number(ranges::TEST_FRACTION))]
        test_fraction: f64,
        /// Seeds the split (the same folder and seed give the same split).
        #[arg(long, default_value_t = defaults::SEED)]
        seed: u64,
    },
    /// One file into DATA/raw/ (the weights).
    File {
        /// Its URL (http(s):// or file://); the file is named after the last segment.
        url: String,
    },
}

fn main() -> ExitCode {
    rps_core::cli::main(run)
}

fn run(args: Args) -> Result<()> {
    let layout = args.data.layout();
    let source = Source {
        from: args.from,
        retry: rps_fetch::Retry {
            attempts: args.attempts,
            ..Default::default()
        },
    };
    match args.what {
        What::Dataset {
            train_url,
            test_url,
            max_unpacked_bytes,
        } => {
            let config = DatasetConfig {
                layout,
                source,
                train_url,
                test_url,
                max_unpacked_bytes,
            };
            let rows = rps_fetch::fetch_dataset(&config)?;
            rps_fetch::print_counts(&rows, &mut std::io::stdout())?;
        }
        What::Folder {
            images,
            test_fraction,
            seed,
        } => {
            let config = FolderConfig {
                layout,
                images,
                test_fraction,
                seed,
            };
            let report = rps_fetch::fetch_folder(&config)?;
            for (path, why) in &report.skipped {
                eprintln!("fetch: skipping {}: {why}", path.display());
            }
            rps_fetch::print_counts(&report.counts, &mut std::io::stdout())?;
            let how = if report.given {
                "as the folder gives them"
            } else {
                "seeded"
            };
            let what = if report.changed {
                "written"
            } else {
                "unchanged"
            };
            println!(
                "splits {how}; {} {what}",
                config.layout.dataset_list().display()
            );
        }
        What::File { url } => {
            let path = rps_fetch::fetch_file(&layout, &source, &url)?;
            println!("{}", path.display());
        }
    }
    Ok(())
}
