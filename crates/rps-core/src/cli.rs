//! The flags every stage binary shares, flattened into each one's own (clap derive).

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::TypedValueParser;

use crate::defaults;
use crate::device::{DeviceChoice, SessionOptions};
use crate::layout::Layout;

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
    #[arg(long, value_enum, default_value = defaults::DEVICE)]
    pub device: DeviceChoice,
    /// Threads for ONNX Runtime's CPU kernels, 1 to 1024 (default: all cores).
    #[arg(long, value_parser = whole::<usize>(defaults::ranges::THREADS))]
    pub threads: Option<usize>,
}

impl OrtArgs {
    pub fn options(&self) -> SessionOptions {
        SessionOptions::new(self.device, self.threads.unwrap_or_else(all_cores))
    }
}

/// Every binary's `main`: temporaries removed on a signal, the flags parsed (a bad
/// one exits with status 2), then `run`, whose error [`finish`] prints.
pub fn main<A, E>(run: impl FnOnce(A) -> Result<(), E>) -> ExitCode
where
    A: clap::Parser,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    crate::atomic::remove_temporaries_on_signal();
    finish(run(A::parse()))
}

/// Ends a binary: an error is printed with its causes, one a line, and exits with
/// status 1. No stack trace, whatever `RUST_BACKTRACE` says: those are for panics.
fn finish<E>(result: Result<(), E>) -> ExitCode
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Err(error) = result else {
        return ExitCode::SUCCESS;
    };
    eprint!("{}", error_text(error.into().as_ref()));
    ExitCode::FAILURE
}

/// `error` and its causes, each once: a cause whose text a line above already holds
/// (an error that shows its source in its own message) is left out.
fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut lines = vec![error.to_string()];
    let mut cause = error.source();
    while let Some(source) = cause {
        let text = source.to_string();
        if !lines.iter().any(|line| line.contains(&text)) {
            lines.push(text);
        }
        cause = source.source();
    }
    let mut text = format!("Error: {}\n", lines[0]);
    if lines.len() > 1 {
        text.push_str("\nCaused by:\n");
        for line in &lines[1..] {
            text.push_str(&format!("    {line}\n"));
        }
    }
    text
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

/// A whole-number flag in `range`; clap refuses anything else, naming the flag, the
/// value and the range.
pub fn whole<T>(range: RangeInclusive<u64>) -> impl TypedValueParser<Value = T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    move |text: &str| -> Result<T, String> {
        text.trim()
            .parse::<u64>()
            .ok()
            .filter(|value| range.contains(value))
            .and_then(|value| T::try_from(value).ok())
            .ok_or_else(|| {
                format!(
                    "expected a whole number from {} to {}",
                    range.start(),
                    range.end()
                )
            })
    }
}

/// The numbers from `min` to `max`, each end itself included or not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub min: f64,
    pub max: f64,
    pub min_included: bool,
    pub max_included: bool,
}

impl Interval {
    pub const fn closed(min: f64, max: f64) -> Self {
        Self {
            min,
            max,
            min_included: true,
            max_included: true,
        }
    }

    pub const fn half_open(min: f64, max: f64) -> Self {
        Self {
            min,
            max,
            min_included: true,
            max_included: false,
        }
    }

    pub const fn open(min: f64, max: f64) -> Self {
        Self {
            min,
            max,
            min_included: false,
            max_included: false,
        }
    }

    pub fn contains(&self, value: f64) -> bool {
        (value > self.min || (self.min_included && value == self.min))
            && (value < self.max || (self.max_included && value == self.max))
    }
}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = if self.min_included { '[' } else { '(' };
        let close = if self.max_included { ']' } else { ')' };
        write!(f, "{open}{}, {}{close}", self.min, self.max)
    }
}

/// A finite decimal flag in `interval`; clap refuses anything else (NaN too), naming
/// the flag, the value and the interval.
pub fn number(interval: Interval) -> impl TypedValueParser<Value = f64> {
    move |text: &str| -> Result<f64, String> {
        match text.trim().parse::<f64>() {
            Ok(value) if interval.contains(value) => Ok(value),
            _ => Err(format!("expected a number in {interval}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[derive(Debug, thiserror::Error)]
    #[error("training failed")]
    struct Outer(#[source] Error);

    #[test]
    fn each_cause_is_printed_once() {
        let inner = Error::Invalid {
            path: "graphs/head_step.onnx".into(),
            message: "changed since export".into(),
        };
        let text = error_text(&Outer(inner.made_by("export")));
        assert_eq!(text.matches("changed since export").count(), 1, "{text}");
        assert!(
            text.starts_with("Error: training failed\n\nCaused by:\n    graphs/head_step.onnx"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 4, "{text}");
    }
}
