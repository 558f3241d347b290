//! `CommThread`: one thread owns a [`Communicator`]; any number of [`CommHandle`]s queue work
//! for it, blocking ([`CommHandle`] is itself a `Communicator`) or not ([`CommHandle::submit`]).
//!
//! A communicator is `Send` but not `Sync`: rather than share it between threads, it is moved
//! onto a thread of its own, which runs queued collectives one at a time, in the order they were
//! queued. Because every rank queues the same collectives in the same order, that order is the
//! one the ring sees, whichever thread of the worker queued them. The data-parallel reducer
//! queues gradient buckets while backward goes on; batch norm with synchronised statistics and
//! the trainer's metrics queue blocking collectives behind them.

use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{Scope, ScopedJoinHandle};

use crate::communicator::{Communicator, ReduceOp};
use crate::error::{CommError, Result};

/// A unit of work for the communication thread.
type Job = Box<dyn FnOnce(&mut dyn Communicator) + Send>;

/// What the communication thread's queue carries.
enum Message {
    Work(Job),
    /// Finish: work queued before this runs; later work is refused.
    Stop,
}

/// The thread that owns a communicator for the lifetime of a [`std::thread::scope`].
///
/// ```
/// use strata_comm::{CommThread, Communicator, ReduceOp, SingleProcess};
///
/// let mut comm = SingleProcess::new();
/// std::thread::scope(|scope| {
///     let thread = CommThread::spawn(scope, &mut comm).unwrap();
///     let handle = thread.handle();
///     let pending = handle.start_all_reduce(vec![1.0, 2.0], ReduceOp::Sum);
///     assert_eq!(pending.wait().unwrap(), vec![1.0, 2.0]); // a world of one
///     thread.join().unwrap();
///     assert!(handle.start_all_reduce(vec![1.0], ReduceOp::Sum).wait().is_err()); // stopped
/// });
/// ```
pub struct CommThread<'scope> {
    handle: CommHandle,
    join: ScopedJoinHandle<'scope, ()>,
}

impl<'scope> CommThread<'scope> {
    /// Moves `comm` onto a new thread of `scope`. The thread runs queued work until
    /// [`CommThread::join`] (or until this and every handle are dropped).
    ///
    /// # Errors
    ///
    /// [`CommError::Io`] if the thread cannot be started.
    pub fn spawn<'env>(
        scope: &'scope Scope<'scope, 'env>,
        comm: &'env mut dyn Communicator,
    ) -> Result<CommThread<'scope>> {
        let (rank, world_size) = (comm.rank(), comm.world_size());
        let (jobs, queue) = mpsc::channel::<Message>();
        let join = std::thread::Builder::new()
            .name(format!("strata-comm-{rank}"))
            .spawn_scoped(scope, move || {
                for message in queue {
                    match message {
                        Message::Work(job) => job(&mut *comm),
                        Message::Stop => break,
                    }
                }
            })
            .map_err(|e| {
                CommError::io(format!("starting rank {rank}'s communication thread"), e)
            })?;
        Ok(CommThread { handle: CommHandle { jobs, rank, world_size }, join })
    }

    /// A handle that queues work for this thread.
    pub fn handle(&self) -> CommHandle {
        self.handle.clone()
    }

    /// Runs the work queued so far, then stops the thread and waits for it. Work queued later
    /// through a surviving handle fails with [`CommError::Broken`].
    ///
    /// # Errors
    ///
    /// [`CommError::Broken`] if the thread panicked.
    pub fn join(self) -> Result<()> {
        let rank = self.handle.rank;
        let _ = self.handle.jobs.send(Message::Stop);
        drop(self.handle);
        self.join.join().map_err(|_| CommError::Broken {
            rank,
            first: "the communication thread panicked".into(),
        })
    }
}

/// Queues collectives for a [`CommThread`]. Cheap to clone; `Send`.
///
/// As a [`Communicator`], each call queues the collective and waits for it (copying the buffer
/// there and back), so it runs after everything queued before it.
#[derive(Clone)]
pub struct CommHandle {
    jobs: Sender<Message>,
    rank: usize,
    world_size: usize,
}

