//! Experiment configs: TOML files under `configs/`, with `--set key=value` overrides applied to
//! the parsed TOML tree before it is checked against the schema (unknown keys are errors).

use crate::error::{Result, TrainError};
use serde::{Deserialize, Serialize};
use std::path::Path;
use strata_nn::checkpoint::CheckpointPolicy;
use strata_nn::plan::parse_bytes;

/// A whole experiment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Run name; the run directory is `<log.dir>/<name>`.
    pub name: String,
    /// Seed of initialisation, shuffling and augmentation.
    #[serde(default)]
    pub seed: u64,
    /// Passes over the training set.
    pub epochs: u64,
    /// Compute threads per worker; 0 means the node's cores divided by its workers.
    #[serde(default)]
    pub threads: usize,
    pub model: ModelConfig,
    pub data: DataConfig,
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    #[serde(default)]
    pub ddp: DdpConfig,
}

/// How gradients are averaged over the workers and whether batch norm shares statistics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DdpConfig {
    /// Gradient bucket size in MiB (PyTorch's `bucket_cap_mb`); 0 gives one all-reduce per
    /// parameter.
    #[serde(default = "default_bucket_mb")]
    pub bucket_cap_mb: f64,
    /// Size of the first bucket in MiB (the last layers' gradients, ready first).
    #[serde(default = "one_f64")]
    pub first_bucket_mb: f64,
    /// Start each bucket's all-reduce during backward, as soon as it is complete; false starts
    /// them all after backward.
    #[serde(default = "yes")]
    pub overlap: bool,
    /// Batch norm normalises with statistics over every worker's batch (SyncBatchNorm), so N
    /// workers with batch b compute what one worker with batch N·b does.
    #[serde(default)]
    pub sync_bn: bool,
}

impl Default for DdpConfig {
    fn default() -> Self {
        DdpConfig {
            bucket_cap_mb: default_bucket_mb(),
            first_bucket_mb: 1.0,
            overlap: true,
            sync_bn: false,
        }
    }
}

impl DdpConfig {
    /// The reducer's bucket options.
    pub fn bucket_options(&self) -> crate::ddp::BucketOptions {
        let bytes = |mib: f64| (mib * (1u64 << 20) as f64).round() as usize;
        crate::ddp::BucketOptions {
            cap_bytes: bytes(self.bucket_cap_mb),
            first_cap_bytes: bytes(self.first_bucket_mb),
            overlap: self.overlap,
        }
    }
}

/// When to write checkpoints and where to resume from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Write a checkpoint every `every` steps (0: only at the end of the run).
    #[serde(default)]
    pub every: u64,
    /// Keep the newest `keep` checkpoints (0 means 1).
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// Resume from `latest` (the run's newest checkpoint) or a checkpoint directory; empty
    /// starts afresh. `launcher run --resume` sets `latest`.
    #[serde(default)]
    pub resume: String,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { every: 0, keep: default_keep(), resume: String::new() }
    }
}

/// Which network to build; `crate::model::build_model` says which fields each kind reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Builder name: `cifar_resnet`, `preact_resnet`, `imagenet_resnet`, `deep_cnn`, `mlp` or
    /// `sequential`.
    pub kind: String,
    /// Depth: 6n+2 for `cifar_resnet`, 9n+2 for `preact_resnet`, 50/101/152 for
    /// `imagenet_resnet`, stages for `deep_cnn`, hidden blocks for `mlp`; unused by
    /// `sequential`.
    #[serde(default)]
    pub depth: usize,
    /// Hidden width of `mlp` (default 256); first-stage filters of `deep_cnn` (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<usize>,
    /// Batch norm after each hidden dense layer of `mlp`.
    #[serde(default = "yes")]
    pub batch_norm: bool,
    /// Start each residual branch at zero (last batch norm's scale, or last convolution in
    /// pre-activation blocks), so every block starts as the identity.
    #[serde(default)]
    pub zero_init_residual: bool,
    /// Stochastic depth for the residual networks: survival probability `p_L` of the last
    /// block, decaying linearly from 1 at the first; 1 disables it.
    #[serde(default = "one_f64")]
    pub survival_prob: f64,
    /// Dropout probability after each hidden block of `mlp`; 0 disables it.
    #[serde(default)]
    pub dropout: f64,
    /// Layers of a `sequential` model, in order: tables with a registered `type` and that
    /// layer's arguments (`[[model.layers]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<toml::Table>,
    /// Gradient checkpointing of the block sequence: `"none"` (the default), `"sqrt"`,
    /// `{ every = k }` or `{ budget = "2GiB" }`; read by [`ModelConfig::checkpoint_policy`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_checkpointing: Option<toml::Value>,
}

