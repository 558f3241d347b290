//! Batch norm across workers through the real launcher. With `ddp.sync_bn = true`, N workers
//! with batch b reach the weights and running statistics of one worker with batch N·b (2 and
//! 3 workers). Without it, running statistics are per worker during training and averaged
//! over the workers before the checkpoint and the final weights are written.

mod common;

use common::{temp_dir, train_run, worst_diff};
use std::collections::HashMap;

/// An MLP with batch norm after each hidden layer; augmentation off, so N workers see exactly
/// the samples one worker does; 3 steps, no intermediate checkpoints.
const CONFIG: &str = "tests/configs/mlp-bn-synthetic.toml";
const PLAIN: [&str; 5] = [
    "data.hflip=false",
    "data.crop_padding=0",
    "log.max_steps=3",
    "epochs=1",
    "checkpoint.every=0",
];

/// The tolerance for N workers against one (float sums in another order, 3 steps).
const TOL: f32 = 1e-5;

fn run(
    dir: &std::path::Path,
    name: &str,
    workers: usize,
    sets: &[&str],
) -> HashMap<String, Vec<f32>> {
    let mut all: Vec<&str> = PLAIN.to_vec();
    all.extend_from_slice(sets);
    train_run(CONFIG, dir, name, workers, &all)
}

#[test]
fn sync_bn_workers_match_one_worker_with_the_whole_batch() {
    let dir = temp_dir("sync-bn");
    for (workers, batch) in [(2, 8), (3, 4)] {
        let global = format!("data.batch_size={}", workers * batch);
        let local = format!("data.batch_size={batch}");
        let one = run(&dir, &format!("one-{workers}"), 1, &[&global]);
        let one_synced =
            run(&dir, &format!("one-sync-{workers}"), 1, &[&global, "ddp.sync_bn=true"]);
        let many = run(&dir, &format!("sync-{workers}"), workers, &[&local, "ddp.sync_bn=true"]);
        let unsynced = run(&dir, &format!("nosync-{workers}"), workers, &[&local]);

        // In a world of one the synced layer computes what the plain one does.
        let (d, at) = worst_diff(&one_synced, &one, |_| true);
        assert!(d <= TOL, "1 worker, sync_bn on vs off: {d:e} at {at}");
        // N synced workers equal one worker on the concatenated batch, running statistics
        // included.
        let (d, at) = worst_diff(&many, &one, |_| true);
        eprintln!("{workers} workers with sync_bn vs 1: max abs difference {d:e} ({at})");
        assert!(d <= TOL, "{workers} workers with sync_bn: {d:e} at {at}");
        // Per-worker statistics differ, so the equality above is not vacuous.
        let (d, at) = worst_diff(&unsynced, &one, |n| n.contains("running_var"));
        eprintln!("{workers} workers without sync_bn vs 1: running_var differs by {d:e} ({at})");
        assert!(d > 1e-3, "without sync_bn the running variances should differ: {d:e}");
    }
}

#[test]
fn without_sync_bn_running_statistics_are_averaged_before_writing() {
    // At learning rate 0 the first batch norm's input is a fixed linear map of the samples,
    // and its running mean after k steps is 0.9^k · 0 + Σ_j 0.1 · 0.9^(k-j) · (batch mean at
    // step j): linear in the batch means. The mean over workers of their running means is then
    // the running mean of one worker with the concatenated batch. Written unaveraged, rank 0's
    // running mean would be that of its own shard only.
    let dir = temp_dir("bn-average");
    let lr0 = "optimizer.lr=0.0";
    for (workers, batch) in [(2, 8), (3, 4)] {
        let global = format!("data.batch_size={}", workers * batch);
        let local = format!("data.batch_size={batch}");
        let one = run(&dir, &format!("one-{workers}"), 1, &[&global, lr0]);
        let many = run(&dir, &format!("many-{workers}"), workers, &[&local, lr0]);
        let first = first_running_mean(&one);
        let (d, at) = worst_diff(&many, &one, |n| n == first);
        eprintln!("{workers} workers, {first}: max abs difference {d:e} ({at})");
        assert!(d <= TOL, "{workers} workers: {first} differs by {d:e}");
        let (moved, _) =
            worst_diff(&one, &run(&dir, &format!("shard-{workers}"), 1, &[&local, lr0]), |n| {
                n == first
            });
        assert!(moved > 1e-3, "a shard's running mean equals the whole batch's ({moved:e})");
    }
}

/// The name of the first batch norm's running mean (the lowest layer index).
fn first_running_mean(t: &HashMap<String, Vec<f32>>) -> &str {
    t.keys()
        .filter(|n| n.ends_with("running_mean"))
        .min_by_key(|n| n.split('.').filter_map(|p| p.parse::<usize>().ok()).next())
        .expect("the model has batch norm")
}
