//! Inference graphs: NCHW, standard `Conv` and eval-mode `BatchNormalization`, the
//! weights as initializers, where ONNX Runtime's own fused kernels are fastest.

use crate::graph::{Attr, Dim, Elem, Graph};
use crate::names;
use crate::resnet::{Arch, Block, ConvSpec, HEAD_BIAS, HEAD_WEIGHT};
use crate::weights::Tensors;

/// images -> `layer3` and `pooled`.
pub fn backbone(arch: &Arch, tensors: &Tensors) -> Vec<u8> {
    let mut g = Graph::new();
    let images = images_input(&mut g, arch);
    let layer3 = to_layer3(&mut g, tensors, arch, &images);
    let pooled = layer4_pooled(&mut g, tensors, arch, &layer3);
    let s = arch.layer3_size();
    g.output(
        &layer3,
        names::LAYER3,
        Elem::F32,
        &[
            Dim::Batch,
            Dim::Fixed(arch.layer3_channels()),
            Dim::Fixed(s),
            Dim::Fixed(s),
        ],
    );
    g.output(
        &pooled,
        names::POOLED,
        Elem::F32,
        &[Dim::Batch, Dim::Fixed(arch.features())],
    );
    g.to_bytes("backbone")
}

/// Metadata keys of classifier graphs.
pub const META_CLASSES: &str = "classes";
pub const META_IMAGE_SIZE: &str = "image_size";

/// images -> `logits` and `probs` over the classes of `tensors`' fc (the ImageNet
/// model, or the trained transfer model). The model carries its image size and, when
/// given, its class names (one a line), so it can be used alone.
pub fn classifier(
    arch: &Arch,
    tensors: &Tensors,
    name: &str,
    classes: Option<&[String]>,
) -> Vec<u8> {
    let mut g = Graph::new();
    g.metadata(META_IMAGE_SIZE, &arch.image_size.to_string());
    if let Some(classes) = classes {
        g.metadata(META_CLASSES, &classes.join("\n"));
    }
    let images = images_input(&mut g, arch);
    let layer3 = to_layer3(&mut g, tensors, arch, &images);
    let pooled = layer4_pooled(&mut g, tensors, arch, &layer3);
    let logits = linear(&mut g, tensors, &pooled);
    probabilities_out(&mut g, &logits, classes_of(tensors));
    g.to_bytes(name)
}

/// pooled `features` `[N,8w]`, `labels` -> `logits`, `probs`, mean `loss` (phase 1 eval).
pub fn head_eval(arch: &Arch, tensors: &Tensors) -> Vec<u8> {
    let mut g = Graph::new();
    let features = pooled_features_input(&mut g, arch);
    let logits = linear(&mut g, tensors, &features);
    scored_out(&mut g, &logits, classes_of(tensors));
    g.to_bytes("head_eval")
}

/// layer3 `features`, `labels` -> `logits`, `probs`, mean `loss` (phase 2 eval, with
/// BatchNorm running statistics).
pub fn finetune_eval(arch: &Arch, tensors: &Tensors) -> Vec<u8> {
    let mut g = Graph::new();
    let features = layer3_features_input(&mut g, arch);
    let pooled = layer4_pooled(&mut g, tensors, arch, &features);
    let logits = linear(&mut g, tensors, &pooled);
    scored_out(&mut g, &logits, classes_of(tensors));
    g.to_bytes("finetune_eval")
}

/// The `features` input of phase 2 graphs: layer3 values `[N,4w,S/16,S/16]`.
pub fn layer3_features_input(g: &mut Graph, arch: &Arch) -> String {
    let s = Dim::Fixed(arch.layer3_size());
    g.input(
        names::FEATURES,
        Elem::F32,
        &[Dim::Batch, Dim::Fixed(arch.layer3_channels()), s, s],
    )
}

/// The `features` input of phase 1 graphs: pooled values `[N,8w]`.
pub fn pooled_features_input(g: &mut Graph, arch: &Arch) -> String {
    g.input(
        names::FEATURES,
        Elem::F32,
        &[Dim::Batch, Dim::Fixed(arch.features())],
    )
}

