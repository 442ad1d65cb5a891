//! rps-model: the networks the pipeline fine-tunes, each defined once, with no ONNX
//! in it. [`network`] is what every stage knows of a network (its stages, head,
//! normalization and trained tensors) and the parts definitions are written with;
//! [`resnet`] (torchvision's ResNets 18, 34, 50), [`mobilenet_v2`] and
//! [`efficientnet_lite`] (built from [`inverted_residual`] blocks) each write their
//! forward once over a [`network::Lowering`] that says how each layer kind is
//! computed (rps-export lowers it to ONNX graphs). [`registry`] learns from that
//! forward what the network is made of; [`summary`] is it a layer a row;
//! [`weights`] checks a weights file's tensors against it or draws them at random;
//! [`window`] is the geometry of its convolutions and pooling.

pub mod efficientnet_lite;
pub mod inverted_residual;
pub mod mobilenet_v2;
pub mod network;
pub mod registry;
pub mod resnet;
pub mod summary;
pub mod weights;
pub mod window;
