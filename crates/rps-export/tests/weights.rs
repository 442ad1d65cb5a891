//! Reading the reference state dicts (saved by `torch.save`, as torchvision's are), and
//! what export refuses to build from.

mod common;

use rps_model::network::{Arch, Net};
use rps_model::weights::check_weights;
use rps_weights::load_file;

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
        let checked = check_weights(&tensors, &arch, &path).unwrap();
        assert_eq!(checked.head_classes, 1000);
        assert!(checked.unexpected.is_empty(), "{:?}", checked.unexpected);
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

/// `tensors` as a `.safetensors` file in `dir`.
fn safetensors_file(dir: &std::path::Path, tensors: &rps_core::Tensors) -> std::path::PathBuf {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(name, t)| {
            let data = t.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), data, t.shape().to_vec())
        })
        .collect();
    let views = bytes.iter().map(|(name, data, shape)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .unwrap();
        (name.clone(), view)
    });
    let path = dir.join("w.safetensors");
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    path
}

#[test]
fn export_refuses_weights_with_a_missing_or_misshapen_head_before_writing() {
    let arch = Arch {
        net: Net::ResNet18,
        width: 4,
        image_size: 32,
        classes: 3,
    };
    let good = rps_model::weights::random_backbone(&arch, 0);
    let edits: [(&str, Option<Vec<usize>>); 3] = [
        ("fc.bias", None),
        ("fc.weight", Some(vec![])),
        ("fc.weight", Some(vec![32, 1000])),
    ];
    for (key, shape) in edits {
        let dir = tempfile::tempdir().unwrap();
        let mut tensors = good.clone();
        match shape {
            None => drop(tensors.remove(key)),
            Some(shape) => drop(tensors.insert(key.into(), ndarray::ArrayD::zeros(shape))),
        }
        let path = safetensors_file(dir.path(), &tensors);
        let layout = rps_core::Layout::new(dir.path().join("data"));
        let config = rps_export::export::Config::for_arch(
            &layout,
            rps_export::export::Source::File(path),
            &arch,
            rps_core::Unfreeze::stage("layer4"),
        );
        let err = format!("{:#}", rps_export::export::run(&config).unwrap_err());
        assert!(err.contains("w.safetensors") && err.contains(key), "{err}");
        assert!(
            !layout.dir(rps_core::Folder::Graphs).exists(),
            "{key}: wrote graphs"
        );
    }
}

#[test]
fn export_refuses_a_fetched_dataset_of_one_class() {
    let dir = tempfile::tempdir().unwrap();
    let layout = rps_core::Layout::new(dir.path());
    std::fs::create_dir_all(layout.dataset_summary().parent().unwrap()).unwrap();
    std::fs::write(
        layout.dataset_summary(),
        "split,class,count\ntrain,rock,9\ntest,rock,3\n",
    )
    .unwrap();
    let config = rps_export::export::Config {
        layout: layout.clone(),
        source: rps_export::export::Source::Random(0),
        net: Net::ResNet18,
        width: rps_core::Width::Channels(4),
        image_size: 32,
        classes: None,
        unfreeze: rps_core::Unfreeze::stage("layer4"),
    };
    let err = format!("{:#}", rps_export::export::run(&config).unwrap_err());
    assert!(
        err.contains("summary.csv") && err.contains("lists 1 training classes"),
        "{err}"
    );
}

/// `UNFREEZE` names a stage of the network: a name it has not is refused before
/// anything is written, with the choices; `last` is recorded as the stage it names.
#[test]
fn export_checks_unfreeze_against_the_network_and_records_the_stage() {
    let arch = Arch {
        net: Net::ResNet50,
        width: 4,
        image_size: 32,
        classes: 3,
    };
    let dir = tempfile::tempdir().unwrap();
    let layout = rps_core::Layout::new(dir.path());
    let config = |unfreeze: &str| {
        let unfreeze = rps_core::Unfreeze::flag(unfreeze).unwrap();
        rps_export::export::Config::for_arch(
            &layout,
            rps_export::export::Source::Random(0),
            &arch,
            unfreeze,
        )
    };
    let err = format!(
        "{:#}",
        rps_export::export::run(&config("layer5")).unwrap_err()
    );
    assert!(
        err.contains("UNFREEZE=layer5")
            && err.contains("resnet50 has no stage \"layer5\"")
            && err.contains("expected one of all, layer1, layer2, layer3, layer4, last"),
        "{err}"
    );
    assert!(!layout.dir(rps_core::Folder::Graphs).exists());
    let summary = rps_export::export::summary(&config("stem")).unwrap_err();
    assert!(
        format!("{summary:#}").contains("no stage \"stem\""),
        "{summary:#}"
    );
    let meta = rps_export::export::run(&config("last")).unwrap();
    assert_eq!(meta.settings.unfreeze, rps_core::Unfreeze::stage("layer4"));
    // The network names its head for the stages after it.
    let head = &meta.details.head;
    assert_eq!(
        (head.weight.as_str(), head.bias.as_str()),
        ("fc.weight", "fc.bias")
    );
    let text = std::fs::read_to_string(layout.graph(rps_core::GraphFile::Meta)).unwrap();
    assert!(text.contains("\"unfreeze\": \"layer4\""), "{text}");
}

/// Settings each in range can still ask for more memory than there is: export
/// refuses them before drawing a weight, naming what it needs and what is free, where
/// it aborted before (here under a 4 GB address-space limit).
#[test]
fn an_export_larger_than_memory_is_refused_before_it_allocates() {
    let dir = tempfile::tempdir().unwrap();
    let command = format!(
        "ulimit -v 4000000; exec '{}' --data '{}' --random-init 0 --arch resnet50 \
         --width 256 --image-size 1024 --classes 100000",
        env!("CARGO_BIN_EXE_rps-export"),
        dir.path().display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &command])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("export needs at least") && stderr.contains("is free"),
        "{stderr}"
    );
}
