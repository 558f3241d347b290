//! A rank's two ring links: a send queue drained by a sender thread towards the next rank, and
//! the blocking receive stream from the previous rank, plus the header that opens a collective.
//!
//! Sending on its own thread is what lets a rank write to `next` while it reads from `prev`:
//! with both on one thread, every rank could block in a write that no one reads.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::element::Wire;

/// Bytes per pipelined message: small enough that reducing one overlaps sending the next,
/// large enough that per-message costs vanish.
pub(crate) const SUB_CHUNK_BYTES: usize = 256 << 10;

/// How long dropping a ring waits for queued messages to be written.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Spare send buffers kept between collectives.
const MAX_SPARE_BUFFERS: usize = 8;

/// A failure on one of the links, before it is given the collective's context.
#[derive(Debug)]
pub(crate) enum LinkError {
    /// Reading from the previous rank failed.
    Recv(io::Error),
    /// Writing to the next rank failed.
    Send(io::Error),
    /// The previous rank opened a different collective.
    Mismatch { expected: Header, got: Header },
}

/// `Result` of link operations.
pub(crate) type LinkResult<T> = std::result::Result<T, LinkError>;

/// What every collective sends first, so that ranks out of step are caught at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// Which collective (see [`Kind`]).
    pub kind: Kind,
    /// Its sequence number on the sender.
    pub seq: u64,
    /// Elements (or bytes) in the buffer; unchecked where ranks may differ.
    pub len: u64,
    /// The reduction op's code, or the root.
    pub arg: u64,
}

/// The collectives, as carried in a [`Header`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    AllReduceF32 = 1,
    AllReduceF64 = 2,
    Broadcast = 3,
    BroadcastBytes = 4,
    AllGatherBytes = 5,
    Barrier = 6,
}

impl Kind {
    /// The user-facing name of the collective.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::AllReduceF32 | Kind::AllReduceF64 => "all_reduce",
            Kind::Broadcast => "broadcast",
            Kind::BroadcastBytes => "broadcast_bytes",
            Kind::AllGatherBytes => "all_gather_bytes",
            Kind::Barrier => "barrier",
        }
    }

    fn from_code(code: u8) -> Option<Kind> {
        [
            Kind::AllReduceF32,
            Kind::AllReduceF64,
            Kind::Broadcast,
            Kind::BroadcastBytes,
            Kind::AllGatherBytes,
            Kind::Barrier,
        ]
        .into_iter()
        .find(|kind| *kind as u8 == code)
    }
}

impl Header {
    const BYTES: usize = 25;

    fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        out.push(self.kind as u8);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.arg.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Option<Header> {
        let word = |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
        Some(Header {
            kind: Kind::from_code(*bytes.first()?)?,
            seq: word(1)?,
            len: word(9)?,
            arg: word(17)?,
        })
    }

    /// A readable description, e.g. `all_reduce #7 (len 1000, arg 0)`.
    pub(crate) fn describe(&self) -> String {
        format!("{} #{} (len {}, arg {})", self.kind.name(), self.seq, self.len, self.arg)
    }
}

/// The two links of one rank.
pub(crate) struct Links {
    recv: TcpStream,
    recv_buf: Vec<u8>,
    sender: SendQueue,
}

impl Links {
    /// Wraps the connected streams; `send` goes to the next rank, `recv` comes from the previous.
    pub(crate) fn new(send: TcpStream, recv: TcpStream) -> io::Result<Links> {
        Ok(Links { recv, recv_buf: Vec::new(), sender: SendQueue::spawn(send)? })
    }

    /// Queues `header` for the next rank.
    pub(crate) fn send_header(&mut self, header: &Header) -> LinkResult<()> {
        let mut bytes = self.sender.buffer();
        header.encode(&mut bytes);
        self.sender.push(bytes).map_err(LinkError::Send)
    }

    /// Reads the previous rank's header and checks it against `expected`; `check_len` is false
    /// where ranks may hold different lengths. Returns the header received.
    pub(crate) fn expect_header(
        &mut self,
        expected: &Header,
        check_len: bool,
    ) -> LinkResult<Header> {
        let bytes = self.recv_exact(Header::BYTES)?;
        let got = Header::decode(bytes).ok_or_else(|| LinkError::Recv(garbled(bytes)))?;
        let same = got.kind == expected.kind
            && got.seq == expected.seq
            && got.arg == expected.arg
            && (!check_len || got.len == expected.len);
        if same {
            Ok(got)
        } else {
            Err(LinkError::Mismatch { expected: *expected, got })
        }
    }

    /// Queues `values` for the next rank, in pipelined sub-chunks.
    pub(crate) fn send_values<T: Wire>(&mut self, values: &[T]) -> LinkResult<()> {
        for piece in values.chunks(SUB_CHUNK_BYTES / T::SIZE) {
            let mut bytes = self.sender.buffer();
            T::encode(piece, &mut bytes);
            self.sender.push(bytes).map_err(LinkError::Send)?;
        }
        Ok(())
    }

