//! The graphs training runs, all with the trained weights as inputs (`param:NAME`,
//! `buffer:NAME`), so one session serves a whole phase:
//! - train steps: forward, backward and the Adam update in standard ONNX ops, run by
//!   plain ONNX Runtime; Adam moments are inputs too, and every updated value is an
//!   output named `new_<input>`;
//! - eval graphs: the same forward with BatchNorm in eval mode, scoring a batch.
//!
//! The forward is the model's one definition ([`rps_model::network`]) lowered by
//! [`Builder`]: each layer kind ([`layers`]) emits its forward and, in a train step,
//! pushes what its backward needs onto the [`tape`], whose reverse replay is the
//! step's backward. Activations are laid out channel-major, `[C, H*W, N]`, batch
//! last, and each convolution is a few big matrix products chosen by its shape and
//! map size ([`conv`]). Phase 2 trains from the stage `UNFREEZE` names: its input is
//! the frozen layers' output, or the u8 images when nothing is frozen.

mod adam;
mod blocked;
mod conv;
mod layers;
mod tape;

use rps_core::names::RateGroup;
use rps_core::{FtBn, Unfreeze, names};

use crate::graph::{Dim, Elem, Graph, Reduce, Value};
use rps_model::network::{Arch, BnTensor, ConvSpec, Lowering, Shapes};
use rps_model::window::Window;

use adam::AdamScalars;
use conv::Algorithm;
use layers::{
    Add, BatchNormRunning, BatchNormTrain, BnInputs, Conv, Dropout, GlobalAveragePool, Linear,
    MaxPool, Relu,
};
use tape::{Act, Backward, Gradient, Tape};

/// How a graph computes its convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convolutions {
    /// Winograd F(4x4, 3x3) for the stride-1 3x3 convolutions on maps of at least
    /// one 4x4 tile, patches for the rest. A train step's forward takes F(2x2, 3x3)
    /// instead (patches on maps above [`conv::SMALL_TILES_UP_TO`]) and only its
    /// backward F(4x4): F(4x4)'s rounding (2e-6 of the values) would flip ReLUs whose
    /// input lies within it of zero, and each flipped element moves a gradient by
    /// about one over the square root of its element count (1e-3 at full size), a
    /// hundred times PyTorch's own float32 error. F(2x2) rounds as a direct product
    /// does (4e-7, PyTorch's channels_last convolution 8e-7). The backward has no such
    /// thresholds.
    Fastest,
    /// Every convolution through a gathered patch matrix: the plain formulation,
    /// for comparison.
    Patches,
}

/// Whether a train step also outputs each parameter's gradient, `grad:NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gradients {
    /// Only what the trainer reads: the loss, the logits and every updated value.
    /// An output gradient is a copy of its own (the layer4 step's took 4 of its
    /// 6 ms of `Reshape`) and holds its memory.
    Internal,
    /// The gradients too, for the checks against a reference.
    Output,
}

/// Phase 1: pooled `features` `[N,8w]` -> the head's step.
pub fn head_step(arch: &Arch, gradients: Gradients) -> Vec<u8> {
    let mut b = Builder::new(arch, Convolutions::Fastest, BatchNorm::Train);
    let features = b.pooled_features_input();
    let logits = b.head(&features, true);
    b.finish_step(&logits, &arch.head_shapes(arch.classes).to_vec(), gradients);
    b.g.to_bytes("head_step")
}

/// Phase 1 scoring: pooled `features`, `labels` and the head -> `logits`, `probs`,
/// mean `loss`.
pub fn head_eval(arch: &Arch) -> Vec<u8> {
    let mut b = Builder::new(arch, Convolutions::Fastest, BatchNorm::Eval);
    let features = b.pooled_features_input();
    let logits = b.head(&features, false);
    b.finish_eval(&logits);
    b.g.to_bytes("head_eval")
}

/// Phase 2: the frozen layers' output (or u8 images for [`Unfreeze::All`]) -> every
/// stage from `unfreeze` on (BatchNorm in the mode `ft_bn` names) and the head's step.
pub fn finetune_step(
    arch: &Arch,
    unfreeze: Unfreeze,
    convolutions: Convolutions,
    ft_bn: FtBn,
    gradients: Gradients,
) -> Vec<u8> {
    let batch_norm = match ft_bn {
        FtBn::Train => BatchNorm::Train,
        FtBn::Eval => BatchNorm::Running,
    };
    let (mut b, logits) = finetune_logits(arch, unfreeze, convolutions, batch_norm);
    b.finish_step(&logits, &arch.finetune_params(unfreeze), gradients);
    b.g.to_bytes("finetune_step")
}

