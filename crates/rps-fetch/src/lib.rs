//! rps-fetch: gets the dataset archives, the ResNet18 weights and the ImageNet class
//! names into `DATA/raw/` (verified against `SHA256SUMS`), and lays the dataset out as
//! `DATA/rps/<split>/<class>/`.

pub mod checksums;
pub mod download;
pub mod extract;

use std::path::PathBuf;

use anyhow::Result;
use rps_core::rows::DatasetCount;
use rps_core::{Layout, Split, table};

pub use download::Retry;

/// Where files come from.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// A local folder holding the files under their URL names (`--from`).
    pub from: Option<PathBuf>,
    pub retry: Retry,
}

#[derive(Debug, Clone)]
pub struct DatasetConfig {
    pub layout: Layout,
    pub source: Source,
    pub train_url: String,
    pub test_url: String,
    /// Zip-bomb guard: the most one archive may unpack to.
    pub max_unpacked_bytes: u64,
}

/// Fetches and extracts both splits; writes and returns `rps/summary.csv`'s rows.
pub fn fetch_dataset(config: &DatasetConfig) -> Result<Vec<DatasetCount>> {
    let layout = &config.layout;
    let mut rows = Vec::new();
    for (split, url) in [
        (Split::Train, &config.train_url),
        (Split::Test, &config.test_url),
    ] {
        let archive = fetch_file(layout, &config.source, url)?;
        let target = layout.dataset_split(split);
        extract::extract_split(&archive, &target, config.max_unpacked_bytes)?;
        for (class, count) in extract::count_per_class(&target)? {
            rows.push(DatasetCount {
                split,
                class,
                count,
            });
        }
    }
    // Written last: its presence means both splits are complete.
    table::write(&layout.dataset_summary(), &rows)?;
    Ok(rows)
}

/// Puts `url` into `DATA/raw/`, unless a verified copy is there already.
pub fn fetch_file(layout: &Layout, source: &Source, url: &str) -> Result<PathBuf> {
    let dest = layout.raw_file(&download::file_name(url)?);
    let sums_path = layout.checksums();
    let mut sums = checksums::Checksums::read(&sums_path)?;
    if dest.exists() {
        eprintln!("fetch: reusing {}", dest.display());
    } else {
        download::fetch(url, source.from.as_deref(), &dest, source.retry)?;
    }
    sums.verify(&dest)?;
    sums.write(&sums_path)?;
    Ok(dest)
}

/// Prints the per-class counts.
pub fn print_counts(rows: &[DatasetCount], out: &mut impl std::io::Write) -> std::io::Result<()> {
    for row in rows {
        writeln!(
            out,
            "{:<5} {:<12} {:>6}",
            row.split.name(),
            row.class,
            row.count
        )?;
    }
    Ok(())
}
