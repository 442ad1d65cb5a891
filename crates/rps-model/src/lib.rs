//! rps-model: the networks the pipeline fine-tunes, each defined once, with no ONNX
//! in it. [`resnet`] is torchvision's ResNets (18, 34, 50): their modules and
//! names, stages, head, normalization and BatchNorm constants, and their one
//! forward, written over a [`resnet::Lowering`] that says how each layer kind is
//! computed (rps-export lowers it to ONNX graphs). [`registry`] learns from that
//! forward what the network is made of; [`summary`] is it a layer a row;
//! [`weights`] checks a weights file's tensors against it or draws them at random;
//! [`window`] is the geometry of its convolutions and pooling.

pub mod registry;
pub mod resnet;
pub mod summary;
pub mod weights;
pub mod window;
