//! Decisions every rank takes together, and exact evaluation, through the real launcher on 2
//! and 3 CPU workers: a non-finite loss on one rank makes every rank skip that step (or stop
//! with an error); a time limit stops every rank after the same step with a checkpoint that
//! resumes bit-identically; evaluation on a test set that does not divide by the world size
//! counts every sample once and gives one worker's accuracy.

mod common;

use common::{records, temp_dir, train, try_train, weights};

const MLP: &str = "tests/configs/mlp-synthetic.toml";
const MLP_BN: &str = "tests/configs/mlp-bn-synthetic.toml";

#[test]
fn a_nan_sample_on_one_rank_makes_every_rank_skip_that_step() {
    let dir = temp_dir("nan-skip");
    // 240 samples: 2 x 8 x 15 and 3 x 8 x 10 steps, so every sample (the NaN one too) is seen
    // exactly once in the epoch, by one rank; the other ranks' losses are finite.
    let sets = [
        "data.synthetic_len=240",
        "data.nan_samples=[17]",
        "optimizer.on_nonfinite=\"skip\"",
        "log.max_steps=0",
    ];
    for workers in [2, 3] {
        let name = format!("w{workers}");
        let stdout = train(MLP, &dir, &name, workers, &sets);
        assert_eq!(stdout.matches("skipped step").count(), 1, "one skip:\n{stdout}");
        let last = records(&dir.join(&name), "train").pop().unwrap();
        assert_eq!(last["skipped_steps"], 1, "{last}");
        assert!(last["loss"].as_f64().unwrap().is_finite(), "skipped losses stay out: {last}");
        // The replicas were compared (parameter checksums) after the epoch's evaluation; the
        // run would have failed had one rank stepped and another not.
        let w = weights(&dir.join(&name).join("final.safetensors"));
        assert!(w.values().flatten().all(|v| v.is_finite()), "a NaN reached the weights");
    }
}

#[test]
fn a_nan_sample_on_one_rank_stops_every_rank_by_default() {
    let dir = temp_dir("nan-stop");
    let sets = ["data.synthetic_len=240", "data.nan_samples=[17]", "log.max_steps=0"];
    let (out, stdout, stderr) = try_train(MLP, &dir, "stop", 3, &sets);
    assert!(!out.status.success(), "a NaN loss must stop the run:\n{stdout}");
    assert!(stderr.contains("the loss is NaN at step"), "{stderr}");
    // Every rank reached the same decision and failed alike, rather than one rank failing and
    // the others waiting for it in a collective until the launcher tears them down.
    for rank in 0..3 {
        let line = format!("[rank {rank}] error: the loss is NaN at step");
        assert!(stderr.contains(&line), "rank {rank} did not stop on its own:\n{stderr}");
    }
}

#[test]
fn a_time_limit_stops_every_rank_at_one_step_and_the_resumed_run_matches() {
    let dir = temp_dir("time-limit");
    // 3 workers: 256 samples pad to 258 (86 per rank), so 10 steps of 3 x 8 per epoch, 20 in
    // all. A limit of 1 ms has passed on every rank by the end of the first step.
    let stdout = train(MLP_BN, &dir, "cut", 3, &["log.time_limit_s=0.001"]);
    assert!(stdout.contains("stopping after step 1: log.time_limit_s"), "{stdout}");
    let state = dir.join("cut/checkpoints/step-1/state.json");
    assert!(state.is_file(), "a checkpoint at the agreed step");
    let stdout = train(MLP_BN, &dir, "cut", 3, &["--resume"]);
    assert!(stdout.contains("at step 1"), "{stdout}");
    train(MLP_BN, &dir, "whole", 3, &[]);
    let bytes = |name: &str| std::fs::read(dir.join(name).join("final.safetensors")).unwrap();
    assert!(bytes("cut") == bytes("whole"), "the resumed run differs from the uninterrupted one");
}

#[test]
fn evaluation_counts_every_sample_once_whatever_the_world_size() {
    let dir = temp_dir("eval-exact");
    // 101 test samples: 34 + 34 + 33 on 3 workers, 51 + 50 on 2. At lr 0 the weights are the
    // initial ones on every run, so the accuracy must match one worker's exactly.
    let sets = ["data.test_limit=101", "optimizer.lr=0.0", "log.max_steps=2"];
    let mut seen = Vec::new();
    for workers in [1, 2, 3] {
        let name = format!("w{workers}");
        train(MLP, &dir, &name, workers, &sets);
        let eval = records(&dir.join(&name), "eval").pop().expect("an evaluation");
        assert_eq!(eval["test_samples"], 101, "{workers} workers: {eval}");
        seen.push((eval["test_accuracy"].as_f64().unwrap(), eval["test_loss"].as_f64().unwrap()));
    }
    let (acc, loss) = seen[0];
    for (a, l) in &seen[1..] {
        assert_eq!(*a, acc, "accuracy differs from one worker's: {seen:?}");
        // Loss sums in another order: f64 totals of f32 per-batch means.
        assert!((l - loss).abs() <= 1e-6 * loss, "loss {seen:?}");
    }
}
