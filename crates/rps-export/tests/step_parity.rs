//! Two Adam steps of each train-step graph against PyTorch's (dropout off), then the
//! eval graph on the updated parameters.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{Input, assert_matches, batch_inputs, optimizer_inputs, run, session};
use ndarray::{ArrayD, IxDyn};
use rps_core::names::{self, StateKind};
use rps_core::npy::Npz;
use rps_core::{FtBn, Unfreeze};
use rps_export::train::{self, Convolutions, Gradients};
use rps_model::network::{Arch, Net};

/// The mini models the references hold, on 64-pixel images: resnet18's are
/// `../shared/`'s (width 8), the others made here (width 4).
fn mini(net: Net) -> (Arch, PathBuf) {
    let (width, file) = match net {
        Net::ResNet18 => (8, rps_fixtures::reference("mini_w8_s64_seed0")),
        _ => (
            4,
            rps_fixtures::arch_reference(&format!("{}_w4_s64_seed0", net.name())),
        ),
    };
    let arch = Arch {
        net,
        width,
        image_size: 64,
        classes: 3,
    };
    (arch, file)
}

/// Returns the state after the two steps, by graph input name.
fn check_two_steps(
    arch: &Arch,
    graph: Vec<u8>,
    reference_file: &Path,
    params: Vec<(String, Vec<usize>)>,
    buffers: Vec<(String, Vec<usize>)>,
) -> BTreeMap<String, ArrayD<f32>> {
    let mut reference = Npz::open(reference_file).unwrap();
    let features = reference.get::<f32>("features").unwrap();
    let labels = reference.get::<i64>("labels").unwrap();
    let lr = reference.get::<f32>("lr").unwrap().sum();
    let mut state: BTreeMap<String, ArrayD<f32>> = BTreeMap::new();
    for (name, shape) in &params {
        state.insert(
            names::param(name),
            reference.get(&format!("init:param:{name}")).unwrap(),
        );
        state.insert(names::adam_m(name), ArrayD::zeros(IxDyn(shape)));
        state.insert(names::adam_v(name), ArrayD::zeros(IxDyn(shape)));
    }
    for (name, _) in &buffers {
        state.insert(
            names::buffer(name),
            reference.get(&format!("init:buffer:{name}")).unwrap(),
        );
    }
    let mut step_session = session(&graph, &reference_file.display().to_string());
    for step in 1..=2 {
        let mut inputs = batch_inputs(arch, Input::F32(features.clone()), labels.clone());
        inputs.extend(optimizer_inputs(arch, &params, step as f32, lr));
        inputs.extend(
            state
                .iter()
                .map(|(k, v)| (k.clone(), Input::F32(v.clone()))),
        );
        let out = run(&mut step_session, inputs);
        let prefix = format!("step{step}");
        let mut check = |key: String, got: &ArrayD<f32>, tolerance| {
            assert_matches(&mut reference, &format!("{prefix}:{key}"), got, tolerance)
        };
        check("loss".into(), &out[names::LOSS], 1e-4);
        for (name, _) in &params {
            check(format!("grad:{name}"), &out[&names::grad(name)], 1e-4);
            let updated = &out[&names::updated(&names::param(name))];
            check(format!("param:{name}"), updated, 1e-3);
        }
        for (name, _) in &buffers {
            let updated = &out[&names::updated(&names::buffer(name))];
            check(format!("buffer:{name}"), updated, 1e-3);
        }
        for (key, value) in state.iter_mut() {
            *value = out[&names::updated(key)].clone();
        }
    }
    state
}

/// The eval graph on the trained parameters and statistics against the reference's
/// final logits.
fn check_final_logits(graph: Vec<u8>, reference_file: &Path, state: BTreeMap<String, ArrayD<f32>>) {
    let mut reference = Npz::open(reference_file).unwrap();
    let mut eval = session(&graph, "eval");
    let mut inputs = vec![
        (
            names::FEATURES.into(),
            Input::F32(reference.get("features").unwrap()),
        ),
        (
            names::LABELS.into(),
            Input::I64(reference.get("labels").unwrap()),
        ),
    ];
    let weights = state.into_iter().filter(|(input, _)| {
        matches!(
            StateKind::parse(input),
            Some((StateKind::Param | StateKind::Buffer, _))
        )
    });
    inputs.extend(weights.map(|(input, value)| (input, Input::F32(value))));
    let out = run(&mut eval, inputs);
    assert_matches(
        &mut reference,
        "final:eval_logits",
        &out[names::LOGITS],
        1e-3,
    );
}

/// The graphs of one phase: two steps against its reference file, then the eval
/// graph on the trained weights.
fn check_phase(net: Net, finetune: bool) {
    eprintln!(
        "{} {}",
        net.name(),
        if finetune { "layer4" } else { "head" }
    );
    let (arch, tag) = mini(net);
    let (step, eval, phase, params, buffers) = if finetune {
        (
            train::finetune_step(
                &arch,
                Unfreeze::stage("layer4"),
                Convolutions::Fastest,
                FtBn::Train,
                Gradients::Output,
            ),
            train::finetune_eval(&arch, Unfreeze::stage("layer4"), Convolutions::Fastest),
            "layer4",
            arch.finetune_params(Unfreeze::stage("layer4")),
            arch.finetune_buffers(Unfreeze::stage("layer4")),
        )
    } else {
        (
            train::head_step(&arch, Gradients::Output),
            train::head_eval(&arch),
            "head",
            arch.head_shapes(3).to_vec(),
            vec![],
        )
    };
    let file = PathBuf::from(format!("{}_train_{phase}.npz", tag.display()));
    let trained = check_two_steps(&arch, step, &file, params, buffers);
    check_final_logits(eval, &file, trained);
}

#[test]
fn head_step_matches_pytorch() {
    for net in [Net::ResNet18, Net::ResNet34, Net::ResNet50] {
        check_phase(net, false);
    }
}

#[test]
fn finetune_step_matches_pytorch() {
    for net in [Net::ResNet18, Net::ResNet34, Net::ResNet50] {
        check_phase(net, true);
    }
}
