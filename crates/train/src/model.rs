//! Building the configured model and loading the configured datasets.

use crate::config::{DataConfig, ModelConfig};
use crate::error::{Result, TrainError};
use std::path::Path;
use std::sync::Arc;
use strata_data::{Dataset, Split, Subset, SyntheticDataset};
use strata_nn::resnet::{CifarResNet, ResNetOptions};
use strata_nn::mlp::{Mlp, MlpOptions};
use strata_nn::Module;

/// Model builders selectable by `model.kind`.
pub const MODEL_KINDS: &[&str] = &["cifar_resnet", "mlp"];

/// Build the model of `cfg` for samples of shape `[C, H, W]` and `num_classes` classes.
pub fn build_model(
    cfg: &ModelConfig,
    sample_shape: [usize; 3],
    num_classes: usize,
    seed: u64,
) -> Result<Box<dyn Module>> {
    match cfg.kind.as_str() {
        "cifar_resnet" => {
            let opts = ResNetOptions {
                in_channels: sample_shape[0],
                num_classes,
                seed,
                zero_init_residual: cfg.zero_init_residual,
                ..ResNetOptions::default()
            };
            Ok(Box::new(CifarResNet::new(cfg.depth, &opts)?))
        }
        "mlp" => {
            let opts = MlpOptions {
                in_features: sample_shape.iter().product(),
                width: cfg.width,
                depth: cfg.depth,
                num_classes,
                batch_norm: cfg.batch_norm,
                seed,
                dtype: strata_tensor::DType::F32,
            };
            Ok(Box::new(Mlp::new(&opts)?))
        }
        other => Err(TrainError::Config {
            path: "model.kind".into(),
            detail: format!("unknown model {other:?}; known models: {}", MODEL_KINDS.join(", ")),
        }),
    }
}

/// The training and test sets of `cfg`, each limited to its configured slice.
pub fn load_datasets(cfg: &DataConfig) -> Result<(Arc<dyn Dataset>, Arc<dyn Dataset>)> {
    let dir = Path::new(&cfg.dir);
    let (train, test): (Arc<dyn Dataset>, Arc<dyn Dataset>) = match cfg.dataset.as_str() {
        "fashion-mnist" => (
            Arc::new(strata_data::fashion_mnist(dir, Split::Train)?),
            Arc::new(strata_data::fashion_mnist(dir, Split::Test)?),
        ),
        "mnist" => (
            Arc::new(strata_data::mnist(dir, Split::Train)?),
            Arc::new(strata_data::mnist(dir, Split::Test)?),
        ),
        "cifar10" => (
            Arc::new(strata_data::cifar10_binary(dir, Split::Train)?),
            Arc::new(strata_data::cifar10_binary(dir, Split::Test)?),
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
    Ok((limit(train, cfg.train_limit), limit(test, cfg.test_limit)))
}
