//! Data parallelism is exact: 2 workers with per-worker batch b reach the same weights as 1
//! worker with batch 2b, over 3 SGD steps, through the real launcher and the TCP ring. The model
//! has no batch norm, whose per-worker statistics would legitimately differ (DESIGN.md).

mod common;

use common::{launcher, output, temp_dir};
use std::collections::HashMap;
use std::path::Path;

const CONFIG: &str = "tests/configs/mlp-synthetic.toml";

fn run(dir: &Path, name: &str, workers: usize, extra: &[&str]) -> HashMap<String, Vec<f32>> {
    let mut cmd = launcher();
    cmd.args(["run", CONFIG, "--nproc-per-node", &workers.to_string()])
        .args(["--set", &format!("log.dir={}", dir.display())])
        .args(["--set", &format!("name={name}")]);
    for e in extra {
        cmd.args(["--set", e]);
    }
    let (out, stdout, stderr) = output(&mut cmd);
    assert!(out.status.success(), "launcher failed:\n{stdout}\n{stderr}");
    let bytes = std::fs::read(dir.join(name).join("final.safetensors")).expect("final weights");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            let vals = v.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()));
            (n, vals.collect())
        })
        .collect()
}

fn max_abs_diff(a: &HashMap<String, Vec<f32>>, b: &HashMap<String, Vec<f32>>) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut worst = 0.0f32;
    for (name, va) in a {
        let vb = &b[name];
        assert_eq!(va.len(), vb.len(), "{name}");
        for (x, y) in va.iter().zip(vb) {
            worst = worst.max((x - y).abs());
        }
    }
    worst
}

#[test]
fn two_workers_equal_one_worker_with_the_concatenated_batch() {
    let dir = temp_dir("ddp-exact");
    let two = run(&dir, "two", 2, &["data.batch_size=8"]);
    let one = run(&dir, "one", 1, &["data.batch_size=16"]);
    let untrained = run(&dir, "lr0", 1, &["data.batch_size=16", "optimizer.lr=0.0"]);

    // The tolerance is the issue's: 1e-5 after 3 steps (float sums in another order).
    let diff = max_abs_diff(&two, &one);
    assert!(diff <= 1e-5, "2 workers x 8 vs 1 worker x 16: max abs difference {diff:e}");
    eprintln!("2 workers vs 1: max abs difference {diff:e}");
    // And the steps did move the weights, so equality above is not vacuous.
    let moved = max_abs_diff(&one, &untrained);
    eprintln!("moved by training: {moved:e}");
    assert!(moved > 1e-3, "3 steps at lr 0.1 moved weights by only {moved:e}");
}
