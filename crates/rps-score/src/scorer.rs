//! Scoring batches with an eval graph, the model's weights fed as inputs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ndarray::{Array2, ArrayView2, ArrayViewD, Axis, Ix2};
use ort::session::{Session, SessionInputValue, SessionOutputs};
use ort::value::{Tensor, TensorRef};
use rps_core::names::{self, StateKind};
use rps_core::{Device, GraphFile, Layout, SessionOptions, Tensors};
use rps_runtime::Runtime;

use crate::Batch;

/// Loss and logits of one step or one scored batch.
pub struct BatchOutput {
    /// Mean cross-entropy over the batch.
    pub loss: f32,
    pub logits: Array2<f32>,
}

impl BatchOutput {
    /// The `loss` and `logits` outputs of a run of `graph`.
    pub fn read(outputs: &SessionOutputs, graph: &Path) -> Result<Self> {
        Ok(Self {
            loss: output(outputs, names::LOSS, graph)?.sum(),
            logits: output(outputs, names::LOGITS, graph)?
                .to_owned()
                .into_dimensionality::<Ix2>()?,
        })
    }

    /// How many rows' arg-max logit is the label.
    pub fn correct(&self, labels: &[i64]) -> usize {
        predictions(self.logits.view())
            .iter()
            .zip(labels)
            .filter(|(p, l)| **p as i64 == **l)
            .count()
    }
}

/// The float output `name` of a run of `graph`; an error naming both if it has none.
pub fn output<'a>(
    outputs: &'a SessionOutputs,
    name: &str,
    graph: &Path,
) -> Result<ArrayViewD<'a, f32>> {
    let value = outputs
        .get(name)
        .with_context(|| format!("{} has no output {name}", graph.display()))?;
    Ok(value.try_extract_array::<f32>()?)
}

/// The arg-max class of each row.
pub fn predictions(logits: ArrayView2<f32>) -> Vec<usize> {
    logits
        .axis_iter(Axis(0))
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 { (i, v) } else { best }
                })
                .0
        })
        .collect()
}

/// Row-wise softmax.
pub fn softmax(logits: &Array2<f32>) -> Array2<f32> {
    let mut out = logits.clone();
    for mut row in out.axis_iter_mut(Axis(0)) {
        let max = row.fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        row.mapv_inplace(|v| (v - max).exp());
        let sum = row.sum();
        row.mapv_inplace(|v| v / sum);
    }
    out
}

/// An eval graph in a session: a batch's features and labels, plus the weights it
/// takes as `param:NAME` and `buffer:NAME` inputs -> mean loss and logits.
pub struct Scorer {
    session: Session,
    pub device: Device,
    graph: PathBuf,
    /// `(input name, tensor name)` of every weight the graph takes.
    weights: Vec<(String, String)>,
}

impl Scorer {
    /// Opens the exported eval graph `file`.
    pub fn open(layout: &Layout, file: GraphFile, options: SessionOptions) -> Result<Self> {
        let (session, device) = Runtime::get()?.exported(layout, file, options)?;
        let graph = layout.graph(file);
        let weights = session
            .inputs()
            .iter()
            .filter_map(|input| {
                let (_, tensor) = StateKind::parse(input.name())?;
                Some((input.name().to_string(), tensor.to_string()))
            })
            .collect();
        Ok(Self {
            session,
            device,
            graph,
            weights,
        })
    }

    /// The dimensions of the graph's `features` input.
    pub fn features_dims(&self) -> Result<Vec<i64>> {
        Ok(rps_runtime::dims(
            &self.session,
            names::FEATURES,
            &self.graph,
        )?)
    }

    /// Scores one batch with `weights` (which must hold every weight the graph takes).
    pub fn score(
        &mut self,
        features: &Batch,
        labels: &[i64],
        weights: &Tensors,
    ) -> Result<BatchOutput> {
        let mut inputs: Vec<(String, SessionInputValue<'_>)> = vec![
            (names::FEATURES.into(), features.input()?),
            (
                names::LABELS.into(),
                Tensor::from_array(([labels.len()], labels.to_vec()))?.into(),
            ),
        ];
        for (input, tensor) in &self.weights {
            let value = weights.get(tensor).with_context(|| {
                format!(
                    "{} takes {input}, which the weights do not hold",
                    self.graph.display()
                )
            })?;
            inputs.push((
                input.clone(),
                TensorRef::from_array_view(value.view())?.into(),
            ));
        }
        let outputs = self.session.run(inputs)?;
        let result = BatchOutput::read(&outputs, &self.graph)?;
        if result.logits.nrows() != labels.len() {
            bail!(
                "{} returned {} rows for {} labels",
                self.graph.display(),
                result.logits.nrows(),
                labels.len()
            );
        }
        Ok(result)
    }
}
