//! Optimizer-side semantics through the real launcher on 2 CPU workers: gradient accumulation
//! equals one step on the larger batch and all-reduces once per step; clipping sees the
//! averaged gradient; AdamW is exact under data parallelism; the linear scaling rule and the
//! schedule reach the start-of-run line and the metrics. The model has no batch norm, whose
//! per-worker statistics would legitimately differ between world sizes (DESIGN.md).

mod common;

use common::{max_abs_diff, records, temp_dir, train, weights};
use std::path::Path;

const CONFIG: &str = "tests/configs/mlp-synthetic.toml";

fn final_weights(dir: &Path, name: &str) -> std::collections::HashMap<String, Vec<f32>> {
    weights(&dir.join(name).join("final.safetensors"))
}

/// Collectives started per optimizer step, from consecutive train records (log.every = 1).
fn collectives_per_step(dir: &Path, name: &str) -> Vec<u64> {
    let counts: Vec<u64> = records(&dir.join(name), "train")
        .iter()
        .map(|r| r["collectives"].as_u64().expect("the TCP ring counts its collectives"))
        .collect();
    counts.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn accumulating_two_micro_steps_equals_one_step_on_the_doubled_batch_and_reduces_once() {
    let dir = temp_dir("accumulate");
    // 2 workers x 4 samples x 2 micro-steps, against 1 worker x 16 and 2 workers x 8.
    train(CONFIG, &dir, "accum", 2, &["data.batch_size=4", "optimizer.accumulate_steps=2"]);
    train(CONFIG, &dir, "one", 1, &["data.batch_size=16"]);
    train(CONFIG, &dir, "two", 2, &["data.batch_size=8"]);
    train(CONFIG, &dir, "lr0", 1, &["data.batch_size=16", "optimizer.lr=0.0"]);

    // The tolerance is ddp_exact's: 1e-5 after 3 steps (float sums in another order).
    let (diff, name) = max_abs_diff(&final_weights(&dir, "accum"), &final_weights(&dir, "one"));
    assert!(diff <= 1e-5, "accumulated vs one big batch: {diff:e} in {name}");
    let (moved, _) = max_abs_diff(&final_weights(&dir, "one"), &final_weights(&dir, "lr0"));
    assert!(moved > 1e-3, "3 steps moved the weights by only {moved:e}");

    // The global batch and steps per epoch count the micro-steps: 256 / (2 x 4 x 2) = 16.
    let start = &records(&dir.join("accum"), "start")[0];
    assert_eq!(start["global_batch"], 16);
    assert_eq!(start["steps_per_epoch"], 16);
    // One gradient all-reduce per optimizer step: the same number of collectives per step as
    // without accumulation (reducing on every micro-step would add one per step).
    let accum = collectives_per_step(&dir, "accum");
    assert_eq!(accum, collectives_per_step(&dir, "two"), "collectives per step");
    assert_eq!(accum.len(), 2);
}

#[test]
fn clipping_sees_the_averaged_gradient_on_every_rank() {
    let dir = temp_dir("clip");
    let clip = "optimizer.clip_grad_norm=0.5";
    train(CONFIG, &dir, "two", 2, &["data.batch_size=8", clip]);
    train(CONFIG, &dir, "one", 1, &["data.batch_size=16", clip]);
    train(CONFIG, &dir, "free", 1, &["data.batch_size=16"]);

    // Clipping each rank's own gradient before averaging would not match one worker on the
    // whole batch; clipping the average does, to the 1e-5 of ddp_exact. Each step also checks
    // that every rank computed the same norm (the run fails otherwise).
    let (diff, name) = max_abs_diff(&final_weights(&dir, "two"), &final_weights(&dir, "one"));
    assert!(diff <= 1e-5, "2 workers vs 1 with clipping: {diff:e} in {name}");
    let norms = |name: &str| -> Vec<f64> {
        records(&dir.join(name), "train").iter().map(|r| r["grad_norm"].as_f64().unwrap()).collect()
    };
    let (two, one) = (norms("two"), norms("one"));
    for (a, b) in two.iter().zip(&one) {
        assert!((a - b).abs() <= 1e-5 * b, "norms {two:?} vs {one:?}");
        assert!(*b > 0.5, "the norm {b} is below the limit, so clipping was not exercised");
    }
    let (effect, _) = max_abs_diff(&final_weights(&dir, "one"), &final_weights(&dir, "free"));
    assert!(effect > 1e-4, "clipping changed the weights by only {effect:e}");
}

#[test]
fn adamw_on_two_workers_equals_one_worker_on_the_whole_batch() {
    let dir = temp_dir("adamw");
    let adamw = "optimizer.kind=\"adamw\"";
    let (no_momentum, lr) = ("optimizer.momentum=0.0", "optimizer.lr=0.01");
    train(CONFIG, &dir, "two", 2, &[adamw, no_momentum, lr, "data.batch_size=8"]);
    train(CONFIG, &dir, "one", 1, &[adamw, no_momentum, lr, "data.batch_size=16"]);
    train(CONFIG, &dir, "sgd", 1, &["data.batch_size=16", "optimizer.lr=0.01"]);

    let (diff, name) = max_abs_diff(&final_weights(&dir, "two"), &final_weights(&dir, "one"));
    assert!(diff <= 1e-5, "AdamW, 2 workers vs 1: {diff:e} in {name}");
    // Adam's first steps move every weight by about lr (m / sqrt(v) = +-1 on step 1), far
    // more than SGD at the same lr: the optimizer really is another one.
    let (apart, _) = max_abs_diff(&final_weights(&dir, "one"), &final_weights(&dir, "sgd"));
    assert!(apart > 5e-3, "AdamW and SGD differ by only {apart:e}");
}

#[test]
fn the_run_starts_by_logging_world_batches_scaled_lr_and_steps_per_epoch() {
    let dir = temp_dir("start-line");
    // Linear scaling: lr 0.1 x global 16 / reference 8 = 0.2; warmup over 4 steps reaches it
    // linearly: step 1 (0-based 0) runs at 0.2 / 4, step 4 at 0.2.
    let stdout = train(
        CONFIG,
        &dir,
        "s",
        2,
        &["optimizer.reference_batch=8", "schedule.warmup_steps=4", "log.max_steps=5"],
    );
    let line = stdout.lines().find(|l| l.contains("strata: s (")).expect("start line");
    for part in ["on 2 worker(s)", "batch 8 per worker, 16 global", "16 steps per epoch", "lr 0.2"]
    {
        assert!(line.contains(part), "{part:?} missing from the start line: {line}");
    }
    assert!(line.contains("linear scaling: 0.1 x 16 / 8"), "{line}");
    // The run directory keeps the resolved config, overrides applied; it loads as a config.
    let resolved = strata::train::Config::load(&dir.join("s/config.toml"), &[]).unwrap();
    assert_eq!((resolved.optimizer.reference_batch, resolved.log.max_steps), (8, 5));
    let start = &records(&dir.join("s"), "start")[0];
    assert_eq!(start["world_size"], 2);
    assert_eq!(start["batch_per_worker"], 8);
    assert_eq!(start["lr"], 0.2);
    let lrs: Vec<f64> =
        records(&dir.join("s"), "train").iter().map(|r| r["lr"].as_f64().unwrap()).collect();
    let want = [0.05, 0.1, 0.15, 0.2, 0.2];
    assert_eq!(lrs.len(), want.len());
    for (got, want) in lrs.iter().zip(want) {
        assert!((got - want).abs() < 1e-12, "schedule {lrs:?}");
    }
}
