//! Checkpoints: `runs/<name>/checkpoints/step-N/` holds `model.safetensors` (parameters and
//! buffers, the running statistics averaged over the ranks; readable by other tools),
//! `optimizer.safetensors` (optimizer state by parameter name), `rank_buffers.safetensors`
//! (each rank's own running statistics, `rank<R>.<buffer>`, so a resume on as many workers
//! continues them exactly) and `state.json` (where training stands). Rank 0 writes each one into a hidden
//! temporary directory and renames it into place, so a crash mid-write leaves the previous
//! checkpoints intact; the newest `keep` are kept.
//!
//! Randomness is counter-based: shuffling, augmentation, dropout and stochastic-depth streams
//! are derived from (seed, rank, epoch, step, sample position), so their state is those
//! coordinates; `state.json` records them ([`RngState`]) and the resumed run re-derives each
//! stream from them.

use crate::error::{io_err, write_err, Result, TrainError, LOG_DIR_HINT};
use crate::weights::{load_weights, save_tensors, save_weights};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use strata_nn::{named_buffers, named_parameters, Module};
use strata_tensor::Tensor;

/// Where training stands, as written to `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: u64,
    /// The epoch the next step belongs to.
    pub epoch: u64,
    /// Global batches of `epoch` already consumed.
    pub batch_in_epoch: u64,
    /// Seed of the sampler, augmentation and initialisation streams.
    pub seed: u64,
    /// Workers that wrote this checkpoint, and their global batch.
    pub world_size: usize,
    pub global_batch: usize,
    /// Hash of the resolved config (without its resume and logging settings).
    pub config_hash: String,
    /// The learning-rate schedule's position is the step; this is its value there, for humans.
    pub lr: f64,
    /// The schedule itself: kind, settings, peak learning rate and the span it covers.
    #[serde(default)]
    pub schedule: serde_json::Value,
    /// The state of the random streams at this point.
    #[serde(default)]
    pub rng: RngState,
    /// Steps skipped so far because a rank saw a non-finite loss (`optimizer.on_nonfinite`).
    #[serde(default)]
    pub skipped_steps: u64,
}

/// The state of Strata's counter-based random streams at a point of the run: each stream's
/// key and position. A stream's draws depend only on these, so nothing else is saved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RngState {
    /// How the streams are made, for readers of the file.
    pub generator: String,
    /// The run seed, the first part of every key.
    pub seed: u64,
    /// Sampler permutation (ChaCha8) keyed by (seed, epoch).
    pub sampler_epoch: u64,
    /// Augmentation streams (ChaCha8) keyed by (seed, rank, epoch); the next sample position
    /// within the epoch, per rank, selects the stream.
    pub augment_next_position: u64,
    /// Dropout masks keyed by (seed, rank, epoch, step, layer) and stochastic-depth decisions
    /// keyed by (seed, step, block) (SplitMix64 counters): the next step.
    pub next_step: u64,
}

impl RngState {
    /// The streams' state before step `step` (0-based count of steps taken) of `epoch`, with
    /// `position` samples of the epoch already drawn on each rank.
    pub fn at(seed: u64, epoch: u64, step: u64, position: u64) -> RngState {
        RngState {
            generator: "counter-based: ChaCha8 (sampler, augmentation), SplitMix64 (dropout, \
                        stochastic depth)"
                .into(),
            seed,
            sampler_epoch: epoch,
            augment_next_position: position,
            next_step: step,
        }
    }
}

/// The checkpoints directory of a run.
pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// What a checkpoint holds besides the model and the state file.
pub struct Extra<'a> {
    /// The optimizer's state by name ([`crate::optim::Optimizer::state`]).
    pub optimizer: &'a [(String, Tensor)],
    /// Each rank's own buffers ([`rank_buffers`]).
    pub rank_buffers: &'a [(String, Tensor)],
}

/// Name every rank's buffers `rank<R>.<buffer>`, given `per_rank[R][i]` for the `i`-th of
/// `named` buffers.
pub fn rank_buffers(
    named: &[(String, strata_nn::Buffer)],
    per_rank: &[Vec<Tensor>],
) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    for (r, tensors) in per_rank.iter().enumerate() {
        for ((name, _), t) in named.iter().zip(tensors) {
            out.push((format!("rank{r}.{name}"), t.clone()));
        }
    }
    out
}

/// Set `rank`'s buffers from the `rank<R>.<buffer>` tensors of a checkpoint (in `dir`).
///
/// # Errors
/// [`TrainError::Config`] if one of them is missing or has another shape.
pub fn restore_rank_buffers(
    dir: &Path,
    saved: &HashMap<String, (Vec<usize>, Vec<f32>)>,
    named: &[(String, strata_nn::Buffer)],
    rank: usize,
) -> Result<()> {
    for (name, b) in named {
        let key = format!("rank{rank}.{name}");
        let (dims, values) = saved.get(&key).ok_or_else(|| TrainError::Config {
            path: dir.join("rank_buffers.safetensors").display().to_string(),
            detail: format!("has no tensor {key}; was it written for another model?"),
        })?;
        let restored = restore(dims, values, b.borrow().dims(), &key, dir)?;
        *b.borrow_mut() = restored;
    }
    Ok(())
}

