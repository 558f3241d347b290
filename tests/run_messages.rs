//! What a new user sees: resuming a finished run says so and changes nothing, evaluation is
//! announced, and `--threads 0` means the default thread count as `threads = 0` does.

mod common;

use common::{temp_dir, train};

/// Resuming a run that already reached its last step trains nothing, evaluates nothing and
/// appends nothing to metrics.jsonl, and exits 0 (as a Lightning `fit` whose `max_epochs` is
/// reached); it says the run is complete at its step (3: `log.max_steps` of the test config).
#[test]
fn resuming_a_finished_run_says_it_is_complete_and_changes_nothing() {
    let dir = temp_dir("resume-finished");
    let cfg = "tests/configs/mlp-synthetic.toml";
    train(cfg, &dir, "run", 2, &[]);
    let before = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();

    let stdout = train(cfg, &dir, "run", 2, &["--resume"]);
    assert!(
        stdout.contains("[rank 0] strata: the run is already complete at step 3 of 3"),
        "{stdout}"
    );
    assert!(!stdout.contains("strata: done"), "nothing was trained or evaluated:\n{stdout}");
    assert!(!stdout.contains("step 1/"), "no training step ran:\n{stdout}");
    let after = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    assert_eq!(before, after, "metrics.jsonl must not change");
}

/// Rank 0 says that evaluation runs and on how many images (the test config's synthetic test
/// set has `data.synthetic_len` = 256 samples), before the epoch summary.
#[test]
fn evaluation_is_announced_with_its_size() {
    let dir = temp_dir("eval-line");
    let stdout = train("tests/configs/mlp-synthetic.toml", &dir, "run", 2, &[]);
    let eval = stdout.find("[rank 0] evaluating on 256 test images").expect(&stdout);
    let summary = stdout.find("[rank 0] epoch 1 done").expect(&stdout);
    assert!(eval < summary, "{stdout}");
    assert!(!stdout.contains("[rank 1] evaluating"), "only rank 0 reports:\n{stdout}");
}

/// `--threads 0` gives one worker all of this machine's cores, as `threads = 0` in a config
/// does (cores / workers), rather than one thread.
#[test]
fn threads_zero_on_the_command_line_means_cores_per_worker() {
    let dir = temp_dir("threads-zero");
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let expected = format!("on 1 worker(s) x {cores} thread(s)");

    let from_config = train("tests/configs/mlp-synthetic.toml", &dir, "cfg", 1, &["threads=0"]);
    assert!(from_config.contains(&expected), "expected `{expected}` in:\n{from_config}");

    let mut cmd = common::launcher();
    cmd.args(["run", "tests/configs/mlp-synthetic.toml", "--threads", "0"])
        .args(["--set", &format!("log.dir={}", dir.display())])
        .args(["--set", "name=cli"]);
    let (out, stdout, stderr) = common::output(&mut cmd);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(&expected), "expected `{expected}` in:\n{stdout}");
}

#[test]
fn the_threads_flag_wins_over_the_config() {
    let dir = temp_dir("threads-flag");
    let mut cmd = common::launcher();
    cmd.args(["run", "tests/configs/mlp-synthetic.toml", "--threads", "1"])
        .args(["--set", &format!("log.dir={}", dir.display())])
        .args(["--set", "name=flag", "--set", "threads=2"]);
    let (out, stdout, stderr) = common::output(&mut cmd);
    assert!(out.status.success(), "{stderr}");
    // The start line reports the compute threads the worker built its pool with.
    assert!(stdout.contains("x 1 thread(s)"), "expected 1 thread from --threads 1 in:\n{stdout}");
}
