//! Weights files as PyTorch and safetensors write them: `torch.save`'s zip archive
//! ([`archive`]), its legacy format ([`legacy`]) and `.safetensors`. Which tensors a
//! network needs is the model's business (rps-model); this crate reads every float
//! tensor a file holds, by key, and tells whether a file is whole (rps-fetch).
//!
//! No well-kept crate reads `torch.save` files without a heavy tensor library
//! (candle-core alone adds minutes to a clean build), so [`pickle`] runs exactly what
//! a `state_dict()` pickles to. Every file is untrusted: what it can make a reader
//! do is bounded (nesting depth, values made, bytes unpacked and materialized,
//! elements per tensor), each refusal naming the limit.

pub mod archive;
pub mod legacy;
mod pickle;
mod whole;

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use rps_core::Tensors;
use sha2::{Digest, Sha256};
use thiserror::Error;

pub use pickle::{MAX_DEPTH, MIN_VALUES, VALUES_PER_BYTE};
pub use whole::check_whole;

/// What is wrong with a `torch.save` file, in either format.
#[derive(Debug, Error)]
pub enum PthError {
    #[error("not a torch.save zip archive: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("reading the archive: {0}")]
    Io(#[from] std::io::Error),
    #[error("no <folder>/data.pkl in the archive")]
    NoPickle,
    #[error("pickle: {0}")]
    Pickle(String),
    #[error("tensor {key:?}: {message}")]
    Tensor { key: String, message: String },
    #[error("{what} exceeds the reader's limit of {limit}; not a state dict torch.save wrote")]
    Limit { what: String, limit: u64 },
}

/// What is wrong with a weights file, naming it.
#[derive(Debug, Error)]
pub enum Error {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Pth { path: PathBuf, source: PthError },
    #[error(
        "{}: neither a PyTorch state dict (.pth: a zip archive or torch.save's legacy format) nor a .safetensors file ({message})",
        path.display()
    )]
    Unknown { path: PathBuf, message: String },
    #[error("{} is not a complete {format}: {message}", path.display())]
    Incomplete {
        path: PathBuf,
        format: Format,
        message: String,
    },
}

/// An entry unpacks to at most this many times the archive's size (torch.save
/// stores entries uncompressed), and a file's tensors, however many views of one
/// storage they are, to at most this many times its bytes.
pub const MAX_INFLATION: u64 = 16;

/// The kinds of weights file, told apart by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `torch.save`'s zip archive.
    Archive,
    /// `torch.save`'s legacy format.
    Legacy,
    /// `.safetensors` (anything else is read as one, and refused if it is not).
    Safetensors,
}

impl Format {
    pub fn of(bytes: &[u8]) -> Format {
        if bytes.starts_with(archive::MAGIC) {
            Format::Archive
        } else if bytes.starts_with(legacy::MAGIC) {
            Format::Legacy
        } else {
            Format::Safetensors
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Archive => "zip archive (a torch.save .pth)",
            Format::Legacy => "legacy torch.save file (a .pth)",
            Format::Safetensors => ".safetensors file",
        })
    }
}

/// Reads every float tensor of a weights file, and the file's sha256 (hex).
pub fn load_file(path: &Path) -> Result<(Tensors, String), Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.into(),
        source,
    })?;
    let sha256 = format!("{:x}", Sha256::digest(&bytes));
    Ok((parse(&bytes, path)?, sha256))
}

/// Every float tensor of a weights file's bytes, by key; `path` names it in errors.
/// Other tensors (`num_batches_tracked`, integer buffers) are left out.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Tensors, Error> {
    let pth = |tensors: Result<Vec<(String, pickle::Tensor)>, PthError>| {
        tensors
            .map(|tensors| {
                tensors
                    .into_iter()
                    .map(|(key, t)| (key, to_array(t.shape, t.data)))
                    .collect()
            })
            .map_err(|source| Error::Pth {
                path: path.into(),
                source,
            })
    };
    match Format::of(bytes) {
        Format::Archive => pth(archive::read_state_dict(bytes)),
        Format::Legacy => pth(legacy::read_state_dict(bytes)),
        Format::Safetensors => read_safetensors(bytes).map_err(|message| Error::Unknown {
            path: path.into(),
            message,
        }),
    }
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
        let array = ArrayD::from_shape_vec(IxDyn(view.shape()), data)
            .map_err(|e| format!("tensor {name:?}: {e}"))?;
        tensors.insert(name, array);
    }
    Ok(tensors)
}

fn to_array(shape: Vec<usize>, data: Vec<f32>) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(&shape), data).expect("shape matches data")
}

/// The float tensors of a state dict, each read from the bytes `storage` gives for
/// it. Tensors may view one storage many times: the bytes they make, too, are
/// bounded, by `limit`.
fn materialize_all(
    specs: Vec<(String, pickle::TensorSpec)>,
    limit: u64,
    mut storage: impl FnMut(&pickle::TensorSpec) -> Result<Vec<u8>, PthError>,
) -> Result<Vec<(String, pickle::Tensor)>, PthError> {
    let mut tensors = Vec::new();
    let mut materialized = 0u64;
    for (key, spec) in specs {
        if spec.dtype != pickle::Dtype::F32 {
            continue;
        }
        let tensor = spec
            .materialize(&storage(&spec)?)
            .map_err(|message| PthError::Tensor {
                key: key.clone(),
                message,
            })?;
        materialized += tensor.data.len() as u64 * 4;
        if materialized > limit {
            return Err(PthError::Limit {
                what: format!("tensors of more than {limit} bytes"),
                limit,
            });
        }
        tensors.push((key, tensor));
    }
    Ok(tensors)
}
