//! The rps-extract binary: PyTorch parity, partial batches, and bad input.

use std::process::Command;

use ndarray::{ArrayD, IxDyn};
use rps_core::sidecar::ExtractMeta;
use rps_core::{CacheFile, ClassList, Device, Feature, Folder, Layout, Split, Unfreeze, npy};
use rps_export::export::{self, Source};
use rps_fixtures::{assert_close, reference, write_cache_sidecars};
use rps_model::network::{Arch, Net};

/// A temporary DATA with the graphs of reference `weights` at `width`, for
/// `image_size`-pixel images and three classes, phase 2 training from layer4.
fn exported(weights: &str, width: usize, image_size: u32) -> (tempfile::TempDir, Layout) {
    exported_from(weights, width, image_size, Unfreeze::stage("layer4"))
}

fn exported_from(
    weights: &str,
    width: usize,
    image_size: u32,
    unfreeze: Unfreeze,
) -> (tempfile::TempDir, Layout) {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let arch = Arch {
        net: Net::ResNet18,
        width,
        image_size: image_size as usize,
        classes: 3,
    };
    let source = Source::File(reference(weights));
    export::run(&export::Config::for_arch(&layout, source, &arch, unfreeze)).unwrap();
    (dir, layout)
}

/// A cache of `image_size`-pixel images, as its sidecar says, holding `images`
/// (already normalized f32) in both splits.
fn write_cache(layout: &Layout, image_size: u32, images: &ArrayD<f32>) {
    write_cache_sidecars(layout, image_size, 1, &["a", "b", "c"]).unwrap();
    for split in Split::ALL {
        npy::write(&layout.cache_tensor(split), images).unwrap();
        let labels = ArrayD::from_shape_fn(IxDyn(&[images.shape()[0]]), |i| (i[0] % 3) as i64);
        npy::write(&layout.cache_labels(split), &labels).unwrap();
    }
}

fn extract(layout: &Layout, batch: usize) -> std::process::Output {
    extract_with(layout, batch, &[])
}

fn extract_with(layout: &Layout, batch: usize, extra: &[&str]) -> std::process::Output {
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
        .args(extra)
        .output()
        .unwrap()
}

fn check_parity(weights: &str, forward: &str, width: usize, size: u32, batch: usize) {
    let (_dir, layout) = exported(weights, width, size);
    let mut reference_values = npy::Npz::open(&reference(forward)).unwrap();
    write_cache(
        &layout,
        size,
        &reference_values.get::<f32>("input").unwrap(),
    );
    let out = extract(&layout, batch);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("device: cpu"));
    for split in Split::ALL {
        let layer3 = npy::read::<f32>(&layout.features(split, Feature::Frozen)).unwrap();
        let pooled = npy::read::<f32>(&layout.features(split, Feature::Pooled)).unwrap();
        let mut want = |key: &str| reference_values.get::<f32>(key).unwrap();
        assert_close("layer3", &layer3, &want("layer3"), 1e-4);
        assert_close("pooled", &pooled, &want("pooled"), 1e-4);
    }
    let meta = ExtractMeta::read(&layout.features_meta()).unwrap();
    assert_eq!(meta.device, Some(Device::Cpu));
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

