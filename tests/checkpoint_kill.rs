//! Killing the job while rank 0 writes a checkpoint leaves the previous checkpoints intact:
//! the launcher is SIGKILLed (its workers die with it) the moment a checkpoint's temporary
//! directory appears; every `step-N` left behind is complete and loadable, and `--resume`
//! continues from the newest one to the uninterrupted run's weights, bit for bit.

mod common;

use common::{launcher, temp_dir, train};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const CONFIG: &str = "tests/configs/mlp-synthetic.toml";

/// A wide MLP (about 2.2 million parameters: 9 MB of weights and 9 MB of momentum per
/// checkpoint) so that each write takes long enough to be caught; a checkpoint every step.
const SETS: [&str; 6] = [
    "model.width=1024",
    "log.max_steps=12",
    "log.every=50",
    "checkpoint.every=1",
    "checkpoint.keep=3",
    "data.eval_batch_size=256",
];

/// The name of a temporary checkpoint directory under `ckpts`, if one exists.
fn torn_write(ckpts: &Path) -> Option<String> {
    std::fs::read_dir(ckpts).ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        (name.starts_with(".step-") && name.ends_with(".tmp")).then_some(name)
    })
}

/// Start the run and SIGKILL the launcher as soon as a checkpoint is being written after
/// step 3 is complete. Returns the temporary directory that was left torn, or `None` if the
/// kill landed just after the write finished.
fn kill_during_a_write(dir: &Path) -> Option<String> {
    let mut cmd = launcher();
    cmd.args(["run", CONFIG, "--nproc-per-node", "2"])
        .args(["--set", &format!("log.dir={}", dir.display())])
        .args(["--set", "name=killed"]);
    for s in SETS {
        cmd.args(["--set", s]);
    }
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let ckpts = dir.join("killed/checkpoints");
    let start = Instant::now();
    loop {
        if ckpts.join("step-3/state.json").is_file() && torn_write(&ckpts).is_some() {
            child.kill().unwrap();
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run finished ({status}) before a write could be caught");
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no checkpoint write was seen");
        std::thread::sleep(Duration::from_micros(200));
    }
    child.wait().unwrap();
    // Workers die with the launcher (parent-death signal); give them a moment to be gone.
    std::thread::sleep(Duration::from_millis(300));
    torn_write(&ckpts)
}

#[test]
fn killing_the_job_mid_write_leaves_the_previous_checkpoint_intact() {
    let dir = temp_dir("kill-mid-write");
    let mut torn = None;
    for attempt in 0..5 {
        let _ = std::fs::remove_dir_all(dir.join("killed"));
        torn = kill_during_a_write(&dir);
        if torn.is_some() {
            break;
        }
        eprintln!("attempt {attempt}: the kill landed after the write; trying again");
    }
    let torn = torn.expect("no kill landed during a checkpoint write in 5 attempts");
    let ckpts = dir.join("killed/checkpoints");
    let torn_step: u64 =
        torn.strip_prefix(".step-").and_then(|s| s.strip_suffix(".tmp")).unwrap().parse().unwrap();

    // Every complete checkpoint is loadable; the newest is the step before the torn one.
    let mut steps = Vec::new();
    for entry in std::fs::read_dir(&ckpts).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(step) = name.strip_prefix("step-") else { continue };
        for file in ["model.safetensors", "optimizer.safetensors", "rank_buffers.safetensors"] {
            let bytes = std::fs::read(entry.path().join(file)).unwrap();
            safetensors::SafeTensors::deserialize(&bytes)
                .unwrap_or_else(|e| panic!("{name}/{file} is not readable: {e}"));
        }
        let state = std::fs::read_to_string(entry.path().join("state.json")).unwrap();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        assert_eq!(state["step"].as_u64(), Some(step.parse().unwrap()));
        steps.push(step.parse::<u64>().unwrap());
    }
    let newest = *steps.iter().max().expect("a complete checkpoint survives");
    assert!(newest + 1 == torn_step, "newest complete {newest}, torn {torn}");

    let stdout = train(CONFIG, &dir, "killed", 2, &[&SETS[..], &["--resume"]].concat());
    assert!(stdout.contains(&format!("at step {newest}")), "{stdout}");
    train(CONFIG, &dir, "whole", 2, &SETS);
    let bytes = |name: &str| std::fs::read(dir.join(name).join("final.safetensors")).unwrap();
    assert!(
        bytes("killed") == bytes("whole"),
        "the resumed run differs from the uninterrupted one"
    );
}
