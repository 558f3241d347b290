//! strata-nn: the `Module` trait, layers, residual blocks, stochastic depth, initialisation,
//! model builders, the layer registry, model summaries, gradient checkpointing of block
//! sequences and the memory plan that predicts peak memory per worker.

pub mod blocks;
pub mod checkpoint;
pub mod deep_cnn;
mod error;
pub mod gradcheck;
pub mod init;
pub mod layers;
pub mod mlp;
mod module;
pub mod plan;
pub mod registry;
pub mod resnet;
pub mod rng;
pub mod stochastic_depth;
pub mod summary;

pub use error::{NnError, Result};
pub use module::ShapeTrace;
pub use module::{
    named_buffers, named_parameters, parameter_count, walk, Buffer, Ctx, Module, StatsAllReduce,
};