impl ModelConfig {
    /// The gradient-checkpointing policy `gradient_checkpointing` names.
    ///
    /// # Errors
    /// [`TrainError::Config`] at `model.gradient_checkpointing` for anything but the four
    /// forms, saying what they are.
    pub fn checkpoint_policy(&self) -> Result<CheckpointPolicy> {
        let bad = |detail: String| TrainError::Config {
            path: "model.gradient_checkpointing".into(),
            detail: format!(
                "{detail}; use \"none\", \"sqrt\", {{ every = k }} (k >= 1 blocks per segment) \
                 or {{ budget = \"2GiB\" }} (peak memory per worker)"
            ),
        };
        let Some(v) = &self.gradient_checkpointing else {
            return Ok(CheckpointPolicy::None);
        };
        match v {
            toml::Value::String(s) if s == "none" => Ok(CheckpointPolicy::None),
            toml::Value::String(s) if s == "sqrt" => Ok(CheckpointPolicy::Sqrt),
            toml::Value::Table(t) if t.len() == 1 => match t.iter().next() {
                Some((k, toml::Value::Integer(n))) if k == "every" && *n >= 1 => {
                    Ok(CheckpointPolicy::Every(*n as usize))
                }
                Some((k, toml::Value::String(b))) if k == "budget" => {
                    let bytes = parse_bytes(b).map_err(|e| bad(e.to_string()))?;
                    Ok(CheckpointPolicy::Budget(bytes))
                }
                Some((k, toml::Value::Integer(n))) if k == "budget" && *n > 0 => {
                    Ok(CheckpointPolicy::Budget(*n as u64))
                }
                _ => Err(bad(format!("{v} is not a policy"))),
            },
            other => Err(bad(format!("{other} is not a policy"))),
        }
    }
}

/// Dataset, batching and augmentation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `fashion-mnist`, `mnist`, `cifar10` or `synthetic`.
    pub dataset: String,
    /// Directory of the dataset files (relative to the working directory).
    #[serde(default)]
    pub dir: String,
    /// Samples per worker per step; the global batch is this times the world size.
    pub batch_size: usize,
    /// Samples per evaluation step.
    #[serde(default = "default_eval_batch")]
    pub eval_batch_size: usize,
    /// Zero padding of the random crop (0 disables cropping).
    #[serde(default)]
    pub crop_padding: usize,
    /// Random horizontal flips.
    #[serde(default)]
    pub hflip: bool,
    /// Train on the first `train_limit` samples only (0: all).
    #[serde(default)]
    pub train_limit: usize,
    /// Evaluate on the first `test_limit` samples only (0: all).
    #[serde(default)]
    pub test_limit: usize,
    /// Background threads that decode and augment batches.
    #[serde(default = "one")]
    pub loader_threads: usize,
    /// Synthetic data only: the sample shape `[C, H, W]`, sample count and classes.
    #[serde(default)]
    pub synthetic_shape: Option<[usize; 3]>,
    #[serde(default)]
    pub synthetic_len: Option<usize>,
    /// Training samples (indices into the training set) whose pixels read as NaN, to exercise
    /// the non-finite-loss handling (`optimizer.on_nonfinite`); empty in real experiments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nan_samples: Vec<usize>,
}

