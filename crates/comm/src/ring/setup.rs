//! Building the ring: each rank listens on an ephemeral port, publishes its address in the
//! store, connects to rank + 1 and accepts rank - 1, and both ends check a hello message.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::error::{CommError, Result};
use crate::store::StoreClient;

/// Requested socket buffer size, so a whole sub-chunk or more is in flight per link. The kernel
/// may clamp it (Linux: `net.core.wmem_max` / `rmem_max`).
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Opens every hello, so a stray connection to a ring port is recognised and dropped.
const HELLO_MAGIC: u32 = 0x5354_5247; // "STRG"

/// The longest pause between two attempts to connect or accept.
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// A rank's connected ring sockets.
pub(crate) struct Connected {
    /// To rank + 1.
    pub send: TcpStream,
    /// From rank - 1.
    pub recv: TcpStream,
}

/// What one rank needs to build its links.
pub(crate) struct Plan<'a> {
    pub store: &'a StoreClient,
    pub rank: usize,
    pub world_size: usize,
    pub bind_host: &'a str,
    pub timeout: Duration,
}

impl Plan<'_> {
    fn next(&self) -> usize {
        (self.rank + 1) % self.world_size
    }

    fn prev(&self) -> usize {
        (self.rank + self.world_size - 1) % self.world_size
    }

    fn timeout_err(&self, missing: Vec<usize>) -> CommError {
        CommError::Timeout {
            collective: "connect",
            seq: 0,
            rank: self.rank,
            missing,
            waited: self.timeout,
        }
    }
}

/// Connects this rank to its neighbours within `plan.timeout`.
pub(crate) fn connect(plan: &Plan<'_>) -> Result<Connected> {
    let deadline = Instant::now() + plan.timeout;

    // Each rank counts its own rings, so the n-th ring of every rank shares a generation and a
    // later ring never reads an earlier one's addresses.
    let generation = plan.store.add(&format!("ring/generation/{}", plan.rank), 1)?;
    let key = |rank: usize| format!("ring/{generation}/addr/{rank}");

    let listener = listen(plan)?;
    let advertised = advertised_addr(&listener, plan.store)?;
    plan.store.set(&key(plan.rank), advertised.to_string().as_bytes())?;

    let next_addr = match plan.store.get(&key(plan.next()), remaining(deadline)) {
        Ok(bytes) => parse_addr(&bytes, plan.next())?,
        Err(CommError::KeyTimeout { .. }) => {
            return Err(plan.timeout_err(unpublished(plan.store, plan.world_size, &key)));
        }
        Err(e) => return Err(e),
    };
    let send = connect_next(plan, next_addr, generation, deadline)?;
    let recv = accept_prev(plan, &listener, generation, deadline)?;

    configure(&send, plan.timeout)
        .and_then(|()| configure(&recv, plan.timeout))
        .map_err(|e| CommError::io(format!("configuring rank {}'s ring sockets", plan.rank), e))?;
    Ok(Connected { send, recv })
}

/// Binds a listener on an ephemeral port of `bind_host`, with large buffers set before listen
/// so accepted sockets inherit them.
fn listen(plan: &Plan<'_>) -> Result<TcpListener> {
    let bind_err = |source: io::Error| CommError::Bind {
        what: "ring listener",
        addr: format!("{}:0", plan.bind_host),
        source,
    };
    let ip: IpAddr = plan.bind_host.parse().map_err(|_| CommError::InvalidArgument {
        op: "TcpRing::connect",
        detail: format!("bind_host `{}` is not an IP address", plan.bind_host),
    })?;
    let addr = SocketAddr::new(ip, 0);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(bind_err)?;
    set_buffers(&socket).map_err(bind_err)?;
    socket.bind(&addr.into()).map_err(bind_err)?;
    socket.listen(128).map_err(bind_err)?;
    socket.set_nonblocking(true).map_err(bind_err)?;
    Ok(socket.into())
}

/// The address peers should dial: the listener's, with an unspecified IP (`0.0.0.0`) replaced
/// by the interface this host reaches the store from.
fn advertised_addr(listener: &TcpListener, store: &StoreClient) -> Result<SocketAddr> {
    let mut addr =
        listener.local_addr().map_err(|e| CommError::io("reading the ring listener address", e))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(store.local_ip());
    }
    Ok(addr)
}

