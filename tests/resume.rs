//! Checkpoints and resume: a run stopped in the middle of an epoch and resumed from its newest
//! checkpoint ends with weights bit-identical to the uninterrupted run (CPU backend); a torn
//! write never counts as a checkpoint; resuming on another number of workers keeps the global
//! batch and says so.

mod common;

use common::{launcher, output, temp_dir};
use std::path::Path;

const CONFIG: &str = "tests/configs/mlp-bn-synthetic.toml";

fn run(dir: &Path, name: &str, workers: usize, extra: &[&str]) -> String {
    let mut cmd = launcher();
    cmd.args(["run", CONFIG, "--nproc-per-node", &workers.to_string()])
        .args(["--set", &format!("log.dir={}", dir.display())])
        .args(["--set", &format!("name={name}")]);
    for e in extra {
        if *e == "--resume" {
            cmd.arg(e);
        } else {
            cmd.args(["--set", e]);
        }
    }
    let (out, stdout, stderr) = output(&mut cmd);
    assert!(out.status.success(), "launcher failed:\n{stdout}\n{stderr}");
    stdout
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_run_resumed_mid_epoch_ends_bit_identical_to_the_uninterrupted_run() {
    let dir = temp_dir("resume");
    // 256 samples / (2 x 8) = 16 steps per epoch, 2 epochs; checkpoints every 5 steps.
    run(&dir, "whole", 2, &[]);
    run(&dir, "split", 2, &["log.stop_at_step=23"]);
    let ckpts = dir.join("split/checkpoints");
    assert!(ckpts.join("step-20/state.json").is_file(), "newest checkpoint before the stop");
    assert!(!ckpts.join("step-10").exists(), "keep = 2 prunes older checkpoints");

    // A writer killed mid-write leaves only its hidden temporary directory behind: make one,
    // torn, newer than every complete checkpoint. Resume must ignore it.
    let torn = ckpts.join(".step-25.tmp");
    std::fs::create_dir_all(&torn).unwrap();
    std::fs::write(torn.join("model.safetensors"), b"torn").unwrap();

    let stdout = run(&dir, "split", 2, &["--resume"]);
    assert!(stdout.contains("resumed from") && stdout.contains("at step 20"), "{stdout}");
    let whole = bytes(&dir.join("whole/final.safetensors"));
    let split = bytes(&dir.join("split/final.safetensors"));
    assert!(whole == split, "resumed weights differ from the uninterrupted run's");
    // The same holds for the optimizer state of the last checkpoint.
    let opt = |name: &str| bytes(&dir.join(name).join("checkpoints/step-32/optimizer.safetensors"));
    assert!(opt("whole") == opt("split"), "momentum buffers differ");
}

#[test]
fn resuming_on_one_worker_keeps_the_global_batch_and_says_so() {
    let dir = temp_dir("resume-world");
    run(&dir, "r", 2, &["log.stop_at_step=7"]);
    let stdout = run(&dir, "r", 1, &["--resume"]);
    assert!(stdout.contains("written by 2 workers, this run has 1"), "{stdout}");
    assert!(stdout.contains("batch 16 per worker, 16 global"), "{stdout}");
    assert!(dir.join("r/checkpoints/step-32/state.json").is_file(), "the run finished");
}

#[test]
fn two_runs_with_the_same_seed_give_bit_identical_weights() {
    let dir = temp_dir("determinism");
    run(&dir, "a", 2, &[]);
    run(&dir, "b", 2, &[]);
    let a = bytes(&dir.join("a/final.safetensors"));
    assert!(a == bytes(&dir.join("b/final.safetensors")), "same seed, different weights");
    run(&dir, "c", 2, &["seed=4"]);
    assert!(a != bytes(&dir.join("c/final.safetensors")), "the seed has no effect");
}
