//! strata-comm: the rendezvous store and the collectives that data-parallel workers use to
//! average gradients, on plain slices.
//!
//! - [`StoreServer`] / [`StoreClient`]: a TCP key-value store (set, get with wait, add, delete,
//!   check) hosted by the node-0 launcher, where workers meet.
//! - [`Communicator`]: all-reduce (sum, mean, max), broadcast, all-gather and barrier, with the
//!   backends [`SingleProcess`] (a world of one) and [`TcpRing`] (CPU workers).
//! - [`init_from_env`] / [`ProcessGroup`]: join the job `launcher run` started.
//! - [`CommThread`] / [`CommHandle`]: a communicator moved onto a thread of its own, so
//!   collectives can be queued (gradient buckets during backward) and waited for later.
//!
//! Decisions callers rely on:
//!
//! - Every rank issues the same collectives in the same order. Each collective opens with a
//!   header (kind, sequence number, length, op or root) that the next rank checks, so a rank out
//!   of step fails with [`CommError::Mismatch`] instead of reducing garbage.
//! - A collective fails with [`CommError::Timeout`], naming its sequence number and the peer,
//!   when that peer makes no progress for the ring's timeout; a peer that exits fails it at
//!   once with [`CommError::PeerClosed`]. The timeout must exceed the longest work one rank does
//!   while the others wait in a collective (rank-0 checkpoint writes, say).
//! - After any error inside a collective the communicator returns [`CommError::Broken`]: the
//!   worker should abort and let the launcher tear the job down.
//! - Results are bit-identical on every rank, and across runs for a given world size.
//! - This crate never logs and never panics on bad input; errors carry the context.

#![warn(missing_docs)]

mod communicator;
mod env;
mod error;
mod ring;
mod store;
mod thread;

pub use communicator::{Communicator, ReduceOp, SingleProcess};
pub use env::{init_from_env, LaunchEnv, ProcessGroup};
pub use error::{CommError, Result};
pub use ring::{RingOptions, TcpRing};
pub use store::{StoreClient, StoreServer};
pub use thread::{CommHandle, CommThread, Pending};
