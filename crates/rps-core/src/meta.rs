//! The JSON sidecar written beside every stage output: which stage made it, with
//! which settings, from which inputs, with which tool version, on which device, and
//! how long it took.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::atomic;
use crate::error::{Error, Result, io};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub stage: String,
    /// The version of the crate that wrote the output.
    pub tool_version: String,
    /// Every setting that shapes the output.
    pub settings: Map<String, Value>,
    /// The files the output was made from.
    pub inputs: Vec<String>,
    /// `cpu` or `cuda`, for stages that run ONNX Runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub seconds: f64,
    /// Stage-specific facts (counts, skipped files, storage types).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub details: Map<String, Value>,
}

impl Metadata {
    pub fn new(stage: &str, tool_version: &str) -> Self {
        Self {
            stage: stage.into(),
            tool_version: tool_version.into(),
            settings: Map::new(),
            inputs: Vec::new(),
            device: None,
            seconds: 0.0,
            details: Map::new(),
        }
    }

    pub fn setting(mut self, key: &str, value: impl Serialize) -> Self {
        self.settings.insert(key.into(), to_value(value));
        self
    }

    pub fn input(mut self, path: &Path) -> Self {
        self.inputs.push(path.display().to_string());
        self
    }

    pub fn detail(&mut self, key: &str, value: impl Serialize) {
        self.details.insert(key.into(), to_value(value));
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        atomic::write_bytes(path, format!("{text}\n").as_bytes())
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io("reading", path))?;
        serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    /// A setting that must be present, for checks between stages.
    pub fn require(&self, key: &str, path: &Path) -> Result<&Value> {
        self.settings.get(key).ok_or_else(|| Error::Invalid {
            path: path.to_path_buf(),
            message: format!("metadata has no setting {key:?}"),
        })
    }
}

fn to_value(value: impl Serialize) -> Value {
    serde_json::to_value(value).expect("settings are plain data")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.json");
        let mut meta = Metadata::new("extract", "0.0.0")
            .setting("batch", 64)
            .setting("lr", 1e-4)
            .input(Path::new("data/cache/train_images.npy"));
        meta.device = Some("cpu".into());
        meta.detail("skipped", ["a.png"]);
        meta.write(&path).unwrap();
        let back = Metadata::read(&path).unwrap();
        assert_eq!(back, meta);
        assert_eq!(back.require("batch", &path).unwrap(), 64);
        let err = back.require("width", &path).unwrap_err().to_string();
        assert!(err.contains("width") && err.contains("meta.json"), "{err}");
    }
}