/// Write a checkpoint of `model`, the `extra` tensors and `state` under `run_dir`, then
/// delete all but the newest `keep`. Returns the checkpoint's directory.
pub fn save(
    run_dir: &Path,
    model: &dyn Module,
    extra: Extra<'_>,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf> {
    let root = checkpoints_dir(run_dir);
    let final_dir = root.join(format!("step-{}", state.step));
    let tmp = root.join(format!(".step-{}.tmp", state.step));
    let cannot = |path: &Path| write_err("write the checkpoint", path.to_path_buf(), LOG_DIR_HINT);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(cannot(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(cannot(&tmp))?;
    save_weights(model, &tmp.join("model.safetensors"))?;
    save_tensors(extra.optimizer, &tmp.join("optimizer.safetensors"))?;
    save_tensors(extra.rank_buffers, &tmp.join("rank_buffers.safetensors"))?;
    let json = serde_json::to_string_pretty(state).expect("TrainState serialises");
    std::fs::write(tmp.join("state.json"), json).map_err(cannot(&tmp.join("state.json")))?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(cannot(&final_dir))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(cannot(&final_dir))?;
    prune(&root, keep)?;
    Ok(final_dir)
}

/// Complete checkpoints under `root`, oldest first, as (step, directory).
pub fn list(root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else { return Ok(out) };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse::<u64>().ok()) {
            if entry.path().join("state.json").is_file() {
                out.push((step, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn prune(root: &Path, keep: usize) -> Result<()> {
    let all = list(root)?;
    for (_, dir) in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        std::fs::remove_dir_all(dir).map_err(write_err(
            "delete the old checkpoint",
            dir,
            LOG_DIR_HINT,
        ))?;
    }
    Ok(())
}

/// The checkpoint directory that `resume` names: `latest` (the newest complete checkpoint of
/// the run) or a path to a `step-N` directory.
pub fn resolve(run_dir: &Path, resume: &str) -> Result<PathBuf> {
    if resume == "latest" {
        let root = checkpoints_dir(run_dir);
        return list(&root)?.pop().map(|(_, dir)| dir).ok_or_else(|| TrainError::Config {
            path: "checkpoint.resume".into(),
            detail: format!(
                "no complete checkpoint under {}; start without --resume",
                root.display()
            ),
        });
    }
    let dir = PathBuf::from(resume);
    if dir.join("state.json").is_file() {
        Ok(dir)
    } else {
        Err(TrainError::Config {
            path: "checkpoint.resume".into(),
            detail: format!("{resume} is not a checkpoint directory (no state.json in it)"),
        })
    }
}

/// What a checkpoint holds, read back.
pub struct Loaded {
    pub state: TrainState,
    pub optimizer: HashMap<String, (Vec<usize>, Vec<f32>)>,
    /// Each rank's own buffers, `rank<R>.<buffer>`.
    pub rank_buffers: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

/// Load the checkpoint in `dir` into `model` (parameters and buffers, matched by name) and
/// return the optimizer tensors and the training state.
pub fn load(dir: &Path, model: &dyn Module) -> Result<Loaded> {
    let weights = load_weights(&dir.join("model.safetensors"))?;
    let missing = |name: &str| TrainError::Config {
        path: dir.join("model.safetensors").display().to_string(),
        detail: format!("has no tensor {name}; was it written for another model?"),
    };
    for (name, p) in named_parameters(model) {
        let (dims, values) = weights.get(&name).ok_or_else(|| missing(&name))?;
        let restored = restore(dims, values, p.value().dims(), &name, dir)?;
        *p.value_mut() = restored;
    }
    for (name, b) in named_buffers(model) {
        let (dims, values) = weights.get(&name).ok_or_else(|| missing(&name))?;
        let restored = restore(dims, values, b.borrow().dims(), &name, dir)?;
        *b.borrow_mut() = restored;
    }
    let optimizer = load_weights(&dir.join("optimizer.safetensors"))?;
    // Checkpoints written before per-rank statistics were kept have none: the averaged ones
    // in the model file then stand for every rank's.
    let rank_path = dir.join("rank_buffers.safetensors");
    let rank_buffers = if rank_path.is_file() { load_weights(&rank_path)? } else { HashMap::new() };
    let text =
        std::fs::read_to_string(dir.join("state.json")).map_err(io_err(dir.join("state.json")))?;
    let state = serde_json::from_str(&text).map_err(|e| TrainError::Config {
        path: dir.join("state.json").display().to_string(),
        detail: e.to_string(),
    })?;
    Ok(Loaded { state, optimizer, rank_buffers })
}

fn restore(
    dims: &[usize],
    values: &[f32],
    want: &[usize],
    name: &str,
    dir: &Path,
) -> Result<Tensor> {
    if dims != want {
        return Err(TrainError::Config {
            path: dir.display().to_string(),
            detail: format!(
                "{name} has shape {dims:?} in the checkpoint but {want:?} in the model"
            ),
        });
    }
    Ok(Tensor::from_vec(values.to_vec(), dims)?)
}
