//! Shared by the integration tests: paths, running graphs, comparing to references.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use ort::session::Session;
use ort::value::Tensor;
use rps_core::{DeviceChoice, Runtime};

/// `../shared/` beside the repository.
pub fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

pub fn reference(file: &str) -> PathBuf {
    shared().join("reference").join(file)
}

pub fn session(graph: &[u8], label: &str) -> Session {
    Runtime::get()
        .unwrap()
        .session_from_bytes(graph, label, DeviceChoice::Cpu, 2)
        .unwrap()
        .0
}

/// A graph input: float or int64.
pub enum Input {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
}

/// Runs `session` and returns every float output by name.
pub fn run(session: &mut Session, inputs: Vec<(String, Input)>) -> BTreeMap<String, ArrayD<f32>> {
    let values: Vec<(String, ort::value::DynValue)> = inputs
        .into_iter()
        .map(|(name, input)| {
            let value = match input {
                Input::F32(a) => Tensor::from_array(a).unwrap().into_dyn(),
                Input::I64(a) => Tensor::from_array(a).unwrap().into_dyn(),
            };
            (name, value)
        })
        .collect();
    let outputs = session.run(values).unwrap();
    outputs
        .iter()
        .filter_map(|(name, value)| {
            value
                .try_extract_array::<f32>()
                .ok()
                .map(|a| (name.to_string(), a.to_owned()))
        })
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

pub fn assert_close(what: &str, got: &ArrayD<f32>, want: &ArrayD<f32>, tolerance: f64) {
    let err = rel_err(got, want);
    assert!(
        err < tolerance,
        "{what}: relative L2 error {err:.3e} >= {tolerance:.0e}"
    );
}
