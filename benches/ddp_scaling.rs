//! Data-parallel training throughput through the real launcher, on synthetic 3x32x32 images
//! (`configs/resnet56-synthetic.toml` with the depth overridden), one JSON line per run:
//!
//! - `weak`: ResNet-56, 1 worker x 1 thread at batch 64 against 2 workers x 1 thread at batch
//!   64 each (weak scaling); compare with `../shared/bench/torch_ddp.py` at the same settings.
//! - `buckets`: ResNet-110 on 2 workers x 1 thread, batch 64 each: 25 MiB buckets (the
//!   default; the model's 6.9 MB make two buckets) and 1 MiB buckets, overlapped with
//!   backward, against one all-reduce per parameter started after backward, and one per
//!   parameter overlapped.
//!
//!     cargo bench --bench ddp_scaling -- [weak|buckets] [--steps 12] [--warmup 3]
//!
//! Each line names the model, workers, threads, per-worker batch, dtype and bucket settings,
//! and gives total images/s over the timed steps (from the step timestamps rank 0 writes, so
//! start-up and evaluation are excluded) and the mean seconds per step of each phase over the
//! ranks: data, forward, backward, exposed communication, all communication, optimizer.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Run {
    label: &'static str,
    depth: usize,
    workers: usize,
    sets: Vec<&'static str>,
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str, default: usize| -> usize {
        argv.iter()
            .position(|a| a == flag)
            .and_then(|i| argv.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (steps, warmup) = (value("--steps", 12), value("--warmup", 3));
    let which: Vec<&str> =
        argv.iter().map(String::as_str).filter(|a| ["weak", "buckets"].contains(a)).collect();
    let which = if which.is_empty() { vec!["weak", "buckets"] } else { which };

    let mut runs = Vec::new();
    if which.contains(&"weak") {
        runs.push(Run { label: "weak-1x1", depth: 56, workers: 1, sets: vec![] });
        runs.push(Run { label: "weak-2x1", depth: 56, workers: 2, sets: vec![] });
    }
    if which.contains(&"buckets") {
        runs.push(Run { label: "bucketed-overlapped", depth: 110, workers: 2, sets: vec![] });
        let small = vec!["ddp.bucket_cap_mb=1"];
        runs.push(Run { label: "bucketed-1mib-overlapped", depth: 110, workers: 2, sets: small });
        let per_param = vec!["ddp.bucket_cap_mb=0", "ddp.first_bucket_mb=0"];
        let mut after = per_param.clone();
        after.push("ddp.overlap=false");
        runs.push(Run {
            label: "per-parameter-after-backward",
            depth: 110,
            workers: 2,
            sets: after,
        });
        runs.push(Run {
            label: "per-parameter-overlapped",
            depth: 110,
            workers: 2,
            sets: per_param,
        });
    }

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target").join("bench-runs").join(format!("ddp-{}", std::process::id()));
    for run in &runs {
        match measure(&root, &dir, run, steps, warmup) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("ddp_scaling: {}: {e}", run.label);
                std::process::exit(1);
            }
        }
    }
}

/// Runs one configuration and returns its JSON line.
fn measure(
    root: &Path,
    dir: &Path,
    run: &Run,
    steps: usize,
    warmup: usize,
) -> Result<String, String> {
    let batch = 64;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_launcher"));
    cmd.current_dir(root)
        .args(["run", "configs/resnet56-synthetic.toml"])
        .args(["--nproc-per-node", &run.workers.to_string(), "--threads", "1"])
        .env("STRATA_PROGRESS", "quiet");
    let mut sets = vec![
        format!("log.dir={}", dir.display()),
        format!("name={}", run.label),
        format!("model.depth={}", run.depth),
        format!("data.batch_size={batch}"),
        format!("log.max_steps={}", steps + warmup),
        "log.every=1".into(),
        "data.test_limit=64".into(),
    ];
    sets.extend(run.sets.iter().map(|s| s.to_string()));
    for s in &sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().map_err(|e| format!("cannot run the launcher: {e}"))?;
    if !out.status.success() {
        return Err(format!("launcher failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }

    let text = std::fs::read_to_string(dir.join(run.label).join("metrics.jsonl"))
        .map_err(|e| format!("metrics.jsonl: {e}"))?;
    let train: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "train")
        .collect();
    if train.len() != steps + warmup {
        return Err(format!("expected {} train lines, got {}", steps + warmup, train.len()));
    }
    let timed = &train[warmup..];
    let field = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let elapsed = field(&timed[timed.len() - 1], "time_s") - field(&train[warmup - 1], "time_s");
    let images = (steps * batch * run.workers) as f64;
    let mean = |k: &str| timed.iter().map(|v| field(v, k)).sum::<f64>() / timed.len() as f64;
    let bucket = run.sets.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(",");
    Ok(format!(
        "{{\"bench\":\"ddp\",\"run\":\"{}\",\"model\":\"resnet{}\",\"input\":[3,32,32],\
         \"dtype\":\"f32\",\"workers\":{},\"threads\":1,\"batch_per_worker\":{batch},\
         \"settings\":[{bucket}],\"steps\":{steps},\"img_per_s\":{:.1},\"step_s\":{:.4},\
         \"data_s\":{:.4},\"forward_s\":{:.4},\"backward_s\":{:.4},\"comm_exposed_s\":{:.4},\
         \"comm_s\":{:.4},\"optimizer_s\":{:.4}}}",
        run.label,
        run.depth,
        run.workers,
        images / elapsed,
        elapsed / steps as f64,
        mean("data_s"),
        mean("forward_s"),
        mean("backward_s"),
        mean("comm_exposed_s"),
        mean("comm_s"),
        mean("optimizer_s"),
    ))
}
