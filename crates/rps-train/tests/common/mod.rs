//! What the tests of rps-train share: a tiny random-init model's graphs and
//! synthetic features a linear head separates, and the settings they train with.
#![allow(dead_code)]

use ndarray::{Array1, ArrayD, Dimension, IxDyn};
use rps_core::rows::EpochRow;
use rps_core::sidecar::TrainSettings;
use rps_core::{Feature, Folder, Layout, ResultFile, SessionOptions, Split, Unfreeze, npy, table};
use rps_export::export::{self, Source};
use rps_fixtures::write_cache_sidecars;
use rps_model::network::{Arch, Net};
use rps_train::Config;

pub const ARCH: Arch = Arch {
    net: Net::ResNet18,
    width: 4,
    image_size: 32,
    classes: 3,
};
pub const VIEWS: usize = 2;

/// A temporary DATA with graphs for a tiny random-init model, and features where
/// the class shows in every value (so a linear head separates them).
pub fn dataset() -> (tempfile::TempDir, Layout) {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    export::run(&export::Config::for_arch(
        &layout,
        Source::Random(0),
        &ARCH,
        Unfreeze::stage("layer4"),
    ))
    .unwrap();
    write_cache_sidecars(&layout, ARCH.image_size as u32, VIEWS, &["a", "b", "c"]).unwrap();
    std::fs::create_dir_all(layout.dir(Folder::Features)).unwrap();
    for (split, images, views) in [(Split::Train, 60, VIEWS), (Split::Test, 30, 1)] {
        let rows = images * views;
        let label = |row: usize| (row / views % 3) as i64;
        let wiggle = |i: &[usize]| ((i.iter().sum::<usize>() * 7919) % 13) as f32 / 13.0;
        let pooled = ArrayD::from_shape_fn(IxDyn(&[rows, ARCH.features()]), |i| {
            wiggle(i.slice())
                + if i[1] % 3 == label(i[0]) as usize {
                    2.0
                } else {
                    0.0
                }
        });
        let [c, s, _] = ARCH.frozen_shape(Unfreeze::stage("layer4"));
        let layer3 = ArrayD::from_shape_fn(IxDyn(&[rows, c, s, s]), |i| {
            wiggle(i.slice())
                + if i[1] % 3 == label(i[0]) as usize {
                    1.0
                } else {
                    0.0
                }
        });
        npy::write(&layout.features(split, Feature::Pooled), &pooled).unwrap();
        npy::write(&layout.features(split, Feature::Frozen), &layer3).unwrap();
        npy::write(
            &layout.features(split, Feature::Labels),
            &Array1::from_iter((0..rows).map(label)),
        )
        .unwrap();
    }
    (dir, layout)
}

pub fn config(layout: &Layout) -> Config {
    Config {
        layout: layout.clone(),
        settings: TrainSettings {
            batch: 16,
            head_epochs: 4,
            head_lr: 1e-2,
            ft_epochs: 2,
            ft_lr: 1e-3,
            ..TrainSettings::default()
        },
        resume: false,
        stop_after: None,
        session: SessionOptions::cpu(2),
    }
}

pub fn epochs(layout: &Layout) -> Vec<EpochRow> {
    table::read(&layout.result(ResultFile::Epochs)).unwrap()
}

/// Everything but the wall-clock column.
pub fn without_seconds(rows: Vec<EpochRow>) -> Vec<EpochRow> {
    rows.into_iter()
        .map(|r| EpochRow { seconds: 0.0, ..r })
        .collect()
}
