//! strata-nn: the `Module` trait, layers, residual blocks, initialisation and model builders.

mod error;
pub mod gradcheck;
pub mod init;
pub mod layers;
pub mod mlp;
mod module;
pub mod resnet;

pub use error::{NnError, Result};
pub use module::{named_buffers, named_parameters, parameter_count, walk, Buffer, Ctx, Module};