/// A collective queued by [`CommHandle::submit`]; [`Pending::wait`] returns its result.
#[must_use = "a queued collective must be waited for before its result is used"]
pub struct Pending<T> {
    reply: Receiver<Result<T>>,
    rank: usize,
}

impl<T> Pending<T> {
    /// Blocks until the collective has run and returns its result.
    ///
    /// # Errors
    ///
    /// The collective's error, or [`CommError::Broken`] if the communication thread stopped
    /// before running it.
    pub fn wait(self) -> Result<T> {
        self.reply.recv().unwrap_or_else(|_| Err(stopped(self.rank)))
    }

    /// The result if the collective has finished, else `self` back, without blocking.
    ///
    /// # Errors
    ///
    /// As [`Pending::wait`], once finished.
    pub fn try_wait(self) -> std::result::Result<Result<T>, Pending<T>> {
        match self.reply.try_recv() {
            Ok(result) => Ok(result),
            Err(mpsc::TryRecvError::Empty) => Err(self),
            Err(mpsc::TryRecvError::Disconnected) => Ok(Err(stopped(self.rank))),
        }
    }
}

fn stopped(rank: usize) -> CommError {
    CommError::Broken { rank, first: "the communication thread has stopped".into() }
}

impl CommHandle {
    /// Queues `work` to run on the communication thread after everything queued before it, and
    /// returns at once.
    pub fn submit<T, F>(&self, work: F) -> Pending<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Communicator) -> Result<T> + Send + 'static,
    {
        let (reply, result) = mpsc::channel();
        let job: Job = Box::new(move |comm| {
            // The waiter may have given up (an error elsewhere); nothing to tell it then.
            let _ = reply.send(work(comm));
        });
        // If the thread has stopped, `job` is dropped with its sender and `wait` reports it.
        let _ = self.jobs.send(Message::Work(job));
        Pending { reply: result, rank: self.rank }
    }

    /// Queues an all-reduce of `buf` with `op` (sum, mean or max over ranks); the result comes
    /// back in the same vector.
    pub fn start_all_reduce(&self, mut buf: Vec<f32>, op: ReduceOp) -> Pending<Vec<f32>> {
        self.submit(move |comm| comm.all_reduce(&mut buf, op).map(|()| buf))
    }

    /// Queues an f64 all-reduce of `buf` with `op` (sum, mean or max over ranks).
    pub fn start_all_reduce_f64(&self, mut buf: Vec<f64>, op: ReduceOp) -> Pending<Vec<f64>> {
        self.submit(move |comm| comm.all_reduce_f64(&mut buf, op).map(|()| buf))
    }
}

impl Communicator for CommHandle {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn all_reduce(&mut self, buf: &mut [f32], op: ReduceOp) -> Result<()> {
        let out = self.start_all_reduce(buf.to_vec(), op).wait()?;
        buf.copy_from_slice(&out);
        Ok(())
    }

    fn all_reduce_f64(&mut self, buf: &mut [f64], op: ReduceOp) -> Result<()> {
        let out = self.start_all_reduce_f64(buf.to_vec(), op).wait()?;
        buf.copy_from_slice(&out);
        Ok(())
    }

    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<()> {
        let mut v = buf.to_vec();
        let out = self.submit(move |comm| comm.broadcast(&mut v, root).map(|()| v)).wait()?;
        buf.copy_from_slice(&out);
        Ok(())
    }

    fn broadcast_bytes(&mut self, buf: &mut Vec<u8>, root: usize) -> Result<()> {
        let mut v = std::mem::take(buf);
        *buf = self.submit(move |comm| comm.broadcast_bytes(&mut v, root).map(|()| v)).wait()?;
        Ok(())
    }

    fn all_gather_bytes(&mut self, local: &[u8]) -> Result<Vec<Vec<u8>>> {
        let v = local.to_vec();
        self.submit(move |comm| comm.all_gather_bytes(&v)).wait()
    }

    fn barrier(&mut self) -> Result<()> {
        self.submit(|comm| comm.barrier()).wait()
    }

    /// The communicator's count, read on its thread after the work queued before (so it
    /// includes every bucket already started); `None` if the thread has stopped.
    fn collectives_started(&self) -> Option<u64> {
        self.submit(|comm| Ok(comm.collectives_started())).wait().ok().flatten()
    }
}
