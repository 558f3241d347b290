//! The `Communicator` trait every backend implements, the reduction ops, and the world-of-one
//! backend `SingleProcess`.

use std::fmt;

use crate::error::{CommError, Result};

/// How [`Communicator::all_reduce`] combines the ranks' values, element by element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// The sum over ranks.
    Sum,
    /// The sum over ranks divided by the world size (the sum is divided once, in the element
    /// type, so powers-of-two world sizes are exact).
    Mean,
    /// The largest value over ranks. A NaN on any rank makes the result NaN, so an overflow
    /// seen by one rank is seen by all.
    Max,
}

impl fmt::Display for ReduceOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Mean => "mean",
            ReduceOp::Max => "max",
        })
    }
}

/// Collectives over a fixed group of `world_size` ranks.
///
/// Every rank must call the same collectives in the same order with matching arguments (equal
/// buffer lengths, equal root); a mismatch is reported as [`CommError::Mismatch`] where it can
/// be detected, and otherwise as a timeout. Each call is a synchronous, blocking step: when it
/// returns `Ok`, the buffer holds the result. Results are bit-identical on every rank and, for
/// a given world size and inputs, on every run.
///
/// After an error the communicator is unusable ([`CommError::Broken`] from then on): the
/// worker should abort and let the launcher tear the job down.
pub trait Communicator: Send {
    /// This process's rank, in `0..world_size()`.
    fn rank(&self) -> usize;

    /// The number of ranks in the group.
    fn world_size(&self) -> usize;

    /// Replaces `buf`, element by element, with the reduction `op` (sum, mean or max) of every
    /// rank's `buf`.
    ///
    /// # Errors
    ///
    /// A timeout naming the peer that did not answer, a closed peer, or a mismatch.
    fn all_reduce(&mut self, buf: &mut [f32], op: ReduceOp) -> Result<()>;

    /// [`all_reduce`](Self::all_reduce) in f64 (sum, mean or max), for exact metric totals.
    ///
    /// # Errors
    ///
    /// As [`all_reduce`](Self::all_reduce).
    fn all_reduce_f64(&mut self, buf: &mut [f64], op: ReduceOp) -> Result<()>;

    /// Copies rank `root`'s `buf` into every rank's `buf` (no reduction); lengths must match.
    ///
    /// # Errors
    ///
    /// [`CommError::InvalidArgument`] if `root >= world_size`, or as
    /// [`all_reduce`](Self::all_reduce).
    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<()>;

    /// Copies rank `root`'s bytes into every rank's `buf` (no reduction), resizing it to the
    /// root's length.
    ///
    /// # Errors
    ///
    /// As [`broadcast`](Self::broadcast).
    fn broadcast_bytes(&mut self, buf: &mut Vec<u8>, root: usize) -> Result<()>;

    /// Returns every rank's `local` bytes, indexed by rank (no reduction); lengths may differ.
    ///
    /// # Errors
    ///
    /// As [`all_reduce`](Self::all_reduce).
    fn all_gather_bytes(&mut self, local: &[u8]) -> Result<Vec<Vec<u8>>>;

    /// Returns once every rank has entered the barrier (no data, no reduction).
    ///
    /// # Errors
    ///
    /// As [`all_reduce`](Self::all_reduce).
    fn barrier(&mut self) -> Result<()>;

    /// The number of collectives this communicator has started, if it counts them (the TCP
    /// ring does: it is the sequence number of the last one). Lets a caller see how many
    /// all-reduces a training step issued.
    fn collectives_started(&self) -> Option<u64> {
        None
    }
}

/// The communicator of a world of one process: every collective is a no-op (a mean over one
/// rank is the identity).
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl SingleProcess {
    /// A communicator for a world of one.
    pub fn new() -> SingleProcess {
        SingleProcess
    }
}

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn all_reduce(&mut self, _buf: &mut [f32], _op: ReduceOp) -> Result<()> {
        Ok(())
    }

    fn all_reduce_f64(&mut self, _buf: &mut [f64], _op: ReduceOp) -> Result<()> {
        Ok(())
    }

    fn broadcast(&mut self, _buf: &mut [f32], root: usize) -> Result<()> {
        check_root("broadcast", root, 1)
    }

    fn broadcast_bytes(&mut self, _buf: &mut Vec<u8>, root: usize) -> Result<()> {
        check_root("broadcast_bytes", root, 1)
    }

    fn all_gather_bytes(&mut self, local: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![local.to_vec()])
    }

    fn barrier(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Checks that `root` names a rank of a world of `world_size`.
pub(crate) fn check_root(op: &'static str, root: usize, world_size: usize) -> Result<()> {
    if root < world_size {
        Ok(())
    } else {
        Err(CommError::InvalidArgument {
            op,
            detail: format!("root {root} is not a rank of a world of {world_size}"),
        })
    }
}
