//! What every rps-transfer stage shares: where files live ([`Layout`]), how they are
//! written (atomically: [`atomic`]), their formats ([`npy`], [`table`], [`sidecar`],
//! [`classes`]), the names graphs use ([`names`]), the recipe's defaults
//! ([`defaults`]) and flags ([`cli`]), and where sessions run ([`device`]). Loading
//! ONNX Runtime is `rps-runtime`'s, plotting `rps-plot`'s: a stage that does neither
//! links neither.

pub mod atomic;
pub mod classes;
pub mod cli;
pub mod contain;
pub mod defaults;
pub mod device;
pub mod disk;
pub mod error;
pub mod imagenet;
pub mod init;
pub mod layout;
pub mod lock;
pub mod memory;
pub mod names;
pub mod normalization;
pub mod npy;
pub mod outputs;
pub mod phase;
pub mod progress;
pub mod rows;
pub mod sidecar;
pub mod table;
pub mod text;
pub mod tuning;
pub mod unfreeze;
pub mod upstream;
pub mod width;

pub use classes::ClassList;
pub use device::{Device, DeviceChoice, SessionOptions};
pub use error::{Error, Result};
pub use layout::{
    CacheFile, CheckpointFile, Feature, Folder, GraphFile, Layout, ResultFile, Split,
};
pub use normalization::Normalization;
pub use npy::Tensors;
pub use phase::Phase;
pub use tuning::{ClassWeights, FtBn, Schedule};
pub use unfreeze::Unfreeze;
pub use width::Width;

#[cfg(test)]
mod testing {
    /// A path named `name` in a fresh temporary folder, removed when the guard drops.
    pub fn temp_path(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        (dir, path)
    }
}
