//! `torch.optim.Adam` (AdamW's decoupled decay when `weight_decay` > 0) in standard
//! ONNX ops, its step, rate and decay graph inputs.

use rps_core::names;

use crate::graph::{Elem, Graph, Value};

const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const ADAM_EPS: f32 = 1e-8;

/// Adam's per-step scalars, computed once for all parameters from the `step`, `lr`
/// and `weight_decay` inputs.
pub struct AdamScalars {
    step_size: Value,
    bias_correction2_sqrt: Value,
    decay: Value,
    beta1: Value,
    one_minus_beta1: Value,
    beta2: Value,
    one_minus_beta2: Value,
    eps: Value,
}

impl AdamScalars {
    pub fn new(g: &mut Graph) -> Self {
        let step = g.input(names::STEP, Elem::F32, &[]);
        let lr = g.input(names::LR, Elem::F32, &[]);
        let weight_decay = g.input(names::WEIGHT_DECAY, Elem::F32, &[]);
        let one = g.scalar(1.0);
        let beta1 = g.scalar(BETA1);
        let beta2 = g.scalar(BETA2);
        let pow1 = g.pow(&beta1, &step);
        let pow2 = g.pow(&beta2, &step);
        let bc1 = g.sub(&one, &pow1);
        let bc2 = g.sub(&one, &pow2);
        let bias_correction2_sqrt = g.sqrt(&bc2);
        let step_size = g.div(&lr, &bc1);
        let lr_wd = g.mul(&lr, &weight_decay);
        let decay = g.sub(&one, &lr_wd);
        Self {
            step_size,
            bias_correction2_sqrt,
            decay,
            beta1,
            one_minus_beta1: g.scalar(1.0 - BETA1),
            beta2,
            one_minus_beta2: g.scalar(1.0 - BETA2),
            eps: g.scalar(ADAM_EPS),
        }
    }

    /// `torch.optim.Adam`'s update (AdamW's decoupled decay when weight_decay > 0)
    /// of a parameter of `shape`.
    pub fn update(
        &self,
        g: &mut Graph,
        shape: &[usize],
        [p, grad, m, v]: [&Value; 4],
    ) -> (Value, Value, Value) {
        // ONNX Runtime's element-wise kernels go element by element when the last
        // axis is 1 (a 1x1 kernel's [Cout, Cin, 1, 1]): 70 times slower than on the
        // same values flat.
        if shape.len() > 1 && shape.last() == Some(&1) {
            let [p, grad, m, v] = [p, grad, m, v].map(|x| g.reshape(x, &[-1]));
            let flat = [shape.iter().product()];
            let updated = self.update(g, &flat, [&p, &grad, &m, &v]);
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
        let delta = g.mul(&ratio, &self.step_size);
        let decayed = g.mul(p, &self.decay);
        (g.sub(&decayed, &delta), m, v)
    }
}
