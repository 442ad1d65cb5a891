//! The references measured in Python: Pillow for preprocess, PyTorch for the step,
//! the forward and the whole recipe (`scripts/bench_pillow.py`,
//! `scripts/bench_pytorch.py`). Each says why when it cannot be measured.

use std::path::{Path, PathBuf};
use std::process::Command;

use rps_core::Unfreeze;
use rps_model::network::Net;

use crate::rates::PREPROCESS_PASSES;

/// A Python interpreter, to run the scripts in `scripts/`.
pub struct Python {
    pub interpreter: String,
}

/// A measurement, or why it could not be made.
pub type Measured<T> = Result<T, String>;

/// A phase 2 step measured in a process that ran nothing else: images/s, and the
/// process's peak resident memory.
pub struct Step {
    pub rate: f64,
    pub peak_bytes: f64,
}

impl Step {
    /// From the `step` and `peak_resident_bytes` lines such a process prints.
    pub fn parse(output: &str) -> Measured<Self> {
        Ok(Self {
            rate: number(output, "step")?,
            peak_bytes: number(output, "peak_resident_bytes")?,
        })
    }
}

/// PyTorch's forward rate and the backbone it exported with torch.onnx.
pub struct Forward {
    pub version: String,
    pub rate: f64,
    pub exported: Measured<PathBuf>,
}

impl Python {
    /// Pillow's images/s for the test and train transforms on every PNG in `dir`.
    pub fn pillow_rates(&self, dir: &Path, threads: usize) -> Measured<(f64, f64)> {
        let dir = dir.to_str().ok_or("a folder name that is not UTF-8")?;
        let passes = PREPROCESS_PASSES.to_string();
        let output = self.run(
            "bench_pillow.py",
            &[dir, "224", &threads.to_string(), &passes],
        )?;
        Ok((number(&output, "test")?, number(&output, "train")?))
    }

    /// PyTorch's version and its eager phase 2 step from `unfreeze`, in a process of
    /// its own.
    pub fn step(
        &self,
        net: Net,
        unfreeze: Unfreeze,
        threads: usize,
        steps: usize,
    ) -> Measured<(String, Step)> {
        let args = [
            "step",
            net.name(),
            &threads.to_string(),
            &steps.to_string(),
            unfreeze.name(),
        ];
        let output = self.run("bench_pytorch.py", &args)?;
        Ok((text(&output, "torch")?.into(), Step::parse(&output)?))
    }

    /// PyTorch's images/s on the frozen backbone, and its torch.onnx export into
    /// `dir`.
    pub fn forward(
        &self,
        net: Net,
        threads: usize,
        images: usize,
        dir: &Path,
    ) -> Measured<Forward> {
        let path = dir.join("torch_backbone.onnx");
        let target = path.to_str().ok_or("a folder name that is not UTF-8")?;
        let output = self.run(
            "bench_pytorch.py",
            &[
                "forward",
                net.name(),
                &threads.to_string(),
                &images.to_string(),
                target,
            ],
        )?;
        let exported = match text(&output, "export failed") {
            Ok(why) => Err(format!("torch.onnx failed: {why}")),
            Err(_) => Ok(path),
        };
        Ok(Forward {
            version: text(&output, "torch")?.into(),
            rate: number(&output, "forward")?,
            exported,
        })
    }

    /// Seconds PyTorch takes for the whole recipe on the archives in `archives`.
    pub fn pipeline_seconds(
        &self,
        net: Net,
        threads: usize,
        archives: &Path,
        weights: &Path,
        work: &Path,
        recipe: &crate::pipeline::Recipe,
    ) -> Measured<f64> {
        let path = |p: &Path| {
            p.to_str()
                .map(String::from)
                .ok_or("a path that is not UTF-8")
        };
        let args = [
            "pipeline".to_string(),
            net.name().to_string(),
            threads.to_string(),
            path(archives)?,
            path(weights)?,
            path(work)?,
            recipe.views.to_string(),
            recipe.head_epochs.to_string(),
            recipe.ft_epochs.to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = self.run("bench_pytorch.py", &args)?;
        number(&output, "seconds")
    }

    /// Runs `scripts/<script>`: its standard output, or why it failed.
    fn run(&self, script: &str, args: &[&str]) -> Measured<String> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../scripts")
            .join(script);
        let out = Command::new(&self.interpreter)
            .arg(path)
            .args(args)
            .output()
            .map_err(|e| format!("running {}: {e}", self.interpreter))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            return Err(format!(
                "{} {script} failed: {}",
                self.interpreter,
                last.unwrap_or("no message")
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The value of a program's `KEY VALUE` output line.
fn text<'a>(output: &'a str, key: &str) -> Measured<&'a str> {
    output
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix([' ', ':']))
        .map(str::trim)
        .ok_or_else(|| format!("it printed no {key:?} line"))
}

fn number(output: &str, key: &str) -> Measured<f64> {
    let value = text(output, key)?;
    value
        .parse()
        .map_err(|_| format!("its {key:?} is {value:?}, not a number"))
}
