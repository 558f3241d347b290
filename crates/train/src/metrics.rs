//! The run directory: the resolved config and `metrics.jsonl`, one JSON object per line.

use crate::error::{write_err, Result, LOG_DIR_HINT};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Writes the run directory's files (rank 0 only).
pub struct RunDir {
    path: PathBuf,
    metrics: BufWriter<File>,
}

impl RunDir {
    /// Create `dir` (if needed), write `config.toml` and open `metrics.jsonl`: truncated for a
    /// fresh run, appended to when `resuming`.
    pub fn create(dir: &Path, resolved_config: &str, resuming: bool) -> Result<RunDir> {
        std::fs::create_dir_all(dir).map_err(write_err(
            "create the run directory",
            dir,
            LOG_DIR_HINT,
        ))?;
        let cfg_path = dir.join("config.toml");
        let tmp = dir.join(".config.toml.tmp");
        let cannot =
            |path: &Path| write_err("write the run's config", path.to_path_buf(), LOG_DIR_HINT);
        std::fs::write(&tmp, resolved_config).map_err(cannot(&tmp))?;
        std::fs::rename(&tmp, &cfg_path).map_err(cannot(&cfg_path))?;
        let mpath = dir.join("metrics.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resuming)
            .truncate(!resuming)
            .open(&mpath)
            .map_err(write_err("open the metrics file", &mpath, LOG_DIR_HINT))?;
        Ok(RunDir { path: dir.to_path_buf(), metrics: BufWriter::new(file) })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one metrics line and flush it, so the file is readable while the run goes on.
    pub fn log(&mut self, record: serde_json::Value) -> Result<()> {
        let path = self.path.join("metrics.jsonl");
        let cannot = || write_err("append to the metrics file", &path, LOG_DIR_HINT);
        writeln!(self.metrics, "{record}").map_err(cannot())?;
        self.metrics.flush().map_err(cannot())
    }
}
