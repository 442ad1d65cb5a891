//! The record a train step's forward makes, and its replay in reverse: each layer
//! kind saves what its backward needs ([`Backward`]), the forward appends it to the
//! [`Tape`], and the step's backward walks the tape from the loss back, summing the
//! gradients of a value used twice (a block's input feeds its main path and its
//! identity).

use std::collections::HashMap;

use crate::graph::{Graph, Value};

/// A value the tape follows.
pub type Var = usize;

/// A feature map of a train graph, `[C, H*W, N]` (or `[N, C]` after pooling).
#[derive(Clone)]
pub struct Act {
    pub value: Value,
    /// The map's edge.
    pub size: usize,
    pub channels: usize,
    /// What the tape knows it as; none for a value no gradient flows to (the frozen
    /// input, or any value of an eval graph).
    pub var: Option<Var>,
}

/// A parameter's gradient, with the input it updates.
pub struct Gradient {
    pub name: String,
    pub shape: Vec<usize>,
    pub param: Value,
    pub grad: Value,
}

/// The parameters' gradients a backward finds.
#[derive(Default)]
pub struct ParamGrads(pub Vec<Gradient>);

impl ParamGrads {
    pub fn record(&mut self, name: &str, shape: &[usize], param: &Value, grad: Value) {
        self.0.push(Gradient {
            name: name.into(),
            shape: shape.to_vec(),
            param: param.clone(),
            grad,
        });
    }
}

/// A layer's backward, from what its forward saved.
pub trait Backward {
    /// The gradient of each input (in the order the forward recorded them) from the
    /// output's gradient `dy`, `None` where `wanted` says no one needs it; records the
    /// layer's own parameters' gradients in `params`.
    fn backward(
        &self,
        g: &mut Graph,
        params: &mut ParamGrads,
        dy: &Value,
        wanted: &[bool],
    ) -> Vec<Option<Value>>;
}

/// A layer on the tape; its output is the variable of its position.
struct Entry {
    inputs: Vec<Option<Var>>,
    layer: Box<dyn Backward>,
}

/// The layers of a forward, in the order it ran them.
#[derive(Default)]
pub struct Tape {
    entries: Vec<Entry>,
}

impl Tape {
    /// Appends `layer`, which read `inputs`; returns its output's variable.
    pub fn push(&mut self, inputs: &[&Act], layer: Box<dyn Backward>) -> Var {
        self.entries.push(Entry {
            inputs: inputs.iter().map(|a| a.var).collect(),
            layer,
        });
        self.entries.len() - 1
    }

    /// Replays the tape in reverse from `output`'s gradient `seed`; returns the
    /// parameters' gradients.
    pub fn backward(&self, g: &mut Graph, output: Var, seed: Value) -> ParamGrads {
        let mut params = ParamGrads::default();
        let mut grads: HashMap<Var, Value> = HashMap::from([(output, seed)]);
        for (var, entry) in self.entries.iter().enumerate().rev() {
            let Some(dy) = grads.remove(&var) else {
                continue;
            };
            let wanted: Vec<bool> = entry.inputs.iter().map(Option::is_some).collect();
            let dxs = entry.layer.backward(g, &mut params, &dy, &wanted);
            for (input, dx) in entry.inputs.iter().zip(dxs) {
                let (Some(var), Some(dx)) = (input, dx) else {
                    continue;
                };
                let sum = match grads.remove(var) {
                    Some(other) => g.add(&other, &dx),
                    None => dx,
                };
                grads.insert(*var, sum);
            }
        }
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `y = x * k`: dy * k to its one input.
    struct Scale(Value);

    impl Backward for Scale {
        fn backward(
            &self,
            g: &mut Graph,
            _: &mut ParamGrads,
            dy: &Value,
            wanted: &[bool],
        ) -> Vec<Option<Value>> {
            vec![wanted[0].then(|| g.mul(dy, &self.0))]
        }
    }

    #[test]
    fn a_value_read_twice_gets_the_sum_of_both_gradients() {
        let mut g = Graph::new();
        let k = g.scalar(2.0);
        let mut tape = Tape::default();
        let act = |var, value: &Value| Act {
            value: value.clone(),
            size: 1,
            channels: 1,
            var,
        };
        let x = act(None, &k);
        let a = tape.push(&[&x], Box::new(Scale(k.clone())));
        let a = act(Some(a), &k);
        // Two readers of `a`, then one layer reading both.
        let b = act(Some(tape.push(&[&a], Box::new(Scale(k.clone())))), &k);
        let c = act(Some(tape.push(&[&a], Box::new(Scale(k.clone())))), &k);
        struct Both;
        impl Backward for Both {
            fn backward(
                &self,
                _: &mut Graph,
                _: &mut ParamGrads,
                dy: &Value,
                _: &[bool],
            ) -> Vec<Option<Value>> {
                vec![Some(dy.clone()), Some(dy.clone())]
            }
        }
        let out = tape.push(&[&b, &c], Box::new(Both));
        let seed = g.scalar(1.0);
        let before = g.op_types().len();
        tape.backward(&mut g, out, seed);
        // c's and b's Mul, then their sum into a; x wants no gradient, so a's own
        // layer adds nothing.
        assert_eq!(g.op_types()[before..], ["Mul", "Mul", "Add"]);
    }
}
