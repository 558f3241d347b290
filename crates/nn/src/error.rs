//! The nn layer's error type. Builders validate their arguments and say what would be valid.

use strata_autodiff::AutodiffError;
use strata_tensor::TensorError;

/// Errors of model building and forward passes.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    #[error(transparent)]
    Autodiff(#[from] AutodiffError),
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// A model builder was given arguments it cannot build.
    #[error("{model}: {detail}")]
    InvalidArgument { model: &'static str, detail: String },
    /// A layer received an input of the wrong shape.
    #[error("{layer}: expected input {expected}, got {got:?}")]
    InputShape { layer: &'static str, expected: String, got: Vec<usize> },
}

/// Result alias of the nn layer.
pub type Result<T> = std::result::Result<T, NnError>;
