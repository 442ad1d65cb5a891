//! What training carries from step to step: parameters, Adam moments, BatchNorm
//! statistics and the Adam step count; saved as `.npz` checkpoints.

use std::path::Path;

use anyhow::{Context, Result};
use ndarray::{ArrayD, IxDyn};
use rps_core::names::StateKind;
use rps_core::{Tensors, npy};

/// The first of `tensors` holding a value that is not finite, by name.
pub fn first_not_finite(tensors: &Tensors) -> Option<&String> {
    tensors
        .iter()
        .find(|(_, value)| value.iter().any(|v| !v.is_finite()))
        .map(|(name, _)| name)
}

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

    /// Each kind's tensors: the one place a kind meets its field.
    fn by_kind(&self) -> [(StateKind, &Tensors); 4] {
        [
            (StateKind::Param, &self.params),
            (StateKind::AdamM, &self.adam_m),
            (StateKind::AdamV, &self.adam_v),
            (StateKind::Buffer, &self.buffers),
        ]
    }

    fn by_kind_mut(&mut self) -> [(StateKind, &mut Tensors); 4] {
        [
            (StateKind::Param, &mut self.params),
            (StateKind::AdamM, &mut self.adam_m),
            (StateKind::AdamV, &mut self.adam_v),
            (StateKind::Buffer, &mut self.buffers),
        ]
    }

    /// The first parameter or running statistic holding a value that is not finite,
    /// by its graph input name (`param:layer4.0.conv1.weight`).
    pub fn first_non_finite(&self) -> Option<String> {
        let [params, _, _, buffers] = self.by_kind();
        [params, buffers]
            .into_iter()
            .find_map(|(kind, tensors)| first_not_finite(tensors).map(|name| kind.input(name)))
    }

    /// Every state tensor under its graph input name.
    pub fn inputs(&self) -> impl Iterator<Item = (String, &ArrayD<f32>)> {
        self.by_kind().into_iter().flat_map(|(kind, tensors)| {
            tensors
                .iter()
                .map(move |(name, value)| (kind.input(name), value))
        })
    }

    /// Every state tensor under its graph input name, mutably: a step writes each
    /// input's `new_` output into it.
    pub fn slots(&mut self) -> impl Iterator<Item = (String, &mut ArrayD<f32>)> {
        self.by_kind_mut().into_iter().flat_map(|(kind, tensors)| {
            tensors
                .iter_mut()
                .map(move |(name, value)| (kind.input(name), value))
        })
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
                Some((kind, name)) => {
                    let (_, tensors) = state
                        .by_kind_mut()
                        .into_iter()
                        .find(|(k, _)| *k == kind)
                        .expect("every kind has its field");
                    tensors.insert(name.into(), value);
                }
                None if key == STEP => {
                    state.step = value.iter().next().copied().unwrap_or(0.0) as u64
                }
                None => anyhow::bail!("{}: unexpected entry {key:?}", path.display()),
            }
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state whose every tensor holds a value of its own.
    fn distinct() -> TrainState {
        let params = vec![
            ("fc.weight".to_string(), vec![3, 2]),
            ("fc.bias".to_string(), vec![3]),
        ];
        let buffers = vec![("bn1.running_var".to_string(), vec![2])];
        let mut weights = Tensors::new();
        for (i, (name, shape)) in params.iter().chain(&buffers).enumerate() {
            weights.insert(name.clone(), ArrayD::from_elem(IxDyn(shape), i as f32));
        }
        let mut state = TrainState::fresh(&weights, &params, &buffers).unwrap();
        for (i, (_, slot)) in state.slots().enumerate() {
            slot.fill(100.0 + i as f32);
        }
        state
    }

    #[test]
    fn slots_and_inputs_name_the_same_tensors() {
        let mut state = distinct();
        let inputs: Vec<(String, ArrayD<f32>)> =
            state.inputs().map(|(n, v)| (n, v.clone())).collect();
        let slots: Vec<(String, ArrayD<f32>)> =
            state.slots().map(|(n, v)| (n, v.clone())).collect();
        assert_eq!(inputs, slots);
        let names: Vec<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"adam_v:fc.bias") && names.contains(&"buffer:bn1.running_var"));
        // Writing through a slot changes the input of that name and no other.
        for (name, slot) in state.slots() {
            if name == "adam_m:fc.weight" {
                slot.fill(-1.0);
            }
        }
        assert!(state.adam_m["fc.weight"].iter().all(|&v| v == -1.0));
        assert!(state.params["fc.weight"].iter().all(|&v| v != -1.0));
    }

    #[test]
    fn a_saved_state_loads_back_equal() {
        let state = distinct();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.npz");
        state.save(&path).unwrap();
        assert_eq!(TrainState::load(&path).unwrap(), state);
    }
}