/// `--features f16` stores the frozen layers' output as the f32 one rounded to float16,
/// in half the bytes; the pooled features stay f32.
#[test]
fn float16_features_are_the_float32_ones_rounded_in_half_the_bytes() {
    let (_dir, layout) = exported("mini_w8_s64_seed0.pth", 8, 64);
    let mut reference_values = npy::Npz::open(&reference("mini_w8_s64_seed0_forward.npz")).unwrap();
    write_cache(&layout, 64, &reference_values.get::<f32>("input").unwrap());
    let path = layout.features(Split::Test, Feature::Frozen);
    let out = extract(&layout, 3);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full = npy::read::<f32>(&path).unwrap();
    let full_bytes = std::fs::metadata(&path).unwrap().len();
    let out = extract_with(&layout, 3, &["--features", "f16"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("frozen f16 [N,32,4,4], pooled f32"), "{said}");
    let mapped = npy::Mapped::open(&path).unwrap();
    let halves = mapped.view::<npy::F16>().unwrap();
    assert_eq!(halves.shape(), full.shape());
    for (half, single) in halves.iter().zip(full.iter()) {
        assert_eq!(*half, npy::halves(&[*single])[0]);
    }
    let half_bytes = std::fs::metadata(&path).unwrap().len();
    assert!(
        half_bytes * 2 <= full_bytes + 128,
        "{half_bytes} of {full_bytes}"
    );
    let pooled = npy::read::<f32>(&layout.features(Split::Test, Feature::Pooled)).unwrap();
    assert_close(
        "pooled",
        &pooled,
        &reference_values.get::<f32>("pooled").unwrap(),
        1e-4,
    );
    let meta = ExtractMeta::read(&layout.features_meta()).unwrap();
    assert!(
        meta.settings.storage.contains("frozen f16"),
        "{}",
        meta.settings.storage
    );
}

#[test]
fn every_depth_cuts_the_backbone_where_phase_2_starts() {
    let mut reference_values = npy::Npz::open(&reference("mini_w8_s64_seed0_forward.npz")).unwrap();
    let (images, pooled_want) = (
        reference_values.get::<f32>("input").unwrap(),
        reference_values.get::<f32>("pooled").unwrap(),
    );
    // Width 8 at 64 pixels: the stem's output [8, 16, 16], layer2's [16, 8, 8].
    for (unfreeze, frozen) in [
        (Unfreeze::All, None),
        (Unfreeze::stage("layer1"), Some([8, 8, 16, 16])),
        (Unfreeze::stage("layer3"), Some([8, 16, 8, 8])),
    ] {
        let (_dir, layout) = exported_from("mini_w8_s64_seed0.pth", 8, 64, unfreeze);
        write_cache(&layout, 64, &images);
        let out = extract(&layout, 3);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pooled = npy::read::<f32>(&layout.features(Split::Test, Feature::Pooled)).unwrap();
        assert_close("pooled", &pooled, &pooled_want, 1e-4);
        let path = layout.features(Split::Test, Feature::Frozen);
        match frozen {
            Some(shape) => assert_eq!(npy::read::<f32>(&path).unwrap().shape(), shape),
            None => assert!(!path.exists(), "{unfreeze}: nothing is frozen"),
        }
        let meta = ExtractMeta::read(&layout.features_meta()).unwrap();
        assert_eq!(
            frozen.is_none(),
            meta.settings.storage.contains("no frozen layers")
        );
    }
}

#[test]
fn a_cache_of_another_image_size_is_refused_before_any_work() {
    let (_dir, layout) = exported("mini_w8_s64_seed0.pth", 8, 64);
    write_cache(&layout, 64, &ArrayD::zeros(IxDyn(&[2, 3, 32, 32])));
    let out = extract(&layout, 4);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("train_images.npy") && err.contains("[N, 3, 64, 64]"),
        "{err}"
    );
    assert!(!layout.dir(Folder::Features).exists());
}

/// A batch that cannot fit in the memory this machine has free is refused before a
/// batch is made, with export's lower bound and what is free.
#[test]
fn a_batch_larger_than_free_memory_is_refused_before_it_runs() {
    use rps_core::sidecar::ExportMeta;
    let (_dir, layout) = exported("mini_w8_s64_seed0.pth", 8, 64);
    write_cache(&layout, 64, &ArrayD::zeros(IxDyn(&[2, 3, 64, 64])));
    let path = layout.graph(rps_core::GraphFile::Meta);
    let mut meta = ExportMeta::read(&path).unwrap();
    meta.details.backbone_floats_per_image = 1 << 40;
    meta.write(&path).unwrap();
    let out = extract(&layout, 4);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("extract at --batch 4 (EXTRACT_BATCH) needs at least")
            && err.contains("is free"),
        "{err}"
    );
    assert!(!layout.dir(Folder::Features).exists());
}

#[test]
fn graphs_for_another_image_size_or_class_count_are_refused_naming_both() {
    let (_dir, layout) = exported("mini_w8_s64_seed0.pth", 8, 64);
    write_cache(&layout, 32, &ArrayD::zeros(IxDyn(&[2, 3, 32, 32])));
    let err = String::from_utf8(extract(&layout, 4).stderr).unwrap();
    assert!(
        err.contains("64-pixel") && err.contains("32-pixel") && err.contains("make export"),
        "{err}"
    );
    write_cache(&layout, 64, &ArrayD::zeros(IxDyn(&[2, 3, 64, 64])));
    ClassList::new(vec!["a".into(), "b".into()])
        .write(&layout.cache(CacheFile::Classes))
        .unwrap();
    let err = String::from_utf8(extract(&layout, 4).stderr).unwrap();
    assert!(
        err.contains("exported for 3 classes")
            && err.contains("lists 2")
            && err.contains("make export"),
        "{err}"
    );
    assert!(!layout.dir(Folder::Features).exists());
}
