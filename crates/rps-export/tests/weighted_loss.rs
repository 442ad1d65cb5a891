//! The head step under class weights against PyTorch's
//! `CrossEntropyLoss(weight=...)`: loss, gradients and two Adam updates
//! (`scripts/make_weighted_loss_reference.py`).

mod common;

use std::collections::BTreeMap;

use common::{Input, assert_matches, batch_inputs, optimizer_inputs, run, session, set};
use ndarray::{ArrayD, IxDyn};
use rps_core::names;
use rps_core::npy::Npz;
use rps_export::train::{self, Gradients};
use rps_fixtures::arch_reference;
use rps_model::network::{Arch, Net};

#[test]
fn the_weighted_loss_its_gradient_and_adam_match_pytorch() {
    let arch = Arch {
        net: Net::ResNet18,
        width: 8,
        image_size: 64,
        classes: 3,
    };
    let file = arch_reference("head_weighted_loss.npz");
    let mut reference = Npz::open(&file).unwrap();
    let features = reference.get::<f32>("features").unwrap();
    let labels = reference.get::<i64>("labels").unwrap();
    let weights = reference.get::<f32>("weights").unwrap();
    let lr = reference.get::<f32>("lr").unwrap().sum();
    let params = arch.head_shapes(arch.classes).to_vec();
    let mut state = BTreeMap::new();
    for (name, shape) in &params {
        let init = reference.get(&format!("init:param:{name}")).unwrap();
        state.insert(names::param(name), init);
        state.insert(names::adam_m(name), ArrayD::zeros(IxDyn(shape)));
        state.insert(names::adam_v(name), ArrayD::zeros(IxDyn(shape)));
    }
    let mut step_session = session(&train::head_step(&arch, Gradients::Output), "head_step");
    for step in 1..=2 {
        let mut inputs = batch_inputs(&arch, Input::F32(features.clone()), labels.clone());
        inputs.extend(optimizer_inputs(&arch, &params, step as f32, lr));
        set(
            &mut inputs,
            names::CLASS_WEIGHTS,
            Input::F32(weights.clone()),
        );
        inputs.extend(
            state
                .iter()
                .map(|(k, v)| (k.clone(), Input::F32(v.clone()))),
        );
        let out = run(&mut step_session, inputs);
        let key = |what: &str| format!("step{step}:{what}");
        assert_matches(&mut reference, &key("loss"), &out[names::LOSS], 1e-5);
        for (name, _) in &params {
            let grad = &out[&names::grad(name)];
            assert_matches(&mut reference, &key(&format!("grad:{name}")), grad, 1e-5);
            let updated = &out[&names::updated(&names::param(name))];
            assert_matches(
                &mut reference,
                &key(&format!("param:{name}")),
                updated,
                1e-5,
            );
        }
        for (key, value) in state.iter_mut() {
            *value = out[&names::updated(key)].clone();
        }
    }
    // The weights matter: unweighted, the first loss differs.
    let unweighted = reference.get::<f32>("unweighted:loss").unwrap().sum();
    let weighted = reference.get::<f32>("step1:loss").unwrap().sum();
    assert!(
        (unweighted - weighted).abs() > 1e-3,
        "{unweighted} vs {weighted}"
    );
}
