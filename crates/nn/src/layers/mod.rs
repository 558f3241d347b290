//! Layers: convolution, batch norm, dense, activations, pooling, and containers.

mod batch_norm;
mod conv;
mod linear;
mod simple;

pub use batch_norm::BatchNorm;
pub use conv::Conv2d;
pub use linear::Linear;
pub use simple::{Flatten, GlobalAvgPool, MaxPool2d, Relu, Sequential};
