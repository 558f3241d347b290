//! `launcher run`: spawn the workers of this node, stream their output, stop them all when one
//! fails.
//!
//! Every worker gets `RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`,
//! `MASTER_PORT` (as torchrun sets them), plus `STRATA_THREADS` (compute threads: the node's
//! cores divided by its workers, unless `--threads` or the config's `threads` says otherwise)
//! and `STRATA_PROGRESS` (`bar` when rank 0 draws a live progress bar on this terminal, else
//! `lines`). Workers die with the launcher (parent-death signal), so no orphan survives it.
//!
//! When a worker fails, the launcher waits 1.5 s for the others' exits, then stops the rest
//! (SIGTERM, then SIGKILL after 3 s) and names the likeliest cause: a worker killed by a signal,
//! else one that failed on its own (exit status 1), before one that exited with status 3, which
//! a worker uses when a collective failed because of a peer (closed connection, peer timeout,
//! broken ring). Exit codes of the launcher: 0 when every worker succeeded; 1 when a worker
//! failed or the job could not start; 128 + the signal's number when it received SIGINT (130)
//! or SIGTERM (143), as shells report a death by that signal.

use crate::worker::EXIT_PEER_FAILED;
use crate::JobArgs;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::Duration;
use strata::comm::StoreServer;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// Arguments of `launcher run`; each flag falls back to an environment variable.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Worker processes on this node.
    #[arg(long, env = "STRATA_NPROC_PER_NODE", default_value_t = 1)]
    pub nproc_per_node: usize,
    /// Nodes in the job.
    #[arg(long, env = "STRATA_NNODES", default_value_t = 1)]
    pub nnodes: usize,
    /// This node's rank among the nodes.
    #[arg(long, env = "STRATA_NODE_RANK", default_value_t = 0)]
    pub node_rank: usize,
    /// Address of node 0, where the rendezvous store runs.
    #[arg(long, env = "MASTER_ADDR", default_value = "127.0.0.1")]
    pub master_addr: String,
    /// Port of the rendezvous store; 0 picks a free one (single-node jobs only).
    #[arg(long, env = "MASTER_PORT", default_value_t = 0)]
    pub master_port: u16,
    /// Compute threads per worker; overrides the config's `threads`. 0 or unset leaves the
    /// config's value, whose default 0 means cores on this node / workers on this node.
    #[arg(long, env = "STRATA_THREADS")]
    pub threads: Option<usize>,
    /// Continue from the run's newest checkpoint (same as --set checkpoint.resume=latest).
    #[arg(long)]
    pub resume: bool,
}

