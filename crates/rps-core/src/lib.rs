//! What every rps-transfer stage shares: where files live ([`Layout`]), how they are
//! written (atomically: [`atomic`]), their formats ([`npy`], [`table`], [`meta`],
//! [`classes`]) and how ONNX Runtime is loaded and put on a device ([`runtime`]).

pub mod atomic;
pub mod classes;
pub mod error;
pub mod imagenet;
pub mod layout;
pub mod meta;
pub mod npy;
pub mod plot;
pub mod progress;
pub mod rows;
pub mod runtime;
pub mod table;

pub use classes::ClassList;
pub use error::{Error, Result};
pub use layout::{GraphFile, Layout, Split};
pub use meta::Metadata;
pub use runtime::{Device, DeviceChoice, OrtArgs, Runtime};
