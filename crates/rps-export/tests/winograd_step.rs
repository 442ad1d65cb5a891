//! The Winograd step graph against the patch step graph on full-size maps (layer4 at
//! 7x7, where Winograd is used): the patch formulation is held to PyTorch by
//! `step_parity.rs`, so this holds Winograd to it.

mod common;

use common::{Input, assert_close, run, session};
use ndarray::{ArrayD, IxDyn, arr0};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rps_export::resnet::Arch;
use rps_export::train::{self, Convolutions};
use rps_export::{names, weights};

const ARCH: Arch = Arch {
    width: 8,
    image_size: 224,
    classes: 3,
};
const BATCH: usize = 6;

fn inputs() -> Vec<(String, Input)> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let s = ARCH.layer3_size();
    // layer3 ends in a ReLU: non-negative features.
    let features =
        ArrayD::from_shape_simple_fn(IxDyn(&[BATCH, ARCH.layer3_channels(), s, s]), || {
            rng.random::<f32>().max(0.3) - 0.3
        });
    let mut inputs = vec![
        (names::FEATURES.to_string(), Input::F32(features)),
        (
            names::LABELS.into(),
            Input::I64(ArrayD::from_shape_fn(IxDyn(&[BATCH]), |i| {
                (i[0] % 3) as i64
            })),
        ),
        (
            names::DROPOUT_MASK.into(),
            Input::F32(ArrayD::ones(IxDyn(&[BATCH, ARCH.features()]))),
        ),
        (names::STEP.into(), Input::F32(arr0(1.0f32).into_dyn())),
        (names::LR.into(), Input::F32(arr0(1e-3f32).into_dyn())),
        (
            names::WEIGHT_DECAY.into(),
            Input::F32(arr0(0.0f32).into_dyn()),
        ),
    ];
    let mut tensors = weights::random_backbone(&ARCH, 1);
    tensors.extend(weights::new_head(&ARCH, 1));
    for (name, shape) in ARCH.finetune_params() {
        inputs.push((names::param(&name), Input::F32(tensors[&name].clone())));
        for key in [names::adam_m(&name), names::adam_v(&name)] {
            inputs.push((key, Input::F32(ArrayD::zeros(IxDyn(&shape)))));
        }
    }
    for (name, _) in ARCH.finetune_buffers() {
        inputs.push((names::buffer(&name), Input::F32(tensors[&name].clone())));
    }
    inputs
}

#[test]
fn winograd_step_matches_the_patch_step() {
    let outputs = [Convolutions::Fastest, Convolutions::Patches].map(|convolutions| {
        let graph = train::finetune_step_with(&ARCH, convolutions);
        run(&mut session(&graph, "finetune_step"), inputs())
    });
    let [winograd, patches] = &outputs;
    assert_close("loss", &winograd[names::LOSS], &patches[names::LOSS], 1e-5);
    assert_close(
        "logits",
        &winograd[names::LOGITS],
        &patches[names::LOGITS],
        1e-5,
    );
    // At the tolerances the PyTorch references use.
    for (name, _) in ARCH.finetune_params() {
        let key = names::grad(&name);
        assert_close(&key, &winograd[&key], &patches[&key], 1e-4);
        let key = names::updated(&names::param(&name));
        assert_close(&key, &winograd[&key], &patches[&key], 1e-3);
    }
    for (name, _) in ARCH.finetune_buffers() {
        let key = names::updated(&names::buffer(&name));
        assert_close(&key, &winograd[&key], &patches[&key], 1e-3);
    }
}
