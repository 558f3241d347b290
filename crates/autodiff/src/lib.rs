//! strata-autodiff: a reverse-mode tape. Operations on [`Var`]s record a backward rule on the
//! tape of their inputs; [`Tape::backward`] walks the records in reverse, accumulates gradients,
//! hands each parameter its gradient once final, and frees what forward saved as it goes.
//! [`checkpoint::segment`] records a segment that keeps only its input and re-runs in backward.

pub mod checkpoint;
mod error;
pub mod gradcheck;
pub mod ops;
mod param;
mod tape;

pub use error::{AutodiffError, Result};
pub use param::Param;
pub use tape::{GradReadyHook, Gradients, NodeRecord, SavedTensor, Tape, Var};
