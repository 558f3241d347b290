//! Shared test helpers: run one closure per rank on its own thread, each rank with its own
//! store client and ring, against one in-process store.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use strata_comm::{Result, RingOptions, StoreClient, StoreServer, TcpRing};

/// The timeout of rings that are expected to work: long enough for a loaded 2-core machine.
pub const WORKING_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts a store on a free loopback port.
pub fn store_server() -> StoreServer {
    StoreServer::start("127.0.0.1:0".parse().unwrap()).expect("store starts")
}

/// Connects rank `rank` of `world_size` to a ring through the store at `addr`.
pub fn join(
    addr: SocketAddr,
    rank: usize,
    world_size: usize,
    timeout: Duration,
) -> Result<TcpRing> {
    let store = StoreClient::connect(addr, Duration::from_secs(5))?;
    let opts = RingOptions { timeout, ..RingOptions::default() };
    TcpRing::connect(&store, rank, world_size, opts)
}

/// Runs `body` on every rank of a fresh ring of `world_size` threads; returns the results by
/// rank. Panics (failing the test) if any rank fails to connect.
pub fn on_ring<R, F>(world_size: usize, body: F) -> Vec<R>
where
    R: Send + 'static,
    F: Fn(&mut TcpRing) -> R + Send + Sync + 'static,
{
    let server = store_server();
    let addr = server.local_addr();
    let body = Arc::new(body);
    let threads: Vec<_> = (0..world_size)
        .map(|rank| {
            let body = body.clone();
            std::thread::spawn(move || {
                let mut ring = join(addr, rank, world_size, WORKING_TIMEOUT)
                    .unwrap_or_else(|e| panic!("rank {rank} failed to join: {e}"));
                body(&mut ring)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("rank thread panicked")).collect()
}

/// Asserts two f32 slices are equal bit for bit, naming the first differing element.
pub fn assert_bits_eq(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: element {i} is {} but {} was expected", got[i], want[i]);
    }
}
