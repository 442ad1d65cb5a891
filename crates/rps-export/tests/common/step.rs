//! A phase 2 step against a PyTorch reference in float64: the loss and logits within
//! 1e-5, every gradient within ten times PyTorch's own float32 error for it (at
//! least 1e-5), the parameters after the Adam step within 1e-3 and the BatchNorm
//! running statistics within 1e-4, then the eval graph on the updated state against
//! the reference's eval-mode logits within 1e-4 (`depth_step.rs` for the ResNets,
//! `mobile_step.rs` for MobileNetV2 and EfficientNet-Lite0).

use std::collections::BTreeMap;
use std::path::PathBuf;

use ndarray::ArrayD;
use rps_core::npy::Npz;
use rps_core::{FtBn, Unfreeze, names};
use rps_export::train::{self, Convolutions, Gradients};
use rps_fixtures::{f32_spread, reference, rel_err, sampled};
use rps_model::network::{Arch, Net};

use super::{Input, first_step_inputs, run, session, set};

/// One reference step: its files and the network it trains.
pub struct Case {
    pub net: Net,
    /// The weights the step starts from.
    pub weights: PathBuf,
    /// The step: `../shared/reference/`'s, or one of `rps_fixtures::arch_reference`.
    pub file: PathBuf,
    pub width: usize,
    pub unfreeze: Unfreeze,
    pub ft_bn: FtBn,
}

impl Case {
    /// A ResNet18 step from `../shared/reference/`'s `weights`.
    pub fn resnet18(weights: &str, file: PathBuf, width: usize, unfreeze: Unfreeze) -> Self {
        Self {
            net: Net::ResNet18,
            weights: reference(weights),
            file,
            width,
            unfreeze,
            ft_bn: FtBn::Train,
        }
    }

    pub fn arch(&self) -> Arch {
        Arch {
            net: self.net,
            width: self.width,
            image_size: 224,
            classes: 3,
        }
    }
}

