//! The store server: a key-value map served over TCP by a tokio runtime on its own thread.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};

use super::wire::{check_frame_len, encode_frame, Request, Response};
use crate::error::{CommError, Result};

/// The longest a `get` may wait on the server (30 days), so deadline arithmetic cannot overflow.
const MAX_WAIT: Duration = Duration::from_secs(30 * 24 * 3600);

/// A running rendezvous store: a TCP key-value service on a background thread.
///
/// It is hosted by the node-0 launcher (or by a test) and stops when dropped: the listener
/// closes and every client connection is cut.
///
/// ```
/// use strata_comm::{StoreClient, StoreServer};
/// use std::time::Duration;
///
/// let server = StoreServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
/// let client = StoreClient::connect(server.local_addr(), Duration::from_secs(5)).unwrap();
/// client.set("greeting", b"hi").unwrap();
/// assert_eq!(client.get("greeting", Duration::from_secs(1)).unwrap(), b"hi");
/// ```
pub struct StoreServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl StoreServer {
    /// Binds `addr` (port 0 picks a free port) and serves on a new background thread.
    ///
    /// # Errors
    ///
    /// [`CommError::PortInUse`] when the port is taken (the message suggests `--master-port`),
    /// [`CommError::Bind`] for other bind failures, [`CommError::Io`] if the runtime or thread
    /// cannot be created.
    pub fn start(addr: SocketAddr) -> Result<StoreServer> {
        let listener = std::net::TcpListener::bind(addr).map_err(|source| {
            if source.kind() == io::ErrorKind::AddrInUse {
                CommError::PortInUse { addr, port: addr.port() }
            } else {
                CommError::Bind { what: "rendezvous store", addr: addr.to_string(), source }
            }
        })?;
        let local = listener
            .local_addr()
            .map_err(|e| CommError::io("reading the store's bound address", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| CommError::io("making the store listener non-blocking", e))?;

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CommError::io("creating the store's runtime", e))?;
        let listener = {
            let _context = runtime.enter();
            TcpListener::from_std(listener)
                .map_err(|e| CommError::io("registering the store listener", e))?
        };

        let (shutdown, stop) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("strata-store".into())
            .spawn(move || runtime.block_on(serve(listener, stop)))
            .map_err(|e| CommError::io("spawning the store thread", e))?;

        Ok(StoreServer { addr: local, shutdown: Some(shutdown), thread: Some(thread) })
    }

    /// The address the store listens on (with the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The receiver is gone only if the thread already ended; nothing is left to stop.
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic on the store thread has nowhere to go from a destructor.
            let _ = thread.join();
        }
    }
}

/// The map and the wake-up for waiting `get`s, shared by every connection.
#[derive(Default)]
struct State {
    map: Mutex<HashMap<String, Vec<u8>>>,
    changed: Notify,
}

impl State {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Vec<u8>>> {
        // No code panics while holding the lock, so a poisoned map is still consistent.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Accepts connections until `stop` fires; dropping the runtime afterwards ends every
/// connection task.
async fn serve(listener: TcpListener, mut stop: oneshot::Receiver<()>) {
    let state = Arc::new(State::default());
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Latency matters more than throughput here; a failure only costs speed.
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_connection(stream, state.clone()));
                }
                // Out of descriptors or a connection reset before accept: pause, then go on.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

/// Answers one client's requests in order until it disconnects or sends garbage.
async fn serve_connection(mut stream: TcpStream, state: Arc<State>) {
    loop {
        let Ok(len) = stream.read_u32_le().await else {
            return;
        };
        let len = match check_frame_len(len) {
            Ok(len) => len,
            Err(detail) => {
                // The oversized body is not read, so the stream is out of step: answer, close.
                let _ = reply(&mut stream, &Response::Refused(detail)).await;
                return;
            }
        };
        let mut body = vec![0u8; len];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }

        let response = match postcard::from_bytes::<Request>(&body) {
            Ok(request) => handle(&state, request).await,
            Err(e) => Response::Refused(format!("undecodable request: {e}")),
        };
        if reply(&mut stream, &response).await.is_err() {
            return;
        }
    }
}

/// Writes one response frame.
async fn reply(stream: &mut TcpStream, response: &Response) -> io::Result<()> {
    let frame = encode_frame(response)
        .map_err(|detail| io::Error::new(io::ErrorKind::InvalidData, detail))?;
    stream.write_all(&frame).await
}

/// Carries out one request against the shared map.
async fn handle(state: &State, request: Request) -> Response {
    match request {
        Request::Set { key, value } => {
            state.map().insert(key, value);
            state.changed.notify_waiters();
            Response::Done
        }
        Request::Get { key, wait_ms } => {
            let wait = Duration::from_millis(wait_ms).min(MAX_WAIT);
            match wait_for(state, &key, wait).await {
                Some(value) => Response::Value(value),
                None => Response::NotYet,
            }
        }
        Request::Add { key, delta } => add(state, key, delta),
        Request::Delete { key } => Response::Deleted(state.map().remove(&key).is_some()),
        Request::Check { keys } => {
            let map = state.map();
            Response::Present(keys.iter().all(|key| map.contains_key(key)))
        }
    }
}

/// Returns the value of `key` once it exists, or `None` after `wait`.
async fn wait_for(state: &State, key: &str, wait: Duration) -> Option<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Register for the wake-up before looking, so a `set` in between is not missed.
        let changed = state.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();

        if let Some(value) = state.map().get(key) {
            return Some(value.clone());
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return None;
        }
    }
}

/// Adds `delta` to the counter `key`, stored as decimal text like any other value.
fn add(state: &State, key: String, delta: i64) -> Response {
    let mut map = state.map();
    let current = match map.get(&key) {
        None => 0,
        Some(bytes) => match std::str::from_utf8(bytes).ok().and_then(|s| s.parse::<i64>().ok()) {
            Some(value) => value,
            None => return Response::Refused(format!("key `{key}` holds a non-counter value")),
        },
    };
    let Some(next) = current.checked_add(delta) else {
        return Response::Refused(format!("counter `{key}` would overflow ({current} + {delta})"));
    };
    map.insert(key, next.to_string().into_bytes());
    drop(map);
    state.changed.notify_waiters();
    Response::Counter(next)
}
