//! Finite differences against the step graph's gradients, on tiny random
//! configurations: a check of the backward pass independent of PyTorch, through both
//! convolution algorithms (layer4 at 2x2 takes patches, at 7x7 Winograd).

mod common;

use std::collections::BTreeMap;

use common::{Input, first_step_inputs, run, session};
use ndarray::{ArrayD, IxDyn};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rps_core::{FtBn, Unfreeze, names};
use rps_export::train::{self, Convolutions, Gradients};
use rps_model::network::{Arch, Net};

const BATCH: usize = 4;

fn random(rng: &mut ChaCha8Rng, shape: &[usize], scale: f32) -> ArrayD<f32> {
    ArrayD::from_shape_simple_fn(IxDyn(shape), || scale * (rng.random::<f32>() - 0.5))
}

/// The step graph's loss and gradients at `values` (lr 0: nothing moves).
fn loss_and_grads(
    arch: &Arch,
    session: &mut ort::session::Session,
    features: &ArrayD<f32>,
    values: &BTreeMap<String, ArrayD<f32>>,
) -> (f64, BTreeMap<String, ArrayD<f32>>) {
    let out = run(
        session,
        first_step_inputs(
            arch,
            Unfreeze::stage("layer4"),
            Input::F32(features.clone()),
            0.0,
            values,
        ),
    );
    let grads = arch
        .finetune_params(Unfreeze::stage("layer4"))
        .into_iter()
        .map(|(n, _)| (n.clone(), out[&names::grad(&n)].clone()))
        .collect();
    (out[names::LOSS].sum() as f64, grads)
}

#[test]
fn gradients_match_central_differences_with_patches() {
    check_gradients(&Arch {
        net: Net::ResNet18,
        width: 2,
        image_size: 64,
        classes: 3,
    });
}

#[test]
fn gradients_match_central_differences_with_winograd() {
    check_gradients(&Arch {
        net: Net::ResNet18,
        width: 2,
        image_size: 224,
        classes: 3,
    });
}

#[test]
fn bottleneck_gradients_match_central_differences() {
    check_gradients(&Arch {
        net: Net::ResNet50,
        width: 2,
        image_size: 224,
        classes: 3,
    });
}

fn check_gradients(arch: &Arch) {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let [c, s, _] = arch.frozen_shape(Unfreeze::stage("layer4"));
    let features = random(&mut rng, &[BATCH, c, s, s], 4.0);
    let mut params: BTreeMap<String, ArrayD<f32>> = arch
        .finetune_params(Unfreeze::stage("layer4"))
        .into_iter()
        .map(|(name, shape)| {
            let value = if name.contains(".bn") || name.contains("downsample.1") {
                if name.ends_with("weight") {
                    ArrayD::from_elem(IxDyn(&shape), 1.0) + random(&mut rng, &shape, 0.4)
                } else {
                    random(&mut rng, &shape, 0.4)
                }
            } else {
                random(&mut rng, &shape, 1.0)
            };
            (name, value)
        })
        .collect();
    // Train-mode BatchNorm only updates its running statistics: any values do.
    for (name, shape) in arch.finetune_buffers(Unfreeze::stage("layer4")) {
        params.insert(name, ArrayD::ones(IxDyn(&shape)));
    }
    let mut session = session(
        &train::finetune_step(
            arch,
            Unfreeze::stage("layer4"),
            Convolutions::Fastest,
            FtBn::Train,
            Gradients::Output,
        ),
        "finetune_step",
    );
    let (_, grads) = loss_and_grads(arch, &mut session, &features, &params);
    let h = 2e-3f32;
    let mut checked = 0;
    for (name, _) in arch.finetune_params(Unfreeze::stage("layer4")) {
        // The largest-gradient entries of each parameter, where f32 differences are reliable.
        let mut order: Vec<usize> = (0..grads[&name].len()).collect();
        let flat = grads[&name].as_slice().unwrap().to_vec();
        order.sort_by(|&a, &b| flat[b].abs().total_cmp(&flat[a].abs()));
        for &i in order.iter().take(2) {
            let original = params[&name].as_slice().unwrap()[i];
            params.get_mut(&name).unwrap().as_slice_mut().unwrap()[i] = original + h;
            let (up, _) = loss_and_grads(arch, &mut session, &features, &params);
            params.get_mut(&name).unwrap().as_slice_mut().unwrap()[i] = original - h;
            let (down, _) = loss_and_grads(arch, &mut session, &features, &params);
            params.get_mut(&name).unwrap().as_slice_mut().unwrap()[i] = original;
            let numeric = (up - down) / (2.0 * h as f64);
            let analytic = flat[i] as f64;
            let err = (numeric - analytic).abs() / analytic.abs().max(1e-3);
            assert!(
                err < 0.05,
                "{name}[{i}]: finite difference {numeric:.5} vs gradient {analytic:.5}"
            );
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        2 * arch.finetune_params(Unfreeze::stage("layer4")).len()
    );
}