fn parse_addr(bytes: &[u8], rank: usize) -> Result<SocketAddr> {
    let text = String::from_utf8_lossy(bytes);
    text.parse().map_err(|_| CommError::Protocol {
        context: format!("ring address of rank {rank} in the store"),
        detail: format!("`{text}` is not a socket address"),
    })
}

/// The ranks whose address key is absent; a store error leaves the list empty.
fn unpublished(
    store: &StoreClient,
    world_size: usize,
    key: &dyn Fn(usize) -> String,
) -> Vec<usize> {
    (0..world_size).filter(|&rank| matches!(store.check(&[&key(rank)]), Ok(false))).collect()
}

/// Connects to the next rank, retrying refused attempts, and sends the hello.
fn connect_next(
    plan: &Plan<'_>,
    addr: SocketAddr,
    generation: i64,
    deadline: Instant,
) -> Result<TcpStream> {
    let mut pause = Duration::from_millis(1);
    let stream = loop {
        let left = remaining(deadline);
        let attempt = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .and_then(|socket| {
                set_buffers(&socket)?;
                socket.connect_timeout(&addr.into(), left.max(Duration::from_millis(1)))?;
                Ok(socket)
            });
        match attempt {
            Ok(socket) => break TcpStream::from(socket),
            Err(_) if left.is_zero() => return Err(plan.timeout_err(vec![plan.next()])),
            Err(_) => {
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    };

    let mut hello = Vec::with_capacity(16);
    hello.extend_from_slice(&HELLO_MAGIC.to_le_bytes());
    hello.extend_from_slice(&(generation as u64).to_le_bytes());
    hello.extend_from_slice(&(plan.rank as u32).to_le_bytes());
    let mut stream = stream;
    stream
        .set_write_timeout(Some(remaining(deadline).max(Duration::from_millis(1))))
        .and_then(|()| stream.write_all(&hello))
        .map_err(|e| CommError::io(format!("sending the ring hello to rank {}", plan.next()), e))?;
    Ok(stream)
}

/// Accepts connections until the previous rank's hello arrives; strays are dropped.
fn accept_prev(
    plan: &Plan<'_>,
    listener: &TcpListener,
    generation: i64,
    deadline: Instant,
) -> Result<TcpStream> {
    let mut pause = Duration::from_millis(1);
    loop {
        let left = remaining(deadline);
        match listener.accept() {
            Ok((stream, _)) => {
                if let Ok(true) = read_hello(&stream, plan.prev(), generation, left) {
                    return Ok(stream);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if left.is_zero() {
                    return Err(plan.timeout_err(vec![plan.prev()]));
                }
                // No accept with a deadline in std: sleep briefly, growing, instead of spinning.
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(MAX_PAUSE);
            }
            Err(e) => {
                let context = format!("rank {} accepting rank {}", plan.rank, plan.prev());
                return Err(CommError::io(context, e));
            }
        }
    }
}

/// Reads a hello and says whether it is `prev`'s for this generation.
fn read_hello(
    stream: &TcpStream,
    prev: usize,
    generation: i64,
    left: Duration,
) -> io::Result<bool> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
    let mut hello = [0u8; 16];
    (&*stream).read_exact(&mut hello)?;
    let word = |at: usize, len: usize| {
        let mut bytes = [0u8; 8];
        bytes[..len].copy_from_slice(&hello[at..at + len]);
        u64::from_le_bytes(bytes)
    };
    Ok(word(0, 4) == u64::from(HELLO_MAGIC)
        && word(4, 8) == generation as u64
        && word(12, 4) == prev as u64)
}

/// Sets the link options: no Nagle delay, large buffers, and `timeout` on every read and write.
fn configure(stream: &TcpStream, timeout: Duration) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    set_buffers(&SockRef::from(stream))
}

fn set_buffers(socket: &Socket) -> io::Result<()> {
    socket.set_send_buffer_size(SOCKET_BUFFER_BYTES)?;
    socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES)
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}
