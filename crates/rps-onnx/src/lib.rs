//! rps-onnx: the types generated from the official `onnx.proto` ([`proto`]), and
//! [`ModelFile`], the read-modify-write a later stage makes to a graph rps-export
//! wrote: new values for named initializers and new metadata, nothing else. Building
//! graphs is rps-export's alone.

use std::path::{Path, PathBuf};

use prost::Message;

pub mod proto {
    //! Types generated from the official `onnx.proto` (vendored from the `onnx`
    //! 1.23.2 package) by `make proto`, which checks them in: building protox and
    //! prost-build on every clean build cost about 90 s of CPU.
    #![allow(clippy::all, missing_docs)]
    include!("../proto/onnx.rs");
}

use proto::tensor_proto::DataType;
use proto::{ModelProto, StringStringEntryProto, TensorProto};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not an ONNX model: {source}", path.display())]
    Decode {
        path: PathBuf,
        source: prost::DecodeError,
    },
    #[error("{}: the model has no graph", path.display())]
    NoGraph { path: PathBuf },
    #[error("{}: the model has no float initializer {name:?}", path.display())]
    NoInitializer { path: PathBuf, name: String },
    #[error("{}: initializer {name:?} has shape {expected:?}, not {found:?}", path.display())]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
}

/// An ONNX model read from a file, to be written back with new weights.
#[derive(Debug, Clone)]
pub struct ModelFile {
    model: ModelProto,
    path: PathBuf,
}

impl ModelFile {
    pub fn read(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.into(),
            source,
        })?;
        let model = ModelProto::decode(bytes.as_slice()).map_err(|source| Error::Decode {
            path: path.into(),
            source,
        })?;
        if model.graph.is_none() {
            return Err(Error::NoGraph { path: path.into() });
        }
        Ok(Self {
            model,
            path: path.into(),
        })
    }

    /// Gives the float initializer `name` new values of the same shape.
    pub fn set_initializer(
        &mut self,
        name: &str,
        shape: &[usize],
        data: &[f32],
    ) -> Result<(), Error> {
        let path = &self.path;
        let tensor = self
            .model
            .graph
            .as_mut()
            .expect("checked on reading")
            .initializer
            .iter_mut()
            .find(|t| t.name() == name && t.data_type == Some(DataType::Float as i32))
            .ok_or_else(|| Error::NoInitializer {
                path: path.clone(),
                name: name.into(),
            })?;
        let expected: Vec<usize> = tensor.dims.iter().map(|&d| d as usize).collect();
        if expected != shape {
            return Err(Error::Shape {
                path: path.clone(),
                name: name.into(),
                expected,
                found: shape.to_vec(),
            });
        }
        *tensor = float_tensor(name, shape, data);
        Ok(())
    }

    /// The values of the float initializer `name` (stored raw, as
    /// [`float_tensor`] writes them), if the graph has one.
    pub fn initializer(&self, name: &str) -> Option<Vec<f32>> {
        let graph = self.model.graph.as_ref().expect("checked on reading");
        let tensor = graph
            .initializer
            .iter()
            .find(|t| t.name() == name && t.data_type == Some(DataType::Float as i32))?;
        let raw = tensor.raw_data.as_deref()?;
        let values = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        Some(values.collect())
    }

    /// Sets (or replaces) the metadata entry `key`.
    pub fn set_metadata(&mut self, key: &str, value: &str) {
        let props = &mut self.model.metadata_props;
        props.retain(|p| p.key() != key);
        props.push(StringStringEntryProto {
            key: Some(key.into()),
            value: Some(value.into()),
        });
    }

    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.model
            .metadata_props
            .iter()
            .find(|p| p.key() == key)
            .map(|p| p.value())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.model.encode_to_vec()
    }
}

/// A float tensor stored as raw little-endian bytes, as ONNX Runtime reads fastest.
pub fn float_tensor(name: &str, shape: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::GraphProto;

    fn model_file(dir: &Path) -> ModelFile {
        let model = ModelProto {
            graph: Some(GraphProto {
                initializer: vec![float_tensor("fc.bias", &[2], &[0.0, 0.0])],
                ..Default::default()
            }),
            ..Default::default()
        };
        let path = dir.join("m.onnx");
        std::fs::write(&path, model.encode_to_vec()).unwrap();
        ModelFile::read(&path).unwrap()
    }

    #[test]
    fn initializers_take_new_values_of_their_shape_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = model_file(dir.path());
        file.set_initializer("fc.bias", &[2], &[1.5, -2.0]).unwrap();
        file.set_metadata("classes", "a\nb");
        let back = ModelProto::decode(file.to_bytes().as_slice()).unwrap();
        let raw = back.graph.unwrap().initializer[0].raw_data.clone().unwrap();
        assert_eq!(
            raw,
            [1.5f32, -2.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>()
        );
        assert_eq!(file.metadata("classes"), Some("a\nb"));
        let err = file
            .set_initializer("fc.bias", &[3], &[0.0; 3])
            .unwrap_err();
        assert!(
            err.to_string().contains("[2]") && err.to_string().contains("m.onnx"),
            "{err}"
        );
        let err = file
            .set_initializer("fc.weight", &[2], &[0.0; 2])
            .unwrap_err();
        assert!(err.to_string().contains("fc.weight"), "{err}");
    }

    #[test]
    fn a_file_that_is_no_model_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.onnx");
        std::fs::write(&path, [0xff, 0xff, 0xff]).unwrap();
        let err = ModelFile::read(&path).unwrap_err().to_string();
        assert!(err.contains("cut.onnx"), "{err}");
    }

    /// `make proto` writes the proto's hash as the generated file's first line: a
    /// proto changed without regenerating its types fails here.
    #[test]
    fn the_checked_in_types_are_generated_from_the_proto_beside_them() {
        use sha2::{Digest, Sha256};
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
        let proto = std::fs::read(folder.join("onnx.proto")).unwrap();
        let generated = std::fs::read_to_string(folder.join("onnx.rs")).unwrap();
        let first_line = generated.lines().next().unwrap_or_default();
        assert_eq!(
            first_line,
            format!("// onnx.proto sha256: {:x}", Sha256::digest(&proto)),
            "proto/onnx.proto changed since proto/onnx.rs was generated: run `make proto`"
        );
    }
}
