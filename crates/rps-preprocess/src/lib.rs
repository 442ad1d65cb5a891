//! rps-preprocess: turns a folder-per-class image set (or the list of one that
//! `rps-fetch folder` wrote) into cached u8 tensors, once:
//! the test transform for every image, `views` augmented train views of every
//! training image, labels, `index.csv`, `samples.png` and the metadata sidecar.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use rps_core::classes::{MIN_CLASSES, Skipped, class_files, class_folders};
use rps_core::disk;
use rps_core::npy::RowWriter;
use rps_core::progress::{Progress, Units};
use rps_core::rows::{IndexRow, SplitRow};
use rps_core::sidecar::{PreprocessDetails, PreprocessMeta, PreprocessSettings, Stage};
use rps_core::text::exact_name;
use rps_core::{CacheFile, ClassList, Folder, Layout, Split, atomic::TempDir, npy, table};
use rps_plot::Tile;

use rps_image::{self as transform, Augmentation};

/// Where the images are.
#[derive(Debug, Clone)]
pub enum Images {
    /// A folder with `train/` and `test/` inside, each with a folder per class.
    Folder(PathBuf),
    /// `rps/split.csv` as `rps-fetch folder` wrote it: each image where it is.
    List(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub layout: Layout,
    pub images: Images,
    pub image_size: u32,
    /// Augmented views of each training image.
    pub views: usize,
    pub seed: u64,
}

#[derive(Debug)]
pub struct Report {
    pub classes: ClassList,
    /// Rows written per split.
    pub rows: Vec<(Split, usize)>,
    /// Files that could not be read, with why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// One image file of the dataset.
#[derive(Debug, Clone)]
struct Item {
    path: PathBuf,
    /// `split/class/file`, the stable name its random stream derives from.
    relative: String,
    class: String,
    label: usize,
}

/// Images decoded and transformed at once: bounds memory while keeping all cores busy.
const CHUNK: usize = 64;
const SAMPLES: usize = 5;

pub fn run(config: &Config) -> Result<Report> {
    let started = Instant::now();
    let _lock = rps_core::lock::DataLock::acquire(&config.layout, env!("CARGO_PKG_NAME"))?;
    let (classes, listed) = match &config.images {
        Images::Folder(dir) => list_folder(dir)?,
        Images::List(csv) => read_list(csv)?,
    };
    let tmp = TempDir::beside(&config.layout.dir(Folder::Cache))?;
    let mut skipped = Vec::new();
    let mut checked = Vec::new();
    for Listed {
        split,
        items,
        not_files,
        source,
    } in listed
    {
        let (items, bad) = readable(items, split);
        for (path, why) in not_files.iter().chain(&bad) {
            eprintln!("preprocess: skipping {}: {why}", path.display());
        }
        skipped.extend(not_files);
        skipped.extend(bad);
        require_every_class(&items, &classes, &source)?;
        checked.push((split, items));
    }
    check_cache_fits(config, &checked)?;
    let mut index = Vec::new();
    let mut rows = Vec::new();
    let mut samples = Vec::new();
    for (split, items) in checked {
        let written = write_split(config, split, &items, tmp.path())?;
        index.extend(written.index);
        if split == Split::Train {
            samples = written.samples;
        }
        rows.push((split, items.len() * config.views_of(split)));
    }
    table::write(
        &tmp.path()
            .join(file_name(&config.layout.cache(CacheFile::Index))),
        &index,
    )?;
    classes.write(
        &tmp.path()
            .join(file_name(&config.layout.cache(CacheFile::Classes))),
    )?;
    rps_plot::image_grid(
        &tmp.path()
            .join(file_name(&config.layout.cache(CacheFile::Samples))),
        Some("Training images as augmented (view 0)"),
        &samples,
        SAMPLES,
        200,
    )?;
    let settings = PreprocessSettings::new(config.image_size, config.views, config.seed);
    let details = PreprocessDetails {
        classes: classes.names().to_vec(),
        rows: rows.iter().copied().collect(),
        skipped: skipped
            .iter()
            .map(|(p, why)| format!("{}: {why}", p.display()))
            .collect(),
    };
    let mut meta = PreprocessMeta::new(
        Stage::Preprocess,
        env!("CARGO_PKG_VERSION"),
        settings,
        details,
    );
    meta.inputs.push(config.images.path().display().to_string());
    meta.seconds = started.elapsed().as_secs_f64();
    meta.write(
        &tmp.path()
            .join(file_name(&config.layout.cache(CacheFile::Meta))),
    )?;
    tmp.commit()?;
    let cache = config.layout.dir(Folder::Cache);
    rps_core::outputs::record_folder(&config.layout, "preprocess", &cache)?;
    Ok(Report {
        classes,
        rows,
        skipped,
    })
}

fn file_name(path: &Path) -> &std::ffi::OsStr {
    path.file_name().expect("a file path")
}

/// One split's images, and the entries listed beside them that are no file.
struct Listed {
    split: Split,
    items: Vec<Item>,
    not_files: Skipped,
    /// Where they were listed, for messages.
    source: PathBuf,
}

/// Every file under `dir/<split>/<class>/`, sorted by class then name.
fn list_folder(dir: &Path) -> Result<(ClassList, Vec<Listed>)> {
    let split_dir = |split: Split| dir.join(split.name());
    let classes = ClassList::of_splits(&split_dir(Split::Train), &[&split_dir(Split::Test)])?;
    let mut listed = Vec::new();
    for split in Split::ALL {
        let mut items = Vec::new();
        let mut not_files = Vec::new();
        for (label, (class, class_dir)) in class_folders(&split_dir(split))?.into_iter().enumerate()
        {
            let (files, skipped) = class_files(&class_dir)?;
            not_files.extend(skipped);
            items.extend(files.into_iter().map(|file| Item {
                relative: format!("{split}/{class}/{}", file.name),
                path: file.path,
                class: class.clone(),
                label,
            }));
        }
        listed.push(Listed {
            split,
            items,
            not_files,
            source: split_dir(split),
        });
    }
    Ok((classes, listed))
}

/// The images `split.csv` lists, in its order; the classes are its training ones.
fn read_list(csv: &Path) -> Result<(ClassList, Vec<Listed>)> {
    let rows: Vec<SplitRow> = table::read(csv)?;
    let mut names: Vec<String> = rows
        .iter()
        .filter(|row| row.split == Split::Train)
        .map(|row| row.class.clone())
        .collect();
    names.sort();
    names.dedup();
    let classes = ClassList::new(names);
    if classes.len() < MIN_CLASSES {
        bail!(
            "{}: {} training classes; a classifier needs at least {MIN_CLASSES}",
            csv.display(),
            classes.len()
        );
    }
    let mut listed = Vec::new();
    for split in Split::ALL {
        let mut items = Vec::new();
        for row in rows.iter().filter(|row| row.split == split) {
            let label = classes.label(&row.class).with_context(|| {
                format!(
                    "{}: class {:?} of {} has no training image",
                    csv.display(),
                    row.class,
                    row.path
                )
            })?;
            let path = PathBuf::from(&row.path);
            let name = path.file_name().map(exact_name).unwrap_or_default();
            items.push(Item {
                relative: format!("{split}/{}/{name}", row.class),
                path,
                class: row.class.clone(),
                label,
            });
        }
        listed.push(Listed {
            split,
            items,
            not_files: Vec::new(),
            source: csv.to_path_buf(),
        });
    }
    Ok((classes, listed))
}

/// Splits off the files that do not decode, each with why.
fn readable(items: Vec<Item>, split: Split) -> (Vec<Item>, Skipped) {
    let progress = Progress::new(
        format!("preprocess checking {split}"),
        items.len() as u64,
        Units::Count("images"),
    );
    let checked: Vec<(Item, Option<String>)> = items
        .into_par_iter()
        .map(|item| {
            let problem = transform::load_rgb(&item.path)
                .err()
                .map(|e| format!("{e:#}"));
            progress.inc(1);
            (item, problem)
        })
        .collect();
    drop(progress);
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (item, problem) in checked {
        match problem {
            None => good.push(item),
            Some(why) => bad.push((item.path, why)),
        }
    }
    (good, bad)
}

/// Says what the cache will take, per image and in all, and refuses when the disk
/// under `DATA` cannot hold it.
fn check_cache_fits(config: &Config, checked: &[(Split, Vec<Item>)]) -> Result<()> {
    let per_row = 3 * u64::from(config.image_size).pow(2);
    let count = |wanted: Split| {
        checked
            .iter()
            .filter(|(split, _)| *split == wanted)
            .map(|(_, items)| items.len())
            .sum::<usize>()
    };
    let (train, test) = (count(Split::Train), count(Split::Test));
    let rows = train * config.views_of(Split::Train) + test * config.views_of(Split::Test);
    let bytes = per_row * rows as u64;
    eprintln!(
        "preprocess: {train} training images x {} + {test} test images -> {rows} \
         rows of {} KB (3x{size}x{size} u8): {}",
        match config.views {
            1 => "1 view".to_string(),
            views => format!("{views} views"),
        },
        per_row / 1000,
        disk::gigabytes(bytes),
        size = config.image_size,
    );
    disk::check_free_space(
        config.layout.root(),
        bytes,
        "the cached images",
        "cache fewer views (VIEWS) or smaller images (IMAGE_SIZE)",
    )?;
    Ok(())
}

fn require_every_class(items: &[Item], classes: &ClassList, dir: &Path) -> Result<()> {
    for (label, class) in classes.names().iter().enumerate() {
        if !items.iter().any(|i| i.label == label) {
            bail!("{}: class {class:?} has no readable image", dir.display());
        }
    }
    Ok(())
}

impl Images {
    pub fn path(&self) -> &Path {
        match self {
            Images::Folder(path) | Images::List(path) => path,
        }
    }
}

impl Config {
    /// Rows cached per image: the augmented views for training, one for testing.
    fn views_of(&self, split: Split) -> usize {
        match split {
            Split::Train => self.views,
            Split::Test => 1,
        }
    }
}

/// What writing a split made besides its files: its `index.csv` rows and `SAMPLES`
/// seeded pictures.
struct Written {
    index: Vec<IndexRow>,
    samples: Vec<Tile>,
}

/// Writes a split's tensor and labels into `out_dir`.
fn write_split(config: &Config, split: Split, items: &[Item], out_dir: &Path) -> Result<Written> {
    let views = config.views_of(split);
    let in_out = |path: PathBuf| out_dir.join(file_name(&path));
    let s = config.image_size as usize;
    let tensor = in_out(config.layout.cache_tensor(split));
    let mut writer = RowWriter::create::<u8>(&tensor, &[items.len() * views, 3, s, s])?;
    let mut index = Vec::new();
    let sample_rows = sample_indices(items.len(), config.seed);
    let mut samples = Vec::new();
    let progress = Progress::new(
        format!("preprocess {split}"),
        items.len() as u64,
        Units::Count("images"),
    );
    for (chunk_no, chunk) in items.chunks(CHUNK).enumerate() {
        let pixels: Vec<Result<Vec<Vec<u8>>>> = chunk
            .par_iter()
            .map(|item| item_views(item, split, views, config))
            .collect();
        for (offset, (item, views_pixels)) in chunk.iter().zip(pixels).enumerate() {
            let i = chunk_no * CHUNK + offset;
            for (view, px) in views_pixels?.iter().enumerate() {
                writer.write(px)?;
                index.push(IndexRow {
                    row: i * views + view,
                    split,
                    view,
                    path: item.relative.clone(),
                    class: item.class.clone(),
                    label: item.label,
                });
                if view == 0 && sample_rows.contains(&i) {
                    samples.push(Tile {
                        picture: transform::from_chw(px, config.image_size),
                        caption: vec![item.class.clone()],
                    });
                }
            }
            progress.inc(1);
        }
    }
    drop(progress);
    writer.finish()?;
    let label_values: Vec<i64> = items
        .iter()
        .flat_map(|i| std::iter::repeat_n(i.label as i64, views))
        .collect();
    let labels = in_out(config.layout.cache_labels(split));
    npy::write(&labels, &ndarray::Array1::from(label_values))?;
    Ok(Written { index, samples })
}

/// The pixels (`[3,S,S]` u8) of each view of one image.
fn item_views(item: &Item, split: Split, views: usize, config: &Config) -> Result<Vec<Vec<u8>>> {
    let image = transform::load_rgb(&item.path)?;
    let size = config.image_size;
    Ok(match split {
        Split::Test => vec![transform::to_chw(&transform::test_view(&image, size))],
        Split::Train => (0..views)
            .map(|view| {
                let mut rng = transform::view_rng(config.seed, &item.relative, view);
                let augmentation = Augmentation::draw(&mut rng, image.width(), image.height());
                transform::to_chw(&augmentation.apply(&image, size))
            })
            .collect(),
    })
}

fn sample_indices(count: usize, seed: u64) -> Vec<usize> {
    use rand::seq::index::sample;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut picked = sample(&mut rng, count, SAMPLES.min(count)).into_vec();
    picked.sort();
    picked
}
