//! The trainer's error type: each variant says what went wrong and what to do about it.

/// Errors of configuration, training and evaluation.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Tensor(#[from] strata_tensor::TensorError),
    #[error(transparent)]
    Autodiff(#[from] strata_autodiff::AutodiffError),
    #[error(transparent)]
    Nn(#[from] strata_nn::NnError),
    #[error(transparent)]
    Data(#[from] strata_data::DataError),
    #[error(transparent)]
    Comm(#[from] strata_comm::CommError),
    /// A config file that cannot be read or parsed, or a value out of range.
    #[error("config {path}: {detail}")]
    Config { path: String, detail: String },
    /// A `--set key=value` override that does not fit the config.
    #[error("--set {key}: {detail}")]
    Override { key: String, detail: String },
    /// A file that could not be read.
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// A file or folder of the run directory that could not be written.
    #[error("cannot {what} {path} ({}): {hint}", os_reason(source))]
    Write {
        /// What was being written (`create the run directory`, `write the checkpoint`).
        what: &'static str,
        /// The path.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// Ranks that must hold identical values do not: a bug, or a rank that missed a step.
    #[error("replicas out of sync: {detail}")]
    OutOfSync { detail: String },
    /// The gradient reducer was driven inconsistently (a gradient reported final twice).
    #[error("gradient reducer: {0}")]
    Reducer(String),
    /// The loss became NaN or infinite.
    #[error("the loss is {loss} at step {step}; lower the learning rate or check the data")]
    Diverged { step: u64, loss: f64 },
}

/// Result alias of the trainer.
pub type Result<T> = std::result::Result<T, TrainError>;

/// The hint of a failed write under `log.dir`.
pub const LOG_DIR_HINT: &str = "choose another log.dir, fix its permissions or free disk space";

/// Attach what was being written, the path and what to do to an I/O error.
pub fn write_err(
    what: &'static str,
    path: impl AsRef<std::path::Path>,
    hint: &'static str,
) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.as_ref().display().to_string();
    move |source| TrainError::Write { what, path, source, hint }
}

/// The operating system's reason without its ` (os error N)` suffix.
fn os_reason(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}

/// Attach a path to an I/O error.
pub fn io_err(path: impl AsRef<std::path::Path>) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.as_ref().display().to_string();
    move |source| TrainError::Io { path, source }
}
