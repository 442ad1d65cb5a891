//! `torch.optim.Adam` (AdamW's decoupled decay when `weight_decay` > 0) in standard
//! ONNX ops: its step, beta1, decay and each stage's rate are graph inputs.

use std::collections::BTreeMap;

use rps_core::names::{self, RateGroup};

use crate::graph::{Elem, Graph, Value};

const BETA2: f32 = 0.999;
const ADAM_EPS: f32 = 1e-8;

/// Adam's per-step scalars, computed once for all parameters from the `step`,
/// `beta1` and `weight_decay` inputs, and per rate group from its `lr:GROUP` input.
pub struct AdamScalars {
    bias_correction1: Value,
    bias_correction2_sqrt: Value,
    weight_decay: Value,
    beta1: Value,
    one_minus_beta1: Value,
    beta2: Value,
    one_minus_beta2: Value,
    eps: Value,
    one: Value,
    /// Each rate group's step size and decay, made when its first parameter is.
    rates: BTreeMap<RateGroup, GroupRate>,
}

/// What a rate group's learning rate makes: `lr / (1 - beta1^step)` and
/// `1 - lr * weight_decay`.
struct GroupRate {
    step_size: Value,
    decay: Value,
}

impl AdamScalars {
    pub fn new(g: &mut Graph) -> Self {
        let step = g.input(names::STEP, Elem::F32, &[]);
        let beta1 = g.input(names::BETA1, Elem::F32, &[]);
        let weight_decay = g.input(names::WEIGHT_DECAY, Elem::F32, &[]);
        let one = g.scalar(1.0);
        let beta2 = g.scalar(BETA2);
        let pow1 = g.pow(&beta1, &step);
        let pow2 = g.pow(&beta2, &step);
        let bias_correction1 = g.sub(&one, &pow1);
        let bc2 = g.sub(&one, &pow2);
        let bias_correction2_sqrt = g.sqrt(&bc2);
        let one_minus_beta1 = g.sub(&one, &beta1);
        Self {
            bias_correction1,
            bias_correction2_sqrt,
            weight_decay,
            beta1,
            one_minus_beta1,
            beta2,
            one_minus_beta2: g.scalar(1.0 - BETA2),
            eps: g.scalar(ADAM_EPS),
            one,
            rates: BTreeMap::new(),
        }
    }

    /// The step size and decay of rate group `group`, taking its `lr:GROUP` input
    /// the first time.
    fn rate(&mut self, g: &mut Graph, group: &RateGroup) -> &GroupRate {
        if !self.rates.contains_key(group) {
            let lr = g.input(&group.input(), Elem::F32, &[]);
            let step_size = g.div(&lr, &self.bias_correction1);
            let lr_wd = g.mul(&lr, &self.weight_decay);
            let decay = g.sub(&self.one, &lr_wd);
            self.rates
                .insert(group.clone(), GroupRate { step_size, decay });
        }
        &self.rates[group]
    }

    /// The rate groups the step takes rates for.
    pub fn groups(&self) -> Vec<RateGroup> {
        self.rates.keys().cloned().collect()
    }

    /// `torch.optim.Adam`'s update (AdamW's decoupled decay when weight_decay > 0)
    /// of a parameter of `shape` in rate group `group`.
    pub fn update(
        &mut self,
        g: &mut Graph,
        group: &RateGroup,
        shape: &[usize],
        [p, grad, m, v]: [&Value; 4],
    ) -> (Value, Value, Value) {
        // ONNX Runtime's element-wise kernels go element by element when the last
        // axis is 1 (a 1x1 kernel's [Cout, Cin, 1, 1]): 70 times slower than on the
        // same values flat.
        if shape.len() > 1 && shape.last() == Some(&1) {
            let [p, grad, m, v] = [p, grad, m, v].map(|x| g.reshape(x, &[-1]));
            let flat = [shape.iter().product()];
            let updated = self.update(g, group, &flat, [&p, &grad, &m, &v]);
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let [p, m, v] = [updated.0, updated.1, updated.2].map(|x| g.reshape(&x, &dims));
            return (p, m, v);
        }
        let m_keep = g.mul(m, &self.beta1);
        let m_new = g.mul(grad, &self.one_minus_beta1);
        let m = g.add(&m_keep, &m_new);
        let v_keep = g.mul(v, &self.beta2);
        let g2 = g.mul(grad, grad);
        let v_new = g.mul(&g2, &self.one_minus_beta2);
        let v = g.add(&v_keep, &v_new);
        let root = g.sqrt(&v);
        let corrected = g.div(&root, &self.bias_correction2_sqrt);
        let denom = g.add(&corrected, &self.eps);
        let ratio = g.div(&m, &denom);
        let rate = self.rate(g, group);
        let (step_size, decay) = (rate.step_size.clone(), rate.decay.clone());
        let delta = g.mul(&ratio, &step_size);
        let decayed = g.mul(p, &decay);
        (g.sub(&decayed, &delta), m, v)
    }
}
