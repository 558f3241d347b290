//! Joining the process group a launcher set up: reading `RANK`, `WORLD_SIZE`, `MASTER_ADDR`
//! and `MASTER_PORT`, connecting to the store and building the communicator.

use std::time::Duration;

use crate::communicator::{Communicator, SingleProcess};
use crate::error::{CommError, Result};
use crate::ring::{RingOptions, TcpRing};
use crate::store::StoreClient;

/// The variables `launcher run` gives every worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchEnv {
    /// `RANK`: this worker's global rank (0 when unset in a world of one).
    pub rank: usize,
    /// `WORLD_SIZE`: the number of workers.
    pub world_size: usize,
    /// `LOCAL_RANK`: the rank on this node (defaults to `rank`).
    pub local_rank: usize,
    /// `LOCAL_WORLD_SIZE`: the workers on this node (defaults to `world_size`).
    pub local_world_size: usize,
    /// `MASTER_ADDR:MASTER_PORT`, the store's address; `None` only in a world of one started
    /// without a launcher.
    pub master: Option<String>,
}

impl LaunchEnv {
    /// Reads the launcher's variables from the process environment.
    ///
    /// # Errors
    ///
    /// [`CommError::Env`] naming the first variable that is missing or malformed, and saying
    /// that workers are started by `launcher run`.
    pub fn from_env() -> Result<LaunchEnv> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup` (for tests and for launchers that pass a map).
    ///
    /// # Errors
    ///
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<LaunchEnv> {
        let world_size = parse(&lookup, "WORLD_SIZE")?
            .ok_or(CommError::Env { var: "WORLD_SIZE", problem: "is not set".into() })?;
        if world_size == 0 {
            return Err(CommError::Env {
                var: "WORLD_SIZE",
                problem: "= 0, must be at least 1".into(),
            });
        }
        let master_addr = lookup("MASTER_ADDR").filter(|addr| !addr.is_empty());
        let alone = world_size == 1 && master_addr.is_none();

        let rank = match parse(&lookup, "RANK")? {
            Some(rank) => rank,
            None if alone => 0,
            None => return Err(CommError::Env { var: "RANK", problem: "is not set".into() }),
        };
        if rank >= world_size {
            let problem = format!("= {rank} is not below WORLD_SIZE = {world_size}");
            return Err(CommError::Env { var: "RANK", problem });
        }

        let master = match master_addr {
            None if alone => None,
            None => {
                return Err(CommError::Env { var: "MASTER_ADDR", problem: "is not set".into() })
            }
            Some(host) => {
                let port = parse_port(&lookup)?;
                Some(format_host_port(&host, port))
            }
        };

        Ok(LaunchEnv {
            rank,
            world_size,
            local_rank: parse(&lookup, "LOCAL_RANK")?.unwrap_or(rank),
            local_world_size: parse(&lookup, "LOCAL_WORLD_SIZE")?.unwrap_or(world_size),
            master,
        })
    }
}

/// A worker's membership in the job: its communicator, and the store for everything else
/// (heartbeats, the abort flag, NCCL ids).
pub struct ProcessGroup {
    /// The collectives: a [`TcpRing`], or [`SingleProcess`] in a world of one.
    pub comm: Box<dyn Communicator>,
    /// The store connection; `None` in a world of one started without a launcher.
    pub store: Option<StoreClient>,
    /// The variables the group was built from.
    pub env: LaunchEnv,
}

impl ProcessGroup {
    /// Builds the group from the launcher's variables (see [`init_from_env`]).
    ///
    /// # Errors
    ///
    /// As [`init_from_env`].
    pub fn from_env(timeout: Duration) -> Result<ProcessGroup> {
        Self::from_launch_env(LaunchEnv::from_env()?, timeout)
    }

    /// Builds the group described by `env`: connects to the store within `timeout` and joins
    /// a [`TcpRing`] whose collectives time out after `timeout` without progress.
    ///
    /// # Errors
    ///
    /// As [`init_from_env`].
    pub fn from_launch_env(env: LaunchEnv, timeout: Duration) -> Result<ProcessGroup> {
        let Some(master) = env.master.clone() else {
            return Ok(ProcessGroup { comm: Box::new(SingleProcess), store: None, env });
        };
        let store = StoreClient::connect(master.as_str(), timeout)?;
        let opts = RingOptions::for_store(&store, timeout);
        let ring = TcpRing::connect(&store, env.rank, env.world_size, opts)?;
        Ok(ProcessGroup { comm: Box::new(ring), store: Some(store), env })
    }
}

/// Joins the job a launcher started and returns its communicator.
///
/// Reads `RANK`, `WORLD_SIZE`, `MASTER_ADDR` and `MASTER_PORT`; connects to the store at
/// `MASTER_ADDR:MASTER_PORT` within `timeout` and builds a [`TcpRing`] listening on the
/// interface that reaches the store. With `WORLD_SIZE=1` and no `MASTER_ADDR` it returns
/// [`SingleProcess`]. Use [`ProcessGroup::from_env`] to keep the store connection too.
///
/// # Errors
///
/// [`CommError::Env`] naming a missing or malformed variable; [`CommError::Connect`] if the
/// store cannot be reached; [`CommError::Timeout`] naming the ranks that never joined.
pub fn init_from_env(timeout: Duration) -> Result<Box<dyn Communicator>> {
    Ok(ProcessGroup::from_env(timeout)?.comm)
}

/// Reads an optional non-negative integer variable.
fn parse(lookup: &impl Fn(&str) -> Option<String>, var: &'static str) -> Result<Option<usize>> {
    match lookup(var) {
        None => Ok(None),
        Some(text) => text.trim().parse().map(Some).map_err(|_| CommError::Env {
            var,
            problem: format!("= {text:?} is not a non-negative integer"),
        }),
    }
}

fn parse_port(lookup: &impl Fn(&str) -> Option<String>) -> Result<u16> {
    let text = lookup("MASTER_PORT")
        .ok_or(CommError::Env { var: "MASTER_PORT", problem: "is not set".into() })?;
    match text.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(CommError::Env {
            var: "MASTER_PORT",
            problem: format!("= {text:?} is not a port number (1-65535)"),
        }),
    }
}

/// `host:port`, with an IPv6 literal bracketed.
fn format_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