    /// Queues a `u64` for the next rank.
    pub(crate) fn send_u64(&mut self, value: u64) -> LinkResult<()> {
        let mut bytes = self.sender.buffer();
        bytes.clear();
        bytes.extend_from_slice(&value.to_le_bytes());
        self.sender.push(bytes).map_err(LinkError::Send)
    }

    /// Reads a `u64` from the previous rank.
    pub(crate) fn recv_u64(&mut self) -> LinkResult<u64> {
        let bytes = self.recv_exact(8)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(word))
    }

    /// Reads exactly `len` bytes from the previous rank into an internal buffer.
    pub(crate) fn recv_exact(&mut self, len: usize) -> LinkResult<&[u8]> {
        self.recv_buf.resize(len, 0);
        self.recv.read_exact(&mut self.recv_buf).map_err(LinkError::Recv)?;
        Ok(&self.recv_buf)
    }

    /// Waits until at most `limit` queued messages are still unwritten. Only safe where the
    /// next rank's reads do not depend on this rank's (a chain, not a cycle), or it deadlocks.
    pub(crate) fn drain_to(&mut self, limit: usize) -> LinkResult<()> {
        self.sender.drain_to(limit).map_err(LinkError::Send)
    }

    /// Waits until everything queued has been written to the next rank.
    pub(crate) fn flush(&mut self) -> LinkResult<()> {
        self.sender.drain_to(0).map_err(LinkError::Send)?;
        self.sender.spare.truncate(MAX_SPARE_BUFFERS);
        Ok(())
    }
}

fn garbled(bytes: &[u8]) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("garbled collective header {bytes:?}"))
}

/// Buffers handed to a sender thread, written in order; written buffers come back for reuse.
struct SendQueue {
    jobs: Option<mpsc::Sender<Vec<u8>>>,
    done: mpsc::Receiver<io::Result<Vec<u8>>>,
    spare: Vec<Vec<u8>>,
    in_flight: usize,
    stream: TcpStream,
    thread: Option<JoinHandle<()>>,
}

impl SendQueue {
    /// Starts the sender thread that owns writing to `stream`.
    fn spawn(stream: TcpStream) -> io::Result<SendQueue> {
        let (jobs, inbox) = mpsc::channel::<Vec<u8>>();
        let (outbox, done) = mpsc::channel();
        let mut writer = stream.try_clone()?;
        let thread =
            std::thread::Builder::new().name("strata-ring-send".into()).spawn(move || {
                for bytes in inbox {
                    let written = writer.write_all(&bytes).map(|()| bytes);
                    let failed = written.is_err();
                    if outbox.send(written).is_err() || failed {
                        return;
                    }
                }
            })?;
        Ok(SendQueue {
            jobs: Some(jobs),
            done,
            spare: Vec::new(),
            in_flight: 0,
            stream,
            thread: Some(thread),
        })
    }

    /// An empty buffer to fill, reused when one is free.
    fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// Hands `bytes` to the sender thread; reports an earlier write's failure, if any.
    fn push(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        while let Ok(result) = self.done.try_recv() {
            self.finished(result)?;
        }
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        jobs.send(bytes).map_err(|_| self.failure())?;
        self.in_flight += 1;
        Ok(())
    }

    /// Blocks until at most `limit` pushed buffers are unwritten.
    fn drain_to(&mut self, limit: usize) -> io::Result<()> {
        while self.in_flight > limit {
            let result = self.done.recv().map_err(|_| stopped())?;
            self.finished(result)?;
        }
        Ok(())
    }

    /// Accounts for one buffer the sender thread is done with.
    fn finished(&mut self, result: io::Result<Vec<u8>>) -> io::Result<()> {
        self.in_flight -= 1;
        self.spare.push(result?);
        Ok(())
    }

    /// The error of a sender thread that stopped: its own, if it reported one.
    fn failure(&mut self) -> io::Error {
        match self.done.try_recv() {
            Ok(Err(e)) => e,
            _ => stopped(),
        }
    }
}

impl Drop for SendQueue {
    fn drop(&mut self) {
        // Closing the channel ends the thread once the queue is written. Give it a moment, so
        // the peer reads our last message (say, the header that shows it a mismatch), then shut
        // the socket, which ends a write blocked on a peer that stopped reading.
        self.jobs = None;
        let deadline = Instant::now() + DRAIN_GRACE;
        while self.in_flight > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.done.recv_timeout(left) {
                Ok(Ok(_)) => self.in_flight -= 1,
                _ => break,
            }
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the ring's sender thread stopped")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_garbage_is_rejected() {
        let header = Header { kind: Kind::BroadcastBytes, seq: 7, len: 1 << 40, arg: 3 };
        let mut bytes = Vec::new();
        header.encode(&mut bytes);
        assert_eq!(bytes.len(), Header::BYTES);
        assert_eq!(Header::decode(&bytes), Some(header));
        assert_eq!(header.describe(), "broadcast_bytes #7 (len 1099511627776, arg 3)");

        bytes[0] = 0; // no collective has code 0
        assert_eq!(Header::decode(&bytes), None);
    }
}
