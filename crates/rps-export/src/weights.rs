//! Model weights: read from a PyTorch `.pth` state dict or a `.safetensors` file,
//! or drawn at random (seeded) the way torchvision initializes a ResNet.

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rps_core::Tensors;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::pth;
use crate::resnet::{Arch, BnTensor, Net, fc};

#[derive(Debug, Error)]
pub enum WeightsError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Pth {
        path: PathBuf,
        source: pth::PthError,
    },
    #[error(
        "{}: neither a PyTorch state dict (.pth, a zip archive) nor a .safetensors file ({message})",
        path.display()
    )]
    Unknown { path: PathBuf, message: String },
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
    #[error("{}: tensor {key:?} has shape {found:?}, expected {expected:?}", path.display())]
    Shape {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
}

/// Reads every float tensor of a `.pth` (zip) or `.safetensors` file, and the file's
/// sha256 (hex).
pub fn load_file(path: &Path) -> Result<(Tensors, String), WeightsError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Read {
        path: path.into(),
        source,
    })?;
    let sha256 = format!("{:x}", Sha256::digest(&bytes));
    let tensors = if bytes.starts_with(b"PK\x03\x04") {
        pth::read_state_dict(&bytes)
            .map_err(|source| WeightsError::Pth {
                path: path.into(),
                source,
            })?
            .into_iter()
            .map(|(k, t)| (k, to_array(t.shape, t.data)))
            .collect()
    } else {
        read_safetensors(&bytes).map_err(|message| WeightsError::Unknown {
            path: path.into(),
            message,
        })?
    };
    Ok((tensors, sha256))
}

fn read_safetensors(bytes: &[u8]) -> Result<Tensors, String> {
    let file = safetensors::SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    let mut tensors = Tensors::new();
    for (name, view) in file.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            continue;
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        tensors.insert(name, to_array(view.shape().to_vec(), data));
    }
    Ok(tensors)
}

fn to_array(shape: Vec<usize>, data: Vec<f32>) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(&shape), data).expect("shape matches data")
}

/// Checks that every backbone tensor is present with its shape; weights of another
/// of the [`Net`]s are named as such.
pub fn check_backbone(tensors: &Tensors, arch: &Arch, path: &Path) -> Result<(), WeightsError> {
    if let Some(found) = Net::ALL.into_iter().find(|&net| {
        net != arch.net && fits(tensors, &Arch { net, ..*arch }) && !fits(tensors, arch)
    }) {
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
                expected,
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

/// A backbone drawn as torchvision draws it (Kaiming-normal convolutions, fan-out;
/// identity BatchNorm; `nn.Linear`'s uniform fc), with a 1000-class fc.
pub fn random_backbone(arch: &Arch, seed: u64) -> Tensors {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tensors = Tensors::new();
    for conv in arch.all_convs() {
        let fan_out = (conv.cout * conv.window.kernel * conv.window.kernel) as f32;
        let normal = Normal::new(0.0, (2.0 / fan_out).sqrt()).expect("finite std");
        let shape = conv.weight_shape();
        let n = shape.iter().product();
        tensors.insert(
            conv.weight(),
            to_array(shape, normal.sample_iter(&mut rng).take(n).collect()),
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
    tensors.insert(fc().tensor("weight"), weight);
    tensors.insert(fc().tensor("bias"), bias);
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
        check_backbone(&a, &arch, Path::new("random")).unwrap();
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
        let err = check_backbone(&t, &arch, Path::new("w.pth"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("w.pth") && err.contains("layer2.0.bn1.weight") && err.contains("[16]"),
            "{err}"
        );
        t.remove("layer1.1.conv2.weight");
        let err = check_backbone(&t, &arch, Path::new("w.pth"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("layer1.1.conv2.weight"), "{err}");
    }
}
