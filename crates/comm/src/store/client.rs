//! The store client: blocking std TCP, one request at a time, usable from several threads.

use std::fmt::Display;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::wire::{encode_frame, read_frame, write_frame, Request, Response};
use crate::error::{CommError, Result};

/// The longest pause between two connection attempts.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// The shortest time a request's round trip is given, whatever the connect timeout.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// What to do when the store cannot be reached.
const CONNECT_HINT: &str = "check that the launcher on node 0 is running and that MASTER_ADDR \
                            and MASTER_PORT name its host and --master-port";

/// A connection to a [`StoreServer`](super::StoreServer).
///
/// Requests are blocking round trips. The client is `Sync`: requests from several threads are
/// serialised on one connection by an internal lock, so a long [`get`](Self::get) holds up the
/// others; give a thread that must not wait (a heartbeat) its own client with
/// [`try_clone`](Self::try_clone). After an I/O error the connection is dropped and the next
/// request reconnects.
pub struct StoreClient {
    name: String,
    addr: SocketAddr,
    local_ip: IpAddr,
    request_timeout: Duration,
    stream: Mutex<Option<TcpStream>>,
}

impl StoreClient {
    /// Connects to the store at `addr` (`"host:port"` or a `SocketAddr`), retrying until
    /// `timeout` passes, since workers may start before the store listens.
    ///
    /// `timeout` also bounds each later request's round trip (at least 1 s), not counting the
    /// wait of a [`get`](Self::get).
    ///
    /// # Errors
    ///
    /// [`CommError::Connect`] naming the address and what to check, once `timeout` has passed.
    pub fn connect<A: ToSocketAddrs + Display>(addr: A, timeout: Duration) -> Result<StoreClient> {
        let name = addr.to_string();
        let (stream, addr) = connect_with_retry(&name, || addr.to_socket_addrs(), timeout)?;
        let local_ip = stream
            .local_addr()
            .map_err(|e| CommError::io(format!("reading the local address of {name}"), e))?
            .ip();
        Ok(StoreClient {
            name,
            addr,
            local_ip,
            request_timeout: timeout.max(MIN_REQUEST_TIMEOUT),
            stream: Mutex::new(Some(stream)),
        })
    }

    /// Opens a second, independent connection to the same store.
    ///
    /// # Errors
    ///
    /// [`CommError::Connect`] if the store cannot be reached within the request timeout.
    pub fn try_clone(&self) -> Result<StoreClient> {
        let stream = self.reconnect()?;
        Ok(StoreClient {
            name: self.name.clone(),
            addr: self.addr,
            local_ip: self.local_ip,
            request_timeout: self.request_timeout,
            stream: Mutex::new(Some(stream)),
        })
    }

    /// The store's address, as resolved.
    pub fn server_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The local interface address this client reaches the store from: an address other
    /// workers can reach this host at.
    pub fn local_ip(&self) -> IpAddr {
        self.local_ip
    }

