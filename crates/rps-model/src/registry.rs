//! What a network is made of, learned from its forward, as candle's `VarBuilder`
//! learns it: every parameter and buffer in the order the forward asks for it, with
//! the stage it belongs to, each stage's input and the features the network pools
//! to. The tensor lists of every graph, the weight checks, the counts and the
//! summary come from here, never from a second description of the model.

use crate::network::{Arch, BnTensor, ConvSpec, Lowering, Shapes};
use crate::window::Window;

/// Whether a tensor learns (a parameter) or is a BatchNorm running statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    Param,
    Buffer,
}

/// A tensor the forward asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// Its PyTorch name: `layer4.0.bn1.running_var`.
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: TensorKind,
    /// The stage it belongs to: 0 is the stem, k is layerk.
    pub stage: usize,
}

/// A network as its forward describes it.
#[derive(Debug, Clone)]
pub struct Description {
    /// Every backbone tensor, in forward order.
    pub tensors: Vec<Registered>,
    /// Every convolution with its BatchNorm, in forward order, by stage.
    pub convs: Vec<(usize, ConvSpec)>,
    /// Each convolution's input edge, in the order of `convs`.
    pub conv_inputs: Vec<usize>,
    /// Each stage's input, channels and edge (stage 0's is the image).
    pub stage_inputs: Vec<(usize, usize)>,
    /// Channels after global average pooling: what the head reads.
    pub features: usize,
}

impl Description {
    /// `arch`'s backbone, from the image through global average pooling.
    pub fn of(arch: &Arch) -> Self {
        let image = Map {
            channels: 3,
            size: arch.image_size,
        };
        let mut registry = Registry {
            stage: 0,
            description: Description {
                tensors: Vec::new(),
                convs: Vec::new(),
                conv_inputs: Vec::new(),
                stage_inputs: vec![(image.channels, image.size)],
                features: 0,
            },
        };
        arch.pooled(&mut registry, image, 0);
        registry.description
    }

    /// A lower bound of the floats one image keeps for the backward of a train step
    /// through the stages from `first` on: each convolution's input or its gathered
    /// patches (`Cin·k²` values at each output position), whichever is smaller (a
    /// step keeps one or the other, or more), and three maps of its output (the
    /// convolution's, the BatchNorm's, the ReLU's).
    pub fn step_floats_per_image(&self, first: usize) -> u64 {
        self.convs_from(first)
            .map(|(spec, size)| {
                let out = spec.out_size(size) as u64;
                let taps = (spec.window.kernel * spec.window.kernel) as u64;
                let patches = spec.cin as u64 * taps * out * out;
                let input = spec.cin as u64 * (size * size) as u64;
                patches.min(input) + 3 * spec.cout as u64 * out * out
            })
            .sum()
    }

    /// A lower bound of the floats one image holds at once in an inference forward
    /// through the stages from `first` on: the largest input and output map of any
    /// one convolution.
    pub fn forward_floats_per_image(&self, first: usize) -> u64 {
        self.convs_from(first)
            .map(|(spec, size)| {
                let out = spec.out_size(size) as u64;
                spec.cin as u64 * (size * size) as u64 + spec.cout as u64 * out * out
            })
            .max()
            .unwrap_or(0)
    }

    /// Each convolution in the stages from `first` on, with its input's edge.
    fn convs_from(&self, first: usize) -> impl Iterator<Item = (&ConvSpec, usize)> {
        self.convs
            .iter()
            .zip(&self.conv_inputs)
            .filter(move |((stage, _), _)| *stage >= first)
            .map(|((_, spec), &size)| (spec, size))
    }

    /// The tensors of `kind` in the stages from `first` on, with their shapes.
    pub fn shapes(&self, kind: Option<TensorKind>, first: usize) -> Shapes {
        self.tensors
            .iter()
            .filter(|t| kind.is_none_or(|kind| t.kind == kind) && t.stage >= first)
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect()
    }
}

/// One image's feature map: channels and edge.
#[derive(Debug, Clone, Copy)]
struct Map {
    channels: usize,
    size: usize,
}

/// A lowering that registers what each layer asks for instead of computing it.
struct Registry {
    stage: usize,
    description: Description,
}

impl Lowering for Registry {
    type Map = Map;

