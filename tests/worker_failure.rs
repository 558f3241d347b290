//! One worker dying stops the job: the launcher exits non-zero within 10 s, naming the rank,
//! and no worker survives.

mod common;

use common::{launcher, temp_dir};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Pids of the live children of `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc is readable").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // Fields after the command name (which is in parentheses): state, ppid, ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) && fields[0] != "Z" {
            out.push(pid);
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('Z')).unwrap_or(true))
        .unwrap_or(false)
}

#[test]
fn killing_one_worker_stops_the_job_within_ten_seconds() {
    let dir = temp_dir("kill");
    let mut child = launcher()
        .args(["run", "tests/configs/mlp-synthetic.toml", "--nproc-per-node", "2"])
        .args(["--set", &format!("log.dir={}", dir.display())])
        .args(["--set", "epochs=100000", "--set", "log.max_steps=0", "--set", "log.every=50"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("launcher starts");

    // Wait until both workers run and training has begun (metrics are being written).
    let start = Instant::now();
    let workers = loop {
        let w = children_of(child.id());
        if w.len() == 2 && dir.join("mlp-synthetic/metrics.jsonl").exists() {
            break w;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "workers did not start: {w:?}");
        std::thread::sleep(Duration::from_millis(100));
    };

    // SAFETY: kill(2) on a pid we just read as a child of our launcher.
    unsafe {
        libc::kill(workers[1] as libc::pid_t, libc::SIGKILL);
    }
    let killed_at = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait works") {
            break status;
        }
        if killed_at.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("launcher still running 10 s after a worker was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = killed_at.elapsed();
    let mut stderr = String::new();
    use std::io::Read;
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();

    assert!(!status.success(), "launcher must exit non-zero");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert!(
        stderr.contains("rank 1 failed (killed by signal 9)"),
        "launcher names the killed rank and its status:\n{stderr}"
    );
    for pid in workers {
        assert!(!alive(pid), "worker {pid} survived the launcher");
    }
}
