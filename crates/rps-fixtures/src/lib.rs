//! rps-fixtures: what the tests and `make bench` share: the repository's root, the
//! paths of `../shared/` (real archives and PyTorch reference values) and of the
//! references made here for resnet34 and resnet50, relative-error checks against
//! those values, and the sidecars of a cache made without rps-preprocess.

use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use rps_core::sidecar::{PreprocessDetails, PreprocessMeta, PreprocessSettings, Stage};
use rps_core::{CacheFile, ClassList, Layout};

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository's root")
}

/// `../shared/` beside the repository.
pub fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

/// A file of `../shared/reference/`.
pub fn reference(file: &str) -> PathBuf {
    shared().join("reference").join(file)
}

/// A reference file this repository made for the ResNets `../shared/` has none of
/// (`scripts/make_arch_reference.py`, committed under `crates/rps-fixtures/reference/`).
pub fn arch_reference(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("reference")
        .join(file)
}

/// PyTorch's own float32 error on the `../shared/` reference `file`, the worst of
/// several summation orders, by key (`grad:NAME`, `param:NAME`, `buffer:NAME`,
/// `loss`, `logits`, `eval_logits`): `f32_spread.json`, made by
/// `scripts/make_f32_spread.py`.
pub fn f32_spread(file: &str) -> std::collections::BTreeMap<String, f64> {
    let path = arch_reference("f32_spread.json");
    let text = std::fs::read_to_string(&path).expect("the committed f32_spread.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let errors = json["files"][file]
        .as_object()
        .unwrap_or_else(|| panic!("{}: no entry for {file}", path.display()));
    errors
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().expect("a number")))
        .collect()
}

/// Relative L2 error of `got` against `want`.
pub fn rel_err(got: &ArrayD<f32>, want: &ArrayD<f32>) -> f64 {
    assert_eq!(got.shape(), want.shape(), "shapes differ");
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (diff / norm.max(1e-30)).sqrt()
}

/// `values` flat, cut to at most `keep` elements as references that sample large
/// tensors store them: the elements at 0, step, 2 step, ... with step =
/// ceil(len / keep).
pub fn sampled(values: &ArrayD<f32>, keep: usize) -> ArrayD<f32> {
    if values.len() <= keep {
        return values.clone();
    }
    let step = values.len().div_ceil(keep);
    let kept: Vec<f32> = values.iter().step_by(step).copied().collect();
    ArrayD::from_shape_vec(ndarray::IxDyn(&[kept.len()]), kept).expect("one axis")
}

/// Asserts that `got` is within `tolerance` of `want` (relative L2), naming `what`.
pub fn assert_close(what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>, tolerance: f64) {
    let err = rel_err(got, want);
    assert!(
        err < tolerance,
        "{what}: relative L2 error {err:.3e} >= {tolerance:.0e}"
    );
}

/// `cache/meta.json` and `cache/classes.txt` as rps-preprocess writes them, for a
/// cache of `image_size`-pixel images with `views` training views.
pub fn write_cache_sidecars(
    layout: &Layout,
    image_size: u32,
    views: usize,
    classes: &[&str],
) -> rps_core::Result<()> {
    let classes: Vec<String> = classes.iter().map(|c| c.to_string()).collect();
    let settings = PreprocessSettings::new(image_size, views, 0);
    let details = PreprocessDetails {
        classes: classes.clone(),
        ..PreprocessDetails::default()
    };
    PreprocessMeta::new(Stage::Preprocess, "fixture", settings, details)
        .write(&layout.cache(CacheFile::Meta))?;
    ClassList::new(classes).write(&layout.cache(CacheFile::Classes))
}
