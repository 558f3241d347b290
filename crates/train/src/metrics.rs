//! The run directory: the resolved config and `metrics.jsonl`, one JSON object per line.

use crate::error::{io_err, Result};
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
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let cfg_path = dir.join("config.toml");
        let tmp = dir.join(".config.toml.tmp");
        std::fs::write(&tmp, resolved_config).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &cfg_path).map_err(io_err(&cfg_path))?;
        let mpath = dir.join("metrics.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resuming)
            .truncate(!resuming)
            .open(&mpath)
            .map_err(io_err(&mpath))?;
        Ok(RunDir { path: dir.to_path_buf(), metrics: BufWriter::new(file) })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one metrics line and flush it, so the file is readable while the run goes on.
    pub fn log(&mut self, record: serde_json::Value) -> Result<()> {
        let path = self.path.join("metrics.jsonl");
        writeln!(self.metrics, "{record}").map_err(io_err(&path))?;
        self.metrics.flush().map_err(io_err(&path))
    }
}
