//! `TcpRing`: the CPU backend of [`Communicator`], a ring of TCP connections between ranks.
//!
//! Rank r sends to rank r + 1 and receives from rank r - 1 (mod world size). A sender thread per
//! rank writes queued sub-chunks while the calling thread reads and reduces, so the ring streams
//! in both phases of an all-reduce. Bandwidth per rank is that of one link: each rank sends
//! `2 (n - 1) / n` times the buffer per all-reduce.

mod algo;
mod element;
mod link;
mod setup;

use std::io;
use std::time::Duration;

use crate::communicator::{check_root, Communicator, ReduceOp};
use crate::error::{is_io_timeout, CommError, Result};
use crate::store::StoreClient;
use algo::Place;
use element::Reduce;
use link::{Header, Kind, LinkError, Links};

/// How a [`TcpRing`] connects and how long it waits.
#[derive(Clone, Debug)]
pub struct RingOptions {
    /// The deadline for setting the ring up, and for each blocking read or write of a
    /// collective: a peer that makes no progress for this long fails the collective.
    pub timeout: Duration,
    /// The IP address to listen on; peers must be able to reach it. `0.0.0.0` listens on every
    /// interface and advertises the one this host reaches the store from.
    pub bind_host: String,
}

impl Default for RingOptions {
    /// A 5-minute timeout, listening on the loopback interface (single-node jobs).
    fn default() -> Self {
        RingOptions { timeout: Duration::from_secs(300), bind_host: "127.0.0.1".into() }
    }
}

impl RingOptions {
    /// Options for reaching peers over the interface this host reaches `store` from (loopback
    /// when the store is local), with `timeout`.
    pub fn for_store(store: &StoreClient, timeout: Duration) -> RingOptions {
        RingOptions { timeout, bind_host: store.local_ip().to_string() }
    }
}

/// A [`Communicator`] over a ring of TCP connections; see the module docs.
///
/// ```
/// use std::time::Duration;
/// use strata_comm::{Communicator, ReduceOp, RingOptions, StoreClient, StoreServer, TcpRing};
///
/// let server = StoreServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
/// let addr = server.local_addr();
/// let workers: Vec<_> = (0..2)
///     .map(|rank| {
///         std::thread::spawn(move || {
///             let store = StoreClient::connect(addr, Duration::from_secs(5)).unwrap();
///             let mut ring = TcpRing::connect(&store, rank, 2, RingOptions::default()).unwrap();
///             let mut grad = vec![rank as f32 + 1.0; 3];
///             ring.all_reduce(&mut grad, ReduceOp::Mean).unwrap();
///             grad
///         })
///     })
///     .collect();
/// for worker in workers {
///     assert_eq!(worker.join().unwrap(), vec![1.5; 3]); // (1 + 2) / 2
/// }
/// ```
pub struct TcpRing {
    place: Place,
    timeout: Duration,
    seq: u64,
    links: Option<Links>,
    failed: Option<String>,
}

impl TcpRing {
    /// Joins the ring as `rank` of `world_size`, exchanging addresses through `store`. Every
    /// rank must call this; it returns once this rank is connected to both neighbours.
    ///
    /// # Errors
    ///
    /// [`CommError::InvalidArgument`] for a rank outside the world, a zero timeout or a
    /// `bind_host` that is not an IP; [`CommError::Timeout`] (collective `connect`) naming the
    /// ranks that never published an address or never connected, after `opts.timeout`;
    /// store and socket errors otherwise.
    pub fn connect(
        store: &StoreClient,
        rank: usize,
        world_size: usize,
        opts: RingOptions,
    ) -> Result<TcpRing> {
        validate(rank, world_size, opts.timeout)?;
        let place = Place { rank, world_size };
        let mut ring = TcpRing { place, timeout: opts.timeout, seq: 0, links: None, failed: None };
        if world_size == 1 {
            return Ok(ring);
        }

        let plan = setup::Plan {
            store,
            rank,
            world_size,
            bind_host: &opts.bind_host,
            timeout: opts.timeout,
        };
        let connected = setup::connect(&plan)?;
        let links = Links::new(connected.send, connected.recv)
            .map_err(|e| CommError::io(format!("starting rank {rank}'s ring sender thread"), e))?;
        ring.links = Some(links);
        Ok(ring)
    }

