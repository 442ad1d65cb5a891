//! `rps-fetch folder`: a person's own folder listed where it is, split by class with
//! a seed, or as its own train/ and test/ folders give it.

use std::path::Path;

use rps_core::rows::SplitRow;
use rps_core::{Layout, Split, table};
use rps_fetch::folder::test_count;
use rps_fetch::{FolderConfig, FolderReport, fetch_folder};

/// `files` files (not images: listing reads none) in `dir/<class>/` for each class.
fn fill(dir: &Path, classes: &[(&str, usize)]) {
    for (class, files) in classes {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..*files {
            std::fs::write(dir.join(class).join(format!("{i:03}.jpg")), [i as u8]).unwrap();
        }
    }
}

fn list(images: &Path, data: &Path, seed: u64) -> anyhow::Result<FolderReport> {
    fetch_folder(&FolderConfig {
        layout: Layout::new(data),
        images: images.to_path_buf(),
        test_fraction: 0.2,
        seed,
    })
}

fn rows(data: &Path) -> Vec<SplitRow> {
    table::read(&Layout::new(data).dataset_list()).unwrap()
}

fn tested(rows: &[SplitRow]) -> Vec<&str> {
    rows.iter()
        .filter(|r| r.split == Split::Test)
        .map(|r| r.path.as_str())
        .collect()
}

#[test]
fn the_split_is_stratified_and_the_same_for_a_seed_and_another_for_another() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    fill(&images, &[("ant", 20), ("bee", 7), ("cat", 2)]);
    let data = dir.path().join("data");
    let report = list(&images, &data, 0).unwrap();
    assert!(report.changed && !report.given);
    let counted: Vec<(Split, &str, usize)> = report
        .counts
        .iter()
        .map(|c| (c.split, c.class.as_str(), c.count))
        .collect();
    assert_eq!(
        counted,
        [
            (Split::Train, "ant", 16),
            (Split::Train, "bee", 6),
            (Split::Train, "cat", 1),
            (Split::Test, "ant", 4),
            (Split::Test, "bee", 1),
            (Split::Test, "cat", 1),
        ]
    );
    let first = rows(&data);
    assert_eq!(first.len(), 29);
    assert!(first.iter().all(|r| Path::new(&r.path).is_absolute()));
    let list_file = Layout::new(&data).dataset_list();
    let written = std::fs::metadata(&list_file).unwrap().modified().unwrap();

    let again = list(&images, &data, 0).unwrap();
    assert!(!again.changed, "an unchanged folder rewrites nothing");
    assert_eq!(rows(&data), first);
    let kept = std::fs::metadata(&list_file).unwrap().modified().unwrap();
    assert_eq!(kept, written);

    let other = list(&images, &data, 1).unwrap();
    assert!(other.changed);
    let reseeded = rows(&data);
    assert_ne!(tested(&reseeded), tested(&first));
    assert_eq!(other.counts, report.counts, "the same shares for any seed");
}

#[test]
fn adding_an_image_changes_the_list_and_moves_few_others() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    fill(&images, &[("ant", 30), ("bee", 30)]);
    let data = dir.path().join("data");
    list(&images, &data, 0).unwrap();
    let before = rows(&data);
    std::fs::write(images.join("ant/new.jpg"), b"x").unwrap();
    assert!(list(&images, &data, 0).unwrap().changed);
    let after = rows(&data);
    assert_eq!(after.len(), before.len() + 1);
    let moved = before
        .iter()
        .filter(|old| {
            after
                .iter()
                .any(|new| new.path == old.path && new.split != old.split)
        })
        .count();
    assert!(moved <= 1, "{moved} images changed split");

    std::fs::write(images.join("bee/000.jpg"), b"changed, longer").unwrap();
    assert!(list(&images, &data, 0).unwrap().changed, "a changed file");
}

#[test]
fn train_and_test_folders_are_used_as_given() {
    for test_name in ["test", "val"] {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        fill(&images.join("train"), &[("ant", 3), ("bee", 3)]);
        fill(&images.join(test_name), &[("ant", 1), ("bee", 2)]);
        let data = dir.path().join("data");
        let report = list(&images, &data, 0).unwrap();
        assert!(report.given);
        for row in rows(&data) {
            let folder = match row.split {
                Split::Train => "train",
                Split::Test => test_name,
            };
            let expected = images.join(folder).join(&row.class);
            let expected = std::fs::canonicalize(expected).unwrap();
            assert_eq!(Path::new(&row.path).parent().unwrap(), expected);
        }
        assert_eq!(tested(&rows(&data)).len(), 3);
    }
}

#[test]
fn a_class_with_one_image_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    fill(&images, &[("ant", 5), ("lonely bee", 1)]);
    let err = format!(
        "{:#}",
        list(&images, &dir.path().join("data"), 0).unwrap_err()
    );
    assert!(
        err.contains("class \"lonely bee\" has 1 image file;") && err.contains("at least 2"),
        "{err}"
    );
}

#[test]
fn entries_that_are_no_file_are_skipped_with_why() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    fill(&images, &[("ant", 3), ("bee", 3)]);
    std::fs::create_dir(images.join("ant/nested")).unwrap();
    std::fs::write(images.join("bee/.hidden"), b"").unwrap();
    let report = list(&images, &dir.path().join("data"), 0).unwrap();
    let skipped: Vec<String> = report
        .skipped
        .iter()
        .map(|(path, why)| format!("{}: {why}", path.display()))
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(
        skipped[0].ends_with("ant/nested: a folder inside a class folder"),
        "{skipped:?}"
    );
}

#[test]
fn a_missing_folder_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = format!(
        "{:#}",
        list(&dir.path().join("nowhere"), &dir.path().join("data"), 0).unwrap_err()
    );
    assert!(err.contains("IMAGES=") && err.contains("nowhere"), "{err}");
}

#[test]
fn the_test_share_is_rounded_and_leaves_one_image_each_way() {
    assert_eq!(test_count(2, 0.2), 1);
    assert_eq!(test_count(10, 0.2), 2);
    assert_eq!(test_count(12, 0.2), 2);
    assert_eq!(test_count(13, 0.2), 3);
    assert_eq!(test_count(5, 0.99), 4);
    assert_eq!(test_count(100_000, 0.2), 20_000);
}
