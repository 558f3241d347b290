//! The worker side: join the process group the launcher set up, then train.
//!
//! A worker prints its error once, as `error: ...` on stderr, and exits with one of:
//!
//! - `0`: training finished;
//! - `1` ([`EXIT_FAILURE`]): it failed on its own (bad data, an unwritable file, divergence, ...);
//! - `3` ([`EXIT_PEER_FAILED`]): a collective failed because of a peer (it closed its
//!   connection, did not answer in time, or broke the ring earlier), so this worker is likely a
//!   victim of another worker's failure. The launcher names a worker with any other failure
//!   before one that exited with this code.

use crate::JobArgs;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;
use strata::comm::{CommError, ProcessGroup};
use strata::train::{Config, ProgressMode, TrainError};

/// Exit code of a worker that failed on its own.
pub const EXIT_FAILURE: u8 = 1;

/// Exit code of a worker whose communication failed because of a peer (closed connection, peer
/// timeout, broken ring): the cause is most likely another worker's failure.
pub const EXIT_PEER_FAILED: u8 = 3;

/// Seconds a worker waits for its peers (rendezvous) and for any one collective to progress.
const DEFAULT_COMM_TIMEOUT_S: u64 = 600;

pub fn run(args: JobArgs) -> ExitCode {
    match train(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if caused_by_peer(e.as_ref()) { EXIT_PEER_FAILED } else { EXIT_FAILURE })
        }
    }
}

/// Whether `err` is a communication failure caused by a peer rather than by this worker.
fn caused_by_peer(err: &(dyn std::error::Error + 'static)) -> bool {
    let comm = match err.downcast_ref::<TrainError>() {
        Some(TrainError::Comm(c)) => c,
        Some(_) => return false,
        None => match err.downcast_ref::<CommError>() {
            Some(c) => c,
            None => return false,
        },
    };
    matches!(
        comm,
        CommError::PeerClosed { .. }
            | CommError::Timeout { .. }
            | CommError::KeyTimeout { .. }
            | CommError::Broken { .. }
    )
}

fn train(args: &JobArgs) -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cfg = Config::load(&args.config, &args.overrides)?;
    let threads = match cfg.threads {
        0 => env_usize("STRATA_THREADS").unwrap_or(1),
        n => n,
    };
    rayon::ThreadPoolBuilder::new().num_threads(threads.max(1)).build_global()?;

    let timeout = Duration::from_secs(
        env_usize("STRATA_COMM_TIMEOUT").map_or(DEFAULT_COMM_TIMEOUT_S, |s| s as u64),
    );
    let mut group = ProcessGroup::from_env(timeout)?;
    let progress = match std::env::var("STRATA_PROGRESS").as_deref() {
        Ok("bar") => ProgressMode::Bar,
        Ok("quiet") => ProgressMode::Quiet,
        _ => ProgressMode::Lines,
    };
    strata::train::train(&cfg, group.comm.as_mut(), progress)?;
    Ok(())
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}
