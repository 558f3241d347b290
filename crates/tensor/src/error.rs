//! The tensor layer's error type.
//!
//! Policy: kernels and tensor operations return `Result`; they never panic or exit on bad input
//! (shape mismatches, wrong dtypes, an absent device). Each variant names the operation and the
//! shapes, dtypes or device involved.

use crate::{DType, Device};

/// Errors of the tensor layer.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    /// Operands whose shapes do not fit the operation.
    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },
    /// An operand of the wrong dtype.
    #[error("{op}: expected dtype {expected:?}, got {got:?}")]
    DType { op: &'static str, expected: DType, got: DType },
    /// Operands on different devices.
    #[error("{op}: operands on different devices: {a:?} and {b:?}")]
    DeviceMismatch { op: &'static str, a: Device, b: Device },
    /// The operation exists, but not for this device or dtype.
    #[error("{op}: not supported on {device:?} for dtype {dtype:?}: {reason}")]
    NotSupported { op: &'static str, device: Device, dtype: DType, reason: &'static str },
    /// A CUDA device was asked for where CUDA is not available.
    #[error("CUDA device {0} is not available: {1}")]
    CudaUnavailable(usize, String),
}

/// Result alias of the tensor layer.
pub type Result<T> = std::result::Result<T, TensorError>;

/// Build a [`TensorError::Shape`].
pub fn shape_err(op: &'static str, detail: impl Into<String>) -> TensorError {
    TensorError::Shape { op, detail: detail.into() }
}
