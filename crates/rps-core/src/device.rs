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
    /// ONNX Runtime's memory pattern: one block planned ahead for all of a run's
    /// intermediates. On, but in training ([`SessionOptions::for_training`]).
    pub memory_pattern: bool,
    /// The environment's one CPU arena instead of the session's own. Off, but in
    /// training.
    pub shared_arena: bool,
}

impl SessionOptions {
    /// The given device and threads, the memory pattern on.
    pub fn new(device: DeviceChoice, threads: usize) -> Self {
        Self {
            device,
            threads,
            memory_pattern: true,
            shared_arena: false,
        }
    }

    /// The CPU with `threads` threads (tests and benchmarks).
    pub fn cpu(threads: usize) -> Self {
        Self::new(DeviceChoice::Cpu, threads)
    }

    /// For rps-train's sessions (the step and the eval graph scoring each epoch):
    /// without the memory pattern, whose planned block for a step's batch-wide
    /// forward and backward maps held about twice what the step needs (resnet18 from
    /// layer1: 8.4 GB resident against 4.5), at the same speed, and which plans again
    /// for a last batch of another size. Extract keeps it (it ran a few percent
    /// slower without). Their sessions share one arena: the step and the eval graph
    /// take turns, so one arena holds the larger of their peaks, where two held both.
    pub fn for_training(self) -> Self {
        Self {
            memory_pattern: false,
            shared_arena: true,
            ..self
        }
    }
}
