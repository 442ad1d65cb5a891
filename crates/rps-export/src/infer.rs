//! Inference graphs of the frozen network: NCHW, standard `Conv` and eval-mode
//! `BatchNormalization`, the weights as named initializers, where ONNX Runtime's own
//! fused kernels are fastest. The forward reads as torchvision's
//! `ResNet._forward_impl`.

use rps_core::Tensors;
use rps_core::names;

use crate::graph::{Dim, Elem, Graph, Transposed, Value};
use crate::resnet::{Arch, Block, BnTensor, ConvSpec, STEM_POOL, fc};

/// images -> `layer3` and `pooled`.
pub fn backbone(arch: &Arch, tensors: &Tensors) -> Vec<u8> {
    let mut net = Net::new(tensors);
    let images = images_input(&mut net.g, arch);
    let layer3 = net.up_to_layer3(arch, &images);
    let pooled = net.layer4_pooled(arch, &layer3);
    let layer3_dims = Dim::batch_of(&arch.layer3_shape());
    net.g
        .output(&layer3, names::LAYER3, Elem::F32, &layer3_dims);
    let pooled_dims = [Dim::Batch, Dim::Fixed(arch.features())];
    net.g
        .output(&pooled, names::POOLED, Elem::F32, &pooled_dims);
    net.g.to_bytes("backbone")
}

/// images -> `logits` and `probs` over the classes of `tensors`' fc: the ImageNet
/// model, or the transfer model's template. It carries its image size, so a stage
/// can use it alone.
pub fn classifier(arch: &Arch, tensors: &Tensors, name: &str) -> Vec<u8> {
    let mut net = Net::new(tensors);
    net.g
        .metadata(names::META_IMAGE_SIZE, &arch.image_size.to_string());
    let images = images_input(&mut net.g, arch);
    let layer3 = net.up_to_layer3(arch, &images);
    let pooled = net.layer4_pooled(arch, &layer3);
    let logits = net.fc(&pooled);
    let probs = net.g.softmax(&logits, -1);
    let dims = [
        Dim::Batch,
        Dim::Fixed(tensors[&fc().tensor("weight")].shape()[0]),
    ];
    net.g.output(&logits, names::LOGITS, Elem::F32, &dims);
    net.g.output(&probs, names::PROBS, Elem::F32, &dims);
    net.g.to_bytes(name)
}

fn images_input(g: &mut Graph, arch: &Arch) -> Value {
    let s = Dim::Fixed(arch.image_size);
    g.input(names::IMAGES, Elem::F32, &[Dim::Batch, Dim::Fixed(3), s, s])
}

/// A graph whose weights are `tensors`' values, as initializers by PyTorch name.
struct Net<'a> {
    g: Graph,
    tensors: &'a Tensors,
}

impl<'a> Net<'a> {
    fn new(tensors: &'a Tensors) -> Self {
        Self {
            g: Graph::new(),
            tensors,
        }
    }

    /// conv1, bn1, relu, maxpool, layer1, layer2, layer3.
    fn up_to_layer3(&mut self, arch: &Arch, images: &Value) -> Value {
        let stem = self.conv_bn(&arch.stem(), images);
        let stem = self.g.relu(&stem);
        let mut x = self.g.max_pool(&stem, STEM_POOL);
        for stage in 1..=3 {
            for block in arch.layer(stage) {
                x = self.basic_block(&block, &x);
            }
        }
        x
    }

    /// layer4, avgpool, flatten.
    fn layer4_pooled(&mut self, arch: &Arch, layer3: &Value) -> Value {
        let mut x = layer3.clone();
        for block in arch.layer(4) {
            x = self.basic_block(&block, &x);
        }
        let pooled = self.g.global_average_pool(&x);
        self.g.flatten(&pooled, 1)
    }

    /// `BasicBlock.forward`.
    fn basic_block(&mut self, block: &Block, x: &Value) -> Value {
        let out = self.conv_bn(&block.conv1(), x);
        let out = self.g.relu(&out);
        let out = self.conv_bn(&block.conv2(), &out);
        let identity = match block.downsample() {
            Some(downsample) => self.conv_bn(&downsample, x),
            None => x.clone(),
        };
        let sum = self.g.add(&out, &identity);
        self.g.relu(&sum)
    }

    fn conv_bn(&mut self, spec: &ConvSpec, x: &Value) -> Value {
        let w = self.weight(&spec.weight());
        let y = self.g.conv(x, &w, spec.window);
        let [scale, bias, mean, var] = BnTensor::ALL.map(|t| self.weight(&spec.bn_tensor(t)));
        self.g
            .batch_norm(&y, [&scale, &bias, &mean, &var], crate::resnet::BN_EPS)
    }

    fn fc(&mut self, x: &Value) -> Value {
        let w = self.weight(&fc().tensor("weight"));
        let b = self.weight(&fc().tensor("bias"));
        self.g
            .gemm(x, &w, Some(&b), Transposed { a: false, b: true })
    }

    fn weight(&mut self, name: &str) -> Value {
        let t = &self.tensors[name];
        self.g.initializer(
            name,
            t.shape(),
            t.as_standard_layout().as_slice().expect("standard layout"),
        )
    }
}
