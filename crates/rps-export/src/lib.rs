//! rps-export: the network rps-model defines, emitted as every ONNX graph the
//! pipeline runs, through a small graph builder ([`graph`]): inference graphs of the frozen network with its weights as
//! constants ([`infer`]), and the graphs training runs, with the trained weights as
//! inputs ([`train`]). Only this crate builds graphs; later stages load the files it
//! writes.

pub mod export;
pub mod graph;
pub mod infer;
pub mod train;
pub mod winograd;
