//! The autodiff layer's error type. Library code returns errors; it never panics on bad input.

use strata_tensor::TensorError;

/// Errors of the autodiff layer.
#[derive(Debug, thiserror::Error)]
pub enum AutodiffError {
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// `backward` was called on something that is not a one-element loss.
    #[error("backward: the loss must have one element, got shape {0:?}")]
    NonScalarLoss(Vec<usize>),
    /// Two recorded inputs of one operation belong to different tapes.
    #[error("{0}: inputs recorded on different tapes")]
    MixedTapes(&'static str),
    /// A gradient check found a mismatch.
    #[error("gradient check failed: {0}")]
    GradCheck(String),
    /// A collective that a backward rule needs (synchronised batch norm) failed.
    #[error("{op}: collective across workers failed: {detail}")]
    Collective { op: &'static str, detail: String },
}

/// Result alias of the autodiff layer.
pub type Result<T> = std::result::Result<T, AutodiffError>;
