//! rps-runtime: loading ONNX Runtime (the library `make setup` puts in `.ort/`) and
//! opening sessions on the device a person asked for. Only the stages that run
//! graphs depend on it, so the others never link ONNX Runtime.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::ep;
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};

use rps_core::sidecar::ExportMeta;
use rps_core::{Device, DeviceChoice, GraphFile, Layout, SessionOptions};

/// What can go wrong loading the library or opening a session; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "ONNX Runtime library not found; tried:\n{}\nrun `make setup` (or set ORT_DYLIB_PATH to a libonnxruntime.so)",
        list_paths(tried)
    )]
    OrtMissing { tried: Vec<PathBuf> },
    #[error("loading ONNX Runtime from {}: {message}", path.display())]
    OrtLoad { path: PathBuf, message: String },
    #[error("{context}: {source}")]
    Ort { context: String, source: ort::Error },
    #[error("CUDA was asked for but cannot run: {0}")]
    CudaUnavailable(String),
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("{source} (`make {stage}` makes it)")]
    Upstream { stage: String, source: Box<Error> },
    #[error(transparent)]
    Core(#[from] rps_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// This error about a file, with the stage whose target makes that file.
    fn made_by(self, stage: &str) -> Self {
        Error::Upstream {
            stage: stage.into(),
            source: Box::new(self),
        }
    }
}