/// Optimizer hyper-parameters, gradient accumulation and clipping.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// `sgd` or `adamw`.
    pub kind: String,
    /// Peak learning rate (before the linear scaling rule, if `reference_batch` is set).
    pub lr: f64,
    /// SGD only: momentum factor (0 disables momentum).
    #[serde(default)]
    pub momentum: f64,
    /// L2 penalty added to the gradient (SGD) or decoupled decay `p *= 1 - lr * wd` (AdamW).
    #[serde(default)]
    pub weight_decay: f64,
    /// Also decay batch-norm scales and shifts and biases (excluded by default).
    #[serde(default)]
    pub decay_bias_and_norm: bool,
    /// SGD only: Nesterov momentum (needs `momentum > 0`).
    #[serde(default)]
    pub nesterov: bool,
    /// AdamW only: decay rates of the first and second moment estimates.
    #[serde(default = "default_betas")]
    pub betas: [f64; 2],
    /// AdamW only: added to the denominator for numerical stability.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Linear scaling rule (Goyal et al., 2017), opt-in: when non-zero, the learning rate is
    /// `lr * global_batch / reference_batch`.
    #[serde(default)]
    pub reference_batch: usize,
    /// Micro-steps of `data.batch_size` samples per optimizer step; gradients are summed
    /// locally and all-reduced once, on the last one. The global batch is
    /// `batch_size * world_size * accumulate_steps`.
    #[serde(default = "one")]
    pub accumulate_steps: usize,
    /// Clip the averaged gradient to this global L2 norm before the step (0: no clipping).
    #[serde(default)]
    pub clip_grad_norm: f64,
    /// What every rank does, together, when any rank sees a non-finite loss: `error` stops the
    /// run with an error naming the step; `skip` leaves weights and optimizer state unchanged
    /// for that step (which still counts: data and schedule move on) and goes on.
    #[serde(default = "default_on_nonfinite")]
    pub on_nonfinite: String,
}

impl OptimizerConfig {
    /// A config of `kind` at learning rate `lr` with every other setting at its default.
    pub fn new(kind: &str, lr: f64) -> OptimizerConfig {
        OptimizerConfig {
            kind: kind.into(),
            lr,
            momentum: 0.0,
            weight_decay: 0.0,
            decay_bias_and_norm: false,
            nesterov: false,
            betas: default_betas(),
            eps: default_eps(),
            reference_batch: 0,
            accumulate_steps: 1,
            clip_grad_norm: 0.0,
            on_nonfinite: default_on_nonfinite(),
        }
    }

    /// The learning rate used for a global batch of `global_batch`.
    pub fn effective_lr(&self, global_batch: usize) -> f64 {
        if self.reference_batch == 0 {
            self.lr
        } else {
            self.lr * global_batch as f64 / self.reference_batch as f64
        }
    }
}

/// Learning-rate schedule: linear warmup, then `constant`, `cosine` (to zero at the last step)
/// or `multistep` (times `gamma` at each epoch in `milestones`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    #[serde(default = "default_schedule")]
    pub kind: String,
    #[serde(default)]
    pub warmup_steps: u64,
    #[serde(default)]
    pub milestones: Vec<u64>,
    #[serde(default = "default_gamma")]
    pub gamma: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            kind: default_schedule(),
            warmup_steps: 0,
            milestones: Vec::new(),
            gamma: default_gamma(),
        }
    }
}

/// Logging and the run directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Write a metrics line every `every` steps.
    #[serde(default = "default_every")]
    pub every: u64,
    /// Parent of run directories.
    #[serde(default = "default_dir")]
    pub dir: String,
    /// Stop after this many steps (0: run all epochs); for tests and quick looks. The
    /// schedule spans the shortened run.
    #[serde(default)]
    pub max_steps: u64,
    /// Stop after this step as if preempted: no final evaluation, no final checkpoint; the
    /// schedule still spans the whole run, so a resumed run continues it (0: never).
    #[serde(default)]
    pub stop_at_step: u64,
    /// Stop after this many seconds (0: no limit), at a step every rank agrees on (the first
    /// step after which any rank's clock passed the limit), writing a checkpoint there so
    /// `--resume` continues the run.
    #[serde(default)]
    pub time_limit_s: f64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            every: default_every(),
            dir: default_dir(),
            max_steps: 0,
            stop_at_step: 0,
            time_limit_s: 0.0,
        }
    }
}

