//! What training carries from step to step: parameters, Adam moments, BatchNorm
//! statistics and the Adam step count; saved as `.npz` checkpoints.

use std::path::Path;

use anyhow::{Context, Result};
use ndarray::{ArrayD, IxDyn};
use rps_core::names::StateKind;
use rps_core::{Tensors, npy};

/// Name of the step count in a saved state.
const STEP: &str = "step";

/// The trainable part of the model and its optimizer state.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    /// Trainable parameters by PyTorch name.
    pub params: Tensors,
    pub adam_m: Tensors,
    pub adam_v: Tensors,
    /// BatchNorm running statistics updated by the step (phase 2).
    pub buffers: Tensors,
    /// Adam steps taken so far.
    pub step: u64,
}

impl TrainState {
    /// Fresh Adam state for `params` (taken from `weights`), as a new optimizer starts.
    pub fn fresh(
        weights: &Tensors,
        params: &[(String, Vec<usize>)],
        buffers: &[(String, Vec<usize>)],
    ) -> Result<Self> {
        let take = |list: &[(String, Vec<usize>)]| -> Result<Tensors> {
            list.iter()
                .map(|(name, _)| {
                    let value = weights
                        .get(name)
                        .with_context(|| format!("the weights have no {name:?}"))?;
                    Ok((name.clone(), value.clone()))
                })
                .collect()
        };
        let zeros = |list: &[(String, Vec<usize>)]| -> Tensors {
            list.iter()
                .map(|(name, shape)| (name.clone(), ArrayD::zeros(IxDyn(shape))))
                .collect()
        };
        Ok(Self {
            params: take(params)?,
            adam_m: zeros(params),
            adam_v: zeros(params),
            buffers: take(buffers)?,
            step: 0,
        })
    }

    fn empty() -> Self {
        Self {
            params: Tensors::new(),
            adam_m: Tensors::new(),
            adam_v: Tensors::new(),
            buffers: Tensors::new(),
            step: 0,
        }
    }

    fn tensors(&self, kind: StateKind) -> &Tensors {
        match kind {
            StateKind::Param => &self.params,
            StateKind::AdamM => &self.adam_m,
            StateKind::AdamV => &self.adam_v,
            StateKind::Buffer => &self.buffers,
        }
    }

    fn tensors_mut(&mut self, kind: StateKind) -> &mut Tensors {
        match kind {
            StateKind::Param => &mut self.params,
            StateKind::AdamM => &mut self.adam_m,
            StateKind::AdamV => &mut self.adam_v,
            StateKind::Buffer => &mut self.buffers,
        }
    }

    /// Every state tensor under its graph input name.
    pub fn inputs(&self) -> impl Iterator<Item = (String, &ArrayD<f32>)> {
        StateKind::ALL.into_iter().flat_map(move |kind| {
            self.tensors(kind)
                .iter()
                .map(move |(name, value)| (kind.input(name), value))
        })
    }

    /// The state's tensors in the order of [`TrainState::inputs`], mutably.
    pub fn slots(&mut self) -> impl Iterator<Item = (&String, &mut ArrayD<f32>)> {
        self.params
            .iter_mut()
            .chain(self.adam_m.iter_mut())
            .chain(self.adam_v.iter_mut())
            .chain(self.buffers.iter_mut())
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let step = ArrayD::from_elem(IxDyn(&[]), self.step as f32);
        let entries: Vec<(String, &ArrayD<f32>)> =
            self.inputs().chain([(STEP.to_string(), &step)]).collect();
        npy::write_npz(path, entries.iter().map(|(k, v)| (k.as_str(), *v)))?;
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Self> {
        let mut state = Self::empty();
        for (key, value) in npy::read_tensors(path)? {
            match StateKind::parse(&key) {
                Some((kind, name)) => drop(state.tensors_mut(kind).insert(name.into(), value)),
                None if key == STEP => {
                    state.step = value.iter().next().copied().unwrap_or(0.0) as u64
                }
                None => anyhow::bail!("{}: unexpected entry {key:?}", path.display()),
            }
        }
        Ok(state)
    }
}
