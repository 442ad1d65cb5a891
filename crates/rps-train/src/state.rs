//! What training carries from step to step: parameters, Adam moments, BatchNorm
//! statistics and the Adam step count; saved as `.npz` checkpoints.

use std::path::Path;

use anyhow::{Context, Result};
use ndarray::{ArrayD, IxDyn};
use rps_core::npy;
use rps_export::names;
use rps_export::weights::Tensors;

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
                    Ok((
                        name.clone(),
                        weights
                            .get(name)
                            .with_context(|| format!("weights have no {name:?}"))?
                            .clone(),
                    ))
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

    /// Every state tensor under its graph input name.
    pub fn inputs(&self) -> impl Iterator<Item = (String, &ArrayD<f32>)> {
        self.params
            .iter()
            .map(|(k, v)| (names::param(k), v))
            .chain(self.adam_m.iter().map(|(k, v)| (names::adam_m(k), v)))
            .chain(self.adam_v.iter().map(|(k, v)| (names::adam_v(k), v)))
            .chain(self.buffers.iter().map(|(k, v)| (names::buffer(k), v)))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let step = ArrayD::from_elem(IxDyn(&[]), self.step as f32);
        let entries: Vec<(String, &ArrayD<f32>)> =
            self.inputs().chain([("step".to_string(), &step)]).collect();
        npy::write_npz(path, entries.iter().map(|(k, v)| (k.as_str(), *v)))?;
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Self> {
        let mut npz = npy::Npz::open(path)?;
        let mut state = Self {
            params: Tensors::new(),
            adam_m: Tensors::new(),
            adam_v: Tensors::new(),
            buffers: Tensors::new(),
            step: 0,
        };
        for key in npz.names()? {
            let value = npz.get::<f32>(&key)?;
            let slot = key
                .split_once(':')
                .map(|(kind, name)| (kind.to_string(), name.to_string()));
            match slot {
                Some((kind, name)) if kind == "param" => drop(state.params.insert(name, value)),
                Some((kind, name)) if kind == "adam_m" => drop(state.adam_m.insert(name, value)),
                Some((kind, name)) if kind == "adam_v" => drop(state.adam_v.insert(name, value)),
                Some((kind, name)) if kind == "buffer" => drop(state.buffers.insert(name, value)),
                _ if key == "step" => {
                    state.step = value.iter().next().copied().unwrap_or(0.0) as u64
                }
                _ => anyhow::bail!("{}: unexpected entry {key:?}", path.display()),
            }
        }
        Ok(state)
    }
}
