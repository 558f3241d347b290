//! The worker side: join the process group the launcher set up, then train.

use crate::JobArgs;
use std::process::ExitCode;
use std::time::Duration;
use strata::comm::ProcessGroup;
use strata::train::{Config, ProgressMode};

/// Seconds a worker waits for its peers (rendezvous) and for any one collective to progress.
const DEFAULT_COMM_TIMEOUT_S: u64 = 600;

pub fn run(args: JobArgs) -> ExitCode {
    let rank = std::env::var("RANK").unwrap_or_else(|_| "?".into());
    match train(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(rank = %rank, "worker failed: {e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn train(args: &JobArgs) -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
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
