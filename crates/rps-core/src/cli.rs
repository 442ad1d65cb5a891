//! The flags every stage binary shares, flattened into each one's own (clap derive).

use std::path::PathBuf;

use crate::defaults;
use crate::layout::Layout;
use crate::runtime::{DeviceChoice, SessionOptions};

/// `--data`: the pipeline's data folder.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// The pipeline's data folder.
    #[arg(long, value_name = "DIR", default_value = defaults::DATA)]
    pub data: PathBuf,
}

impl DataArgs {
    pub fn layout(&self) -> Layout {
        Layout::new(&self.data)
    }
}

/// `--device` and `--threads`: where ONNX Runtime runs.
#[derive(Debug, Clone, clap::Args)]
pub struct OrtArgs {
    /// Where to run ONNX Runtime: auto (CUDA if it really works, else CPU), cpu, or cuda
    /// (an error if CUDA cannot run).
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// Threads for ONNX Runtime's CPU kernels, 1 to 1024 (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
}

impl OrtArgs {
    pub fn options(&self) -> SessionOptions {
        SessionOptions {
            device: self.device,
            threads: self.threads.map_or_else(all_cores, usize::from),
        }
    }
}

/// The cores this process may use.
pub fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The flags of a stage that runs ONNX Runtime on DATA.
#[derive(Debug, Clone, clap::Args)]
pub struct StageArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub ort: OrtArgs,
}