fn default_bucket_mb() -> f64 {
    25.0
}
fn default_eval_batch() -> usize {
    500
}
fn yes() -> bool {
    true
}
fn one_f64() -> f64 {
    1.0
}
fn one() -> usize {
    1
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn default_eps() -> f64 {
    1e-8
}
fn default_on_nonfinite() -> String {
    "error".into()
}
fn default_schedule() -> String {
    "constant".into()
}
fn default_gamma() -> f64 {
    0.1
}
fn default_keep() -> usize {
    3
}
fn default_every() -> u64 {
    20
}
fn default_dir() -> String {
    "runs".into()
}

impl Config {
    /// Read `path`, apply `overrides` (`key.path=value`, the value parsed as TOML, else taken as
    /// a string), and check the result.
    ///
    /// # Errors
    /// [`TrainError::Config`] naming the file and the problem; [`TrainError::Override`] naming
    /// the key path of a bad override.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Config {
            path: shown.clone(),
            detail: format!("cannot read it ({e}); configs live under configs/"),
        })?;
        Config::parse(&text, &shown, overrides)
    }

    /// Parse TOML `text` (named `origin` in errors) with overrides.
    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Config> {
        let mut tree: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            TrainError::Config { path: origin.into(), detail: e.to_string() }
        })?;
        for item in overrides {
            apply_override(&mut tree, item)?;
        }
        let cfg: Config = serde_path_to_error::deserialize(toml::Value::Table(tree)).map_err(
            |e: serde_path_to_error::Error<toml::de::Error>| {
                let at = e.path().to_string();
                let detail = format!("at `{at}`: {}", e.inner().message());
                match override_for(overrides, &at) {
                    Some(item) => TrainError::Override { key: item.into(), detail },
                    None => TrainError::Config { path: origin.into(), detail },
                }
            },
        )?;
        cfg.validate(origin).map_err(|e| blame_override(e, origin, overrides))?;
        Ok(cfg)
    }

    fn validate(&self, origin: &str) -> Result<()> {
        let bad = |detail: String| Err(TrainError::Config { path: origin.into(), detail });
        if let Err(detail) = crate::model::check_kind(&self.model.kind) {
            return bad(detail);
        }
        check_run_name(&self.name).or_else(bad)?;
        if self.data.batch_size == 0 {
            return bad("data.batch_size must be at least 1".into());
        }
        if self.data.eval_batch_size == 0 {
            return bad("data.eval_batch_size must be at least 1".into());
        }
        if self.log.every == 0 {
            return bad(
                "log.every must be at least 1 (a metrics line every that many steps)".into()
            );
        }
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if !(self.optimizer.lr.is_finite() && self.optimizer.lr >= 0.0) {
            return bad(format!("optimizer.lr = {} is not a learning rate", self.optimizer.lr));
        }
        self.validate_optimizer(origin)?;
        for (key, mib) in [
            ("ddp.bucket_cap_mb", self.ddp.bucket_cap_mb),
            ("ddp.first_bucket_mb", self.ddp.first_bucket_mb),
        ] {
            if !(mib.is_finite() && mib >= 0.0) {
                return bad(format!("{key} = {mib} must be a size in MiB, 0 or more"));
            }
        }
        self.model.checkpoint_policy()?;
        if !["constant", "cosine", "multistep"].contains(&self.schedule.kind.as_str()) {
            return bad(format!(
                "schedule.kind = {:?}: known schedules: constant, cosine, multistep",
                self.schedule.kind
            ));
        }
        Ok(())
    }

    fn validate_optimizer(&self, origin: &str) -> Result<()> {
        let bad = |detail: String| Err(TrainError::Config { path: origin.into(), detail });
        let o = &self.optimizer;
        if !crate::optim::OPTIMIZER_KINDS.contains(&o.kind.as_str()) {
            return bad(format!(
                "optimizer.kind = {:?}: known optimizers: {}",
                o.kind,
                crate::optim::OPTIMIZER_KINDS.join(", ")
            ));
        }
        if o.kind == "adamw" && (o.momentum != 0.0 || o.nesterov) {
            return bad("optimizer.momentum and optimizer.nesterov are for sgd; adamw uses \
                        optimizer.betas"
                .into());
        }
        if o.nesterov && o.momentum <= 0.0 {
            return bad("optimizer.nesterov needs optimizer.momentum > 0".into());
        }
        if !(0.0..1.0).contains(&o.momentum) {
            return bad(format!("optimizer.momentum = {} must be in [0, 1)", o.momentum));
        }
        if o.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            return bad(format!("optimizer.betas = {:?}: each must be in [0, 1)", o.betas));
        }
        if o.eps.is_nan() || o.eps <= 0.0 {
            return bad(format!("optimizer.eps = {} must be positive", o.eps));
        }
        if o.weight_decay.is_nan() || o.weight_decay < 0.0 {
            return bad(format!("optimizer.weight_decay = {} must be >= 0", o.weight_decay));
        }
        if o.accumulate_steps == 0 {
            return bad("optimizer.accumulate_steps must be at least 1".into());
        }
        if !o.clip_grad_norm.is_finite() || o.clip_grad_norm < 0.0 {
            return bad(format!(
                "optimizer.clip_grad_norm = {} must be >= 0 (0: no clipping)",
                o.clip_grad_norm
            ));
        }
        if !["error", "skip"].contains(&o.on_nonfinite.as_str()) {
            return bad(format!(
                "optimizer.on_nonfinite = {:?}: choose \"error\" or \"skip\"",
                o.on_nonfinite
            ));
        }
        Ok(())
    }

    /// A hash of what determines the training trajectory: the config without its name,
    /// logging, checkpoint and loader-thread settings, none of which changes the weights
    /// (FNV-1a over the TOML text, as hex).
    pub fn trajectory_hash(&self) -> String {
        let mut c = self.clone();
        c.name.clear();
        c.log = LogConfig::default();
        c.checkpoint = CheckpointConfig::default();
        c.data.loader_threads = 1;
        let text = c.to_toml();
        let mut h: u64 = 0xcbf29ce484222325;
        for byte in text.bytes() {
            h = (h ^ byte as u64).wrapping_mul(0x100000001b3);
        }
        format!("{h:016x}")
    }

    /// The config as TOML, as written into the run directory.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# not serialisable: {e}\n"))
    }
}

