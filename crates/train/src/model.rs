//! Building the configured model and loading the configured datasets.

use crate::config::{Config, DataConfig, ModelConfig};
use crate::error::{Result, TrainError};
use std::path::Path;
use std::sync::Arc;
use strata_data::{DataError, Dataset, Split, Subset, SyntheticDataset};
use strata_nn::checkpoint::{CheckpointPolicy, SegmentPlan};
use strata_nn::deep_cnn::DeepCnn;
use strata_nn::mlp::{Mlp, MlpOptions};
use strata_nn::plan::{plan_for_budget, MemoryEstimate, ModelProfile};
use strata_nn::registry::{build_sequential, SequentialOptions};
use strata_nn::resnet::{CifarResNet, ImageNetResNet, PreActResNet, ResNetOptions};
use strata_nn::Module;
use strata_tensor::DType;

/// Model builders selectable by `model.kind`.
pub const MODEL_KINDS: &[&str] =
    &["cifar_resnet", "preact_resnet", "imagenet_resnet", "deep_cnn", "mlp", "sequential"];

/// Kinds built from residual blocks, which take `survival_prob` and `zero_init_residual`.
const RESIDUAL_KINDS: &[&str] = &["cifar_resnet", "preact_resnet", "imagenet_resnet", "deep_cnn"];

/// Default hidden width of `mlp`.
pub const DEFAULT_MLP_WIDTH: usize = 256;
/// Default first-stage filters of `deep_cnn`.
pub const DEFAULT_DEEP_CNN_WIDTH: usize = 16;

/// Build the model of `cfg` for samples of shape `[C, H, W]` and `num_classes` classes.
///
/// `cifar_resnet` (depth 6n+2), `preact_resnet` (depth 9n+2, bottlenecks) and
/// `imagenet_resnet` (depth 50, 101, 152) read `depth`, `zero_init_residual` and
/// `survival_prob`; `deep_cnn` reads `depth` (stages) and `width` as well; `mlp` reads `depth`,
/// `width`, `batch_norm` and `dropout`; `sequential` reads `layers`, each built by the layer
/// registry (`strata_nn::registry`).
///
/// # Errors
/// [`TrainError::Config`] for an unknown kind (listing the known ones) or a field the kind does
/// not use; the builder's error for arguments it cannot build, saying what is valid.
pub fn build_model(
    cfg: &ModelConfig,
    sample_shape: [usize; 3],
    num_classes: usize,
    seed: u64,
) -> Result<Box<dyn Module>> {
    check_fields(cfg)?;
    let resnet = ResNetOptions {
        in_channels: sample_shape[0],
        num_classes,
        seed,
        zero_init_residual: cfg.zero_init_residual,
        survival_prob: cfg.survival_prob,
        dtype: DType::F32,
    };
    Ok(match cfg.kind.as_str() {
        "cifar_resnet" => Box::new(CifarResNet::new(cfg.depth, &resnet)?),
        "preact_resnet" => Box::new(PreActResNet::new(cfg.depth, &resnet)?),
        "imagenet_resnet" => Box::new(ImageNetResNet::new(cfg.depth, &resnet)?),
        "deep_cnn" => {
            let width = cfg.width.unwrap_or(DEFAULT_DEEP_CNN_WIDTH);
            Box::new(DeepCnn::new(cfg.depth, width, &resnet)?)
        }
        "mlp" => Box::new(Mlp::new(&MlpOptions {
            in_features: sample_shape.iter().product(),
            width: cfg.width.unwrap_or(DEFAULT_MLP_WIDTH),
            depth: cfg.depth,
            num_classes,
            batch_norm: cfg.batch_norm,
            dropout: cfg.dropout,
            seed,
            dtype: DType::F32,
        })?),
        "sequential" => {
            let opts = SequentialOptions {
                sample_shape: sample_shape.to_vec(),
                num_classes,
                seed,
                dtype: DType::F32,
            };
            Box::new(build_sequential(&cfg.layers, &opts)?)
        }
        other => {
            return Err(TrainError::Config {
                path: "model.kind".into(),
                detail: format!(
                    "unknown model {other:?}; known models: {}",
                    MODEL_KINDS.join(", ")
                ),
            })
        }
    })
}

/// `Ok` for a kind in [`MODEL_KINDS`], else the error text naming it and the known ones.
pub(crate) fn check_kind(kind: &str) -> std::result::Result<(), String> {
    if MODEL_KINDS.contains(&kind) {
        return Ok(());
    }
    Err(format!("model.kind = {kind:?}: unknown model; known models: {}", MODEL_KINDS.join(", ")))
}