/// Phase 2 scoring: the same `features`, `labels`, the trained stages' weights and
/// running statistics and the head -> `logits`, `probs`, mean `loss`.
pub fn finetune_eval(arch: &Arch, unfreeze: Unfreeze, convolutions: Convolutions) -> Vec<u8> {
    let (mut b, logits) = finetune_logits(arch, unfreeze, convolutions, BatchNorm::Eval);
    b.finish_eval(&logits);
    b.g.to_bytes("finetune_eval")
}

/// Phase 2's network from its `features` input to the logits: the stages from
/// `unfreeze` on, pooling, and the head (dropout in train steps only).
fn finetune_logits(
    arch: &Arch,
    unfreeze: Unfreeze,
    convolutions: Convolutions,
    batch_norm: BatchNorm,
) -> (Builder, Act) {
    let mut b = Builder::new(arch, convolutions, batch_norm);
    let x = b.frozen_input(unfreeze);
    let pooled = arch.trained(&mut b, x, unfreeze);
    let logits = b.head(&pooled, batch_norm.in_step());
    (b, logits)
}

/// Which statistics BatchNorm normalizes with, and whether the graph is a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchNorm {
    /// The batch's, updating the running statistics (PyTorch's train mode): train
    /// steps, which record the forward for the backward.
    Train,
    /// The running statistics, passed through unchanged, in a train step
    /// (`FT_BN=eval`): the forward is recorded, the scale and shift learn.
    Running,
    /// The running statistics (eval mode): eval graphs, which have no backward.
    Eval,
}

impl BatchNorm {
    /// Whether the graph is a train step (a recorded forward, dropout).
    fn in_step(self) -> bool {
        self != BatchNorm::Eval
    }
}

/// A train graph being built: the lowering of the model's layers, and what a step
/// gathers as it goes (the tape, and each running statistic's new value).
struct Builder {
    g: Graph,
    arch: Arch,
    convolutions: Convolutions,
    batch_norm: BatchNorm,
    labels: Value,
    /// The forward's record, in train steps.
    tape: Option<Tape>,
    /// `(input, new value, channels)` of each BatchNorm statistic.
    buffers: Vec<(String, Value, usize)>,
}

impl Builder {
    fn new(arch: &Arch, convolutions: Convolutions, batch_norm: BatchNorm) -> Self {
        let mut g = Graph::new();
        let labels = g.input(names::LABELS, Elem::I64, &[Dim::Batch]);
        Self {
            g,
            arch: *arch,
            convolutions,
            batch_norm,
            labels,
            tape: batch_norm.in_step().then(Tape::default),
            buffers: Vec::new(),
        }
    }

    /// The `features` input of phase 1 graphs: pooled values `[N,8w]`.
    fn pooled_features_input(&mut self) -> Act {
        let channels = self.arch.features();
        let dims = [Dim::Batch, Dim::Fixed(channels)];
        Act {
            value: self.g.input(names::FEATURES, Elem::F32, &dims),
            size: 1,
            channels,
            var: None,
        }
    }

    /// The `features` input of phase 2 graphs, as a `[C, H*W, N]` map: the frozen
    /// layers' output `[N,C,H,W]`, or u8 pixels `[N,3,S,S]` normalized here.
    fn frozen_input(&mut self, unfreeze: Unfreeze) -> Act {
        let [c, s, _] = self.arch.frozen_shape(unfreeze);
        let dims = Dim::batch_of(&[c, s, s]);
        let value = if unfreeze.from_images() {
            let pixels = self.g.input(names::FEATURES, Elem::U8, &dims);
            layers::normalized_pixels(&mut self.g, &pixels, s, &self.arch.normalization())
        } else {
            let features = self.g.input(names::FEATURES, Elem::F32, &dims);
            let x = self.g.transpose(&features, &[1, 2, 3, 0]);
            self.g.reshape(&x, &[c as i64, (s * s) as i64, -1])
        };
        Act {
            value,
            size: s,
            channels: c,
            var: None,
        }
    }

    fn param(&mut self, name: &str, shape: &[usize]) -> Value {
        self.g
            .input(&names::param(name), Elem::F32, &Dim::fixed(shape))
    }

    /// `value`, the output of `layer` on `inputs`, on the tape when there is one.
    fn record(
        &mut self,
        inputs: &[&Act],
        layer: impl Backward + 'static,
        value: Value,
        (size, channels): (usize, usize),
    ) -> Act {
        let var = self
            .tape
            .as_mut()
            .map(|tape| tape.push(inputs, Box::new(layer)));
        Act {
            value,
            size,
            channels,
            var,
        }
    }

