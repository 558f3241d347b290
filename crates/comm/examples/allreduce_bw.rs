//! All-reduce bandwidth of the TCP ring on one host, one JSON line per buffer size.
//!
//! ```text
//! cargo run --release -p strata-comm --example allreduce_bw -- [--world N] [--threads]
//! ```
//!
//! By default it hosts a store and starts N worker processes (itself, with `RANK`,
//! `WORLD_SIZE`, `MASTER_ADDR` and `MASTER_PORT` set); with `--threads` the ranks are threads
//! of one process. Started with those variables already set (e.g. by `launcher run`), it is a
//! worker. Rank 0 prints, per size, the median over 5 repetitions of the slowest rank's mean
//! time per all-reduce (f32, mean), algorithm bandwidth (bytes / time), bus bandwidth
//! (2 (n - 1) / n * bytes / time, what each link carries) and, for scale, this host's
//! single-thread memcpy bandwidth. Compare with `../shared/bench/torch_allreduce.py` (gloo)
//! run alongside.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use strata_comm::{Communicator, ProcessGroup, ReduceOp, RingOptions, StoreClient};
use strata_comm::{StoreServer, TcpRing};

/// Buffer sizes in MiB, and all-reduces timed at each.
const SIZES_MIB: [(usize, usize); 3] = [(1, 50), (16, 10), (64, 4)];

/// Timed repetitions per size; the median is reported.
const REPEATS: usize = 5;

const TIMEOUT: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("allreduce_bw: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    if std::env::var_os("RANK").is_some() {
        let mut group = ProcessGroup::from_env(TIMEOUT).map_err(|e| e.to_string())?;
        return measure(group.comm.as_mut(), "processes");
    }

    let args: Vec<String> = std::env::args().skip(1).collect();
    let world = match args.iter().position(|a| a == "--world") {
        Some(at) => {
            args.get(at + 1).and_then(|n| n.parse().ok()).ok_or("--world takes a number")?
        }
        None => 2,
    };
    if world == 0 {
        return Err("--world must be at least 1".into());
    }
    let server = StoreServer::start("127.0.0.1:0".parse().map_err(|e| format!("{e}"))?)
        .map_err(|e| e.to_string())?;

    if args.iter().any(|a| a == "--threads") {
        run_threads(&server, world)
    } else {
        run_processes(&server, world)
    }
}

/// Starts `world` copies of this program as worker processes and waits for them.
fn run_processes(server: &StoreServer, world: usize) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let port = server.local_addr().port().to_string();
    let mut children = Vec::new();
    for rank in 0..world {
        let child = Command::new(&exe)
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", &port)
            .spawn()
            .map_err(|e| format!("cannot start rank {rank}: {e}"))?;
        children.push(child);
    }

    let mut failed = Vec::new();
    for (rank, mut child) in children.into_iter().enumerate() {
        match child.wait() {
            Ok(status) if status.success() => {}
            Ok(status) => failed.push(format!("rank {rank} exited with {status}")),
            Err(e) => failed.push(format!("rank {rank}: {e}")),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// Runs `world` ranks as threads of this process.
fn run_threads(server: &StoreServer, world: usize) -> Result<(), String> {
    let addr = server.local_addr();
    let threads: Vec<_> = (0..world)
        .map(|rank| {
            std::thread::spawn(move || -> Result<(), String> {
                let store = StoreClient::connect(addr, TIMEOUT).map_err(|e| e.to_string())?;
                let opts = RingOptions { timeout: TIMEOUT, ..RingOptions::default() };
                let mut ring =
                    TcpRing::connect(&store, rank, world, opts).map_err(|e| e.to_string())?;
                measure(&mut ring, "threads")
            })
        })
        .collect();
    for thread in threads {
        thread.join().map_err(|_| "a rank panicked".to_string())??;
    }
    Ok(())
}

/// Times the all-reduces on this rank; rank 0 prints the results.
fn measure(comm: &mut dyn Communicator, mode: &str) -> Result<(), String> {
    let world = comm.world_size();
    for (mib, iters) in SIZES_MIB {
        let bytes = mib << 20;
        let mut buf = vec![1.0f32; bytes / 4];
        comm.all_reduce(&mut buf, ReduceOp::Mean).map_err(|e| e.to_string())?; // warm-up

        // The median of REPEATS timings (each the slowest rank's), as the gloo reference does.
        let mut times = Vec::with_capacity(REPEATS);
        for _ in 0..REPEATS {
            comm.barrier().map_err(|e| e.to_string())?;
            let start = Instant::now();
            for _ in 0..iters {
                comm.all_reduce(&mut buf, ReduceOp::Mean).map_err(|e| e.to_string())?;
            }
            let mut took = [start.elapsed().as_secs_f64() / iters as f64];
            comm.all_reduce_f64(&mut took, ReduceOp::Max).map_err(|e| e.to_string())?;
            times.push(took[0]);
        }
        times.sort_by(f64::total_cmp);
        let seconds = [times[times.len() / 2]];
        if buf.iter().any(|&x| x != 1.0) {
            return Err(format!("a mean of ones was not one at {mib} MiB"));
        }

        let memcpy = if comm.rank() == 0 { memcpy_gbps(bytes, iters) } else { 0.0 };
        comm.barrier().map_err(|e| e.to_string())?;
        if comm.rank() == 0 {
            let algbw = bytes as f64 / seconds[0] / 1e9;
            let busbw = algbw * 2.0 * (world - 1) as f64 / world as f64;
            println!(
                "{{\"op\":\"all_reduce\",\"backend\":\"tcp_ring\",\"dtype\":\"f32\",\
                 \"reduce\":\"mean\",\"mode\":\"{mode}\",\
                 \"world_size\":{world},\"bytes\":{bytes},\"iters\":{iters},\
                 \"time_ms\":{:.3},\"algbw_gbps\":{algbw:.3},\"busbw_gbps\":{busbw:.3},\
                 \"memcpy_gbps\":{memcpy:.3}}}",
                seconds[0] * 1e3
            );
        }
    }
    Ok(())
}

/// Single-thread copy bandwidth for `bytes`-sized buffers, in GB/s of bytes copied.
fn memcpy_gbps(bytes: usize, iters: usize) -> f64 {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    dst.copy_from_slice(&src); // warm-up: fault the pages in
    let start = Instant::now();
    for i in 0..iters {
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst[i % bytes]);
    }
    bytes as f64 * iters as f64 / start.elapsed().as_secs_f64() / 1e9
}