/// Reject an unknown kind, then fields the chosen kind would silently ignore.
fn check_fields(cfg: &ModelConfig) -> Result<()> {
    let kind = cfg.kind.as_str();
    check_kind(kind).map_err(|detail| TrainError::Config { path: "model.kind".into(), detail })?;
    let unused = |field: &str, used_by: &str| TrainError::Config {
        path: format!("model.{field}"),
        detail: format!("model.kind = {kind:?} does not use it; it applies to {used_by}"),
    };
    let residual = RESIDUAL_KINDS.contains(&kind);
    if cfg.survival_prob != 1.0 && !residual {
        return Err(unused("survival_prob", &RESIDUAL_KINDS.join(", ")));
    }
    if cfg.zero_init_residual && !residual {
        return Err(unused("zero_init_residual", &RESIDUAL_KINDS.join(", ")));
    }
    if cfg.dropout != 0.0 && kind != "mlp" {
        return Err(unused("dropout", "mlp (a sequential model takes dropout layers)"));
    }
    if cfg.width.is_some() && !["mlp", "deep_cnn"].contains(&kind) {
        return Err(unused("width", "mlp, deep_cnn"));
    }
    if !cfg.layers.is_empty() && kind != "sequential" {
        return Err(unused("layers", "sequential"));
    }
    if cfg.depth != 0 && kind == "sequential" {
        return Err(unused("depth", "every kind but sequential (its layers say it)"));
    }
    Ok(())
}
/// Parameter-sized tensors of optimizer state (see [`crate::optim::Optimizer`]): SGD keeps one
/// momentum buffer per parameter (allocated even at momentum 0), AdamW two moments.
pub fn optimizer_copies(cfg: &crate::config::OptimizerConfig) -> u64 {
    if cfg.kind == "adamw" {
        2
    } else {
        1
    }
}

/// The sample shape `[C, H, W]` and class count of the configured dataset, known without
/// reading it (for `launcher plan`).
///
/// # Errors
/// [`TrainError::Config`] for an unknown dataset.
pub fn sample_shape(cfg: &DataConfig) -> Result<([usize; 3], usize)> {
    match cfg.dataset.as_str() {
        "fashion-mnist" | "mnist" => Ok(([1, 28, 28], 10)),
        "cifar10" => Ok(([3, 32, 32], 10)),
        "synthetic" => Ok((cfg.synthetic_shape.unwrap_or([3, 32, 32]), 10)),
        other => Err(TrainError::Config {
            path: "data.dataset".into(),
            detail: format!(
                "unknown dataset {other:?}; known: fashion-mnist, mnist, cifar10, synthetic"
            ),
        }),
    }
}

/// The memory plan of `model` under `cfg`'s checkpointing policy at per-worker batch `batch`:
/// the profile, the segments the policy picks, and the predicted peak memory per worker.
///
/// # Errors
/// [`TrainError::Config`] at `model.gradient_checkpointing` for a bad policy, a checkpointing
/// policy on a model without a block sequence, or a budget no plan fits.
pub fn memory_plan(
    cfg: &Config,
    model: &dyn Module,
    sample_shape: [usize; 3],
    batch: usize,
) -> Result<(ModelProfile, SegmentPlan, MemoryEstimate)> {
    let policy = cfg.model.checkpoint_policy()?;
    let profile = strata_nn::plan::profile(model, &sample_shape)?;
    let n = profile.blocks.len();
    let copies = optimizer_copies(&cfg.optimizer);
    let bad =
        |detail: String| TrainError::Config { path: "model.gradient_checkpointing".into(), detail };
    if n == 0 && policy != CheckpointPolicy::None {
        return Err(bad(format!(
            "model.kind = {:?} has no block sequence to checkpoint; use \"none\"",
            cfg.model.kind
        )));
    }
    let plan = match policy {
        CheckpointPolicy::None => SegmentPlan::none(),
        CheckpointPolicy::Every(k) => SegmentPlan::every(n, k, 0),
        CheckpointPolicy::Sqrt => SegmentPlan::sqrt(n),
        CheckpointPolicy::Budget(bytes) => {
            plan_for_budget(&profile, batch, copies, bytes).map_err(|e| bad(e.to_string()))?
        }
    };
    let estimate = profile.estimate(batch, &plan, copies);
    Ok((profile, plan, estimate))
}

