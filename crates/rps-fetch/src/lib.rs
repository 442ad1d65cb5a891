//! rps-fetch: gets the dataset archives and the ResNet weights into `DATA/raw/`
//! (verified against `SHA256SUMS`), and lays the dataset out as
//! `DATA/rps/<split>/<class>/`; or lists a person's own folder of images, where it
//! is, in `DATA/rps/split.csv` (`folder`).

pub mod checksums;
pub mod download;
pub mod extract;
pub mod folder;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rps_core::atomic::TempDir;
use rps_core::rows::DatasetCount;
use rps_core::{ClassList, Layout, Split, table};

pub use download::Retry;
pub use folder::{FolderConfig, FolderReport, fetch_folder};

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

/// Fetches and unpacks both splits, then swaps them in together and writes
/// `rps/summary.csv` last; returns its rows. An archive that does not unpack is set
/// aside (and its hash forgotten) so that the next run fetches it again; the dataset
/// on disk is then left as it was.
pub fn fetch_dataset(config: &DatasetConfig) -> Result<Vec<DatasetCount>> {
    let layout = &config.layout;
    let _lock = rps_core::lock::DataLock::acquire(layout, env!("CARGO_PKG_NAME"))?;
    let sums_path = layout.checksums();
    let mut sums = checksums::Checksums::read(&sums_path)?;
    let mut unpacked = Vec::new();
    for (split, url) in [
        (Split::Train, &config.train_url),
        (Split::Test, &config.test_url),
    ] {
        let archive = get(layout, &config.source, url)?;
        let sha256 = sums.check(&archive)?;
        let target = layout.dataset_split(split);
        match extract::unpack(&archive, &target, config.max_unpacked_bytes) {
            Ok(folder) => unpacked.push((archive, sha256, folder)),
            Err(e) if extract::is_local(&e) => {
                return Err(e.context(format!(
                    "{} was not unpacked for a reason here, not in the archive, which \
                     stays trusted; the dataset on disk is as it was",
                    archive.display()
                )));
            }
            Err(e) => {
                let bad = sums.distrust(&archive)?;
                sums.write(&sums_path)?;
                return Err(e.context(format!(
                    "{} does not unpack; set aside as {}, so the next run fetches it again",
                    archive.display(),
                    bad.display()
                )));
            }
        }
    }
    let counts = class_counts(&unpacked)?;
    // No summary while the splits are swapped: it marks a complete dataset.
    let summary = layout.dataset_summary();
    if summary.exists() {
        std::fs::remove_file(&summary)
            .with_context(|| format!("removing {}", summary.display()))?;
    }
    let mut written = vec![summary.clone()];
    for (archive, sha256, folder) in unpacked {
        folder.commit()?;
        sums.trust(&archive, sha256)?;
        written.push(archive);
    }
    sums.write(&sums_path)?;
    table::write(&summary, &counts)?;
    written.extend(
        counts
            .iter()
            .map(|row| layout.dataset_split(row.split).join(&row.class)),
    );
    rps_core::outputs::record(layout, "fetch", &written)?;
    Ok(counts)
}

/// The files per class of the unpacked splits (in [`Split::ALL`]'s order), once
/// they make a dataset: the same classes in each, at least two, names a
/// line-per-class file keeps.
fn class_counts(unpacked: &[(PathBuf, String, TempDir)]) -> Result<Vec<DatasetCount>> {
    let folders: Vec<&Path> = unpacked.iter().map(|(_, _, dir)| dir.path()).collect();
    let [train, others @ ..] = folders.as_slice() else {
        bail!("no split was unpacked");
    };
    ClassList::of_splits(train, others).with_context(|| {
        let archives: Vec<String> = unpacked
            .iter()
            .map(|(archive, _, _)| archive.display().to_string())
            .collect();
        format!(
            "{} do not make a dataset (checked as unpacked, in a temporary folder; \
             the dataset on disk is as it was)",
            archives.join(" and ")
        )
    })?;
    let mut rows = Vec::new();
    for (split, folder) in Split::ALL.into_iter().zip(folders) {
        for (class, count) in extract::count_per_class(folder)? {
            rows.push(DatasetCount {
                split,
                class,
                count,
            });
        }
    }
    Ok(rows)
}

/// Puts `url` into `DATA/raw/` (unless a copy is there already) and checks it against
/// the recorded hashes, recording its own once the file shows it is whole (a
/// complete weights file: `rps_weights::check_whole`).
pub fn fetch_file(layout: &Layout, source: &Source, url: &str) -> Result<PathBuf> {
    let _lock = rps_core::lock::DataLock::acquire(layout, env!("CARGO_PKG_NAME"))?;
    let path = get(layout, source, url)?;
    let sums_path = layout.checksums();
    let mut sums = checksums::Checksums::read(&sums_path)?;
    let sha256 = sums.check(&path)?;
    if !sums.records(&path)? {
        // The first time: a transfer cut short without a Content-Length looks whole.
        if let Err(e) = rps_weights::check_whole(&path) {
            let bad = sums.distrust(&path)?;
            sums.write(&sums_path)?;
            return Err(anyhow::Error::new(e).context(format!(
                "{url}: not trusted; set aside as {}, so the next run fetches it again",
                bad.display()
            )));
        }
    }
    sums.trust(&path, sha256)?;
    sums.write(&sums_path)?;
    Ok(path)
}

/// `url`'s file in `DATA/raw/`: the one there, else fetched.
fn get(layout: &Layout, source: &Source, url: &str) -> Result<PathBuf> {
    let name = download::file_name(url)?;
    let own = layout.checksums();
    if Some(name.as_ref()) == own.file_name() || name.ends_with(".part") || name.ends_with(".bad") {
        bail!("{url}: refusing to fetch into raw/{name}, a name rps-fetch keeps for itself");
    }
    let dest = layout.raw_file(&name);
    if dest.exists() {
        eprintln!("fetch: reusing {}", dest.display());
    } else {
        download::fetch(url, source.from.as_deref(), &dest, source.retry)?;
    }
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
