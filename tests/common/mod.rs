//! Helpers shared by the end-to-end tests: the real `launcher` binary, the repository root, the
//! data fetched by `scripts/fetch-data.sh`, and reading a run's files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A `launcher` command run from the repository root.
pub fn launcher() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_launcher"));
    cmd.current_dir(repo());
    cmd
}

/// Run `cmd`, returning its output with stdout and stderr as text.
pub fn output(cmd: &mut Command) -> (Output, String, String) {
    let out = cmd.output().expect("the launcher binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// The directory of `dataset`, fetched (or found cached) by the project's fetch script.
/// Panics with the script's output if fetching fails: a test needing data never passes silently
/// without it.
pub fn fetch(dataset: &str) -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join("scripts/fetch-data.sh"))
        .arg(dataset)
        .current_dir(repo())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "scripts/fetch-data.sh {dataset} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let root = std::env::var_os("STRATA_DATA").map(PathBuf::from).unwrap_or(repo().join("data"));
    root.join(dataset)
}

/// The JSON lines of a run's metrics.jsonl.
pub fn metrics(run_dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap_or_else(|e| panic!("{}/metrics.jsonl: {e}", run_dir.display()));
    text.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect()
}

/// A fresh temporary directory under the target directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir =
        repo().join("target").join("test-runs").join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create test dir");
    dir
}

/// Run `launcher run config` with `workers` processes, the run named `name` under `dir`, and
/// `--set` overrides (`--resume` passes through as the flag). Returns stdout and stderr;
/// panics with both if the launcher fails.
pub fn train(config: &str, dir: &Path, name: &str, workers: usize, sets: &[&str]) -> String {
    let (out, stdout, stderr) = try_train(config, dir, name, workers, sets);
    assert!(out.status.success(), "launcher failed:\n{stdout}\n{stderr}");
    stdout
}

/// As [`train`], but returns the launcher's output whether it succeeded or not.
pub fn try_train(
    config: &str,
    dir: &Path,
    name: &str,
    workers: usize,
    sets: &[&str],
) -> (Output, String, String) {
    let mut cmd = launcher();
    cmd.args(["run", config, "--nproc-per-node", &workers.to_string()])
        .args(["--set", &format!("log.dir={}", dir.display())])
        .args(["--set", &format!("name={name}")]);
    for s in sets {
        if *s == "--resume" {
            cmd.arg(s);
        } else {
            cmd.args(["--set", s]);
        }
    }
    output(&mut cmd)
}

/// As [`train`], returning the run's final tensors instead of its output.
pub fn train_run(
    config: &str,
    dir: &Path,
    name: &str,
    workers: usize,
    sets: &[&str],
) -> std::collections::HashMap<String, Vec<f32>> {
    train(config, dir, name, workers, sets);
    final_tensors(&dir.join(name))
}

/// Every tensor of a run's `final.safetensors` (weights and running statistics) as f32 values,
/// by name.
pub fn final_tensors(run_dir: &Path) -> std::collections::HashMap<String, Vec<f32>> {
    weights(&run_dir.join("final.safetensors"))
}

/// The f32 tensors of a safetensors file, by name.
pub fn weights(path: &Path) -> std::collections::HashMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            let vals = v.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()));
            (n, vals.collect())
        })
        .collect()
}

/// The largest absolute difference between two sets of named tensors, and its tensor's name.
pub fn max_abs_diff(
    a: &std::collections::HashMap<String, Vec<f32>>,
    b: &std::collections::HashMap<String, Vec<f32>>,
) -> (f32, String) {
    worst_diff(a, b, |_| true)
}

/// The largest absolute difference between equally named tensors whose name passes `keep`,
/// with the name where it occurs (a NaN on one side only counts as the worst).
pub fn worst_diff(
    a: &std::collections::HashMap<String, Vec<f32>>,
    b: &std::collections::HashMap<String, Vec<f32>>,
    keep: impl Fn(&str) -> bool,
) -> (f32, String) {
    assert_eq!(a.len(), b.len(), "different tensor sets");
    let mut worst = (0.0f32, String::new());
    for (name, va) in a.iter().filter(|(n, _)| keep(n)) {
        let vb = &b[name];
        assert_eq!(va.len(), vb.len(), "{name}");
        for (x, y) in va.iter().zip(vb) {
            let d = (x - y).abs();
            if d > worst.0 || d.is_nan() {
                worst = (d, name.clone());
            }
        }
    }
    worst
}

/// The metrics records of `kind` (`start`, `train`, `eval`) of a run.
pub fn records(run_dir: &Path, kind: &str) -> Vec<serde_json::Value> {
    metrics(run_dir).into_iter().filter(|r| r["kind"] == kind).collect()
}