fn list_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| format!("  {}", p.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Overrides where the library is looked for.
pub const DYLIB_ENV: &str = "ORT_DYLIB_PATH";
const DYLIB_NAME: &str = "libonnxruntime.so";

/// Where the library is looked for, in order: `ORT_DYLIB_PATH` alone when set, else
/// `.ort/` in the current folder, then `.ort/` in the workspace this was built from.
pub fn library_candidates() -> Vec<PathBuf> {
    let cwd = std::env::current_dir().ok();
    let built_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ort");
    let built_in = built_in.canonicalize().unwrap_or(built_in);
    candidates(
        std::env::var_os(DYLIB_ENV).map(PathBuf::from),
        cwd,
        built_in,
    )
}

/// [`library_candidates`] from its inputs: the override, the current folder, the
/// workspace's `.ort/`.
fn candidates(
    overridden: Option<PathBuf>,
    cwd: Option<PathBuf>,
    built_in: PathBuf,
) -> Vec<PathBuf> {
    if let Some(path) = overridden {
        return vec![path];
    }
    let mut dirs: Vec<PathBuf> = cwd.map(|cwd| cwd.join(".ort")).into_iter().collect();
    dirs.push(built_in);
    dirs.dedup();
    dirs.into_iter().map(|dir| dir.join(DYLIB_NAME)).collect()
}

/// The first of `tried` that exists, or the error listing them all and the fix.
fn find_library(tried: &[PathBuf]) -> Result<PathBuf> {
    tried
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or_else(|| Error::OrtMissing {
            tried: tried.to_vec(),
        })
}

/// The loaded library and its one environment (ONNX Runtime allows one a process).
pub struct Runtime {
    environment: Environment,
    library: PathBuf,
}

static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();

/// Registers one CPU arena with the environment, for the sessions that ask to share
/// it (`SessionOptions::shared_arena`); `ort` wraps no call for it.
fn register_shared_arena(environment: &Environment) -> ort::Result<()> {
    use ort::AsPointer;
    use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
    let info = MemoryInfo::new(
        AllocationDevice::CPU,
        0,
        AllocatorType::Arena,
        MemoryType::Default,
    )?;
    // Safety: both pointers are live for the call; a null arena config takes ONNX
    // Runtime's defaults; the status it returns is taken over by result_from_status.
    unsafe {
        let status = (ort::api().CreateAndRegisterAllocator)(
            environment.ptr().cast_mut(),
            info.ptr(),
            std::ptr::null(),
        );
        ort::Error::result_from_status(status)
    }
}

impl Runtime {
    /// Loads the library on first use; later calls return the same runtime.
    pub fn get() -> Result<&'static Runtime> {
        RUNTIME
            .get_or_init(|| Self::load().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|message| Error::OrtLoad {
                path: PathBuf::from(DYLIB_NAME),
                message: message.clone(),
            })
    }

    fn load() -> Result<Self> {
        let library = find_library(&library_candidates())?;
        let load_err = |message: String| Error::OrtLoad {
            path: library.clone(),
            message,
        };
        let environment = ort::init_from(&library)
            .map_err(|e| load_err(e.to_string()))?
            .with_name("rps-transfer")
            .build()
            .map_err(|e| load_err(e.to_string()))?;
        register_shared_arena(&environment).map_err(|e| load_err(e.to_string()))?;
        Ok(Self {
            environment,
            library,
        })
    }

    pub fn library(&self) -> &Path {
        &self.library
    }

    /// The library's version, e.g. `1.31.1`, from its versioned file name (the
    /// wheel's `libonnxruntime.so.1.31.1`, which `.ort/libonnxruntime.so` links to);
    /// `None` for an unversioned file. (`ort` checks on loading that the library is
    /// new enough for its API.)
    pub fn version(&self) -> Option<String> {
        let real = self.library.canonicalize().ok()?;
        let name = real.file_name()?.to_str()?;
        let version = name.strip_prefix(DYLIB_NAME)?.strip_prefix('.')?;
        (!version.is_empty()).then(|| version.to_string())
    }

    /// Opens the graph file `model` on the device `options` ask for.
    pub fn session(&self, model: &Path, options: SessionOptions) -> Result<(Session, Device)> {
        let label = model.display().to_string();
        self.open(&label, options, |builder| builder.commit_from_file(model))
    }

    /// Opens the graph `file` rps-export wrote under `layout`, once its bytes are
    /// the ones `export.json` records; one that differs or does not load is an error
    /// naming it and the target that rewrites it.
    pub fn exported(
        &self,
        layout: &Layout,
        file: GraphFile,
        options: SessionOptions,
    ) -> Result<(Session, Device)> {
        let path = layout.graph(file);
        let meta =
            ExportMeta::read(&layout.graph(GraphFile::Meta)).map_err(|e| e.made_by("export"))?;
        let bytes = std::fs::read(&path).map_err(|e| {
            Error::Invalid {
                path: path.clone(),
                message: format!("reading: {e}"),
            }
            .made_by("export")
        })?;
        meta.check_file(file, &path, &bytes)?;
        self.session_from_bytes(&bytes, &path.display().to_string(), options)
            .map_err(|e| e.made_by("export"))
    }

    /// Opens a graph held in memory; `label` names it in errors.
    pub fn session_from_bytes(
        &self,
        model: &[u8],
        label: &str,
        options: SessionOptions,
    ) -> Result<(Session, Device)> {
        self.open(label, options, |builder| builder.commit_from_memory(model))
    }

    fn open(
        &self,
        label: &str,
        options: SessionOptions,
        commit: impl FnOnce(&mut SessionBuilder) -> ort::Result<Session>,
    ) -> Result<(Session, Device)> {
        let (mut builder, device) = self.session_builder(options)?;
        let session = commit(&mut builder).map_err(|source| Error::Ort {
            context: format!("loading {label} on {device}"),
            source,
        })?;
        Ok((session, device))
    }

    /// A session builder on the device `options` ask for.
    pub fn session_builder(&self, options: SessionOptions) -> Result<(SessionBuilder, Device)> {
        Ok(match options.device {
            DeviceChoice::Cpu => (self.builder(options)?, Device::Cpu),
            DeviceChoice::Cuda => (self.cuda_builder(options)?, Device::Cuda),
            DeviceChoice::Auto => match self.cuda_builder(options) {
                Ok(builder) => (builder, Device::Cuda),
                Err(_) => (self.builder(options)?, Device::Cpu),
            },
        })
    }

    /// The flavor `make setup` installed (`cpu` or `gpu`), read from `FLAVOR` beside
    /// the library; `None` for a library from elsewhere.
    pub fn flavor(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.library.with_file_name("FLAVOR")).ok()?;
        text.split_whitespace().next().map(str::to_string)
    }

    fn builder(&self, options: SessionOptions) -> Result<SessionBuilder> {
        let ort_err = |source: ort::Error| Error::Ort {
            context: "configuring an ONNX Runtime session".into(),
            source,
        };
        Session::builder(&self.environment)
            .map_err(ort_err)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| ort_err(e.into()))?
            .with_intra_threads(options.threads)
            .map_err(|e| ort_err(e.into()))?
            .with_memory_pattern(options.memory_pattern)
            .map_err(|e| ort_err(e.into()))?
            .with_config_entry(
                "session.use_env_allocators",
                if options.shared_arena { "1" } else { "0" },
            )
            .map_err(|e| ort_err(e.into()))?
            // Its failures come back as errors, which each stage words for a person;
            // ONNX Runtime's own log would print them a second time, raw and in
            // colour.
            .with_log_level(ort::logging::LogLevel::Fatal)
            .map_err(|e| ort_err(e.into()))
    }

    /// A builder whose CUDA provider must register: ort otherwise falls back to the
    /// CPU silently.
    fn cuda_builder(&self, options: SessionOptions) -> Result<SessionBuilder> {
        self.builder(options)?
            .with_execution_providers([ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| {
                Error::CudaUnavailable(format!(
                    "{e} (with ORT_FLAVOR=gpu, `make setup` installs the CUDA build; \
                     its libraries in .ort/ must be on LD_LIBRARY_PATH, as the Makefile sets)"
                ))
            })
    }
}