    /// A BatchNorm's scale, shift and running statistics inputs.
    fn bn_inputs(&mut self, spec: &ConvSpec) -> BnInputs {
        let c = spec.cout;
        let [gamma, beta] = BnTensor::PARAMS.map(|t| self.param(&spec.bn_tensor(t), &[c]));
        let running = BnTensor::BUFFERS.map(|t| {
            let name = names::buffer(&spec.bn_tensor(t));
            self.g.input(&name, Elem::F32, &[Dim::Fixed(c)])
        });
        BnInputs {
            gamma,
            beta,
            running,
        }
    }

    /// Dropout (by the mask input, in train steps) then Linear, on `[N, 8w]` features.
    fn head(&mut self, features: &Act, dropout: bool) -> Act {
        let (c, classes) = (self.arch.features(), self.arch.classes);
        let [weight, bias] = self.arch.head_shapes(classes).map(|(name, shape)| {
            let value = self.param(&name, &shape);
            (name, shape, value)
        });
        let dropped = if dropout {
            let dims = [Dim::Batch, Dim::Fixed(c)];
            let mask = self.g.input(names::DROPOUT_MASK, Elem::F32, &dims);
            let (layer, value) = Dropout::forward(&mut self.g, &features.value, &mask);
            self.record(&[features], layer, value, (1, c))
        } else {
            features.clone()
        };
        let (layer, logits) = Linear::forward(&mut self.g, &dropped.value, weight, bias);
        self.record(&[&dropped], layer, logits, (1, classes))
    }

    fn logits_dims(&self) -> [Dim; 2] {
        [Dim::Batch, Dim::Fixed(self.arch.classes)]
    }

    /// The loss, logits and softmax probabilities of an eval graph.
    fn finish_eval(&mut self, logits: &Act) {
        let dims = self.logits_dims();
        let loss = self.g.cross_entropy(&logits.value, &self.labels);
        let probs = self.g.softmax(&logits.value, -1);
        self.g
            .output(&logits.value, names::LOGITS, Elem::F32, &dims);
        self.g.output(&probs, names::PROBS, Elem::F32, &dims);
        self.g.output(&loss, names::LOSS, Elem::F32, &[]);
    }

    /// The loss and its gradient, the backward by the tape, Adam on every gradient in
    /// the order of `params`, then the graph outputs.
    fn finish_step(&mut self, logits: &Act, params: &Shapes, gradients: Gradients) {
        let dims = self.logits_dims();
        let (loss, dlogits) = self.loss_and_gradient(&logits.value);
        let g = &mut self.g;
        g.output(&loss, names::LOSS, Elem::F32, &[]);
        g.output(&logits.value, names::LOGITS, Elem::F32, &dims);
        let tape = self
            .tape
            .as_ref()
            .expect("a train step records its forward");
        let output = logits.var.expect("the logits depend on the head");
        let mut grads = tape.backward(g, output, dlogits).0;
        grads.sort_by_key(|grad| params.iter().position(|(n, _)| *n == grad.name));
        let mut adam = AdamScalars::new(g);
        for Gradient {
            name,
            shape,
            param,
            grad,
        } in &grads
        {
            let dims = Dim::fixed(shape);
            let m = g.input(&names::adam_m(name), Elem::F32, &dims);
            let v = g.input(&names::adam_v(name), Elem::F32, &dims);
            let group = self.arch.rate_group(name);
            let (new_p, new_m, new_v) = adam.update(g, &group, shape, [param, grad, &m, &v]);
            for (value, input) in [
                (&new_p, names::param(name)),
                (&new_m, names::adam_m(name)),
                (&new_v, names::adam_v(name)),
            ] {
                g.output(value, &names::updated(&input), Elem::F32, &dims);
            }
            if gradients == Gradients::Output {
                g.output(grad, &names::grad(name), Elem::F32, &dims);
            }
        }
        for (input, value, c) in &self.buffers {
            g.output(value, &names::updated(input), Elem::F32, &[Dim::Fixed(*c)]);
        }
        let groups = RateGroup::list(&adam.groups());
        g.metadata(names::META_RATE_GROUPS, &groups);
    }

