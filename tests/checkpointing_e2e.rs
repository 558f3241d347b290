//! Gradient checkpointing through the `launcher`: two workers training with checkpointed
//! segments end with weights bit-identical to the same run without them, and `launcher plan`
//! prints the summary, FLOPs and a predicted peak within the configured budget, or says which
//! budget would fit.

mod common;

use common::{launcher, output, temp_dir};
use std::path::Path;

fn train(dir: &Path, name: &str, policy: &str) -> Vec<u8> {
    let (out, stdout, stderr) = output(launcher().args([
        "run",
        "configs/resnet56-synthetic.toml",
        "--nproc-per-node",
        "2",
        "--set",
        &format!("log.dir={}", dir.display()),
        "--set",
        &format!("name={name}"),
        "--set",
        "model.depth=14",
        "--set",
        "model.survival_prob=0.7",
        "--set",
        "data.synthetic_shape=[3,8,8]",
        "--set",
        "data.synthetic_len=256",
        "--set",
        "data.batch_size=8",
        "--set",
        "log.max_steps=6",
        "--set",
        &format!("model.gradient_checkpointing={policy}"),
    ]));
    assert!(out.status.success(), "launcher failed:\n{stdout}\n{stderr}");
    let weights = dir.join(name).join("final.safetensors");
    std::fs::read(&weights).unwrap_or_else(|e| panic!("{}: {e}", weights.display()))
}

#[test]
fn two_workers_with_checkpointing_end_bit_identical_to_two_workers_without() {
    let dir = temp_dir("ckpt-e2e");
    let plain = train(&dir, "plain", "\"none\"");
    let every = train(&dir, "every2", "{every=2}");
    assert!(plain == every, "weights differ with checkpointing every 2 blocks");
}

#[test]
fn plan_prints_summary_flops_and_a_peak_within_the_budget() {
    let (out, stdout, stderr) =
        output(launcher().args(["plan", "configs/preact164-fashion-ckpt.toml"]));
    assert!(out.status.success(), "plan failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("Weighted layers (depth): 164"), "{stdout}");
    // Pre-activation ResNet-164 on 28x28: the strata-nn plan test derives 378,758,656.
    assert!(stdout.contains("Forward FLOPs per sample: 378,758,656"), "{stdout}");
    let peak = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Predicted peak memory per worker at batch 64: "))
        .unwrap_or_else(|| panic!("no peak line:\n{stdout}"));
    let mib: f64 = peak.trim_end_matches(" MiB").parse().expect("a size in MiB");
    assert!(mib <= 400.0 && mib > 200.0, "budget 400MiB, predicted {peak}");
    for part in ["parameters", "gradients", "optimizer state", "saved activations"] {
        assert!(stdout.contains(part), "no {part} line:\n{stdout}");
    }

    let (out, stdout, stderr) = output(launcher().args([
        "plan",
        "configs/preact164-fashion-ckpt.toml",
        "--set",
        "model.gradient_checkpointing={budget=\"20MiB\"}",
    ]));
    assert!(!out.status.success(), "a 20 MiB budget cannot fit:\n{stdout}");
    assert!(
        stderr.contains("model.gradient_checkpointing") && stderr.contains("lower data.batch_size"),
        "{stderr}"
    );
}
