//! MobileNetV2 and EfficientNet-Lite0 against PyTorch in float64
//! (`scripts/make_mobile_reference.py`): one phase 2 step from each network's last
//! stage (the recipe's default depth), a deeper stage and the whole network from u8
//! pixels, held to the bounds of `common::step`; and the untouched network's
//! ImageNet logits. MobileNetV2 is torchvision's at `width_mult` 0.25 (WIDTH=8,
//! seeded random-init); EfficientNet-Lite0 is the genuine ImageNet file in
//! `../shared/reference/`, whose references keep a sample of each large tensor.

mod common;

use common::step::{Case, check};
use common::{Input, assert_matches, run, session};
use rps_core::npy::Npz;
use rps_core::{FtBn, Unfreeze, names};
use rps_export::infer;
use rps_fixtures::{arch_reference, reference};
use rps_model::network::{Arch, Net};

const LITE0: &str = "efficientnet-lite0-57934424.pth";
const MOBILENET: &str = "mobilenet_v2_w8_seed0";

fn mobilenet(stage: &str, unfreeze: Unfreeze) -> Case {
    Case {
        net: Net::MobileNetV2,
        weights: arch_reference(&format!("{MOBILENET}.pth")),
        file: arch_reference(&format!("{MOBILENET}_train_from_{stage}.npz")),
        width: 8,
        unfreeze,
        ft_bn: FtBn::Train,
    }
}

fn lite0(stage: &str, unfreeze: Unfreeze) -> Case {
    Case {
        net: Net::EfficientNetLite0,
        weights: reference(LITE0),
        file: arch_reference(&format!("efficientnet_lite0_train_from_{stage}.npz")),
        width: 32,
        unfreeze,
        ft_bn: FtBn::Train,
    }
}

#[test]
fn mobilenet_v2_steps_match_pytorch_at_three_depths() {
    check(mobilenet("features.14", Unfreeze::Last));
    check(mobilenet("features.7", Unfreeze::stage("features.7")));
    check(mobilenet("all", Unfreeze::All));
}

#[test]
fn efficientnet_lite0_steps_match_pytorch_at_three_depths() {
    check(lite0("_blocks.11", Unfreeze::Last));
    check(lite0("_blocks.5", Unfreeze::stage("_blocks.5")));
    check(lite0("all", Unfreeze::All));
}

/// The classifier graph (what `IMAGENET=1` runs) on the normalized images: the
/// network's own ImageNet logits within 1e-4.
#[test]
fn imagenet_logits_match_pytorch() {
    for case in [mobilenet("all", Unfreeze::All), lite0("all", Unfreeze::All)] {
        let (tensors, _) = rps_weights::load_file(&case.weights).unwrap();
        let arch = Arch {
            classes: tensors[&case.arch().head().tensor("weight")].shape()[0],
            ..case.arch()
        };
        let mut npz = Npz::open(&case.file).unwrap();
        let images = npz.get::<f32>("imagenet:images").unwrap();
        let graph = infer::classifier(&arch, &tensors, "imagenet");
        let out = run(
            &mut session(&graph, "imagenet"),
            vec![(names::IMAGES.into(), Input::F32(images))],
        );
        assert_matches(&mut npz, "imagenet:logits", &out[names::LOGITS], 1e-4);
    }
}