/// The training and test sets of `cfg`, each limited to its configured slice. A relative
/// `data.dir` is resolved against the working directory.
///
/// # Errors
/// The reader's error; a missing file under a relative `data.dir` becomes
/// [`TrainError::Config`] at `data.dir`, naming the working directory it was resolved against.
pub fn load_datasets(cfg: &DataConfig) -> Result<(Arc<dyn Dataset>, Arc<dyn Dataset>)> {
    let dir = Path::new(&cfg.dir);
    let located = |e: DataError| match e {
        DataError::NotFound { .. } if dir.is_relative() => {
            let cwd = std::env::current_dir().map_or("?".into(), |d| d.display().to_string());
            TrainError::Config {
                path: "data.dir".into(),
                detail: format!(
                    "{e} (data.dir = {:?} is relative to the working directory, {cwd})",
                    cfg.dir
                ),
            }
        }
        other => other.into(),
    };
    let (train, test): (Arc<dyn Dataset>, Arc<dyn Dataset>) = match cfg.dataset.as_str() {
        "fashion-mnist" => (
            Arc::new(strata_data::fashion_mnist(dir, Split::Train).map_err(located)?),
            Arc::new(strata_data::fashion_mnist(dir, Split::Test).map_err(located)?),
        ),
        "mnist" => (
            Arc::new(strata_data::mnist(dir, Split::Train).map_err(located)?),
            Arc::new(strata_data::mnist(dir, Split::Test).map_err(located)?),
        ),
        "cifar10" => (
            Arc::new(strata_data::cifar10_binary(dir, Split::Train).map_err(located)?),
            Arc::new(strata_data::cifar10_binary(dir, Split::Test).map_err(located)?),
        ),
        "synthetic" => {
            let shape = cfg.synthetic_shape.unwrap_or([3, 32, 32]);
            let len = cfg.synthetic_len.unwrap_or(1024);
            (
                Arc::new(SyntheticDataset::new(len, shape, 10, 1)?),
                Arc::new(SyntheticDataset::new(len.min(256), shape, 10, 2)?),
            )
        }
        other => {
            return Err(TrainError::Config {
                path: "data.dataset".into(),
                detail: format!(
                    "unknown dataset {other:?}; known: fashion-mnist, mnist, cifar10, synthetic"
                ),
            })
        }
    };
    let limit = |d: Arc<dyn Dataset>, n: usize| -> Arc<dyn Dataset> {
        if n == 0 || n >= d.len() {
            d
        } else {
            Arc::new(Subset::first(d, n))
        }
    };
    let mut train = limit(train, cfg.train_limit);
    if !cfg.nan_samples.is_empty() {
        if let Some(&bad) = cfg.nan_samples.iter().find(|&&i| i >= train.len()) {
            return Err(TrainError::Config {
                path: "data.nan_samples".into(),
                detail: format!("index {bad} is past the {} training samples", train.len()),
            });
        }
        train = Arc::new(WithNan { inner: train, indices: cfg.nan_samples.clone() });
    }
    Ok((train, limit(test, cfg.test_limit)))
}

/// A dataset whose samples `indices` read as NaN (`data.nan_samples`).
struct WithNan {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
}

impl Dataset for WithNan {
    fn len(&self) -> usize {
        self.inner.len()
    }

