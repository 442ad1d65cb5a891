//! The ONNX Runtime plumbing below the training loop: feeding a train-step graph the
//! batch and the state and reading the new state back.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use ndarray::Array2;
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session, SessionInputValue};
use ort::value::{Tensor, TensorRef};
use rps_core::names::{self, StateKind};
use rps_core::{Device, GraphFile, Layout, SessionOptions};
use rps_runtime::Runtime;
use rps_runtime::fixed_dims;
use rps_score::{Batch, BatchOutput};

use crate::state::TrainState;

/// Named tensor shapes.
pub type Shapes = Vec<(String, Vec<usize>)>;

/// A train-step graph in a session.
pub struct StepRunner {
    session: Session,
    pub device: Device,
    graph: PathBuf,
    weight_decay: f32,
    /// The outputs a step reads (not the gradients, which are for tests).
    outputs: RunOptions<HasSelectedOutputs>,
}

impl StepRunner {
    /// Opens the exported step graph `file`.
    pub fn open(
        layout: &Layout,
        file: GraphFile,
        options: SessionOptions,
        weight_decay: f32,
    ) -> Result<Self> {
        let (session, device) = Runtime::get()?.exported(layout, file, options)?;
        let mut selected = OutputSelector::no_default()
            .with(names::LOSS)
            .with(names::LOGITS);
        for input in session.inputs() {
            if StateKind::parse(input.name()).is_some() {
                selected = selected.with(names::updated(input.name()));
            }
        }
        Ok(Self {
            session,
            device,
            graph: layout.graph(file),
            weight_decay,
            outputs: RunOptions::new()?.with_outputs(selected),
        })
    }

    /// The tensors of `kind` the graph takes, by PyTorch name, with their shapes.
    pub fn state_shapes(&self, kind: StateKind) -> Result<Shapes> {
        let mut shapes = Vec::new();
        for input in self.session.inputs() {
            let Some((found, tensor)) = StateKind::parse(input.name()) else {
                continue;
            };
            if found == kind {
                let shape = fixed_dims(&self.session, input.name(), &self.graph, 0)?;
                shapes.push((tensor.to_string(), shape));
            }
        }
        Ok(shapes)
    }

    /// The dimensions of the graph's input `name` (-1 where dynamic).
    pub fn dims(&self, name: &str) -> Result<Vec<i64>> {
        Ok(rps_runtime::dims(&self.session, name, &self.graph)?)
    }

    pub fn graph(&self) -> &Path {
        &self.graph
    }

    /// One Adam step on a batch; updates `state` in place.
    pub fn step(
        &mut self,
        state: &mut TrainState,
        features: &Batch,
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
            (names::FEATURES.into(), features.input()?),
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
        let outputs = self.session.run_with_options(inputs, &self.outputs)?;
        let result = BatchOutput::read(&outputs, &self.graph)?;
        // Into the state's own arrays: fresh ones each step would cost page faults.
        for (input, slot) in state.slots() {
            let name = names::updated(&input);
            let value = rps_score::output(&outputs, &name, &self.graph)?;
            if value.shape() != slot.shape() {
                bail!(
                    "{}: output {name} is {:?}, its input {:?}: `make export` rebuilds the graph",
                    self.graph.display(),
                    value.shape(),
                    slot.shape()
                );
            }
            slot.assign(&value);
        }
        Ok(result)
    }
}
