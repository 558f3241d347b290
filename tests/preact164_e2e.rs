//! `configs/preact164-fashion.toml` end to end: 2 workers train pre-activation ResNet-164 with
//! stochastic depth (p_L = 0.5) for a few steps on a slice of the real Fashion-MNIST data through
//! the real launcher, and finish with finite losses and an evaluation.

mod common;

use common::{fetch, launcher, metrics, output, temp_dir};

#[test]
fn two_workers_train_preact_resnet164_with_stochastic_depth_for_a_few_steps() {
    let data = fetch("fashion-mnist");
    let dir = temp_dir("preact164");
    let (out, stdout, stderr) = output(launcher().args([
        "run",
        "configs/preact164-fashion.toml",
        "--nproc-per-node",
        "2",
        "--set",
        &format!("data.dir={}", data.display()),
        "--set",
        &format!("log.dir={}", dir.display()),
        "--set",
        "data.train_limit=64",
        "--set",
        "data.test_limit=32",
        "--set",
        "data.batch_size=8",
        "--set",
        "data.eval_batch_size=16",
        "--set",
        "log.every=1",
        "--set",
        "log.max_steps=3",
        "--set",
        "schedule.warmup_steps=0",
    ]));
    assert!(out.status.success(), "launcher failed:\n{stdout}\n{stderr}");

    let run = dir.join("preact164-fashion");
    let config = std::fs::read_to_string(run.join("config.toml")).expect("resolved config");
    assert!(config.contains("preact_resnet") && config.contains("survival_prob = 0.5"), "{config}");
    let records = metrics(&run);
    let losses: Vec<f64> = records
        .iter()
        .filter(|r| r["kind"] == "train")
        .map(|r| r["loss"].as_f64().expect("loss is a number"))
        .collect();
    assert_eq!(losses.len(), 3, "3 steps logged every step: {records:?}");
    assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0), "losses {losses:?}");
    let eval: Vec<_> = records.iter().filter(|r| r["kind"] == "eval").collect();
    assert_eq!(eval.len(), 1, "one evaluation at the end: {records:?}");
    let test_loss = eval[0]["test_loss"].as_f64().expect("test loss is a number");
    assert!(test_loss.is_finite(), "test loss {test_loss}");
}
