//! The one error type of strata-data and its `Result` alias.
//!
//! Policy: library code returns these errors and never panics or exits on bad input (a missing,
//! damaged or foreign file, a bad argument). Each error names the file or the argument, says what
//! was expected and what was found, and, where there is one, what to do about it. The only panics
//! left are documented misuse of an infallible call (`Dataset::get` past the end), which the
//! loader rules out by validating its indices up front.

use std::path::PathBuf;

/// What to do when a dataset file is missing or damaged.
pub(crate) const FETCH_HINT: &str = "fetch it again: run scripts/fetch-data.sh <dataset> \
                                     (fashion-mnist, mnist or cifar10-samples) from the \
                                     repository root";

/// Result alias of strata-data.
pub type Result<T> = std::result::Result<T, DataError>;

/// Everything that can go wrong while reading, sampling or loading data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file the dataset needs does not exist.
    #[error("{path}: file not found; {hint}")]
    NotFound {
        /// The path that was looked for.
        path: PathBuf,
        /// What to do about it.
        hint: String,
    },

    /// Reading or decompressing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A gzip file that does not decompress (cut short by an interrupted download, or damaged).
    #[error(
        "{path}: gzip decompression failed: {source}; the file is truncated or damaged, \
         {FETCH_HINT}"
    )]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: std::io::Error,
    },

    /// An IDX file whose rank is not the one its reader expects (a label file with an image
    /// header, say).
    #[error(
        "{path}: expected a {expected} IDX file ({content}), found a {found}-D one{guess}; the \
         file is damaged or not what its name says, {FETCH_HINT}"
    )]
    WrongRank {
        /// The file.
        path: PathBuf,
        /// The ranks expected, as `1-D` or `3-D or 4-D`.
        expected: String,
        /// What the file was read as: `labels` or `images`.
        content: &'static str,
        /// The rank its header gives.
        found: usize,
        /// What a file of that rank probably holds, as ` (images?)`, or empty.
        guess: String,
    },

    /// The file does not start like an IDX file (two zero bytes, a type code, a rank).
    #[error(
        "{path}: not an IDX file: header bytes {found:02x?}, expected [00, 00, <type>, <rank>] \
         with a known type code and rank >= 1; {FETCH_HINT}"
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// Its first four bytes (fewer if the file is shorter).
        found: Vec<u8>,
    },

    /// The IDX element type is valid but not one strata-data reads.
    #[error(
        "{path}: IDX element type 0x{code:02x} ({name}) is not supported; only unsigned bytes \
         (0x08) are"
    )]
    UnsupportedType {
        /// The file.
        path: PathBuf,
        /// The type code from the header.
        code: u8,
        /// The type's name.
        name: &'static str,
    },

    /// The file holds fewer bytes than its header promises.
    #[error(
        "{path}: truncated: {what} needs {expected} bytes, the file has {actual}; the file is \
         damaged, {FETCH_HINT}"
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What was being read (the header, or the payload of the given dims).
        what: String,
        /// Bytes needed.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },

    /// The file holds more bytes than its header accounts for.
    #[error(
        "{path}: {extra} trailing bytes: {what} needs {expected} bytes, the file has {actual}; \
         the file is damaged or not what its name says, {FETCH_HINT}"
    )]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// What the header describes.
        what: String,
        /// Bytes the header accounts for.
        expected: u64,
        /// Bytes present.
        actual: u64,
        /// `actual - expected`.
        extra: u64,
    },

    /// A CIFAR binary file whose size is not a whole number of records.
    #[error(
        "{path}: {len} bytes is not a whole number of {record}-byte CIFAR records \
         ({whole} whole, {rest} bytes left over); the file is truncated or damaged, {FETCH_HINT}"
    )]
    CifarSize {
        /// The file.
        path: PathBuf,
        /// Its size in bytes.
        len: u64,
        /// The record size (3073 for CIFAR-10).
        record: usize,
        /// Whole records it holds.
        whole: u64,
        /// Bytes past the last whole record.
        rest: u64,
    },

    /// An image file and its label file disagree on the number of samples.
    #[error(
        "{images} holds {num_images} images but {labels} holds {num_labels} labels; the two \
         files must come from the same split"
    )]
    CountMismatch {
        /// The image file.
        images: PathBuf,
        /// Its sample count.
        num_images: usize,
        /// The label file.
        labels: PathBuf,
        /// Its sample count.
        num_labels: usize,
    },

    /// A file's content has the wrong shape or values for the dataset it should hold.
    #[error("{path}: {what}")]
    BadContent {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },

    /// An argument is out of range (a rank past the world size, a zero batch size, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A loader's background thread could not be started.
    #[error("cannot start a loader thread: {0}")]
    Spawn(std::io::Error),

    /// A loader's background thread stopped (panicked) before delivering a batch.
    #[error("loader worker thread stopped before delivering batch {batch}: {message}")]
    LoaderWorker {
        /// The batch that was not delivered.
        batch: usize,
        /// The thread's panic message, if it had one.
        message: String,
    },
}

impl DataError {
    /// Wraps an I/O error on `path`, turning "not found" into [`DataError::NotFound`] with the
    /// fetch hint.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::NotFound { path, hint: FETCH_HINT.to_string() }
        } else {
            DataError::Io { path, source }
        }
    }
}