/// The run name must be one folder inside `log.dir`: not empty, no path separators, no `..`.
fn check_run_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.contains(['/', '\\']) || name.contains("..") {
        return Err(format!(
            "name = {name:?}: the run directory is <log.dir>/<name>, so the name must be a \
             non-empty folder name without `/`, `\\` or `..` (such as \"resnet20-fashion\")"
        ));
    }
    Ok(())
}

/// A validation error about a key an override set, reported as that override's error: its
/// detail starts with the key (`log.every must ...`) or it is at that key (not at `origin`).
fn blame_override(err: TrainError, origin: &str, overrides: &[String]) -> TrainError {
    let TrainError::Config { path, detail } = err else {
        return err;
    };
    let named = detail.split([' ', ':']).next().unwrap_or_default();
    let at_key = || (path != origin).then(|| override_for(overrides, &path)).flatten();
    match override_for(overrides, named).or_else(at_key) {
        Some(item) => TrainError::Override { key: item.into(), detail },
        None => TrainError::Config { path, detail },
    }
}

/// The `--set` item whose key is `at` or a table above it, if one set it.
fn override_for<'a>(overrides: &'a [String], at: &str) -> Option<&'a str> {
    overrides.iter().rev().map(String::as_str).find(|item| {
        let key = item.split_once('=').map_or(*item, |(k, _)| k).trim();
        at == key || at.strip_prefix(key).is_some_and(|rest| rest.starts_with(['.', '[']))
    })
}

