//! The phase 2 train step at the size the recipe trains (layer4 maps 7x7, width 64)
//! against PyTorch's, computed in float64: every gradient within ten times PyTorch's
//! own float32 error for it (at least 1e-5), the loss and logits within 1e-5.

mod common;

use common::{Input, first_step_inputs, run, session, set};
use rps_core::npy::Npz;
use rps_core::{FtBn, Unfreeze, names};
use rps_export::train::{self, Convolutions, Gradients};
use rps_fixtures::{reference, rel_err};
use rps_model::network::{Arch, Net};

const ARCH: Arch = Arch {
    net: Net::ResNet18,
    width: 64,
    image_size: 224,
    classes: 3,
};
const FILE: &str = "resnet18_seed0_train_layer4.npz";

/// `(name, our relative error, the bound)` of the loss, the logits and every gradient.
fn errors(convolutions: Convolutions) -> Vec<(String, f64, f64)> {
    let (mut values, _) = rps_weights::load_file(&reference("resnet18_seed0.pth")).unwrap();
    let mut npz = Npz::open(&reference(FILE)).unwrap();
    for leaf in ["weight", "bias"] {
        let name = ARCH.head().tensor(leaf);
        values.insert(
            name.clone(),
            npz.get(&format!("init:param:{name}")).unwrap(),
        );
    }
    let features = npz.get::<f32>("features").unwrap();
    let labels = npz.get::<i64>("labels").unwrap();
    let mut inputs = first_step_inputs(
        &ARCH,
        Unfreeze::stage("layer4"),
        Input::F32(features),
        1e-3,
        &values,
    );
    set(&mut inputs, names::LABELS, Input::I64(labels));
    let graph = train::finetune_step(
        &ARCH,
        Unfreeze::stage("layer4"),
        convolutions,
        FtBn::Train,
        Gradients::Output,
    );
    let out = run(&mut session(&graph, "finetune_step"), inputs);
    let mut errors = Vec::new();
    for (key, want) in [(names::LOSS, "step1:loss"), (names::LOGITS, "step1:logits")] {
        let want = npz.get::<f32>(want).unwrap();
        errors.push((key.to_string(), rel_err(&out[key], &want), 1e-5));
    }
    for (name, _) in ARCH.finetune_params(Unfreeze::stage("layer4")) {
        let want = npz.get::<f32>(&format!("step1:grad:{name}")).unwrap();
        let torch = npz.get::<f64>(&format!("torch_f32_rel:{name}")).unwrap();
        let bound = (10.0 * torch.sum()).max(1e-5);
        errors.push((
            name.clone(),
            rel_err(&out[&names::grad(&name)], &want),
            bound,
        ));
    }
    errors
}

fn check(convolutions: Convolutions) {
    let errors = errors(convolutions);
    for (name, error, bound) in &errors {
        eprintln!("{convolutions:?} {name}: {error:.2e} (bound {bound:.1e})");
    }
    let over: Vec<_> = errors.iter().filter(|(_, e, b)| e >= b).collect();
    assert!(
        over.is_empty(),
        "{convolutions:?}: over the bound: {over:?}"
    );
}

#[test]
fn the_full_size_step_matches_pytorch() {
    check(Convolutions::Fastest);
}

#[test]
fn the_full_size_patch_step_matches_pytorch() {
    check(Convolutions::Patches);
}
