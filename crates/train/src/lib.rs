//! strata-train: experiment configs, optimizers and schedules, data-parallel gradient
//! averaging, the training loop with distributed evaluation, and the run directory.

pub mod checkpoint;
pub mod config;
pub mod ddp;
mod error;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod plot;
pub mod trainer;
pub mod weights;

pub use config::Config;
pub use error::{Result, TrainError};
pub use trainer::{train, ProgressMode, RunSummary};
