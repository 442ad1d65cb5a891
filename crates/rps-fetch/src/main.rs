use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use rps_core::cli::{DataArgs, whole};
use rps_core::defaults;
use rps_core::defaults::ranges;
use rps_fetch::{DatasetConfig, Source};

/// Fetches the pipeline's inputs into DATA/raw/ (verified against DATA/raw/SHA256SUMS)
/// and extracts the dataset into DATA/rps/<split>/<class>/.
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
        What::File { url } => {
            let path = rps_fetch::fetch_file(&layout, &source, &url)?;
            println!("{}", path.display());
        }
    }
    Ok(())
}
