//! rps-export: one ResNet18 definition ([`resnet`]) emitted as every ONNX graph the
//! pipeline runs: inference graphs with weights as initializers ([`infer`]) and
//! train-step graphs computing forward, backward and Adam ([`train`]).

pub mod export;
pub mod graph;
pub mod infer;
pub mod names;
pub mod pth;
pub mod resnet;
pub mod train;
pub mod weights;
pub mod winograd;

pub mod onnx {
    //! Types generated from the official `onnx.proto`.
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