    /// The weighted mean cross-entropy (PyTorch's `CrossEntropyLoss(weight=...)`:
    /// `sum(w[y] * loss) / sum(w[y])`, the plain mean when every weight is 1) and its
    /// gradient with respect to the logits, `w[y] * (softmax - one_hot) / sum(w[y])`.
    fn loss_and_gradient(&mut self, logits: &Value) -> (Value, Value) {
        let classes = self.arch.classes;
        let g = &mut self.g;
        let weights = g.input(names::CLASS_WEIGHTS, Elem::F32, &[Dim::Fixed(classes)]);
        let (loss, log_prob) = g.weighted_cross_entropy(logits, &self.labels, &weights);
        let probs = g.exp(&log_prob);
        let depth = g.ints(&[classes as i64]);
        let values = g.constant(&[2], &[0.0, 1.0]);
        let one_hot = g.one_hot(&self.labels, &depth, &values);
        let diff = g.sub(&probs, &one_hot);
        let per_image = g.gather(&weights, &self.labels, 0);
        let total = g.reduce(Reduce::Sum, &per_image, &[0], false);
        // Weighted, then divided: with every weight 1 these are the plain mean's
        // exact values.
        let column = g.reshape(&per_image, &[-1, 1]);
        let weighted = g.mul(&diff, &column);
        (loss, g.div(&weighted, &total))
    }
}

impl Lowering for Builder {
    type Map = Act;

    fn conv_bn(&mut self, spec: &ConvSpec, x: &Act) -> Act {
        let weight = self.param(&spec.weight(), &spec.weight_shape());
        let algorithm =
            Algorithm::choose(self.convolutions, self.batch_norm.in_step(), spec, x.size);
        let (layer, y) = Conv::forward(&mut self.g, spec, &weight, &x.value, x.size, algorithm);
        let shape = (spec.out_size(x.size), spec.cout);
        let y = self.record(&[x], layer, y, shape);
        let inputs = self.bn_inputs(spec);
        match self.batch_norm {
            BatchNorm::Train => {
                let (layer, out, updates) =
                    BatchNormTrain::forward(&mut self.g, spec, &inputs, &y.value);
                for (tensor, value) in updates {
                    let input = names::buffer(&spec.bn_tensor(tensor));
                    self.buffers.push((input, value, spec.cout));
                }
                self.record(&[&y], layer, out, shape)
            }
            BatchNorm::Running => {
                let (layer, out) = BatchNormRunning::forward(&mut self.g, spec, &inputs, &y.value);
                for (tensor, running) in BnTensor::BUFFERS.iter().zip(&inputs.running) {
                    let input = names::buffer(&spec.bn_tensor(*tensor));
                    self.buffers.push((input, running.clone(), spec.cout));
                }
                self.record(&[&y], layer, out, shape)
            }
            BatchNorm::Eval => Act {
                value: BatchNormRunning::forward(&mut self.g, spec, &inputs, &y.value).1,
                ..y
            },
        }
    }

    fn relu(&mut self, x: &Act) -> Act {
        let (layer, out) = Relu::forward(&mut self.g, &x.value, None);
        self.record(&[x], layer, out, (x.size, x.channels))
    }

    fn relu6(&mut self, x: &Act) -> Act {
        let (layer, out) = Relu::forward(&mut self.g, &x.value, Some(6.0));
        self.record(&[x], layer, out, (x.size, x.channels))
    }

    fn add(&mut self, a: &Act, b: &Act) -> Act {
        let (layer, sum) = Add::forward(&mut self.g, &a.value, &b.value);
        self.record(&[a, b], layer, sum, (a.size, a.channels))
    }

    fn max_pool(&mut self, x: &Act, window: Window) -> Act {
        let (layer, out) = MaxPool::forward(&mut self.g, &x.value, x.size, x.channels, window);
        self.record(&[x], layer, out, (window.out_size(x.size), x.channels))
    }