    fn conv_bn(&mut self, spec: &ConvSpec, x: &Map) -> Map {
        let (stage, c) = (self.stage, spec.cout);
        let tensors = &mut self.description.tensors;
        let mut register = |name: String, shape: Vec<usize>, kind: TensorKind| {
            tensors.push(Registered {
                name,
                shape,
                kind,
                stage,
            });
        };
        register(spec.weight(), spec.weight_shape(), TensorKind::Param);
        for tensor in BnTensor::ALL {
            let kind = match BnTensor::PARAMS.contains(&tensor) {
                true => TensorKind::Param,
                false => TensorKind::Buffer,
            };
            register(spec.bn_tensor(tensor), vec![c], kind);
        }
        self.description.convs.push((stage, spec.clone()));
        self.description.conv_inputs.push(x.size);
        Map {
            channels: c,
            size: spec.out_size(x.size),
        }
    }

    fn relu(&mut self, x: &Map) -> Map {
        *x
    }

    fn relu6(&mut self, x: &Map) -> Map {
        *x
    }

    fn add(&mut self, a: &Map, _: &Map) -> Map {
        *a
    }

    fn max_pool(&mut self, x: &Map, window: Window) -> Map {
        Map {
            size: window.out_size(x.size),
            ..*x
        }
    }

    fn global_average_pool(&mut self, x: &Map) -> Map {
        self.description.features = x.channels;
        Map { size: 1, ..*x }
    }

    fn begin_stage(&mut self, stage: usize, x: Map) -> Map {
        self.stage = stage;
        let inputs = &mut self.description.stage_inputs;
        inputs.resize(stage + 1, (0, 0));
        inputs[stage] = (x.channels, x.size);
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::Net;

    #[test]
    fn a_steps_floats_per_image_count_inputs_or_patches_and_three_maps_per_convolution() {
        let arch = Arch {
            net: Net::ResNet18,
            width: 64,
            image_size: 224,
            classes: 3,
        };
        let d = Description::of(&arch);
        // layer4 at 7x7: four 3x3 convolutions (256 or 512 in) and a 1x1 downsample,
        // 512 out each. The 3x3s' inputs are smaller than their patches (the first's
        // 14x14), the strided downsample's patches than its input.
        let kept = 256 * 196 + 3 * 512 * 49 + 256 * 49;
        assert_eq!(d.step_floats_per_image(4), kept + 5 * 3 * 512 * 49);
        let deeper: Vec<u64> = (0..=4).map(|s| d.step_floats_per_image(s)).collect();
        assert!(deeper.windows(2).all(|w| w[0] > w[1]), "{deeper:?}");
        // A forward holds conv1's image and output at once (3 x 224² + 64 x 112²),
        // layer4 at most its first convolution's (256 x 14² + 512 x 7²).
        assert_eq!(
            d.forward_floats_per_image(0),
            3 * 224 * 224 + 64 * 112 * 112
        );
        assert_eq!(d.forward_floats_per_image(4), 256 * 196 + 512 * 49);
    }

    #[test]
    fn each_tensor_has_its_stage_and_kind_in_forward_order() {
        let arch = Arch {
            net: Net::ResNet50,
            width: 8,
            image_size: 64,
            classes: 3,
        };
        let d = Description::of(&arch);
        let find = |name: &str| d.tensors.iter().find(|t| t.name == name).unwrap();
        assert_eq!(find("conv1.weight").stage, 0);
        assert_eq!(find("bn1.running_var").kind, TensorKind::Buffer);
        let down = find("layer3.0.downsample.1.weight");
        assert_eq!((down.stage, down.kind), (3, TensorKind::Param));
        assert_eq!(find("layer4.2.conv3.weight").shape, [256, 64, 1, 1]);
        // A block's main path, then its downsample; a conv's weight, then its
        // BatchNorm's scale, shift and statistics.
        let names: Vec<&str> = d.tensors[5..15].iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names[0], "layer1.0.conv1.weight");
        assert_eq!(
            names[1..5],
            [
                "layer1.0.bn1.weight",
                "layer1.0.bn1.bias",
                "layer1.0.bn1.running_mean",
                "layer1.0.bn1.running_var"
            ]
        );
        assert_eq!(d.convs.len(), 1 + 16 * 3 + 4);
        assert_eq!(
            d.stage_inputs,
            [(3, 64), (8, 16), (32, 16), (64, 8), (128, 4)]
        );
        assert_eq!(d.features, 256);
        let trained = d.shapes(Some(TensorKind::Param), 4);
        assert!(trained.iter().all(|(name, _)| name.starts_with("layer4.")));
        // Three blocks of three convolutions and a downsample, each with its scale
        // and shift.
        assert_eq!(trained.len(), (3 * 3 + 1) * 3);
    }
}