/// Set `key.path = value` in `tree`; every table on the path must already exist or be created.
fn apply_override(tree: &mut toml::Table, item: &str) -> Result<()> {
    let Some((key, raw)) = item.split_once('=') else {
        return Err(TrainError::Override {
            key: item.into(),
            detail: "expected key=value, such as --set optimizer.lr=0.05".into(),
        });
    };
    let key = key.trim();
    let value = parse_value(raw.trim());
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or_default();
    let mut table = tree;
    for part in parts {
        let entry = table.entry(part).or_insert_with(|| toml::Value::Table(Default::default()));
        table = entry.as_table_mut().ok_or_else(|| TrainError::Override {
            key: key.into(),
            detail: format!("`{part}` is a value, not a table"),
        })?;
    }
    if last.is_empty() {
        return Err(TrainError::Override { key: key.into(), detail: "empty key".into() });
    }
    table.insert(last.to_string(), value);
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        name = "t"
        epochs = 1
        [model]
        kind = "cifar_resnet"
        depth = 20
        [data]
        dataset = "synthetic"
        batch_size = 4
        [optimizer]
        kind = "sgd"
        lr = 0.1
    "#;

    #[test]
    fn optimizer_settings_that_do_not_fit_are_errors_naming_the_key() {
        let cases = [
            ("optimizer.kind=\"adam\"", "known optimizers: sgd, adamw"),
            ("optimizer.nesterov=true", "optimizer.nesterov needs optimizer.momentum > 0"),
            ("optimizer.betas=[0.9, 1.5]", "optimizer.betas"),
            ("optimizer.on_nonfinite=\"ignore\"", "optimizer.on_nonfinite"),
            ("optimizer.clip_grad_norm=-1.0", "optimizer.clip_grad_norm"),
            ("optimizer.accumulate_steps=0", "optimizer.accumulate_steps must be at least 1"),
        ];
        for (set, want) in cases {
            let err = Config::parse(BASE, "base", &[set.into()]).unwrap_err().to_string();
            assert!(err.contains(want), "{set}: {err}");
        }
        let adamw = ["optimizer.kind=\"adamw\"".into(), "optimizer.momentum=0.9".into()];
        let err = Config::parse(BASE, "base", &adamw).unwrap_err().to_string();
        assert!(err.contains("adamw uses optimizer.betas"), "{err}");
    }

    #[test]
    fn overrides_set_nested_values_with_types() {
        let sets = ["optimizer.lr=0.05".to_string(), "data.dir=some/where".into()];
        let cfg = Config::parse(BASE, "base", &sets).unwrap();
        assert_eq!(cfg.optimizer.lr, 0.05);
        assert_eq!(cfg.data.dir, "some/where");
    }

    #[test]
    fn checkpointing_policies_parse_and_bad_ones_say_what_is_valid() {
        let policy = |v: &str| {
            Config::parse(BASE, "base", &[format!("model.gradient_checkpointing={v}")])
                .map(|c| c.model.checkpoint_policy().unwrap())
        };
        assert_eq!(
            Config::parse(BASE, "b", &[]).unwrap().model.checkpoint_policy().unwrap(),
            CheckpointPolicy::None
        );
        assert_eq!(policy("\"none\"").unwrap(), CheckpointPolicy::None);
        assert_eq!(policy("\"sqrt\"").unwrap(), CheckpointPolicy::Sqrt);
        assert_eq!(policy("{every=3}").unwrap(), CheckpointPolicy::Every(3));
        // 2 GiB = 2 * 1024^3 bytes; 1.5 GB = 1.5e9 bytes.
        assert_eq!(policy("{budget=\"2GiB\"}").unwrap(), CheckpointPolicy::Budget(2 << 30));
        assert_eq!(policy("{budget=\"1.5GB\"}").unwrap(), CheckpointPolicy::Budget(1_500_000_000));
        assert_eq!(policy("{budget=4096}").unwrap(), CheckpointPolicy::Budget(4096));
        for bad in ["\"always\"", "{every=0}", "{budget=\"2 parsecs\"}", "{every=2,budget=3}", "3"]
        {
            let msg = policy(bad).unwrap_err().to_string();
            assert!(
                msg.contains("model.gradient_checkpointing") && msg.contains("\"sqrt\""),
                "{bad}: {msg}"
            );
        }
    }

    #[test]
    fn an_unknown_model_kind_is_reported_before_fields_it_would_not_use() {
        // BASE's depth and an explicit width would each be "unused" by some kind; the unknown
        // kind must be the error, listing the known ones.
        let sets = ["model.kind=\"transformer\"".into(), "model.width=64".into()];
        let err = Config::parse(BASE, "base", &sets).unwrap_err().to_string();
        assert!(err.contains("\"transformer\": unknown model"), "{err}");
        assert!(err.contains("cifar_resnet") && err.contains("sequential"), "{err}");
        assert!(!err.contains("model.width"), "{err}");
        let sets = ["model.kind=\"transformer\"".into(), "model.zero_init_residual=true".into()];
        let err = Config::parse(BASE, "base", &sets).unwrap_err().to_string();
        assert!(err.contains("unknown model") && !err.contains("zero_init_residual"), "{err}");
    }

    #[test]
    fn zero_counts_and_run_names_outside_log_dir_are_errors_naming_the_key() {
        let cases = [
            ("data.eval_batch_size=0", "data.eval_batch_size"),
            ("log.every=0", "log.every"),
            ("name=\"../../escaped\"", "name = \"../../escaped\""),
            ("name=\"a/b\"", "name = \"a/b\""),
            ("name=\"a\\\\b\"", "name = \"a\\\\b\""),
            ("name=\"\"", "name = \"\""),
        ];
        for (set, want) in cases {
            let err = Config::parse(BASE, "base", &[set.into()]).unwrap_err().to_string();
            assert!(err.contains(want) && err.contains("must"), "{set}: {err}");
        }
        // A dotted name that stays inside log.dir is fine.
        assert!(Config::parse(BASE, "base", &["name=\"run.v2\"".into()]).is_ok());
    }

    #[test]
    fn schema_errors_from_an_override_name_the_override_not_the_file() {
        let err = Config::parse(BASE, "base.toml", &["optimizer.lrr=0.05".into()]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, TrainError::Override { .. }), "{msg}");
        assert!(msg.starts_with("--set optimizer.lrr=0.05") && msg.contains("lrr"), "{msg}");
        assert!(!msg.contains("base.toml"), "{msg}");
        // A whole table set wrongly names the override too.
        let err = Config::parse(BASE, "base.toml", &["optimizer={lrr=1}".into()]).unwrap_err();
        assert!(err.to_string().starts_with("--set optimizer="), "{err}");
        // The same mistake in the file still names the file.
        let text = BASE.replace("lr = 0.1", "lr = 0.1\nlrr = 1");
        let err = Config::parse(&text, "base.toml", &[]).unwrap_err().to_string();
        assert!(err.contains("config base.toml") && err.contains("optimizer.lrr"), "{err}");
        // Values out of range that an override set name the override as well.
        let err = Config::parse(BASE, "base.toml", &["log.every=0".into()]).unwrap_err();
        assert!(err.to_string().starts_with("--set log.every=0: log.every must"), "{err}");
        let err = Config::parse(BASE, "base.toml", &["log={every=0}".into()]).unwrap_err();
        assert!(err.to_string().starts_with("--set log={every=0}: log.every"), "{err}");
        let sets = ["model.gradient_checkpointing=\"always\"".to_string()];
        let err = Config::parse(BASE, "base.toml", &sets).unwrap_err().to_string();
        assert!(err.starts_with("--set model.gradient_checkpointing="), "{err}");
        // ...but not when the file holds the bad value.
        let text = BASE.replace("[optimizer]", "[log]\nevery = 0\n[optimizer]");
        let err = Config::parse(&text, "base.toml", &["log.dir=\"x\"".into()]).unwrap_err();
        assert!(err.to_string().starts_with("config base.toml: log.every must"), "{err}");
    }

    #[test]
    fn unknown_key_and_wrong_type_are_errors_naming_the_key() {
        let err = Config::parse(BASE, "base", &["optimizer.lrr=0.05".into()]).unwrap_err();
        assert!(err.to_string().contains("optimizer.lrr"), "{err}");
        let err = Config::parse(BASE, "base", &["epochs=\"two\"".into()]).unwrap_err();
        assert!(err.to_string().contains("at `epochs`"), "{err}");
        let err = Config::parse(BASE, "base", &["optimizer.betas=[0.9]".into()]).unwrap_err();
        assert!(err.to_string().contains("at `optimizer.betas`"), "{err}");
        let err =
            Config::parse(BASE, "base", &["optimizer.accumulate_steps=-1".into()]).unwrap_err();
        assert!(err.to_string().contains("optimizer.accumulate_steps"), "{err}");
    }
}
