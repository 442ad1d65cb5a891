//! The Winograd step graph against the patch step graph on full-size maps (layer4 at
//! 7x7), for each ResNet, and from layer2 on maps whose size is not a multiple of
//! Winograd's tiles (its forward there through ONNX Runtime's blocked kernel on the
//! 29x29 maps, F(2x2) on the 15x15 and 8x8 ones): the patch formulation is held to
//! PyTorch by `step_parity.rs`, so this holds Winograd to it.

mod common;

use common::{Input, first_step_inputs, run, session};
use ndarray::{ArrayD, IxDyn};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rps_core::names::{self, StateKind};
use rps_core::{FtBn, Unfreeze};
use rps_export::train::{self, Convolutions, Gradients};
use rps_fixtures::assert_close;
use rps_model::network::{Arch, Net};
use rps_model::weights;

const BATCH: usize = 6;

/// Width 8 at full size: layer4 at 7x7.
fn arch(net: Net) -> Arch {
    Arch {
        net,
        width: 8,
        image_size: 224,
        classes: 3,
    }
}

fn inputs(arch: &Arch, unfreeze: Unfreeze) -> Vec<(String, Input)> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let [c, s, _] = arch.frozen_shape(unfreeze);
    // Every stage ends in a ReLU: non-negative features.
    let features = ArrayD::from_shape_simple_fn(IxDyn(&[BATCH, c, s, s]), || {
        rng.random::<f32>().max(0.3) - 0.3
    });
    let mut values = weights::random_backbone(arch, 1);
    let (head_weight, head_bias) = rps_core::init::linear(
        arch.features(),
        arch.classes,
        &mut ChaCha8Rng::seed_from_u64(1),
    );
    values.insert(arch.head().tensor("weight"), head_weight);
    values.insert(arch.head().tensor("bias"), head_bias);
    first_step_inputs(arch, unfreeze, Input::F32(features), 1e-3, &values)
}

#[test]
fn winograd_step_matches_the_patch_step() {
    for net in [Net::ResNet18, Net::ResNet34, Net::ResNet50] {
        winograd_step_matches_the_patch_step_of(&arch(net), Unfreeze::stage("layer4"));
    }
}

#[test]
fn winograd_step_matches_the_patch_step_on_maps_cut_by_no_whole_tiles() {
    // 232 pixels: layer2 at 29x29, layer3 at 15x15, layer4 at 8x8.
    let arch = Arch {
        image_size: 232,
        ..arch(Net::ResNet18)
    };
    winograd_step_matches_the_patch_step_of(&arch, Unfreeze::stage("layer2"));
}

fn winograd_step_matches_the_patch_step_of(arch: &Arch, unfreeze: Unfreeze) {
    let outputs = [Convolutions::Fastest, Convolutions::Patches].map(|convolutions| {
        let graph =
            train::finetune_step(arch, unfreeze, convolutions, FtBn::Train, Gradients::Output);
        run(
            &mut session(&graph, "finetune_step"),
            inputs(arch, unfreeze),
        )
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
    for (name, _) in arch.finetune_params(unfreeze) {
        let key = names::grad(&name);
        assert_close(&key, &winograd[&key], &patches[&key], 1e-4);
        let key = names::updated(&names::param(&name));
        assert_close(&key, &winograd[&key], &patches[&key], 1e-3);
    }
    for (name, _) in arch.finetune_buffers(unfreeze) {
        let key = names::updated(&names::buffer(&name));
        assert_close(&key, &winograd[&key], &patches[&key], 1e-3);
    }
}

#[test]
fn winograd_eval_matches_the_patch_eval() {
    for net in [Net::ResNet18, Net::ResNet34, Net::ResNet50] {
        winograd_eval_matches_the_patch_eval_of(&arch(net));
    }
}

fn winograd_eval_matches_the_patch_eval_of(arch: &Arch) {
    let takes = |name: &str| {
        [names::FEATURES, names::LABELS].contains(&name)
            || matches!(
                StateKind::parse(name),
                Some((StateKind::Param | StateKind::Buffer, _))
            )
    };
    let outputs = [Convolutions::Fastest, Convolutions::Patches].map(|convolutions| {
        let graph = train::finetune_eval(arch, Unfreeze::stage("layer4"), convolutions);
        let eval_inputs = inputs(arch, Unfreeze::stage("layer4"))
            .into_iter()
            .filter(|(name, _)| takes(name))
            .collect();
        run(&mut session(&graph, "finetune_eval"), eval_inputs)
    });
    let [winograd, patches] = &outputs;
    for key in [names::LOSS, names::LOGITS, names::PROBS] {
        assert_close(key, &winograd[key], &patches[key], 1e-5);
    }
}