fn images_input(g: &mut Graph, arch: &Arch) -> String {
    let s = Dim::Fixed(arch.image_size);
    g.input(names::IMAGES, Elem::F32, &[Dim::Batch, Dim::Fixed(3), s, s])
}

fn classes_of(tensors: &Tensors) -> usize {
    tensors[HEAD_WEIGHT].shape()[0]
}

fn probabilities_out(g: &mut Graph, logits: &str, classes: usize) {
    let probs = g.op("Softmax", &[logits], vec![("axis", Attr::Int(-1))]);
    let dims = [Dim::Batch, Dim::Fixed(classes)];
    g.output(logits, names::LOGITS, Elem::F32, &dims);
    g.output(&probs, names::PROBS, Elem::F32, &dims);
}

fn scored_out(g: &mut Graph, logits: &str, classes: usize) {
    let labels = g.input(names::LABELS, Elem::I64, &[Dim::Batch]);
    let loss = g.op("SoftmaxCrossEntropyLoss", &[logits, &labels], vec![]);
    probabilities_out(g, logits, classes);
    g.output(&loss, names::LOSS, Elem::F32, &[]);
}

fn to_layer3(g: &mut Graph, tensors: &Tensors, arch: &Arch, images: &str) -> String {
    let stem = conv_bn(g, tensors, &arch.stem(), images, true);
    let mut x = g.op(
        "MaxPool",
        &[&stem],
        vec![
            ("kernel_shape", Attr::Ints(vec![3, 3])),
            ("strides", Attr::Ints(vec![2, 2])),
            ("pads", Attr::Ints(vec![1, 1, 1, 1])),
        ],
    );
    for stage in 1..=3 {
        for block in arch.layer(stage) {
            x = basic_block(g, tensors, &block, &x);
        }
    }
    x
}

fn layer4_pooled(g: &mut Graph, tensors: &Tensors, arch: &Arch, layer3: &str) -> String {
    let mut x = layer3.to_string();
    for block in arch.layer(4) {
        x = basic_block(g, tensors, &block, &x);
    }
    let pooled = g.op("GlobalAveragePool", &[&x], vec![]);
    g.op("Flatten", &[&pooled], vec![("axis", Attr::Int(1))])
}

fn basic_block(g: &mut Graph, tensors: &Tensors, block: &Block, x: &str) -> String {
    let convs = block.convs();
    let a = conv_bn(g, tensors, &convs[0], x, true);
    let b = conv_bn(g, tensors, &convs[1], &a, false);
    let identity = match convs.get(2) {
        Some(downsample) => conv_bn(g, tensors, downsample, x, false),
        None => x.to_string(),
    };
    let sum = g.add(&b, &identity);
    g.relu(&sum)
}

fn conv_bn(g: &mut Graph, tensors: &Tensors, spec: &ConvSpec, x: &str, relu: bool) -> String {
    let w = weight(g, tensors, &spec.weight());
    let (k, s, p) = (spec.kernel as i64, spec.stride as i64, spec.pad as i64);
    let y = g.op(
        "Conv",
        &[x, &w],
        vec![
            ("kernel_shape", Attr::Ints(vec![k, k])),
            ("strides", Attr::Ints(vec![s, s])),
            ("pads", Attr::Ints(vec![p, p, p, p])),
        ],
    );
    let [scale, bias, mean, var] = ["weight", "bias", "running_mean", "running_var"]
        .map(|t| weight(g, tensors, &format!("{}.{t}", spec.bn)));
    let y = g.op(
        "BatchNormalization",
        &[&y, &scale, &bias, &mean, &var],
        vec![("epsilon", Attr::Float(crate::resnet::BN_EPS))],
    );
    if relu { g.relu(&y) } else { y }
}

fn linear(g: &mut Graph, tensors: &Tensors, x: &str) -> String {
    let w = weight(g, tensors, HEAD_WEIGHT);
    let b = weight(g, tensors, HEAD_BIAS);
    g.op("Gemm", &[x, &w, &b], vec![("transB", Attr::Int(1))])
}

fn weight(g: &mut Graph, tensors: &Tensors, name: &str) -> String {
    let t = &tensors[name];
    g.weight(
        name,
        t.shape(),
        t.as_standard_layout().as_slice().expect("standard layout"),
    )
}
