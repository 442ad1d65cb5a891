//! Reading the reference state dicts (saved by `torch.save`, as torchvision's are).

mod common;

use rps_export::resnet::{Arch, Net};
use rps_export::weights::{check_backbone, load_file};

#[test]
fn reference_state_dicts_load_with_every_tensor() {
    for (file, width) in [("resnet18_seed0.pth", 64), ("mini_w8_s64_seed0.pth", 8)] {
        let path = rps_fixtures::reference(file);
        let (tensors, sha) = load_file(&path).unwrap();
        let arch = Arch {
            net: Net::ResNet18,
            width,
            image_size: 224,
            classes: 3,
        };
        check_backbone(&tensors, &arch, &path).unwrap();
        assert_eq!(tensors["fc.weight"].shape(), &[1000, 8 * width]);
        assert_eq!(sha.len(), 64);
    }
}

#[test]
fn reference_values_are_read_in_order() {
    let (tensors, _) = load_file(&rps_fixtures::reference("mini_w8_s64_seed0.pth")).unwrap();
    let mut npz = rps_core::npy::Npz::open(&rps_fixtures::reference(
        "mini_w8_s64_seed0_train_layer4.npz",
    ))
    .unwrap();
    for name in [
        "layer4.0.conv1.weight",
        "layer4.1.bn2.running_var",
        "layer4.0.downsample.0.weight",
    ] {
        let want = npz
            .get::<f32>(&format!("init:buffer:{name}"))
            .or_else(|_| npz.get::<f32>(&format!("init:param:{name}")))
            .unwrap();
        assert_eq!(tensors[name], want, "{name}");
    }
}

#[test]
fn truncated_file_is_a_clear_error() {
    let bytes = std::fs::read(rps_fixtures::reference("mini_w8_s64_seed0.pth")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.pth");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_file(&path).unwrap_err().to_string();
    assert!(err.contains("cut.pth"), "{err}");
}

#[test]
fn a_file_of_no_known_format_says_which_were_tried() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [("empty.pth", &b""[..]), ("notes.pth", b"some text")] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = load_file(&path).unwrap_err().to_string();
        assert!(
            err.contains(name) && err.contains(".pth") && err.contains(".safetensors"),
            "{err}"
        );
    }
}

#[test]
fn a_state_dict_with_a_21_letter_file_stem_loads() {
    // torch.save names the archive's folder after the file stem; at 21 letters the
    // first entry is exactly as long as the zip64 end records behind the central
    // directory, which once misled the zip reader's search for it.
    let path = rps_fixtures::arch_reference("resnet34_w4_s64_seed0.pth");
    assert_eq!(path.file_stem().unwrap().len(), 21);
    let (tensors, _) = load_file(&path).unwrap();
    assert_eq!(tensors["layer4.2.conv2.weight"].shape(), &[32, 32, 3, 3]);
}