    fn sample_shape(&self) -> [usize; 3] {
        self.inner.sample_shape()
    }

    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }

    fn get(&self, index: usize, out: &mut [f32]) -> u32 {
        let label = self.inner.get(index, out);
        if self.indices.contains(&index) {
            out.fill(f32::NAN);
        }
        label
    }

    fn fill_value(&self) -> Vec<f32> {
        self.inner.fill_value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use strata_nn::parameter_count;

    fn model_cfg(model: &str) -> ModelConfig {
        let text = format!(
            "name = \"t\"\nepochs = 1\n[model]\n{model}\n[data]\ndataset = \"synthetic\"\n\
             batch_size = 4\n[optimizer]\nkind = \"sgd\"\nlr = 0.1\n"
        );
        Config::parse(&text, "test", &[]).unwrap().model
    }

    #[test]
    fn every_kind_builds_from_toml() {
        let cases = [
            ("kind = \"cifar_resnet\"\ndepth = 20\nsurvival_prob = 0.5", 272_474),
            ("kind = \"preact_resnet\"\ndepth = 164\nsurvival_prob = 0.5", 1_703_258),
            ("kind = \"deep_cnn\"\ndepth = 2\nwidth = 4", 4126),
            (
                "kind = \"mlp\"\ndepth = 2\nwidth = 8\ndropout = 0.1",
                3072 * 8 + 16 + 8 * 8 + 16 + 90,
            ),
            (
                "kind = \"sequential\"\n[[model.layers]]\ntype = \"flatten\"\n\
                 [[model.layers]]\ntype = \"linear\"",
                3072 * 10 + 10,
            ),
        ];
        // cifar_resnet and preact_resnet: derived in strata-nn's tests. deep_cnn, width 4, 2
        // stages, 3 channels: stem 3*4*9 + BN 8 = 116; two basic blocks 4->4 of 2*9*16 + 16 =
        // 304; the doubling block 4->8: 9*4*8 + 9*64 + BNs 32 + projection 32 + BN 16 = 944;
        // two basic blocks 8->8 of 2*9*64 + 32 = 1184; classifier 8*10 + 10 = 90: 4126.
        // mlp, width 8, BN (no hidden bias): 3072*8 + 16, 8*8 + 16, 8*10 + 10.
        for (model, params) in cases {
            let m = build_model(&model_cfg(model), [3, 32, 32], 10, 0).unwrap();
            assert_eq!(parameter_count(m.as_ref()), params, "{model}");
        }
    }

    #[test]
    fn a_sequential_config_survives_the_resolved_config_round_trip() {
        let text = "name = \"t\"\nepochs = 1\n[model]\nkind = \"sequential\"\n\
                    [[model.layers]]\ntype = \"conv2d\"\nout_channels = 4\n\
                    [[model.layers]]\ntype = \"global_avg_pool\"\n[[model.layers]]\n\
                    type = \"linear\"\n[data]\ndataset = \"synthetic\"\nbatch_size = 4\n\
                    [optimizer]\nkind = \"sgd\"\nlr = 0.1\n";
        let cfg = Config::parse(text, "test", &[]).unwrap();
        let again = Config::parse(&cfg.to_toml(), "resolved", &[]).unwrap();
        assert_eq!(again.model.layers, cfg.model.layers);
        assert_eq!(again.model.layers.len(), 3);
        let m = build_model(&again.model, [3, 8, 8], 10, 0).unwrap();
        // conv 3*4*9 = 108; linear 4*10 + 10 = 50.
        assert_eq!(parameter_count(m.as_ref()), 158);
    }

    #[test]
    fn a_missing_dataset_under_a_relative_data_dir_names_the_working_directory() {
        let mut cfg = Config::parse(
            "name = \"t\"\nepochs = 1\n[model]\nkind = \"mlp\"\n[data]\n\
             dataset = \"fashion-mnist\"\ndir = \"no-such-folder/fashion-mnist\"\n\
             batch_size = 4\n[optimizer]\nkind = \"sgd\"\nlr = 0.1\n",
            "test",
            &[],
        )
        .unwrap()
        .data;
        let msg = load_datasets(&cfg).err().unwrap().to_string();
        let cwd = std::env::current_dir().unwrap().display().to_string();
        assert!(msg.contains("data.dir = \"no-such-folder/fashion-mnist\""), "{msg}");
        assert!(msg.contains("relative to the working directory") && msg.contains(&cwd), "{msg}");
        assert!(msg.contains("--set data.dir=") && !msg.contains("STRATA_DATA"), "{msg}");
        // An absolute data.dir needs no working directory to explain it.
        cfg.dir = std::env::temp_dir().join("strata-no-such-folder").display().to_string();
        let msg = load_datasets(&cfg).err().unwrap().to_string();
        assert!(
            !msg.contains("relative to the working") && msg.contains("file not found"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_kinds_bad_depths_and_unused_fields_are_errors_saying_what_is_valid() {
        let err = |model: &str| build_model(&model_cfg(model), [3, 32, 32], 10, 0).err().unwrap();
        // Config::parse rejects an unknown kind itself; build_model checks it too, before the
        // fields (width here) that the kind would not use.
        let mut unknown = model_cfg("kind = \"mlp\"\nwidth = 8");
        unknown.kind = "resnet".into();
        let msg = build_model(&unknown, [3, 32, 32], 10, 0).err().unwrap().to_string();
        assert!(msg.contains("\"resnet\": unknown model") && !msg.contains("width"), "{msg}");
        assert!(msg.contains("preact_resnet") && msg.contains("sequential"), "{msg}");
        let msg = err("kind = \"preact_resnet\"\ndepth = 100").to_string();
        assert!(msg.contains("9n+2") && msg.contains("164"), "{msg}");
        let msg = err("kind = \"mlp\"\ndepth = 2\nsurvival_prob = 0.5").to_string();
        assert!(msg.contains("model.survival_prob") && msg.contains("preact_resnet"), "{msg}");
        let msg = err("kind = \"cifar_resnet\"\ndepth = 20\ndropout = 0.5").to_string();
        assert!(msg.contains("model.dropout"), "{msg}");
        let msg = err("kind = \"sequential\"\n[[model.layers]]\ntype = \"warp_drive\"").to_string();
        assert!(msg.contains("warp_drive") && msg.contains("conv2d"), "{msg}");
    }
}