/// `(what, our relative error, the bound)` of everything the step and the eval graph
/// output that the reference holds.
pub fn errors(case: &Case) -> Vec<(String, f64, f64)> {
    let arch = case.arch();
    let (mut values, _) = rps_weights::load_file(&case.weights).unwrap();
    let mut npz = Npz::open(&case.file).unwrap();
    let keys = npz.names().unwrap();
    for (name, _) in arch.head_shapes(arch.classes) {
        values.insert(
            name.clone(),
            npz.get(&format!("init:param:{name}")).unwrap(),
        );
    }
    let features = match case.unfreeze.from_images() {
        true => Input::U8(npz.get("pixels").unwrap()),
        false => Input::F32(npz.get("features").unwrap()),
    };
    let labels = npz.get::<i64>("labels").unwrap();
    let lr = npz.get::<f32>("lr").unwrap().sum();
    let mut inputs = first_step_inputs(&arch, case.unfreeze, features.clone(), lr, &values);
    set(&mut inputs, names::LABELS, Input::I64(labels.clone()));
    let graph = train::finetune_step(
        &arch,
        case.unfreeze,
        Convolutions::Fastest,
        case.ft_bn,
        Gradients::Output,
    );
    let name = case.file.file_name().unwrap().to_str().unwrap();
    let out = run(&mut session(&graph, name), inputs);

    let spread = spread(&mut npz, &keys, name);
    let widened = |key: &str, bound: f64| bound.max(10.0 * spread.get(key).copied().unwrap_or(0.0));
    let mut torch_error = |name: &str| {
        let key = format!("torch_f32_rel:{name}");
        match keys.contains(&key) {
            true => npz.get::<f64>(&key).unwrap().sum(),
            false => 0.0,
        }
    };
    let bounds: BTreeMap<String, f64> = arch
        .finetune_params(case.unfreeze)
        .iter()
        .map(|(name, _)| {
            let bound = widened(&format!("grad:{name}"), 1e-5);
            (name.clone(), bound.max(10.0 * torch_error(name)))
        })
        .collect();
    // Files that keep a sample of each large tensor (`keep_at_most`) are compared on
    // the same sample.
    let keep = match keys.iter().any(|k| k == "keep_at_most") {
        true => npz.get::<i64>("keep_at_most").unwrap().sum() as usize,
        false => usize::MAX,
    };
    let mut errors = Vec::new();
    let mut check = |what: String, got: &ArrayD<f32>, key: &str, bound: f64| {
        let want = npz.get::<f32>(key).unwrap();
        let got = match key == "step1:logits" {
            true => got.clone(),
            false => sampled(got, keep),
        };
        errors.push((what, rel_err(&got, &want), bound));
    };
    check(
        "loss".into(),
        &out[names::LOSS],
        "step1:loss",
        widened("loss", 1e-5),
    );
    let bound = widened("logits", 1e-5);
    check("logits".into(), &out[names::LOGITS], "step1:logits", bound);
    for (name, bound) in &bounds {
        let (grad, param) = (names::grad(name), names::updated(&names::param(name)));
        check(
            format!("grad {name}"),
            &out[&grad],
            &format!("step1:grad:{name}"),
            *bound,
        );
        let key = format!("step1:param:{name}");
        if keys.contains(&key) {
            let bound = widened(&format!("param:{name}"), 1e-3);
            check(format!("param {name}"), &out[&param], &key, bound);
        }
    }
    let mut state = BTreeMap::new();
    for (name, _) in arch.finetune_buffers(case.unfreeze) {
        let updated = out[&names::updated(&names::buffer(&name))].clone();
        let key = format!("step1:buffer:{name}");
        let bound = widened(&format!("buffer:{name}"), 1e-4);
        check(format!("buffer {name}"), &updated, &key, bound);
        state.insert(names::buffer(&name), updated);
    }
    for (name, _) in arch.finetune_params(case.unfreeze) {
        state.insert(
            names::param(&name),
            out[&names::updated(&names::param(&name))].clone(),
        );
    }
    // The eval graph on the state after the step.
    let eval = train::finetune_eval(&arch, case.unfreeze, Convolutions::Fastest);
    let mut inputs = vec![
        (names::FEATURES.to_string(), features),
        (names::LABELS.to_string(), Input::I64(labels)),
    ];
    inputs.extend(state.into_iter().map(|(k, v)| (k, Input::F32(v))));
    let eval_out = run(&mut session(&eval, "finetune_eval"), inputs);
    check(
        "eval logits".into(),
        &eval_out[names::LOGITS],
        "final:eval_logits",
        widened("eval_logits", 1e-4),
    );
    errors
}

/// PyTorch's own float32 spread on the reference, by key (`grad:NAME`, `loss`, ...):
/// the file's `f32_spread:KEY` values, or for `../shared/reference/`'s files
/// `rps_fixtures::f32_spread`.
fn spread(npz: &mut Npz, keys: &[String], file: &str) -> BTreeMap<String, f64> {
    let own: BTreeMap<String, f64> = keys
        .iter()
        .filter_map(|key| Some((key.strip_prefix("f32_spread:")?.to_string(), key)))
        .map(|(name, key)| (name, npz.get::<f64>(key).unwrap().sum()))
        .collect();
    if own.is_empty() {
        f32_spread(file)
    } else {
        own
    }
}

pub fn check(case: Case) {
    let errors = errors(&case);
    for (what, error, bound) in &errors {
        eprintln!("{}: {what}: {error:.2e} (bound {bound:.1e})", case.unfreeze);
    }
    let over: Vec<_> = errors.iter().filter(|(_, e, b)| e >= b).collect();
    assert!(
        over.is_empty(),
        "{}: over the bound: {over:?}",
        case.unfreeze
    );
    let grads = errors
        .iter()
        .filter(|(w, _, _)| w.starts_with("grad "))
        .count();
    assert_eq!(grads, case.arch().finetune_params(case.unfreeze).len());
}