    /// The number of collectives this ring has started; the next one gets `seq() + 1`.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Runs one collective: numbers it, runs `body` on the links (skipped in a world of one),
    /// and turns a link failure into an error that names the collective and the peer. Any
    /// failure leaves the ring broken.
    fn collective<R>(
        &mut self,
        kind: Kind,
        len: usize,
        arg: u64,
        alone: impl FnOnce() -> R,
        body: impl FnOnce(&mut Links, Place, &Header) -> std::result::Result<R, LinkError>,
    ) -> Result<R> {
        if let Some(first) = &self.failed {
            return Err(CommError::Broken { rank: self.place.rank, first: first.clone() });
        }
        self.seq += 1;
        let header = Header { kind, seq: self.seq, len: len as u64, arg };
        let Some(links) = self.links.as_mut() else {
            return Ok(alone());
        };

        let result = body(links, self.place, &header);
        result.map_err(|failure| {
            let err = self.describe(kind, failure);
            self.failed = Some(err.to_string());
            err
        })
    }

    /// The error for a failed link, with the collective, its number and the peer.
    fn describe(&self, kind: Kind, failure: LinkError) -> CommError {
        let Place { rank, world_size } = self.place;
        let (collective, seq) = (kind.name(), self.seq);
        let prev = (rank + world_size - 1) % world_size;
        let next = (rank + 1) % world_size;
        let (peer, source) = match failure {
            LinkError::Recv(e) => (prev, e),
            LinkError::Send(e) => (next, e),
            LinkError::Mismatch { expected, got } => {
                return CommError::Mismatch {
                    collective,
                    seq,
                    rank,
                    peer: prev,
                    expected: expected.describe(),
                    got: got.describe(),
                };
            }
        };
        if is_io_timeout(&source) {
            return CommError::Timeout {
                collective,
                seq,
                rank,
                missing: vec![peer],
                waited: self.timeout,
            };
        }
        match source.kind() {
            io::ErrorKind::InvalidData => CommError::Protocol {
                context: format!("{collective} #{seq} on rank {rank}, from rank {peer}"),
                detail: source.to_string(),
            },
            _ => CommError::PeerClosed { collective, seq, rank, peer, source },
        }
    }

    fn reduce<T: Reduce>(&mut self, kind: Kind, buf: &mut [T], op: ReduceOp) -> Result<()> {
        let code = match op {
            ReduceOp::Sum => 0,
            ReduceOp::Mean => 1,
            ReduceOp::Max => 2,
        };
        self.collective(
            kind,
            buf.len(),
            code,
            || (),
            |links, place, header| algo::all_reduce(links, place, header, buf, op),
        )
    }
}

impl Communicator for TcpRing {
    fn rank(&self) -> usize {
        self.place.rank
    }

    fn collectives_started(&self) -> Option<u64> {
        Some(self.seq)
    }

    fn world_size(&self) -> usize {
        self.place.world_size
    }

    fn all_reduce(&mut self, buf: &mut [f32], op: ReduceOp) -> Result<()> {
        self.reduce(Kind::AllReduceF32, buf, op)
    }

    fn all_reduce_f64(&mut self, buf: &mut [f64], op: ReduceOp) -> Result<()> {
        self.reduce(Kind::AllReduceF64, buf, op)
    }

    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<()> {
        check_root("broadcast", root, self.place.world_size)?;
        self.collective(
            Kind::Broadcast,
            buf.len(),
            root as u64,
            || (),
            |links, place, header| algo::broadcast_slice(links, place, header, buf, root),
        )
    }

    fn broadcast_bytes(&mut self, buf: &mut Vec<u8>, root: usize) -> Result<()> {
        check_root("broadcast_bytes", root, self.place.world_size)?;
        let len = buf.len();
        self.collective(
            Kind::BroadcastBytes,
            len,
            root as u64,
            || (),
            |links, place, header| algo::broadcast(links, place, header, buf, root),
        )
    }

    fn all_gather_bytes(&mut self, local: &[u8]) -> Result<Vec<Vec<u8>>> {
        let alone = || vec![local.to_vec()];
        self.collective(Kind::AllGatherBytes, local.len(), 0, alone, |links, place, header| {
            algo::all_gather_bytes(links, place, header, local)
        })
    }

    fn barrier(&mut self) -> Result<()> {
        // A one-element sum needs every rank's contribution before any rank can finish.
        let mut token = [0f32; 1];
        self.collective(
            Kind::Barrier,
            1,
            0,
            || (),
            |links, place, header| {
                algo::all_reduce(links, place, header, &mut token, ReduceOp::Sum)
            },
        )
    }
}

/// Checks `TcpRing::connect`'s arguments.
fn validate(rank: usize, world_size: usize, timeout: Duration) -> Result<()> {
    let invalid = |detail: String| CommError::InvalidArgument { op: "TcpRing::connect", detail };
    if world_size == 0 {
        return Err(invalid("world_size must be at least 1".into()));
    }
    if rank >= world_size {
        return Err(invalid(format!("rank {rank} is not below world_size {world_size}")));
    }
    if timeout.is_zero() {
        return Err(invalid("the timeout must be positive".into()));
    }
    Ok(())
}
