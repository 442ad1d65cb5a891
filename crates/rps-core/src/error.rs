use std::path::PathBuf;

/// Errors from the shared helpers; each names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading {}: {source}", path.display())]
    ReadNpy {
        path: PathBuf,
        source: ndarray_npy::ReadNpyError,
    },
    #[error("writing {}: {source}", path.display())]
    WriteNpy {
        path: PathBuf,
        source: ndarray_npy::WriteNpyError,
    },
    #[error("{}: {source}", path.display())]
    Csv { path: PathBuf, source: csv::Error },
    #[error("{}: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("{source} (`make {stage}` makes it)")]
    Upstream { stage: String, source: Box<Error> },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// This error about a file, with the stage whose target makes that file.
    pub fn made_by(self, stage: &str) -> Self {
        Error::Upstream {
            stage: stage.into(),
            source: Box::new(self),
        }
    }
}

/// Attaches the action and path to an I/O error.
pub(crate) fn io(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}
