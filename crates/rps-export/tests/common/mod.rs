//! Shared by the integration tests: paths, running graphs, comparing to references.
#![allow(dead_code)]

pub mod step;

use std::collections::BTreeMap;

use ndarray::{ArrayD, IxDyn, arr0};
use ort::session::Session;
use ort::value::Tensor;
use rps_core::names::RateGroup;
use rps_core::npy::Npz;
use rps_core::{SessionOptions, Unfreeze, defaults, names};
use rps_model::network::Arch;
use rps_runtime::Runtime;

use rps_fixtures::assert_close;

pub fn session(graph: &[u8], label: &str) -> Session {
    Runtime::get()
        .unwrap()
        .session_from_bytes(graph, label, SessionOptions::cpu(2))
        .unwrap()
        .0
}

/// A graph input: float, int64 or u8 (pixels).
#[derive(Clone)]
pub enum Input {
    F32(ArrayD<f32>),
    I64(ArrayD<i64>),
    U8(ArrayD<u8>),
}

impl Input {
    /// The first dimension.
    pub fn batch(&self) -> usize {
        match self {
            Input::F32(a) => a.shape()[0],
            Input::I64(a) => a.shape()[0],
            Input::U8(a) => a.shape()[0],
        }
    }
}

/// The inputs of a fine-tune step's first step from `unfreeze` (step 1, zero Adam
/// moments, dropout off, labels `i % 3`) at `lr`; `values` holds every parameter and
/// buffer by name.
pub fn first_step_inputs(
    arch: &Arch,
    unfreeze: Unfreeze,
    features: Input,
    lr: f32,
    values: &BTreeMap<String, ArrayD<f32>>,
) -> Vec<(String, Input)> {
    let batch = features.batch();
    let params = arch.finetune_params(unfreeze);
    let labels = ArrayD::from_shape_fn(IxDyn(&[batch]), |i| (i[0] % 3) as i64);
    let mut inputs = batch_inputs(arch, features, labels);
    inputs.extend(optimizer_inputs(arch, &params, 1.0, lr));
    for (name, shape) in params {
        inputs.push((names::param(&name), Input::F32(values[&name].clone())));
        for key in [names::adam_m(&name), names::adam_v(&name)] {
            inputs.push((key, Input::F32(ArrayD::zeros(IxDyn(&shape)))));
        }
    }
    for (name, _) in arch.finetune_buffers(unfreeze) {
        inputs.push((names::buffer(&name), Input::F32(values[&name].clone())));
    }
    inputs
}

/// A step's batch: `features`, `labels`, and dropout off.
pub fn batch_inputs(arch: &Arch, features: Input, labels: ArrayD<i64>) -> Vec<(String, Input)> {
    let batch = labels.len();
    vec![
        (names::FEATURES.to_string(), features),
        (names::LABELS.into(), Input::I64(labels)),
        (
            names::DROPOUT_MASK.into(),
            Input::F32(ArrayD::ones(IxDyn(&[batch, arch.features()]))),
        ),
    ]
}

/// A step's optimizer inputs at `step`: Adam's default beta1, no decay, `lr` for
/// every rate group of `params`, and every class weighing 1.
pub fn optimizer_inputs(
    arch: &Arch,
    params: &[(String, Vec<usize>)],
    step: f32,
    lr: f32,
) -> Vec<(String, Input)> {
    let scalar = |v: f32| Input::F32(arr0(v).into_dyn());
    let mut inputs = vec![
        (names::STEP.to_string(), scalar(step)),
        (names::BETA1.into(), scalar(defaults::ADAM_BETA1 as f32)),
        (names::WEIGHT_DECAY.into(), scalar(0.0)),
        (
            names::CLASS_WEIGHTS.into(),
            Input::F32(ArrayD::ones(IxDyn(&[arch.classes]))),
        ),
    ];
    let mut groups: Vec<RateGroup> = params.iter().map(|(n, _)| arch.rate_group(n)).collect();
    groups.dedup();
    inputs.extend(groups.into_iter().map(|g| (g.input(), scalar(lr))));
    inputs
}

/// Replaces the input `name` of `inputs` with `value`.
pub fn set(inputs: &mut [(String, Input)], name: &str, value: Input) {
    let slot = inputs
        .iter_mut()
        .find(|(n, _)| n == name)
        .expect("an input");
    slot.1 = value;
}

/// Runs `session` and returns every float output by name.
pub fn run(session: &mut Session, inputs: Vec<(String, Input)>) -> BTreeMap<String, ArrayD<f32>> {
    let values: Vec<(String, ort::value::DynValue)> = inputs
        .into_iter()
        .map(|(name, input)| {
            let value = match input {
                Input::F32(a) => Tensor::from_array(a).unwrap().into_dyn(),
                Input::I64(a) => Tensor::from_array(a).unwrap().into_dyn(),
                Input::U8(a) => Tensor::from_array(a).unwrap().into_dyn(),
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

/// Asserts that `got` is within `tolerance` of the reference's array `key`.
pub fn assert_matches(reference: &mut Npz, key: &str, got: &ArrayD<f32>, tolerance: f64) {
    assert_close(key, got, &reference.get(key).unwrap(), tolerance);
}
