//! Strata: data-parallel training of very deep networks. This crate re-exports the workspace.
pub use strata_autodiff as autodiff;
pub use strata_comm as comm;
pub use strata_data as data;
pub use strata_nn as nn;
pub use strata_tensor as tensor;
pub use strata_train as train;
