//! The rps-extract binary: PyTorch parity, partial batches, and bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

use ndarray::{ArrayD, IxDyn};
use rps_core::{Layout, Split, npy};
use rps_export::export::{self, Source};
use rps_export::resnet::Arch;

fn reference(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/reference")
        .join(file)
}

fn export_graphs(layout: &Layout, weights: &str, width: usize, image_size: usize) {
    let config = export::Config {
        source: Source::File(reference(weights)),
        out: layout.graphs_dir(),
        arch: Arch {
            width,
            image_size,
            classes: 3,
        },
        seed: 0,
    };
    export::run(&config).unwrap();
}

/// A cache holding `images` (already normalized f32) in both splits.
fn write_cache(layout: &Layout, images: &ArrayD<f32>) {
    for split in Split::ALL {
        npy::write(&layout.cache_tensor(split), images).unwrap();
        let labels = ArrayD::from_shape_fn(IxDyn(&[images.shape()[0]]), |i| (i[0] % 3) as i64);
        npy::write(&layout.cache_labels(split), &labels).unwrap();
    }
}

fn extract(layout: &Layout, batch: usize) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rps-extract"))
        .args([
            "--data",
            layout.root().to_str().unwrap(),
            "--device",
            "cpu",
            "--threads",
            "2",
            "--batch",
            &batch.to_string(),
        ])
        .output()
        .unwrap()
}

fn assert_close(what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    let err = (diff / norm).sqrt();
    assert!(err < 1e-4, "{what}: relative L2 error {err:.2e}");
}

fn check_parity(weights: &str, forward: &str, width: usize, size: usize, batch: usize) {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    export_graphs(&layout, weights, width, size);
    let mut reference_values = npy::Npz::open(&reference(forward)).unwrap();
    write_cache(&layout, &reference_values.get::<f32>("input").unwrap());
    let out = extract(&layout, batch);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("device: cpu"));
    for split in Split::ALL {
        let layer3 = npy::read::<f32>(&layout.features(split, "layer3")).unwrap();
        let pooled = npy::read::<f32>(&layout.features(split, "pooled")).unwrap();
        assert_close("layer3", &layer3, &reference_values.get("layer3").unwrap());
        assert_close("pooled", &pooled, &reference_values.get("pooled").unwrap());
    }
    let meta = rps_core::Metadata::read(&Layout::meta(&layout.features_dir())).unwrap();
    assert_eq!(meta.device.as_deref(), Some("cpu"));
}

#[test]
fn full_width_features_match_pytorch() {
    check_parity(
        "resnet18_seed0.pth",
        "resnet18_seed0_forward.npz",
        64,
        224,
        1,
    );
}

#[test]
fn mini_features_match_pytorch_with_a_partial_last_batch() {
    // 8 images in batches of 3: 3 + 3 + 2.
    check_parity(
        "mini_w8_s64_seed0.pth",
        "mini_w8_s64_seed0_forward.npz",
        8,
        64,
        3,
    );
}

#[test]
fn a_cache_of_another_image_size_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    export_graphs(&layout, "mini_w8_s64_seed0.pth", 8, 64);
    write_cache(&layout, &ArrayD::zeros(IxDyn(&[2, 3, 32, 32])));
    let out = extract(&layout, 4);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("train_images.npy") && err.contains("[N, 3, 64, 64]"),
        "{err}"
    );
    assert!(!layout.features_dir().exists());
}
