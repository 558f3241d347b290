//! The rendezvous store: a small TCP key-value service (set, get with wait, add, delete, check).
//!
//! The node-0 launcher hosts a [`StoreServer`]; every worker opens a [`StoreClient`] to
//! `MASTER_ADDR:MASTER_PORT`. Workers exchange ring addresses through it, and later the NCCL
//! unique id, heartbeats and the abort flag: all of it fits a key-value API.

mod client;
mod server;
mod wire;

pub use client::StoreClient;
pub use server::StoreServer;
