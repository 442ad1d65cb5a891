//! `make all IMAGES=DIR`: a person's own folder of images, read where it is, never
//! copied. Its splits as given (`train/` beside `test/`, `val/` or `valid/`), or a
//! stratified split seeded by `SEED`, listed in `rps/split.csv`. The list is
//! rewritten only when a file, the split's settings or the folder changed, so make
//! reruns what follows only then; checking reads names and sizes, no image.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rps_core::classes::{ClassFile, Skipped, class_files, class_folders};
use rps_core::rows::{DatasetCount, SplitRow};
use rps_core::{ClassList, Layout, Split, table};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct FolderConfig {
    pub layout: Layout,
    /// One folder per class, or `train/` and a test split each holding one.
    pub images: PathBuf,
    /// The share of each class's images the seeded split puts in the test split.
    pub test_fraction: f64,
    pub seed: u64,
}

/// What listing the folder found.
#[derive(Debug)]
pub struct FolderReport {
    pub counts: Vec<DatasetCount>,
    /// Entries that are no file to read, each with why.
    pub skipped: Skipped,
    /// The splits as the folder gives them (`false`: the seeded split made them).
    pub given: bool,
    /// Whether `rps/split.csv` changed (`false`: what follows has nothing to redo).
    pub changed: bool,
}

/// The names a given test split may have, in the order they are looked for.
const TEST_FOLDERS: [&str; 3] = ["test", "val", "valid"];

pub fn fetch_folder(config: &FolderConfig) -> Result<FolderReport> {
    let layout = &config.layout;
    let _lock = rps_core::lock::DataLock::acquire(layout, env!("CARGO_PKG_NAME"))?;
    let root = std::fs::canonicalize(&config.images)
        .with_context(|| format!("IMAGES={}: no such folder", config.images.display()))?;
    if !root.is_dir() {
        bail!("IMAGES={}: not a folder", config.images.display());
    }
    let mut skipped = Vec::new();
    let (classes, rows, given) = match given_splits(&root) {
        Some((train, test)) => {
            let classes = ClassList::of_splits(&train, &[&test])?;
            let mut rows = split_as_given(&train, Split::Train, &mut skipped)?;
            rows.extend(split_as_given(&test, Split::Test, &mut skipped)?);
            (classes, rows, true)
        }
        None => (
            ClassList::from_folders(&root)?,
            seeded_split(&root, config.test_fraction, config.seed, &mut skipped)?,
            false,
        ),
    };
    let counts = count(&rows);
    let folder = layout.dir(rps_core::Folder::Dataset);
    std::fs::create_dir_all(&folder).with_context(|| format!("creating {}", folder.display()))?;
    let list = layout.dataset_list();
    let summary = layout.dataset_summary();
    let names = layout.dataset_classes();
    let changed = table::write_if_changed(&list, &rows)?;
    table::write_if_changed(&summary, &counts)?;
    classes.write_if_changed(&names)?;
    rps_core::outputs::record(layout, "fetch", &[list, summary, names])?;
    Ok(FolderReport {
        counts,
        skipped,
        given,
        changed,
    })
}

/// `root/train` and the first of `root/{test,val,valid}` when both are folders.
fn given_splits(root: &Path) -> Option<(PathBuf, PathBuf)> {
    let train = root.join("train");
    let test = TEST_FOLDERS
        .iter()
        .map(|name| root.join(name))
        .find(|dir| dir.is_dir())?;
    train.is_dir().then_some((train, test))
}

fn split_as_given(dir: &Path, split: Split, skipped: &mut Skipped) -> Result<Vec<SplitRow>> {
    let mut rows = Vec::new();
    for (class, files) in listed_classes(dir, skipped)? {
        rows.extend(files.into_iter().map(|file| row(file, split, &class)));
    }
    Ok(rows)
}

/// Each class's files split in two: a file's place is a hash of the seed, its class
/// and its name, so adding or removing a file moves at most one other across.
fn seeded_split(
    root: &Path,
    test_fraction: f64,
    seed: u64,
    skipped: &mut Skipped,
) -> Result<Vec<SplitRow>> {
    let mut train = Vec::new();
    let mut test = Vec::new();
    for (class, mut files) in listed_classes(root, skipped)? {
        let n = files.len();
        if n < 2 {
            bail!(
                "{}: class {class:?} has {n} image file{}; a split needs at least 2 (one to \
                 train on, one to test): add images or move the folder out",
                root.join(&class).display(),
                if n == 1 { "" } else { "s" }
            );
        }
        let tested = test_count(n, test_fraction);
        files.sort_by_cached_key(|file| place(seed, &class, &file.name));
        let rest = files.split_off(tested);
        test.extend(files.into_iter().map(|file| row(file, Split::Test, &class)));
        train.extend(rest.into_iter().map(|file| row(file, Split::Train, &class)));
    }
    let by_name = |a: &SplitRow, b: &SplitRow| (&a.class, &a.path).cmp(&(&b.class, &b.path));
    train.sort_by(by_name);
    test.sort_by(by_name);
    train.extend(test);
    Ok(train)
}

/// Test images of a class of `n`: the fraction rounded, at least one, and at least
/// one left to train on.
pub fn test_count(n: usize, test_fraction: f64) -> usize {
    ((n as f64 * test_fraction).round() as usize).clamp(1, n - 1)
}

fn place(seed: u64, class: &str, name: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(seed.to_le_bytes())
        .chain_update(class.as_bytes())
        .chain_update([0])
        .chain_update(name.as_bytes())
        .finalize()
        .into()
}

/// The class folders of `dir` and their files; entries that are no file, and files
/// whose path is not text (split.csv could not name them), go to `skipped`.
fn listed_classes(dir: &Path, skipped: &mut Skipped) -> Result<Vec<(String, Vec<ClassFile>)>> {
    let mut classes = Vec::new();
    for (class, class_dir) in class_folders(dir)? {
        let (files, not_files) = class_files(&class_dir)?;
        skipped.extend(not_files);
        let (text, not_text): (Vec<_>, Vec<_>) =
            files.into_iter().partition(|f| f.path.to_str().is_some());
        skipped.extend(not_text.into_iter().map(|f| {
            let why = "its path is not UTF-8 text, which split.csv cannot hold; rename it";
            (f.path, why.to_string())
        }));
        classes.push((class, text));
    }
    Ok(classes)
}

fn row(file: ClassFile, split: Split, class: &str) -> SplitRow {
    SplitRow {
        path: file.path.to_str().expect("listed as text").to_string(),
        split,
        class: class.to_string(),
        bytes: file.bytes,
        modified_ns: file.modified_ns,
    }
}

fn count(rows: &[SplitRow]) -> Vec<DatasetCount> {
    let mut counts: Vec<DatasetCount> = Vec::new();
    for row in rows {
        match counts.last_mut() {
            Some(last) if last.split == row.split && last.class == row.class => last.count += 1,
            _ => counts.push(DatasetCount {
                split: row.split,
                class: row.class.clone(),
                count: 1,
            }),
        }
    }
    counts
}