    /// Stores `value` under `key`, replacing any previous value, and wakes waiting `get`s.
    ///
    /// # Errors
    ///
    /// [`CommError::Io`] if the store does not answer, [`CommError::StoreRefused`] if it refuses.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        let request = Request::Set { key: key.to_owned(), value: value.to_vec() };
        match self.round_trip(&request, Duration::ZERO)? {
            Response::Done => Ok(()),
            other => Err(self.unexpected("set", key, other)),
        }
    }

    /// Returns the value of `key`, waiting up to `timeout` for another client to set it.
    ///
    /// # Errors
    ///
    /// [`CommError::KeyTimeout`] naming the key if it is not set within `timeout`;
    /// [`CommError::Io`] if the store does not answer.
    pub fn get(&self, key: &str, timeout: Duration) -> Result<Vec<u8>> {
        let wait_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let request = Request::Get { key: key.to_owned(), wait_ms };
        match self.round_trip(&request, timeout)? {
            Response::Value(value) => Ok(value),
            Response::NotYet => Err(CommError::KeyTimeout { key: key.to_owned(), waited: timeout }),
            other => Err(self.unexpected("get", key, other)),
        }
    }

    /// Adds `delta` to the counter `key` (a missing key counts as 0) atomically and returns the
    /// new value. Counters are stored as decimal text, so `get` reads them as e.g. `b"3"`.
    ///
    /// # Errors
    ///
    /// [`CommError::StoreRefused`] if `key` holds something other than a counter or the sum
    /// overflows; [`CommError::Io`] if the store does not answer.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64> {
        let request = Request::Add { key: key.to_owned(), delta };
        match self.round_trip(&request, Duration::ZERO)? {
            Response::Counter(value) => Ok(value),
            other => Err(self.unexpected("add", key, other)),
        }
    }

    /// Removes `key`; returns whether it existed.
    ///
    /// # Errors
    ///
    /// [`CommError::Io`] if the store does not answer.
    pub fn delete(&self, key: &str) -> Result<bool> {
        let request = Request::Delete { key: key.to_owned() };
        match self.round_trip(&request, Duration::ZERO)? {
            Response::Deleted(existed) => Ok(existed),
            other => Err(self.unexpected("delete", key, other)),
        }
    }

    /// Returns whether every one of `keys` exists, without waiting.
    ///
    /// # Errors
    ///
    /// [`CommError::Io`] if the store does not answer.
    pub fn check(&self, keys: &[&str]) -> Result<bool> {
        let request = Request::Check { keys: keys.iter().map(|k| (*k).to_owned()).collect() };
        match self.round_trip(&request, Duration::ZERO)? {
            Response::Present(present) => Ok(present),
            other => Err(self.unexpected("check", &keys.join(","), other)),
        }
    }

    /// Sends one request and reads its response; `wait` is how long the server may hold it.
    fn round_trip(&self, request: &Request, wait: Duration) -> Result<Response> {
        let frame = encode_frame(request).map_err(|detail| CommError::Protocol {
            context: format!("request to the store at {}", self.name),
            detail,
        })?;

        let mut slot = self.stream.lock().unwrap_or_else(PoisonError::into_inner);
        let stream = match slot.as_mut() {
            Some(stream) => stream,
            None => slot.insert(self.reconnect()?),
        };
        let deadline = self.request_timeout.saturating_add(wait);
        let result = exchange(stream, &frame, deadline);
        if result.is_err() {
            // The stream may hold half a message: drop it and reconnect on the next request.
            *slot = None;
        }

        let body = result.map_err(|e| {
            let context = if crate::error::is_io_timeout(&e) {
                format!("the store at {} did not answer within {deadline:?}", self.name)
            } else {
                format!("talking to the store at {}", self.name)
            };
            CommError::io(context, e)
        })?;
        postcard::from_bytes(&body).map_err(|e| CommError::Protocol {
            context: format!("response from the store at {}", self.name),
            detail: e.to_string(),
        })
    }

    /// Opens a fresh connection to the already resolved address.
    fn reconnect(&self) -> Result<TcpStream> {
        let addr = self.addr;
        let (stream, _) =
            connect_with_retry(&self.name, || Ok(vec![addr].into_iter()), self.request_timeout)?;
        Ok(stream)
    }

    /// The error for a response that does not fit the request.
    fn unexpected(&self, request: &str, key: &str, response: Response) -> CommError {
        let message = match response {
            Response::Refused(reason) => reason,
            other => format!("unexpected response {other:?}"),
        };
        CommError::StoreRefused {
            addr: self.name.clone(),
            request: format!("{request} `{key}`"),
            message,
        }
    }
}

/// Writes `frame` and reads the reply's body, with `timeout` on the read.
fn exchange(stream: &mut TcpStream, frame: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(timeout))?;
    write_frame(stream, frame)?;
    read_frame(stream)
}

/// Resolves and connects, retrying with growing pauses until `timeout` has passed.
fn connect_with_retry<I: Iterator<Item = SocketAddr>>(
    name: &str,
    resolve: impl Fn() -> io::Result<I>,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr)> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        let remaining = timeout.saturating_sub(start.elapsed());
        let reason = match try_connect(&resolve, remaining) {
            Ok(connected) => return Ok(connected),
            Err(reason) => reason,
        };
        if remaining.is_zero() {
            return Err(CommError::Connect {
                what: "the rendezvous store".into(),
                addr: name.to_owned(),
                waited: start.elapsed(),
                reason,
                hint: CONNECT_HINT,
            });
        }
        std::thread::sleep(pause.min(remaining));
        pause = (pause * 2).min(MAX_RETRY_PAUSE);
    }
}

/// One attempt: resolve, then try each address in turn.
fn try_connect<I: Iterator<Item = SocketAddr>>(
    resolve: &impl Fn() -> io::Result<I>,
    remaining: Duration,
) -> std::result::Result<(TcpStream, SocketAddr), String> {
    let attempt_timeout = remaining.clamp(Duration::from_millis(10), Duration::from_secs(2));
    let mut last = String::from("the name resolved to no address");
    for addr in resolve().map_err(|e| format!("cannot resolve: {e}"))? {
        match TcpStream::connect_timeout(&addr, attempt_timeout) {
            Ok(stream) => {
                stream.set_nodelay(true).map_err(|e| e.to_string())?;
                return Ok((stream, addr));
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}
