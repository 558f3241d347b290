//! The nn layer's error type. Builders validate their arguments and say what would be valid.
//! Library code returns these errors; it does not panic on bad input.

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
    /// A layer of a `sequential` model config names a type nobody registered.
    #[error(
        "model.layers[{index}]: unknown layer type {name:?}; registered layers: {}",
        known.join(", ")
    )]
    UnknownLayer { index: usize, name: String, known: Vec<String> },
    /// A layer of a `sequential` model config has a bad, missing or unknown argument, or does
    /// not fit its input.
    #[error("model.layers[{index}] ({layer}): {detail}")]
    LayerConfig { index: usize, layer: String, detail: String },
    /// A layer type registered twice.
    #[error("layer type {0:?} is already registered; pick another name")]
    AlreadyRegistered(String),
    /// A layer received an input of the wrong shape.
    #[error("{layer}: expected input {expected}, got {got:?}")]
    InputShape { layer: &'static str, expected: String, got: Vec<usize> },
    /// A collective a layer needs (batch norm with synchronised statistics) failed.
    #[error("{layer}: collective across workers failed: {detail}")]
    Collective { layer: &'static str, detail: String },
}

/// Result alias of the nn layer.
pub type Result<T> = std::result::Result<T, NnError>;
