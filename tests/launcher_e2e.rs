//! `launcher run` end to end: 2 workers train ResNet-20 for a few steps on a slice of the real
//! Fashion-MNIST data; the loss falls and the run directory holds its files.

mod common;

use common::{fetch, launcher, metrics, output, temp_dir};

#[test]
fn two_workers_train_resnet20_on_fashion_mnist_and_the_loss_falls() {
    let data = fetch("fashion-mnist");
    let dir = temp_dir("e2e");
    let (out, stdout, stderr) = output(launcher().args([
        "run",
        "configs/resnet20-fashion.toml",
        "--nproc-per-node",
        "2",
        "--set",
        &format!("data.dir={}", data.display()),
        "--set",
        &format!("log.dir={}", dir.display()),
        "--set",
        "data.train_limit=2048",
        "--set",
        "data.test_limit=500",
        "--set",
        "data.batch_size=32",
        "--set",
        "log.every=3",
        "--set",
        "log.max_steps=24",
        "--set",
        "schedule.warmup_steps=3",
    ]));
    assert!(out.status.success(), "launcher failed:\n{stdout}\n{stderr}");

    // Worker output reaches the user prefixed with its rank; only rank 0 reports.
    assert!(stdout.contains("[rank 0] epoch 1 done"), "no epoch summary from rank 0:\n{stdout}");
    assert!(!stdout.contains("[rank 1] epoch"), "rank 1 should stay quiet:\n{stdout}");

    let run = dir.join("resnet20-fashion");
    assert!(run.join("config.toml").is_file(), "resolved config missing");
    let svg = std::fs::read_to_string(run.join("metrics.svg")).expect("the run's plot");
    assert!(svg.starts_with("<svg") && svg.contains("test accuracy"), "not the metrics plot");
    let records = metrics(&run);
    let losses: Vec<f64> = records
        .iter()
        .filter(|r| r["kind"] == "train")
        .map(|r| r["loss"].as_f64().expect("loss is a number"))
        .collect();
    assert_eq!(losses.len(), 8, "24 steps logged every 3 steps: {records:?}");
    // Falling: the last two windows average below the first two (ln 10 = 2.30 at the start).
    let first = (losses[0] + losses[1]) / 2.0;
    let last = (losses[6] + losses[7]) / 2.0;
    assert!(last < first, "loss did not fall: {losses:?}");
    let eval: Vec<_> = records.iter().filter(|r| r["kind"] == "eval").collect();
    assert_eq!(eval.len(), 1, "one evaluation at the end: {records:?}");
    let acc = eval[0]["test_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "accuracy {acc}");
}

#[test]
fn a_wrong_config_key_fails_before_any_worker_starts_and_names_the_key() {
    let (out, stdout, stderr) = output(launcher().args([
        "run",
        "configs/resnet20-fashion.toml",
        "--nproc-per-node",
        "2",
        "--set",
        "optimizer.learning_rate=0.1",
    ]));
    assert!(!out.status.success());
    assert!(stderr.contains("learning_rate"), "error should name the key:\n{stderr}");
    assert!(!stdout.contains("[rank"), "no worker should have started:\n{stdout}");
}

#[test]
fn a_missing_dataset_is_an_error_that_says_how_to_fetch_it() {
    let dir = temp_dir("missing-data");
    let (out, _stdout, stderr) = output(launcher().args([
        "run",
        "configs/resnet20-fashion.toml",
        "--set",
        &format!("data.dir={}", dir.join("nowhere").display()),
        "--set",
        &format!("log.dir={}", dir.display()),
    ]));
    assert!(!out.status.success());
    assert!(stderr.contains("nowhere"), "error should name the path:\n{stderr}");
    assert!(stderr.contains("fetch-data.sh"), "error should say how to fetch:\n{stderr}");
    assert!(stderr.contains("rank 0 failed"), "launcher names the failing rank:\n{stderr}");
}