    fn global_average_pool(&mut self, x: &Act) -> Act {
        let (layer, pooled) = GlobalAveragePool::forward(&mut self.g, &x.value, x.size);
        self.record(&[x], layer, pooled, (1, x.channels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rps_model::network::Net;

    #[test]
    fn indices_of_a_strided_3x3_convolution() {
        let spec = strided_3x3();
        let fwd = spec.window.tap_indices(4);
        // Output (0,0), tap (0,0) reads padding; tap (1,1) reads input (0,0).
        assert_eq!(fwd[0], 16);
        assert_eq!(fwd[4 * 4], 0);
        // Output (1,1), tap (2,2) reads input (2*1+2-1, ..) = (3,3) = 15.
        assert_eq!(fwd[8 * 4 + 3], 15);
    }

    #[test]
    fn input_grad_phases_invert_the_forward_indices() {
        for window in [strided_3x3().window, strided_1x1().window] {
            let (in_size, p_out) = (4, 4);
            let fwd = window.tap_indices(in_size);
            let phases = window.input_grad_phases(in_size);
            let taps: Vec<usize> = phases.iter().map(|p| p.taps.len()).collect();
            let expected: &[usize] = if window.kernel == 3 {
                &[1, 2, 2, 4]
            } else {
                &[1, 0, 0, 0]
            };
            assert_eq!(taps, expected);
            let mut seen = vec![0; in_size * in_size];
            for phase in &phases {
                phase.positions.iter().for_each(|&i| seen[i] += 1);
                for (t, &tap) in phase.taps.iter().enumerate() {
                    for (at, &i) in phase.positions.iter().enumerate() {
                        let o = phase.indices[t * phase.positions.len() + at];
                        if o < p_out as i64 {
                            assert_eq!(fwd[tap * p_out + o as usize], i as i64);
                        }
                    }
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "each position in one phase");
            // Every (tap, output) read of an input lands in its phase's table.
            let reads = fwd.iter().filter(|&&i| i < 16).count();
            let listed: usize = phases
                .iter()
                .map(|p| p.indices.iter().filter(|&&o| o < p_out as i64).count())
                .sum();
            assert_eq!(reads, listed);
        }
    }

    #[test]
    fn each_convolution_takes_the_forward_and_backward_measured_fastest_for_its_shape() {
        let arch = Arch {
            net: Net::ResNet18,
            width: 64,
            image_size: 224,
            classes: 3,
        };
        // Each stage's first block: its first convolution reads the stage's input
        // (strided from layer2), its second the stage's maps.
        let stage_input = [56, 56, 28, 14];
        let stage_maps = [56, 28, 14, 7];
        let choose = |stage: usize, conv: usize, training: bool| {
            let size = [stage_input, stage_maps][conv][stage - 1];
            let spec = rps_model::resnet::layer(&arch, stage)[0].main_path()[conv].clone();
            Algorithm::choose(Convolutions::Fastest, training, &spec, size)
        };
        // The blocked kernel forward on 56x56 and 28x28 maps, small tiles below.
        for stage in 1..=2 {
            assert_eq!(choose(stage, 1, true), Algorithm::BlockedThenWinograd);
        }
        for stage in 3..=4 {
            assert_eq!(choose(stage, 1, true), Algorithm::SmallTilesThenWinograd);
        }
        for stage in 1..=4 {
            assert_eq!(choose(stage, 1, false), Algorithm::Winograd);
        }
        assert_eq!(choose(1, 0, true), Algorithm::BlockedThenWinograd);
        // Channels that fill no 16-channel block: patches on 56x56, small tiles on
        // 28x28.
        let narrow = |width: usize, stage: usize, size: usize| {
            let arch = Arch { width, ..arch };
            let spec = rps_model::resnet::layer(&arch, stage)[0].main_path()[1].clone();
            Algorithm::choose(Convolutions::Fastest, true, &spec, size)
        };
        assert_eq!(narrow(8, 1, 56), Algorithm::PatchesThenWinograd);
        assert_eq!(narrow(4, 2, 28), Algorithm::SmallTilesThenWinograd);
        // The stem reads 3 channels: patches (its blocked forward raised the step's
        // peak from `all` to 4.1 GB).
        let stem = rps_model::resnet::stem(&arch);
        let stem = Algorithm::choose(Convolutions::Fastest, true, &stem, 224);
        assert_eq!(stem, Algorithm::PatchesGatheredTwice);
        assert_eq!(choose(2, 0, true), Algorithm::BlockedThenPatches);
        assert_eq!(choose(3, 0, true), Algorithm::BlockedThenPatches);
        assert_eq!(choose(4, 0, true), Algorithm::Patches);
    }

    fn small_arch() -> Arch {
        Arch {
            net: Net::ResNet18,
            width: 8,
            image_size: 64,
            classes: 3,
        }
    }

    /// layer4.0.conv1 of a 64-px model: 3x3, stride 2, pad 1.
    fn strided_3x3() -> ConvSpec {
        rps_model::resnet::layer(&small_arch(), 4)[0].main_path()[0].clone()
    }

    /// layer4.0.downsample: 1x1, stride 2.
    fn strided_1x1() -> ConvSpec {
        rps_model::resnet::layer(&small_arch(), 4)[0]
            .downsample()
            .expect("layer4 downsamples")
    }
}
