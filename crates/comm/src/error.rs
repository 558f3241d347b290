//! The one error type of `strata-comm`, and its `Result` alias.
//!
//! Policy: library code in this crate returns a [`CommError`] for every failure, whether bad input
//! (an out-of-range root, a missing environment variable), a peer that went away, or a deadline
//! that passed. It never panics on bad input, never exits and never logs: each variant carries the
//! context (collective, sequence number, ranks, address, key) needed to act on it. After any error
//! inside a collective the communicator is unusable: its streams may be mid-message.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// `Result` with [`CommError`] as the error.
pub type Result<T> = std::result::Result<T, CommError>;

/// Every failure of the rendezvous store and the collectives.
#[derive(Debug, thiserror::Error)]
pub enum CommError {
    /// The store could not bind its port because another process holds it.
    #[error(
        "cannot start the rendezvous store on {addr}: port {port} is already in use; \
         choose a free one with --master-port (or MASTER_PORT)"
    )]
    PortInUse {
        /// The address the store tried to bind.
        addr: SocketAddr,
        /// The port in use.
        port: u16,
    },

    /// Binding a listening socket failed for a reason other than a port in use.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// What was being bound (`rendezvous store`, `ring listener`).
        what: &'static str,
        /// The address given.
        addr: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// A connection could not be made before the deadline.
    #[error("cannot connect to {what} at {addr} after {waited:?} ({reason}); {hint}")]
    Connect {
        /// What was being reached (`rendezvous store`, `ring peer rank 2`).
        what: String,
        /// The address tried.
        addr: String,
        /// How long connecting was retried.
        waited: Duration,
        /// The last error seen.
        reason: String,
        /// What to do about it.
        hint: &'static str,
    },

    /// A collective (or the ring's set-up) made no progress before its deadline.
    #[error(
        "{collective} #{seq} timed out on rank {rank} after {waited:?}: \
         rank(s) {missing:?} never answered"
    )]
    Timeout {
        /// The collective (`all_reduce`, `broadcast`, ..., or `connect` for the ring's set-up).
        collective: &'static str,
        /// The collective's sequence number on this communicator (0 for `connect`).
        seq: u64,
        /// The rank that reports the error.
        rank: usize,
        /// The ranks that never arrived, or the peer that did not answer.
        missing: Vec<usize>,
        /// The deadline that passed.
        waited: Duration,
    },

    /// A peer closed its connection (it probably exited) in the middle of a collective.
    #[error(
        "{collective} #{seq} on rank {rank}: peer rank {peer} closed the connection ({source})"
    )]
    PeerClosed {
        /// The collective in progress.
        collective: &'static str,
        /// Its sequence number.
        seq: u64,
        /// The rank that reports the error.
        rank: usize,
        /// The peer whose connection closed.
        peer: usize,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// Two ranks disagree on which collective comes next or on its arguments: a bug in the
    /// caller, since every rank must issue the same collectives in the same order.
    #[error(
        "{collective} #{seq} on rank {rank} does not match what rank {peer} sent: \
         expected {expected}, got {got}; every rank must issue the same collectives in order"
    )]
    Mismatch {
        /// The collective this rank is in.
        collective: &'static str,
        /// Its sequence number on this rank.
        seq: u64,
        /// The rank that reports the error.
        rank: usize,
        /// The peer whose message disagrees.
        peer: usize,
        /// What this rank expected.
        expected: String,
        /// What the peer sent.
        got: String,
    },

    /// A store key did not appear before the deadline.
    #[error("store key `{key}` did not appear within {waited:?}")]
    KeyTimeout {
        /// The key waited for.
        key: String,
        /// The deadline that passed.
        waited: Duration,
    },

    /// The store server refused a request (e.g. `add` on a key that holds no counter).
    #[error("store at {addr} refused {request}: {message}")]
    StoreRefused {
        /// The store's address.
        addr: String,
        /// The request, with its key.
        request: String,
        /// The server's reason.
        message: String,
    },

    /// An I/O error outside a collective (talking to the store, setting up sockets).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// A malformed message on the wire.
    #[error("protocol error ({context}): {detail}")]
    Protocol {
        /// Where it was read.
        context: String,
        /// What was wrong.
        detail: String,
    },

    /// A caller passed an argument that cannot be honoured (rank out of range, bad root).
    #[error("invalid argument to {op}: {detail}")]
    InvalidArgument {
        /// The call.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },

    /// A launcher environment variable is missing or malformed.
    #[error(
        "environment variable {var} {problem}; start workers with `launcher run`, \
         which sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT"
    )]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong with it (`is not set`, `= "x" is not a non-negative integer`).
        problem: String,
    },

    /// A collective was called on a communicator that failed earlier.
    #[error("communicator on rank {rank} is unusable after an earlier error: {first}")]
    Broken {
        /// The rank whose communicator failed.
        rank: usize,
        /// The first error, as text.
        first: String,
    },
}

impl CommError {
    /// Wraps an I/O error with a description of what was being done.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        CommError::Io { context: context.into(), source }
    }

    /// Whether this error is a deadline that passed (a collective, a connection or a store key).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            CommError::Timeout { .. } | CommError::KeyTimeout { .. } | CommError::Connect { .. }
        )
    }
}

/// Whether an I/O error is a socket timeout (reported as `WouldBlock` on Unix, `TimedOut` on
/// Windows).
pub(crate) fn is_io_timeout(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}
