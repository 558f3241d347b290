//! strata-tensor: the device kernel layer. `Tensor`, shapes, dtypes, devices, allocation
//! accounting, and the `Backend` trait with its CPU implementation (im2col + the `gemm` crate,
//! threads from rayon).

pub mod backend;
pub mod cpu;
pub mod error;
pub mod memory;

mod dtype;
mod shape;
mod tensor;

pub use backend::{AdamWParams, Pool2dParams, SgdParams};
pub use backend::{Backend, BatchNormGrads, BatchNormOutput, Conv2dParams, LinearGrads};
pub use dtype::{DType, Device, Element};
pub use error::{Result, TensorError};
pub use shape::Shape;
pub use tensor::{Storage, StorageElement, Tensor};
