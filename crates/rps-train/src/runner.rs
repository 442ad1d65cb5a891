//! The ONNX Runtime plumbing below the training loop: feeding a train-step graph the
//! batch and the state and reading the new state back; scoring with an eval graph.

use anyhow::{Context, Result, bail};
use ndarray::{Array2, ArrayD, ArrayView2, Axis, Ix2};
use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, TensorRef};
use rps_core::{Device, DeviceChoice, Runtime};
use rps_export::names;

use crate::state::TrainState;

/// Loss and logits of one step or one scored batch.
pub struct BatchOutput {
    /// Mean cross-entropy over the batch.
    pub loss: f32,
    pub logits: Array2<f32>,
}

impl BatchOutput {
    /// How many rows' arg-max logit is the label.
    pub fn correct(&self, labels: &[i64]) -> usize {
        predictions(self.logits.view())
            .iter()
            .zip(labels)
            .filter(|(p, l)| **p as i64 == **l)
            .count()
    }
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

/// A train-step graph in a session.
pub struct StepRunner {
    session: Session,
    pub device: Device,
    weight_decay: f32,
}

impl StepRunner {
    pub fn new(
        graph: &[u8],
        label: &str,
        device: DeviceChoice,
        threads: usize,
        weight_decay: f32,
    ) -> Result<Self> {
        let (session, device) =
            Runtime::get()?.session_from_bytes(graph, label, device, threads)?;
        Ok(Self {
            session,
            device,
            weight_decay,
        })
    }

    /// One Adam step on a batch; updates `state` in place.
    pub fn step(
        &mut self,
        state: &mut TrainState,
        features: &ArrayD<f32>,
        labels: &[i64],
        mask: &Array2<f32>,
        lr: f32,
    ) -> Result<BatchOutput> {
        state.step += 1;
        let scalars = [
            (names::STEP, state.step as f32),
            (names::LR, lr),
            (names::WEIGHT_DECAY, self.weight_decay),
        ];
        let mut inputs: Vec<(String, SessionInputValue<'_>)> = vec![
            (
                names::FEATURES.into(),
                TensorRef::from_array_view(features.view())?.into(),
            ),
            (
                names::LABELS.into(),
                Tensor::from_array(([labels.len()], labels.to_vec()))?.into(),
            ),
            (
                names::DROPOUT_MASK.into(),
                TensorRef::from_array_view(mask.view())?.into(),
            ),
        ];
        for (name, value) in scalars {
            inputs.push((name.into(), Tensor::from_array(((), vec![value]))?.into()));
        }
        for (name, value) in state.inputs() {
            inputs.push((name, TensorRef::from_array_view(value.view())?.into()));
        }
        let outputs = self.session.run(inputs)?;
        let output = |name: &str| -> Result<ArrayD<f32>> {
            Ok(outputs
                .get(name)
                .with_context(|| format!("the step graph has no output {name}"))?
                .try_extract_array::<f32>()?
                .to_owned())
        };
        let result = BatchOutput {
            loss: output(names::LOSS)?.sum(),
            logits: output(names::LOGITS)?.into_dimensionality::<Ix2>()?,
        };
        let mut updated = Vec::new();
        for (name, _) in state.inputs() {
            updated.push(output(&names::updated(&name))?);
        }
        for ((_, slot), value) in state_slots(state).zip(updated) {
            *slot = value;
        }
        Ok(result)
    }
}

/// The state's tensors in the order of [`TrainState::inputs`], mutably.
fn state_slots(state: &mut TrainState) -> impl Iterator<Item = (&String, &mut ArrayD<f32>)> {
    state
        .params
        .iter_mut()
        .chain(state.adam_m.iter_mut())
        .chain(state.adam_v.iter_mut())
        .chain(state.buffers.iter_mut())
}

/// Scores batches with an eval graph (weights as initializers).
pub struct Scorer {
    session: Session,
    pub device: Device,
}

impl Scorer {
    pub fn new(graph: &[u8], label: &str, device: DeviceChoice, threads: usize) -> Result<Self> {
        let (session, device) =
            Runtime::get()?.session_from_bytes(graph, label, device, threads)?;
        Ok(Self { session, device })
    }

    pub fn score(&mut self, features: &ArrayD<f32>, labels: &[i64]) -> Result<BatchOutput> {
        let outputs = self.session.run(ort::inputs![
            names::FEATURES => TensorRef::from_array_view(features.view())?,
            names::LABELS => Tensor::from_array(([labels.len()], labels.to_vec()))?,
        ])?;
        let loss = outputs[names::LOSS].try_extract_array::<f32>()?.sum();
        let logits = outputs[names::LOGITS]
            .try_extract_array::<f32>()?
            .to_owned()
            .into_dimensionality::<Ix2>()?;
        if logits.nrows() != labels.len() {
            bail!(
                "the eval graph returned {} rows for {} labels",
                logits.nrows(),
                labels.len()
            );
        }
        Ok(BatchOutput { loss, logits })
    }
}
