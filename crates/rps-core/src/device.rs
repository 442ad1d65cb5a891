//! Where ONNX Runtime sessions run: what `--device` asks for, the device a session
//! got, and the options a stage opens its sessions with. Plain data, shared by the
//! sidecars; `rps-runtime` opens the sessions.

/// What `--device` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when a session really runs on the GPU, else CPU.
    Auto,
    Cpu,
    /// CUDA, or an error saying why it cannot run.
    Cuda,
}

/// The device a session runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    Cpu,
    Cuda,
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where sessions run and with how many CPU threads: what `--device` and `--threads`
/// resolve to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOptions {
    pub device: DeviceChoice,
    pub threads: usize,
}

impl SessionOptions {
    /// The CPU with `threads` threads (tests and benchmarks).
    pub fn cpu(threads: usize) -> Self {
        Self {
            device: DeviceChoice::Cpu,
            threads,
        }
    }
}
