//! strata-comm: the rendezvous store and the collectives that data-parallel workers use to
//! average gradients, on plain slices.
//!
//! - [`StoreServer`] / [`StoreClient`]: a TCP key-value store (set, get with wait, add, delete)
//!   hosted by the node-0 launcher, where workers meet.
//! - [`Communicator`]: all-reduce (sum, mean, max), broadcast, all-gather and barrier, with the
//!   backends [`SingleProcess`] (a world of one) and [`TcpRing`] (CPU workers).
//! - [`init_from_env`] / [`ProcessGroup`]: join the job `launcher run` started.
//!
//! Every collective carries a sequence number and fails with a [`CommError`] naming the peer
//! that did not answer within the timeout. This crate never logs; errors carry the context.

mod communicator;
mod env;
mod error;
mod ring;
mod store;

pub use communicator::{Communicator, ReduceOp, SingleProcess};
pub use env::{init_from_env, LaunchEnv, ProcessGroup};
pub use error::{CommError, Result};
pub use ring::{RingOptions, TcpRing};
pub use store::{StoreClient, StoreServer};
