//! The preprocess stage on small generated datasets.

use std::path::Path;

use rps_core::sidecar::PreprocessMeta;
use rps_core::{CacheFile, Folder, Layout, Split};
use rps_preprocess::{Config, Images, run};

fn write_png(path: &Path, width: u32, height: u32, shade: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbaImage::from_fn(width, height, |x, y| {
        image::Rgba([shade, (x * 7) as u8, (y * 5) as u8, 128])
    })
    .save(path)
    .unwrap();
}

/// Two classes, three train and one test image each.
fn dataset(root: &Path) {
    for (class, shade) in [("paper", 10), ("rock", 200)] {
        for i in 0..3 {
            write_png(
                &root.join(format!("train/{class}/{i}.png")),
                30 + i,
                20,
                shade,
            );
        }
        write_png(&root.join(format!("test/{class}/t.png")), 25, 25, shade);
    }
}

fn config(data: &Path, dataset: &Path) -> Config {
    Config {
        layout: Layout::new(data),
        images: Images::Folder(dataset.to_path_buf()),
        image_size: 12,
        views: 2,
        seed: 0,
    }
}

#[test]
fn tensors_labels_and_index_read_back() {
    let dir = tempfile::tempdir().unwrap();
    dataset(&dir.path().join("ds"));
    let config = config(&dir.path().join("data"), &dir.path().join("ds"));
    let report = run(&config).unwrap();
    assert_eq!(report.rows, [(Split::Train, 12), (Split::Test, 2)]);
    let layout = &config.layout;
    let train = rps_core::npy::read::<u8>(&layout.cache_tensor(Split::Train)).unwrap();
    assert_eq!(train.shape(), &[12, 3, 12, 12]);
    let labels = rps_core::npy::read::<i64>(&layout.cache_labels(Split::Train)).unwrap();
    assert_eq!(
        labels.as_slice().unwrap(),
        &[0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    );
    // Red channel carries the class shade; alpha was dropped, not composited.
    let test = rps_core::npy::read::<u8>(&layout.cache_tensor(Split::Test)).unwrap();
    assert_eq!(test[[1, 0, 5, 5]], 200);
    let index: Vec<rps_core::rows::IndexRow> =
        rps_core::table::read(&layout.cache(CacheFile::Index)).unwrap();
    assert_eq!(index.len(), 14);
    assert_eq!(
        (index[3].row, index[3].view, index[3].path.as_str()),
        (3, 1, "train/paper/1.png")
    );
    let samples = image::open(layout.cache(CacheFile::Samples)).unwrap();
    assert_eq!(samples.width(), 1000);
    // Deterministic: a second run writes the same bytes.
    let first = std::fs::read(layout.cache_tensor(Split::Train)).unwrap();
    run(&config).unwrap();
    assert_eq!(
        std::fs::read(layout.cache_tensor(Split::Train)).unwrap(),
        first
    );
}

#[test]
fn unreadable_files_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    dataset(&ds);
    std::fs::write(ds.join("train/rock/empty.png"), b"").unwrap();
    std::fs::write(ds.join("train/rock/notes.txt"), b"not an image").unwrap();
    image::RgbImage::new(20_000, 1)
        .save(ds.join("train/paper/huge.png"))
        .unwrap();
    let config = config(&dir.path().join("data"), &ds);
    let report = run(&config).unwrap();
    assert_eq!(report.skipped.len(), 3);
    assert_eq!(report.rows[0], (Split::Train, 12));
    let meta = PreprocessMeta::read(&config.layout.cache(CacheFile::Meta)).unwrap();
    let skipped = meta.details.skipped;
    assert_eq!(skipped.len(), 3);
    assert!(skipped.iter().any(|s| s.contains("huge.png")));
}

#[test]
fn a_class_without_readable_images_is_an_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    dataset(&ds);
    std::fs::create_dir_all(ds.join("train/scissors")).unwrap();
    std::fs::create_dir_all(ds.join("test/scissors")).unwrap();
    std::fs::write(ds.join("train/scissors/bad.png"), b"garbage").unwrap();
    let config = config(&dir.path().join("data"), &ds);
    let err = format!("{:#}", run(&config).unwrap_err());
    assert!(err.contains("\"scissors\" has no readable image"), "{err}");
    assert!(!config.layout.dir(Folder::Cache).exists());
}

#[test]
fn no_classes_at_all_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ds/train")).unwrap();
    let err = format!(
        "{:#}",
        run(&config(&dir.path().join("data"), &dir.path().join("ds"))).unwrap_err()
    );
    assert!(err.contains("0 class folders"), "{err}");
}

#[test]
fn folders_fifos_and_looping_links_are_listed_as_skipped_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    dataset(&ds);
    std::fs::create_dir(ds.join("train/rock/more")).unwrap();
    let fifo = ds.join("train/rock/pipe.png");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    std::os::unix::fs::symlink("loop.png", ds.join("train/paper/loop.png")).unwrap();
    std::os::unix::fs::symlink("gone.png", ds.join("test/paper/dangling.png")).unwrap();
    let config = config(&dir.path().join("data"), &ds);
    let report = run(&config).unwrap();
    assert_eq!(report.rows, [(Split::Train, 12), (Split::Test, 2)]);
    let meta = PreprocessMeta::read(&config.layout.cache(CacheFile::Meta)).unwrap();
    let skipped = meta.details.skipped.join("\n");
    for (name, why) in [
        ("more", "a folder"),
        ("pipe.png", "FIFO"),
        ("loop.png", "leads nowhere or loops"),
        ("dangling.png", "leads nowhere or loops"),
    ] {
        assert!(
            skipped.lines().any(|l| l.contains(name) && l.contains(why)),
            "{name}: {skipped}"
        );
    }
}

#[test]
fn one_class_or_other_test_classes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    write_png(&ds.join("train/rock/a.png"), 20, 20, 1);
    write_png(&ds.join("test/rock/a.png"), 20, 20, 1);
    let config = config(&dir.path().join("data"), &ds);
    let err = format!("{:#}", run(&config).unwrap_err());
    assert!(
        err.contains("1 class folders") && err.contains("at least 2"),
        "{err}"
    );
    write_png(&ds.join("train/paper/a.png"), 20, 20, 1);
    write_png(&ds.join("test/scissors/a.png"), 20, 20, 1);
    let err = format!("{:#}", run(&config).unwrap_err());
    assert!(err.contains("differ from the training classes"), "{err}");
    assert!(!config.layout.dir(Folder::Cache).exists());
}

#[test]
fn file_names_stay_exact_and_no_cell_becomes_a_formula() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    for split in ["train", "test"] {
        for class in ["=sum", "paper"] {
            write_png(&ds.join(format!("{split}/{class}/a.png")), 20, 20, 9);
        }
    }
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9.png");
    write_png(&ds.join("train/paper").join(odd), 20, 20, 9);
    let config = config(&dir.path().join("data"), &ds);
    run(&config).unwrap();
    let index_path = config.layout.cache(CacheFile::Index);
    let text = std::fs::read_to_string(&index_path).unwrap();
    assert!(text.contains("train/paper/caf%E9.png"), "{text}");
    assert!(text.contains(",'=sum,"), "{text}");
    let rows: Vec<rps_core::rows::IndexRow> = rps_core::table::read(&index_path).unwrap();
    assert_eq!(rows[0].class, "=sum");
}
