//! Layers: convolution, batch norm, dense, dropout, activations, pooling, and containers.

mod batch_norm;
mod conv;
mod dropout;
mod linear;
mod simple;

pub use batch_norm::BatchNorm;
pub use conv::Conv2d;
pub use dropout::Dropout;
pub use linear::Linear;
pub use simple::{Flatten, GlobalAvgPool, MaxPool2d, Relu, Sequential};

/// Batch norm over `[N, C]` (the same layer as [`BatchNorm2d`]; the input's rank decides).
pub type BatchNorm1d = BatchNorm;
/// Batch norm over `[N, C, H, W]`.
pub type BatchNorm2d = BatchNorm;