pub fn run(args: RunArgs) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => match rt.block_on(supervise(args)) {
            Ok(code) => code,
            Err(msg) => {
                eprintln!("launcher: {msg}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("launcher: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn supervise(mut args: RunArgs) -> Result<ExitCode, String> {
    if args.resume {
        args.job.overrides.push("checkpoint.resume=latest".into());
    }
    // The command line wins over the config file, as with every other flag.
    if let Some(t) = args.threads.filter(|&t| t > 0) {
        args.job.overrides.push(format!("threads={t}"));
    }
    // Check the config here, so a typo fails once, before any worker starts.
    strata::train::Config::load(&args.job.config, &args.job.overrides)
        .map_err(|e| e.to_string())?;
    let n = args.nproc_per_node;
    if n == 0 || args.nnodes == 0 || args.node_rank >= args.nnodes {
        return Err(format!(
            "--nproc-per-node {n} --nnodes {} --node-rank {}: need at least one worker and \
             node rank below nnodes",
            args.nnodes, args.node_rank
        ));
    }
    if args.nnodes > 1 && args.master_port == 0 {
        return Err("multi-node jobs need --master-port (and --master-addr of node 0)".into());
    }

    // Node 0 hosts the store; it lives until the launcher returns.
    let (_store, port) = if args.node_rank == 0 {
        let bind_host = if args.nnodes > 1 { "0.0.0.0" } else { args.master_addr.as_str() };
        let addr: SocketAddr = format!("{bind_host}:{}", args.master_port)
            .parse()
            .map_err(|e| format!("--master-addr {}: not an IP address ({e})", args.master_addr))?;
        let server = StoreServer::start(addr).map_err(|e| e.to_string())?;
        let port = server.local_addr().port();
        (Some(server), port)
    } else {
        (None, args.master_port)
    };

    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let threads = args.threads.filter(|&t| t > 0).unwrap_or((cores / n).max(1));
    let bar = std::io::stderr().is_terminal();
    let world = n * args.nnodes;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"))?;

    let mut children = Vec::with_capacity(n);
    let mut streams = Vec::new();
    for local in 0..n {
        let rank = args.node_rank * n + local;
        let mut cmd = Command::new(&exe);
        cmd.arg("worker").arg(&args.job.config);
        for o in &args.job.overrides {
            cmd.arg("--set").arg(o);
        }
        cmd.env("RANK", rank.to_string())
            .env("LOCAL_RANK", local.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("LOCAL_WORLD_SIZE", n.to_string())
            .env("MASTER_ADDR", &args.master_addr)
            .env("MASTER_PORT", port.to_string())
            .env("STRATA_THREADS", threads.to_string())
            .env("STRATA_PROGRESS", if bar && rank == 0 { "bar" } else { "lines" })
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if bar && rank == 0 { Stdio::inherit() } else { Stdio::piped() })
            .kill_on_drop(true);
        // SAFETY: the closure runs in the forked child before exec and only calls prctl and
        // getppid, which are async-signal-safe; it touches no state shared with the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| format!("cannot start worker {rank}: {e}"))?;
        if let Some(out) = child.stdout.take() {
            streams.push(tokio::spawn(forward(out, rank, false)));
        }
        if let Some(err) = child.stderr.take() {
            streams.push(tokio::spawn(forward(err, rank, true)));
        }
        children.push((rank, child));
    }

    let outcome = wait_all(children).await;
    for s in streams {
        let _ = s.await;
    }
    Ok(match outcome {
        Outcome::AllSucceeded => ExitCode::SUCCESS,
        Outcome::Failed { rank, status } => {
            eprintln!(
                "launcher: rank {rank} failed ({}); stopped the other workers",
                describe(status)
            );
            ExitCode::FAILURE
        }
        Outcome::Interrupted(name, number) => {
            eprintln!("launcher: received {name}; stopped all workers");
            ExitCode::from(128 + number)
        }
        Outcome::Error(msg) => {
            eprintln!("launcher: {msg}");
            ExitCode::FAILURE
        }
    })
}

enum Outcome {
    AllSucceeded,
    Failed {
        rank: usize,
        status: ExitStatus,
    },
    /// A signal's name and number.
    Interrupted(&'static str, u8),
    /// The launcher itself failed.
    Error(&'static str),
}

/// How long the launcher keeps listening for other exits after the first failure, before it
/// stops the rest. A worker killed from outside takes its peers down within milliseconds (their
/// collectives see the closed connection), and the exit the launcher happens to reap first need
/// not be the cause; this window lets it name the cause.
const FAILURE_WINDOW: Duration = Duration::from_millis(1500);

/// Wait until every worker has exited; at the first failure or signal, stop the rest. Each
/// worker is awaited by its own task. The failure reported is the likeliest cause among those
/// seen within [`FAILURE_WINDOW`] of the first: a worker killed by a signal the launcher did not
/// send, before one that exited with an error (typically because a peer vanished).
async fn wait_all(children: Vec<(usize, Child)>) -> Outcome {
    let (tx, mut exits) = mpsc::unbounded_channel();
    let mut running = HashMap::new();
    for (rank, mut child) in children {
        running.insert(rank, child.id());
        let tx = tx.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = tx.send((rank, status));
        });
    }
    drop(tx);
    let (Ok(mut sigint), Ok(mut sigterm)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        stop_all(&mut running, &mut exits).await;
        return Outcome::Error(
            "cannot install the SIGINT and SIGTERM handlers; stopped all workers",
        );
    };
    while !running.is_empty() {
        let outcome = tokio::select! {
            exit = exits.recv() => match exit {
                Some((rank, Ok(status))) => {
                    running.remove(&rank);
                    if status.success() { continue; }
                    let mut failures = vec![(rank, status)];
                    collect_failures(&mut running, &mut exits, &mut failures).await;
                    let (rank, status) = root_cause(&failures);
                    Outcome::Failed { rank, status }
                }
                Some((rank, Err(_))) => {
                    running.remove(&rank);
                    continue;
                }
                None => break,
            },
            _ = sigint.recv() => Outcome::Interrupted("SIGINT", libc::SIGINT as u8),
            _ = sigterm.recv() => Outcome::Interrupted("SIGTERM", libc::SIGTERM as u8),
        };
        stop_all(&mut running, &mut exits).await;
        return outcome;
    }
    Outcome::AllSucceeded
}

/// After a first failure, gather the exits that follow within [`FAILURE_WINDOW`] (or until no
/// worker is left), before any worker is signalled.
async fn collect_failures(
    running: &mut HashMap<usize, Option<u32>>,
    exits: &mut Exits,
    failures: &mut Vec<(usize, ExitStatus)>,
) {
    let deadline = tokio::time::Instant::now() + FAILURE_WINDOW;
    while !running.is_empty() {
        match tokio::time::timeout_at(deadline, exits.recv()).await {
            Ok(Some((rank, status))) => {
                running.remove(&rank);
                if let Ok(status) = status {
                    if !status.success() {
                        failures.push((rank, status));
                    }
                }
            }
            Ok(None) | Err(_) => return,
        }
    }
}

/// The failure to name: the first worker killed by a signal (nothing in the job sends one
/// before the launcher stops it), else the first that failed on its own, else the first whose
/// collective failed because of a peer (exit status [`EXIT_PEER_FAILED`]).
fn root_cause(failures: &[(usize, ExitStatus)]) -> (usize, ExitStatus) {
    use std::os::unix::process::ExitStatusExt;
    let peer_failed = |s: &ExitStatus| s.code() == Some(i32::from(EXIT_PEER_FAILED));
    failures
        .iter()
        .find(|(_, s)| s.signal().is_some())
        .or_else(|| failures.iter().find(|(_, s)| !peer_failed(s)))
        .unwrap_or(&failures[0])
        .to_owned()
}

type Exits = mpsc::UnboundedReceiver<(usize, std::io::Result<ExitStatus>)>;

/// SIGTERM every live worker, then SIGKILL those still alive after 3 s; returns once all have
/// been reaped.
async fn stop_all(running: &mut HashMap<usize, Option<u32>>, exits: &mut Exits) {
    signal_all(running, libc::SIGTERM);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !running.is_empty() {
        match tokio::time::timeout_at(deadline, exits.recv()).await {
            Ok(Some((rank, _))) => {
                running.remove(&rank);
            }
            Ok(None) => return,
            Err(_) => break,
        }
    }
    signal_all(running, libc::SIGKILL);
    while let Some((rank, _)) = exits.recv().await {
        running.remove(&rank);
        if running.is_empty() {
            break;
        }
    }
}

fn signal_all(running: &HashMap<usize, Option<u32>>, sig: libc::c_int) {
    for pid in running.values().flatten() {
        // SAFETY: kill(2) on a worker we spawned whose exit we have not yet seen; no memory is
        // shared with it.
        unsafe {
            libc::kill(*pid as libc::pid_t, sig);
        }
    }
}

/// Copy a worker's output line by line, prefixed with its rank.
async fn forward(stream: impl AsyncRead + Unpin, rank: usize, is_stderr: bool) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if is_stderr {
            eprintln!("[rank {rank}] {line}");
        } else {
            println!("[rank {rank}] {line}");
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown status".into(),
    }
}
