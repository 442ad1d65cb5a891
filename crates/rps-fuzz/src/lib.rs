//! rps-fuzz: one function per reader of untrusted input, fed the fuzzer's bytes the
//! way the stage that reads them gets them (most from a file). `fuzz/` calls these
//! from cargo-fuzz targets on nightly; `tests/replay.rs` feeds them every seed and
//! every input a fuzzer once crashed on, on stable. None may panic, abort, hang or
//! exhaust memory: an error is the right answer to a bad file.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rand::SeedableRng;
use rps_core::rows::{
    DatasetCount, EpochRow, IndexRow, LayerRow, LrFindRow, MetricRow, ParamsRow, PerClassRow,
    SplitRow,
};
use rps_core::sidecar::{
    EvaluateMeta, ExportMeta, ExtractMeta, LrFindMeta, PreprocessMeta, TrainMeta,
};
use rps_core::{ClassList, npy, table};
use rps_model::network::{Arch, Net};

/// A fuzz target: its name (`fuzz/fuzz_targets/NAME.rs`, `fuzz/seeds/NAME/`) and
/// what it runs, which says whether the input was read all the way as valid (the
/// replay test holds every target to a seed that is).
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]) -> bool,
}

/// Every target, in the order `make fuzz` runs them.
pub const TARGETS: [Target; 8] = [
    Target {
        name: "pth",
        run: weights,
    },
    Target {
        name: "safetensors",
        run: weights,
    },
    Target {
        name: "unpack",
        run: unpack,
    },
    Target {
        name: "npy",
        run: npy,
    },
    Target {
        name: "onnx",
        run: onnx,
    },
    Target {
        name: "image",
        run: image,
    },
    Target {
        name: "sidecar",
        run: sidecar,
    },
    Target {
        name: "csv",
        run: csv,
    },
];

/// The target `name`; a name no target has is a mistake in `fuzz/fuzz_targets/`
/// (the replay test checks that every file there names one).
pub fn target(name: &str) -> &'static Target {
    TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no fuzz target {name:?} in rps_fuzz::TARGETS"))
}

/// A folder of this process's own for the files the targets write (in memory when
/// `/dev/shm` is there: a file per execution).
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        tempfile::Builder::new()
            .prefix("rps-fuzz.")
            .tempdir_in(base)
            .expect("a scratch folder")
    })
    .path()
}

/// `data` as the file `name` in the scratch folder.
fn as_file(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, data).expect("writing the scratch file");
    path
}

/// The architecture of the seeds' state dicts (`fuzz/make_seeds.py`): a width-1
/// resnet18. Weights of resnet34 or resnet50 at that width are recognized as such.
const ARCH: Arch = Arch {
    net: Net::ResNet18,
    width: 1,
    image_size: 64,
    classes: 3,
};

/// A weights file as fetch checks it is whole, then as rps-export reads it (`.pth`
/// in either torch.save format, or `.safetensors`, told by the bytes) and checks it
/// against the architecture.
pub fn weights(data: &[u8]) -> bool {
    let whole = rps_weights::check_whole(&as_file("weights", data)).is_ok();
    let path = Path::new("fuzz.pth");
    let fits = rps_weights::parse(data, path)
        .is_ok_and(|tensors| rps_model::weights::check_weights(&tensors, &ARCH, path).is_ok());
    whole && fits
}

/// rps-fetch's archive extraction (at most 1 MiB unpacked), then the class count
/// of what came out.
pub fn unpack(data: &[u8]) -> bool {
    let archive = as_file("archive.zip", data);
    let target = scratch().join("split");
    rps_fetch::extract::unpack(&archive, &target, 1 << 20).is_ok_and(|unpacked| {
        let counted = rps_fetch::extract::count_per_class(unpacked.path()).is_ok();
        counted && ClassList::from_folders(unpacked.path()).is_ok()
    })
}

/// `.npy` read whole as each element type and memory-mapped as the features are;
/// `.npz` as the weights and checkpoints are.
pub fn npy(data: &[u8]) -> bool {
    let path = as_file("array.npy", data);
    let read = [
        npy::read::<f32>(&path).is_ok(),
        npy::read::<i64>(&path).is_ok(),
        npy::read::<u8>(&path).is_ok(),
        npy::read_tensors(&path).is_ok(),
    ];
    let mapped = npy::Mapped::open(&path).is_ok_and(|m| {
        m.view::<f32>().is_ok() || m.view::<npy::F16>().is_ok() || m.view::<u8>().is_ok()
    });
    mapped || read.contains(&true)
}

/// An ONNX model as train and predict read one: its head read and replaced.
pub fn onnx(data: &[u8]) -> bool {
    let path = as_file("model.onnx", data);
    let Ok(mut model) = rps_onnx::ModelFile::read(&path) else {
        return false;
    };
    let _ = model.metadata("classes");
    let head = model.initializer("fc.weight");
    if let Some(values) = &head {
        let _ = model.set_initializer("fc.weight", &[values.len()], values);
    }
    !model.to_bytes().is_empty()
}

/// An image through preprocess's path: decoded under its limits, then the test
/// view and an augmented view.
pub fn image(data: &[u8]) -> bool {
    let path = as_file("image.png", data);
    let Ok(image) = rps_image::load_rgb(&path) else {
        return false;
    };
    let test = rps_image::test_view(&image, 8);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let augmentation = rps_image::Augmentation::draw(&mut rng, image.width(), image.height());
    let train = augmentation.apply(&image, 8);
    test.dimensions() == (8, 8) && train.dimensions() == (8, 8)
}

/// Every JSON sidecar a later stage reads, and `classes.txt`.
pub fn sidecar(data: &[u8]) -> bool {
    let path = as_file("meta.json", data);
    let read = [
        ExportMeta::read(&path).is_ok(),
        PreprocessMeta::read(&path).is_ok(),
        ExtractMeta::read(&path).is_ok(),
        TrainMeta::read(&path).is_ok(),
        LrFindMeta::read(&path).is_ok(),
        EvaluateMeta::read(&path).is_ok(),
        ClassList::read(&path).is_ok(),
    ];
    read.contains(&true)
}

/// Every CSV file a later stage (or a resumed one) reads, and `SHA256SUMS`.
pub fn csv(data: &[u8]) -> bool {
    let path = as_file("table.csv", data);
    let read = [
        table::read::<DatasetCount>(&path).is_ok(),
        table::read::<IndexRow>(&path).is_ok(),
        table::read::<SplitRow>(&path).is_ok(),
        table::read::<EpochRow>(&path).is_ok(),
        table::read::<ParamsRow>(&path).is_ok(),
        table::read::<LrFindRow>(&path).is_ok(),
        table::read::<LayerRow>(&path).is_ok(),
        table::read::<MetricRow>(&path).is_ok(),
        table::read::<PerClassRow>(&path).is_ok(),
        rps_fetch::checksums::Checksums::read(&path).is_ok(),
    ];
    read.contains(&true)
}