/// The dimensions of the input or output `name` of `session`'s graph (`-1` where
/// dynamic); `graph` names the file in the error when there is none.
pub fn dims(session: &Session, name: &str, graph: &Path) -> Result<Vec<i64>> {
    let outlet = session
        .inputs()
        .iter()
        .chain(session.outputs())
        .find(|o| o.name() == name)
        .ok_or_else(|| Error::Invalid {
            path: graph.to_path_buf(),
            message: format!("the graph has no input or output {name:?}"),
        })?;
    match outlet.dtype() {
        ort::value::ValueType::Tensor { shape, .. } => Ok(shape.to_vec()),
        other => Err(Error::Invalid {
            path: graph.to_path_buf(),
            message: format!("{name:?} is not a tensor but {other:?}"),
        }),
    }
}

/// The dimensions of `name` after its first `skip`, which must all be fixed (a
/// batch dimension is skipped, a weight's is not).
pub fn fixed_dims(session: &Session, name: &str, graph: &Path, skip: usize) -> Result<Vec<usize>> {
    let dims = dims(session, name, graph)?;
    dims.iter()
        .skip(skip)
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Error::Invalid {
            path: graph.to_path_buf(),
            message: format!("{name:?} has dynamic dimensions {dims:?}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_alone_is_tried_else_the_current_folder_then_the_workspace() {
        let (cwd, built_in) = (PathBuf::from("/work"), PathBuf::from("/repo/.ort"));
        assert_eq!(
            candidates(
                Some("/x/lib.so".into()),
                Some(cwd.clone()),
                built_in.clone()
            ),
            [PathBuf::from("/x/lib.so")]
        );
        assert_eq!(
            candidates(None, Some(cwd), built_in.clone()),
            [
                PathBuf::from("/work/.ort/libonnxruntime.so"),
                PathBuf::from("/repo/.ort/libonnxruntime.so")
            ]
        );
        // Run from the repository, both folders are one.
        assert_eq!(candidates(None, Some("/repo".into()), built_in).len(), 1);
    }

    #[test]
    fn a_missing_library_is_an_error_listing_what_was_tried_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let tried = [dir.path().join("a.so"), dir.path().join("b.so")];
        let err = find_library(&tried).unwrap_err().to_string();
        for path in &tried {
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
        assert!(err.contains("make setup"), "{err}");
        std::fs::write(&tried[1], b"").unwrap();
        assert_eq!(find_library(&tried).unwrap(), tried[1]);
    }
}
