//! Model weights: a weights file's tensors (read by rps-weights) checked against the
//! architecture, or drawn at random (seeded) the way torchvision initializes its
//! ResNets and MobileNetV2.

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rps_core::Tensors;
use thiserror::Error;

use crate::network::{Arch, BnTensor, Net};

#[derive(Debug, Error)]
pub enum WeightsError {
    #[error(transparent)]
    File(#[from] rps_weights::Error),
    #[error("{}: no tensor {key:?} (is this a {net} state dict of width {width}?)", path.display())]
    Missing {
        path: PathBuf,
        key: String,
        net: &'static str,
        width: usize,
    },
    #[error("{}: these are {found} weights, not {expected}: ARCH={found} (rps-export --arch {found}) uses them", path.display())]
    OtherNet {
        path: PathBuf,
        found: &'static str,
        expected: &'static str,
    },
    #[error("{}: tensor {key:?} has shape {found:?}, expected {expected}", path.display())]
    Shape {
        path: PathBuf,
        key: String,
        expected: String,
        found: Vec<usize>,
    },
    #[error("{}: tensor {key:?} {message}", path.display())]
    Values {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// What a weights file holds beside the backbone [`check_weights`] checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The classes of its `fc` (ImageNet's 1000 for torchvision's weights).
    pub head_classes: usize,
    /// Keys no tensor of the network has, sorted; PyTorch's strict loading names
    /// them "unexpected keys".
    pub unexpected: Vec<String>,
}

/// Checks the weights against `arch` before anything is made of them: every
/// backbone tensor present with its shape, an `fc` of some class count over the
/// backbone's features, finite values, non-negative running variances. Weights of
/// another of the [`Net`]s are named as such.
pub fn check_weights(tensors: &Tensors, arch: &Arch, path: &Path) -> Result<Checked, WeightsError> {
    check_backbone(tensors, arch, path)?;
    let head_classes = check_head(tensors, arch, path)?;
    let mut expected = arch.backbone_shapes();
    expected.extend(arch.head_shapes(head_classes));
    for (key, _) in &expected {
        check_values(key, &tensors[key], path)?;
    }
    let mut unexpected: Vec<String> = tensors
        .keys()
        .filter(|key| !expected.iter().any(|(name, _)| name == *key))
        .cloned()
        .collect();
    unexpected.sort();
    Ok(Checked {
        head_classes,
        unexpected,
    })
}

/// The class count of `fc.weight` `[classes, features]`, with `fc.bias` `[classes]`.
fn check_head(tensors: &Tensors, arch: &Arch, path: &Path) -> Result<usize, WeightsError> {
    let [(weight_key, _), (bias_key, _)] = arch.head_shapes(0);
    let found = |key: &String| {
        tensors.get(key).ok_or_else(|| WeightsError::Missing {
            path: path.into(),
            key: key.clone(),
            net: arch.net.name(),
            width: arch.width,
        })
    };
    let shape_error = |key: &String, expected: String, found: &[usize]| WeightsError::Shape {
        path: path.into(),
        key: key.clone(),
        expected,
        found: found.to_vec(),
    };
    let weight = found(&weight_key)?.shape();
    let features = arch.features();
    let classes = match *weight {
        [classes, f] if f == features && classes > 0 => classes,
        _ => {
            let expected = format!("[classes, {features}]");
            return Err(shape_error(&weight_key, expected, weight));
        }
    };
    let bias = found(&bias_key)?.shape();
    if bias != [classes] {
        return Err(shape_error(&bias_key, format!("[{classes}]"), bias));
    }
    Ok(classes)
}

/// Finite values, and no negative running variance (BatchNorm takes its root).
fn check_values(key: &str, tensor: &ArrayD<f32>, path: &Path) -> Result<(), WeightsError> {
    let offender = |message: String| WeightsError::Values {
        path: path.into(),
        key: key.into(),
        message,
    };
    let values = || tensor.iter().enumerate();
    if let Some((at, value)) = values().find(|(_, v)| !v.is_finite()) {
        let count = tensor.iter().filter(|v| !v.is_finite()).count();
        return Err(offender(format!(
            "holds {count} values that are not finite (the first, at flat index {at}: {value})"
        )));
    }
    let is_variance = key.ends_with(&format!(".{}", BnTensor::RUNNING_VAR.leaf()));
    if is_variance && let Some((at, value)) = values().find(|(_, v)| **v < 0.0) {
        return Err(offender(format!(
            "holds a negative running variance ({value} at index {at})"
        )));
    }
    Ok(())
}

/// Checks that every backbone tensor is present with its shape; weights of another
/// of the [`Net`]s are named as such.
fn check_backbone(tensors: &Tensors, arch: &Arch, path: &Path) -> Result<(), WeightsError> {
    if fits(tensors, arch) {
        return Ok(());
    }
    if let Some(found) = Net::ALL
        .into_iter()
        .find(|&net| net != arch.net && fits(tensors, &Arch { net, ..*arch }))
    {
        return Err(WeightsError::OtherNet {
            path: path.into(),
            found: found.name(),
            expected: arch.net.name(),
        });
    }
    for (key, expected) in arch.backbone_shapes() {
        let tensor = tensors.get(&key).ok_or_else(|| WeightsError::Missing {
            path: path.into(),
            key: key.clone(),
            net: arch.net.name(),
            width: arch.width,
        })?;
        if tensor.shape() != expected.as_slice() {
            return Err(WeightsError::Shape {
                path: path.into(),
                key,
                expected: format!("{expected:?}"),
                found: tensor.shape().to_vec(),
            });
        }
    }
    Ok(())
}

/// Whether every backbone tensor of `arch` is in `tensors` with its shape.
fn fits(tensors: &Tensors, arch: &Arch) -> bool {
    arch.backbone_shapes().iter().all(|(key, shape)| {
        tensors
            .get(key)
            .is_some_and(|t| t.shape() == shape.as_slice())
    })
}

/// A backbone drawn as torchvision draws its ResNets and MobileNetV2, every network
/// here alike (Kaiming-normal convolutions, fan-out as PyTorch counts it: output
/// channels times `k²`, depthwise ones too; identity BatchNorm; `nn.Linear`'s
/// uniform fc), with a 1000-class fc.
pub fn random_backbone(arch: &Arch, seed: u64) -> Tensors {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tensors = Tensors::new();
    for (_, conv) in arch.describe().convs {
        let fan_out = (conv.cout * conv.window.kernel * conv.window.kernel) as f32;
        let normal = Normal::new(0.0, (2.0 / fan_out).sqrt()).expect("finite std");
        let shape = conv.weight_shape();
        let n = shape.iter().product();
        tensors.insert(
            conv.weight(),
            ArrayD::from_shape_vec(
                IxDyn(&shape),
                normal.sample_iter(&mut rng).take(n).collect(),
            )
            .expect("shape matches data"),
        );
        // Identity BatchNorm: scale and variance 1, shift and mean 0.
        let identity = [
            (BnTensor::WEIGHT, 1.0),
            (BnTensor::BIAS, 0.0),
            (BnTensor::RUNNING_MEAN, 0.0),
            (BnTensor::RUNNING_VAR, 1.0),
        ];
        for (tensor, value) in identity {
            tensors.insert(
                conv.bn_tensor(tensor),
                ArrayD::from_elem(IxDyn(&[conv.cout]), value),
            );
        }
    }
    let (weight, bias) = rps_core::init::linear(arch.features(), IMAGENET_CLASSES, &mut rng);
    tensors.insert(arch.head().tensor("weight"), weight);
    tensors.insert(arch.head().tensor("bias"), bias);
    tensors
}

/// The classes of the ImageNet head torchvision's weights come with.
pub const IMAGENET_CLASSES: usize = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_backbone_has_every_tensor_and_is_seeded() {
        let arch = Arch {
            net: Net::ResNet18,
            width: 8,
            image_size: 64,
            classes: 3,
        };
        let a = random_backbone(&arch, 7);
        let checked = check_weights(&a, &arch, Path::new("random")).unwrap();
        assert_eq!(checked.head_classes, IMAGENET_CLASSES);
        assert!(checked.unexpected.is_empty());
        assert_eq!(a["fc.weight"].shape(), &[1000, 64]);
        assert_eq!(a, random_backbone(&arch, 7));
        assert_ne!(a["conv1.weight"], random_backbone(&arch, 8)["conv1.weight"]);
        let std = a["layer4.0.conv1.weight"].std(0.0);
        let want = (2.0f32 / (64.0 * 9.0)).sqrt();
        assert!((std / want - 1.0).abs() < 0.05, "std {std} vs {want}");
    }

    #[test]
    fn wrong_shape_names_the_key() {
        let arch = Arch {
            net: Net::ResNet18,
            width: 8,
            image_size: 64,
            classes: 3,
        };
        let mut t = random_backbone(&arch, 0);
        t.insert("layer2.0.bn1.weight".into(), ArrayD::zeros(IxDyn(&[3])));
        let err = check_weights(&t, &arch, Path::new("w.pth"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("w.pth") && err.contains("layer2.0.bn1.weight") && err.contains("[16]"),
            "{err}"
        );
        t.remove("layer1.1.conv2.weight");
        let err = check_weights(&t, &arch, Path::new("w.pth"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("layer1.1.conv2.weight"), "{err}");
    }

    fn small() -> Arch {
        Arch {
            net: Net::ResNet18,
            width: 8,
            image_size: 64,
            classes: 3,
        }
    }

    fn refusal(tensors: &Tensors) -> String {
        check_weights(tensors, &small(), Path::new("w.pth"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_head_that_is_missing_or_misshapen_is_refused_naming_it() {
        let good = random_backbone(&small(), 0);
        let mut t = good.clone();
        t.remove("fc.bias");
        assert!(refusal(&t).contains("\"fc.bias\""), "{}", refusal(&t));
        let shapes: [(&str, &[usize]); 5] = [
            ("fc.weight", &[]),
            ("fc.weight", &[64]),
            ("fc.weight", &[64, 1000]),
            ("fc.weight", &[1000, 63]),
            ("fc.bias", &[999]),
        ];
        for (key, shape) in shapes {
            let mut t = good.clone();
            t.insert(key.into(), ArrayD::zeros(IxDyn(shape)));
            let err = refusal(&t);
            assert!(
                err.contains(&format!("{key:?} has shape {shape:?}")),
                "{err}"
            );
        }
    }

    #[test]
    fn values_that_are_not_finite_or_a_negative_variance_are_refused() {
        let good = random_backbone(&small(), 0);
        let mut t = good.clone();
        t.get_mut("layer3.1.conv2.weight").unwrap()[[1, 2, 0, 1]] = f32::NAN;
        let err = refusal(&t);
        assert!(
            err.contains("layer3.1.conv2.weight") && err.contains("NaN"),
            "{err}"
        );
        let mut t = good.clone();
        t.get_mut("fc.bias").unwrap()[[7]] = f32::INFINITY;
        assert!(refusal(&t).contains("fc.bias"));
        let mut t = good;
        t.get_mut("layer1.0.bn2.running_var").unwrap()[[3]] = -0.5;
        let err = refusal(&t);
        assert!(
            err.contains("layer1.0.bn2.running_var") && err.contains("-0.5"),
            "{err}"
        );
    }

    #[test]
    fn extra_keys_are_listed() {
        let mut t = random_backbone(&small(), 0);
        t.insert("aux.weight".into(), ArrayD::zeros(IxDyn(&[2])));
        let checked = check_weights(&t, &small(), Path::new("w.pth")).unwrap();
        assert_eq!(checked.unexpected, ["aux.weight"]);
    }
}
