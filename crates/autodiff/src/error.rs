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
    /// A checkpointed segment's re-run read a parameter its first forward did not.
    #[error(
        "checkpointed segment: the re-run read a parameter outside the {0} its forward read; \
         a segment must compute the same function both times"
    )]
    SegmentParam(usize),
    /// A checkpointed segment's re-run failed in a layer above this one.
    #[error("checkpointed segment re-run: {0}")]
    Rerun(Box<dyn std::error::Error + Send + Sync>),
    /// A gradient check found a mismatch.
    #[error("gradient check failed: {0}")]
    GradCheck(String),
    /// A collective that a backward rule needs (synchronised batch norm) failed.
    #[error("{op}: collective across workers failed: {detail}")]
    Collective { op: &'static str, detail: String },
}

/// Result alias of the autodiff layer.
pub type Result<T> = std::result::Result<T, AutodiffError>;
