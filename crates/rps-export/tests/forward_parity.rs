//! Inference graphs against PyTorch's eval-mode forward values.

mod common;

use common::{Input, assert_matches, run, session};
use rps_core::{Unfreeze, names};
use rps_export::infer;
use rps_fixtures::{arch_reference, reference};
use rps_model::network::{Arch, Net};
use std::path::Path;

fn check_forward(net: Net, weights_file: &Path, forward_file: &Path, width: usize, size: usize) {
    let (tensors, _) = rps_weights::load_file(weights_file).unwrap();
    let arch = Arch {
        net,
        width,
        image_size: size,
        classes: 1000,
    };
    let mut reference = rps_core::npy::Npz::open(forward_file).unwrap();
    let input = reference.get::<f32>("input").unwrap();

    let mut backbone = session(
        &infer::backbone(&arch, &tensors, Unfreeze::stage("layer4")),
        "backbone",
    );
    let out = run(
        &mut backbone,
        vec![(names::IMAGES.into(), Input::F32(input.clone()))],
    );
    assert_matches(&mut reference, "layer3", &out[names::FROZEN], 1e-4);
    assert_matches(&mut reference, "pooled", &out[names::POOLED], 1e-4);

    let mut imagenet = session(&infer::classifier(&arch, &tensors, "imagenet"), "imagenet");
    let out = run(
        &mut imagenet,
        vec![(names::IMAGES.into(), Input::F32(input))],
    );
    assert_matches(&mut reference, "logits", &out[names::LOGITS], 1e-4);
}

#[test]
fn full_width_forward_matches_pytorch() {
    check_forward(
        Net::ResNet18,
        &reference("resnet18_seed0.pth"),
        &reference("resnet18_seed0_forward.npz"),
        64,
        224,
    );
}

#[test]
fn mini_forward_matches_pytorch() {
    check_forward(
        Net::ResNet18,
        &reference("mini_w8_s64_seed0.pth"),
        &reference("mini_w8_s64_seed0_forward.npz"),
        8,
        64,
    );
}

#[test]
fn resnet34_and_resnet50_forwards_match_pytorch() {
    for net in [Net::ResNet34, Net::ResNet50] {
        let tag = format!("{}_w4_s64_seed0", net.name());
        check_forward(
            net,
            &arch_reference(&format!("{tag}.pth")),
            &arch_reference(&format!("{tag}_forward.npz")),
            4,
            64,
        );
    }
}
