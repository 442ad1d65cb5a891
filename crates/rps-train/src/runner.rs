//! The ONNX Runtime plumbing below the training loop: feeding a train-step graph the
//! batch and the state and reading the new state back.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use ndarray::Array2;
use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, TensorRef};
use rps_core::names::{self, RateGroup, StateKind};
use rps_core::{Device, GraphFile, Layout, SessionOptions};
use rps_runtime::Runtime;
use rps_runtime::fixed_dims;
use rps_score::{Batch, BatchOutput};

use crate::state::TrainState;

/// Named tensor shapes.
pub type Shapes = Vec<(String, Vec<usize>)>;

/// The rate groups a step graph's metadata lists, each of them one of its inputs
/// and every rate input one of them.
fn rate_groups(session: &Session, graph: &Path) -> Result<Vec<RateGroup>> {
    let key = names::META_RATE_GROUPS;
    let text = session.metadata()?.custom(key).with_context(|| {
        format!(
            "{}: no {key} in its metadata: `make export` rebuilds the graph",
            graph.display()
        )
    })?;
    let groups = RateGroup::parse_list(&text)
        .map_err(|why| anyhow!("{}: metadata {key}: {why}", graph.display()))?;
    let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
    let listed: Vec<String> = groups.iter().map(RateGroup::input).collect();
    let unlisted = inputs
        .iter()
        .find(|i| RateGroup::is_rate(i) && !listed.contains(&i.to_string()));
    let missing = listed.iter().find(|l| !inputs.contains(&l.as_str()));
    if let Some(input) = unlisted.map(|i| i.to_string()).or(missing.cloned()) {
        bail!(
            "{}: its rate input {input} and its {key} metadata ({text}) disagree: `make export` rebuilds the graph",
            graph.display()
        );
    }
    Ok(groups)
}

/// A step ONNX Runtime could not run: when it could not allocate, what to change,
/// without its raw text; else its error, naming the graph.
fn step_failed(error: ort::Error, batch: usize, graph: &Path) -> anyhow::Error {
    let text = error.to_string();
    if text.contains("Failed to allocate memory") {
        return anyhow!(
            "{}: a step of {batch} images did not fit in memory (ONNX Runtime could not allocate a buffer): lower BATCH, or start phase 2 at a later stage (UNFREEZE)",
            graph.display()
        );
    }
    anyhow!(error).context(format!("{}: running a train step", graph.display()))
}

/// What a phase's optimizer keeps from step to step besides its state.
#[derive(Debug, Clone, PartialEq)]
pub struct Optimizer {
    /// Decoupled (AdamW) weight decay.
    pub weight_decay: f64,
    /// Each earlier stage's rate is the next one's divided by this (`FT_LR_MULT`).
    pub lr_mult: f64,
    /// Each class's weight in the loss.
    pub class_weights: Vec<f64>,
}

impl Optimizer {
    /// The recipe's plain Adam for `classes` classes: no decay, one rate, every
    /// class weighing 1.
    pub fn recipe(classes: usize) -> Self {
        Self {
            weight_decay: 0.0,
            lr_mult: 1.0,
            class_weights: vec![1.0; classes],
        }
    }
}

/// What a schedule sets for one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepRates {
    /// The head's learning rate.
    pub lr: f64,
    /// Adam's beta1.
    pub beta1: f64,
}

impl StepRates {
    /// `lr` with Adam's default beta1.
    pub fn constant(lr: f64) -> Self {
        Self {
            lr,
            beta1: rps_core::defaults::ADAM_BETA1,
        }
    }
}

/// A train-step graph in a session.
pub struct StepRunner {
    session: Session,
    pub device: Device,
    graph: PathBuf,
    weight_decay: f32,
    class_weights: Vec<f32>,
    /// Each of the graph's learning-rate inputs, and what divides the head's rate
    /// for it (`FT_LR_MULT` to the power of its depth).
    rate_inputs: Vec<(String, f64)>,
}

impl StepRunner {
    /// Opens the exported step graph `file`.
    pub fn open(
        layout: &Layout,
        file: GraphFile,
        options: SessionOptions,
        optimizer: Optimizer,
    ) -> Result<Self> {
        let (session, device) = Runtime::get()?.exported(layout, file, options)?;
        let graph = layout.graph(file);
        let rate_inputs = rate_groups(&session, &graph)?
            .into_iter()
            .map(|group| {
                let divisor = optimizer.lr_mult.powi(group.depth as i32);
                (group.input(), divisor)
            })
            .collect();
        Ok(Self {
            session,
            device,
            graph,
            weight_decay: optimizer.weight_decay as f32,
            class_weights: optimizer.class_weights.iter().map(|&w| w as f32).collect(),
            rate_inputs,
        })
    }

    /// Each rate input with its rate when the head's is `lr`.
    pub fn group_rates(&self, lr: f64) -> Vec<(String, f64)> {
        self.rate_inputs
            .iter()
            .map(|(input, divisor)| (input.clone(), lr / divisor))
            .collect()
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

    /// One Adam step on a batch at `rates`; updates `state` in place.
    pub fn step(
        &mut self,
        state: &mut TrainState,
        features: &Batch,
        labels: &[i64],
        mask: &Array2<f32>,
        rates: StepRates,
    ) -> Result<BatchOutput> {
        state.step += 1;
        let mut scalars = vec![
            (names::STEP.to_string(), state.step as f32),
            (names::BETA1.into(), rates.beta1 as f32),
            (names::WEIGHT_DECAY.into(), self.weight_decay),
        ];
        let group_rates = self.group_rates(rates.lr);
        scalars.extend(
            group_rates
                .into_iter()
                .map(|(input, lr)| (input, lr as f32)),
        );
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
            inputs.push((name, Tensor::from_array(((), vec![value]))?.into()));
        }
        inputs.push((
            names::CLASS_WEIGHTS.into(),
            Tensor::from_array(([self.class_weights.len()], self.class_weights.clone()))?.into(),
        ));
        for (name, value) in state.inputs() {
            inputs.push((name, TensorRef::from_array_view(value.view())?.into()));
        }
        let outputs = self
            .session
            .run(inputs)
            .map_err(|e| step_failed(e, labels.len(), &self.graph))?;
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
            // A memcpy where both are contiguous (always, in practice): ndarray's
            // element-wise assign over dynamic shapes is several times slower.
            match (slot.as_slice_mut(), value.as_slice()) {
                (Some(to), Some(from)) => to.copy_from_slice(from),
                _ => slot.assign(&value),
            }
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_failure_is_worded_for_a_person() {
        let graph = Path::new("data/graphs/finetune_step.onnx");
        let raw = "Failed to allocate memory for requested buffer of size 3034644480";
        let said = format!("{:#}", step_failed(ort::Error::new(raw), 4096, graph));
        assert!(
            said.contains("finetune_step.onnx: a step of 4096 images did not fit in memory")
                && said.contains("lower BATCH")
                && !said.contains("3034644480"),
            "{said}"
        );
        let other = format!(
            "{:#}",
            step_failed(ort::Error::new("Invalid input"), 1, graph)
        );
        assert!(other.contains("running a train step") && other.contains("Invalid input"));
    }
}
