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

/// The state file of step 20 of the resume config: 16 steps per epoch, so epoch 1 (0-based),
/// 4 global batches into it; each rank has drawn 4 x 8 samples of that epoch.
fn check_state_file(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let st: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!((st["step"].as_u64(), st["epoch"].as_u64()), (Some(20), Some(1)), "{st}");
    assert_eq!(st["batch_in_epoch"], 4);
    assert_eq!(st["rng"]["seed"], 5);
    assert_eq!(st["rng"]["sampler_epoch"], 1);
    assert_eq!(st["rng"]["augment_next_position"], 32);
    assert_eq!(st["rng"]["next_step"], 20);
    assert_eq!(st["schedule"]["kind"], "cosine");
    assert_eq!(st["schedule"]["total_steps"], 32);
    // Cosine after 4 warmup steps over the remaining 28: 0.5 * 0.05 * (1 + cos(pi * 16 / 28)).
    let lr = 0.5 * 0.05 * (1.0 + (std::f64::consts::PI * 16.0 / 28.0).cos());
    assert!((st["lr"].as_f64().unwrap() - lr).abs() < 1e-12, "{st}");
    let hash = st["config_hash"].as_str().unwrap();
    assert!(hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
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
    // Checkpoints at steps 5, 10, 15 and 20; keep = 2 leaves the newest two.
    let mut kept: Vec<String> = std::fs::read_dir(&ckpts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept, ["step-15", "step-20"], "keep = 2 retains the newest two");
    check_state_file(&ckpts.join("step-20/state.json"));

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
    // Both runs hashed the same config into their state files.
    let hash = |name: &str| -> serde_json::Value {
        let p = dir.join(name).join("checkpoints/step-32/state.json");
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(p).unwrap()).unwrap()
            ["config_hash"]
            .clone()
    };
    assert_eq!(hash("whole"), hash("split"));
}

#[test]
fn an_adamw_run_resumed_mid_epoch_ends_bit_identical() {
    let dir = temp_dir("resume-adamw");
    let adamw = ["optimizer.kind=\"adamw\"", "optimizer.momentum=0.0", "optimizer.nesterov=false"];
    run(&dir, "whole", 2, &adamw);
    run(&dir, "split", 2, &[&adamw[..], &["log.stop_at_step=13"]].concat());
    let stdout = run(&dir, "split", 2, &[&adamw[..], &["--resume"]].concat());
    assert!(stdout.contains("at step 10"), "{stdout}");
    let opt = bytes(&dir.join("split/checkpoints/step-32/optimizer.safetensors"));
    let st = safetensors::SafeTensors::deserialize(&opt).unwrap();
    assert!(st.names().iter().any(|n| n.ends_with(".exp_avg_sq")), "AdamW moments saved");
    assert!(opt == bytes(&dir.join("whole/checkpoints/step-32/optimizer.safetensors")));
    let whole = bytes(&dir.join("whole/final.safetensors"));
    assert!(whole == bytes(&dir.join("split/final.safetensors")), "resumed AdamW run differs");
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
    // Augmentation (crops, flips) and dropout draw from per-(seed, rank, epoch) streams; with
    // the same seed and world size they repeat exactly, on 2 and on 3 workers.
    for workers in [2, 3] {
        let (a, b, c) = (format!("a{workers}"), format!("b{workers}"), format!("c{workers}"));
        run(&dir, &a, workers, &["model.dropout=0.2"]);
        run(&dir, &b, workers, &["model.dropout=0.2"]);
        let wa = bytes(&dir.join(&a).join("final.safetensors"));
        assert!(wa == bytes(&dir.join(&b).join("final.safetensors")), "same seed, other weights");
        run(&dir, &c, workers, &["model.dropout=0.2", "seed=4"]);
        assert!(wa != bytes(&dir.join(&c).join("final.safetensors")), "the seed has no effect");
    }
}

#[test]
fn resuming_with_another_config_warns_that_the_trajectory_changes() {
    let dir = temp_dir("resume-changed");
    run(&dir, "r", 2, &["log.stop_at_step=7"]);
    let stdout = run(&dir, "r", 2, &["--resume", "optimizer.lr=0.04", "log.every=2"]);
    assert!(
        stdout.contains("the config differs from the one that wrote the checkpoint"),
        "{stdout}"
    );
    // Logging settings are not part of the trajectory: no warning for them alone.
    run(&dir, "s", 2, &["log.stop_at_step=7"]);
    let stdout = run(&dir, "s", 2, &["--resume", "log.every=2"]);
    assert!(!stdout.contains("config differs"), "{stdout}");
}

#[test]
fn a_run_with_gradient_accumulation_resumes_mid_epoch_bit_identically() {
    let dir = temp_dir("resume-accumulate");
    // 2 workers x 4 samples x 2 micro-steps: still 16 global, 16 steps per epoch; the stop at
    // step 13 resumes from step 10, 10 x 2 micro-batches into the first epoch.
    let accumulate = ["data.batch_size=4", "optimizer.accumulate_steps=2"];
    run(&dir, "whole", 2, &accumulate);
    run(&dir, "split", 2, &[&accumulate[..], &["log.stop_at_step=13"]].concat());
    let stdout = run(&dir, "split", 2, &[&accumulate[..], &["--resume"]].concat());
    assert!(stdout.contains("at step 10"), "{stdout}");
    let whole = bytes(&dir.join("whole/final.safetensors"));
    assert!(whole == bytes(&dir.join("split/final.safetensors")), "resumed run differs");
    // On one worker the global batch stays 16: 8 per worker in 2 micro-steps.
    run(&dir, "one", 2, &[&accumulate[..], &["log.stop_at_step=5"]].concat());
    let stdout = run(&dir, "one", 1, &[&accumulate[..], &["--resume"]].concat());
    assert!(stdout.contains("batch 8 per worker, 16 global (2 micro-steps of 8"), "{stdout}");
}
