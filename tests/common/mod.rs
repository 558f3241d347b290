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
