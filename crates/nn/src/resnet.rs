//! Residual networks: the basic residual block and the CIFAR-style ResNet of depth 6n+2.

use crate::init::{Init, InitRng};
use crate::layers::{BatchNorm, Conv2d, Linear};
use crate::{walk, Ctx, Module, NnError, Result};
use rand::SeedableRng;
use strata_autodiff::{ops, Var};
use strata_tensor::DType;

/// conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut (identity, or 1x1 conv + BN projection where
/// the shape changes), then ReLU.
pub struct BasicBlock {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub shortcut: Option<(Conv2d, BatchNorm)>,
}

impl BasicBlock {
    /// A block from `in_ch` to `out_ch` channels; the first conv has `stride`.
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        stride: usize,
        opts: &ResNetOptions,
        rng: &mut InitRng,
    ) -> Result<BasicBlock> {
        let (init, dt) = (Init::HeNormal, opts.dtype);
        let conv1 = Conv2d::new(in_ch, out_ch, 3, stride, 1, init, dt, rng)?;
        let conv2 = Conv2d::new(out_ch, out_ch, 3, 1, 1, init, dt, rng)?;
        let mut bn2 = BatchNorm::new(out_ch, dt)?;
        if opts.zero_init_residual {
            bn2 = bn2.zero_gamma()?;
        }
        let shortcut = if stride != 1 || in_ch != out_ch {
            let mut proj = Conv2d::new(in_ch, out_ch, 1, stride, 0, init, dt, rng)?;
            proj.main_path = false;
            Some((proj, BatchNorm::new(out_ch, dt)?))
        } else {
            None
        };
        Ok(BasicBlock { conv1, bn1: BatchNorm::new(out_ch, dt)?, conv2, bn2, shortcut })
    }
}

impl Module for BasicBlock {
    fn type_name(&self) -> &'static str {
        "BasicBlock"
    }

    fn forward(&self, x: &Var, cx: &Ctx) -> Result<Var> {
        let h = ops::relu(&self.bn1.forward(&self.conv1.forward(x, cx)?, cx)?)?;
        let h = self.bn2.forward(&self.conv2.forward(&h, cx)?, cx)?;
        let s = match &self.shortcut {
            Some((conv, bn)) => bn.forward(&conv.forward(x, cx)?, cx)?,
            None => x.clone(),
        };
        Ok(ops::relu(&ops::add(&h, &s)?)?)
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut out: Vec<(String, &dyn Module)> = vec![
            ("conv1".into(), &self.conv1),
            ("bn1".into(), &self.bn1),
            ("conv2".into(), &self.conv2),
            ("bn2".into(), &self.bn2),
        ];
        if let Some((conv, bn)) = &self.shortcut {
            out.push(("shortcut.0".into(), conv));
            out.push(("shortcut.1".into(), bn));
        }
        out
    }
}

/// Options shared by the ResNet builders.
#[derive(Debug, Clone)]
pub struct ResNetOptions {
    pub in_channels: usize,
    pub num_classes: usize,
    /// Seed of the initialisation stream (the same on every rank).
    pub seed: u64,
    /// Start each residual branch's last batch norm at gamma = 0, so every block starts as the
    /// identity (Goyal et al., 2017); PyTorch's `zero_init_residual`.
    pub zero_init_residual: bool,
    pub dtype: DType,
}

impl Default for ResNetOptions {
    fn default() -> Self {
        ResNetOptions {
            in_channels: 3,
            num_classes: 10,
            seed: 0,
            zero_init_residual: false,
            dtype: DType::F32,
        }
    }
}

/// The CIFAR-style ResNet of He et al. (2016): stem conv3x3-BN-ReLU; three stages of n basic
/// blocks with 16, 32 and 64 filters, stride 2 at the start of stages 2 and 3; global average
/// pooling; a dense classifier. Depth `6n + 2` counts the weighted layers on the main path.
pub struct CifarResNet {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub blocks: Vec<BasicBlock>,
    pub fc: Linear,
}

impl CifarResNet {
    /// Build ResNet-`depth` (20, 32, 44, 56, 110, 1202, ...).
    ///
    /// # Errors
    /// [`NnError::InvalidArgument`] if `depth` is not `6n + 2` with `n >= 1`, naming valid depths.
    pub fn new(depth: usize, opts: &ResNetOptions) -> Result<CifarResNet> {
        if depth < 8 || (depth - 2) % 6 != 0 {
            return Err(NnError::InvalidArgument {
                model: "cifar_resnet",
                detail: format!(
                    "depth {depth} is not 6n+2; valid depths are 8, 14, 20, 26, 32, 44, 56, 110, \
                     1202, ... (6n+2 for n >= 1)"
                ),
            });
        }
        let n = (depth - 2) / 6;
        let mut rng = InitRng::seed_from_u64(opts.seed);
        let (init, dt) = (Init::HeNormal, opts.dtype);
        let conv1 = Conv2d::new(opts.in_channels, 16, 3, 1, 1, init, dt, &mut rng)?;
        let mut blocks = Vec::with_capacity(3 * n);
        let mut in_ch = 16;
        for (stage, width) in [16, 32, 64].into_iter().enumerate() {
            for j in 0..n {
                let stride = if stage > 0 && j == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(in_ch, width, stride, opts, &mut rng)?);
                in_ch = width;
            }
        }
        let fc = Linear::new(64, opts.num_classes, true, Init::XavierUniform, dt, &mut rng)?;
        Ok(CifarResNet { conv1, bn1: BatchNorm::new(16, dt)?, blocks, fc })
    }
}

impl Module for CifarResNet {
    fn type_name(&self) -> &'static str {
        "CifarResNet"
    }

    fn forward(&self, x: &Var, cx: &Ctx) -> Result<Var> {
        if x.dims().len() != 4 {
            return Err(NnError::InputShape {
                layer: "CifarResNet",
                expected: "[N, C, H, W]".into(),
                got: x.dims().to_vec(),
            });
        }
        let mut h = ops::relu(&self.bn1.forward(&self.conv1.forward(x, cx)?, cx)?)?;
        for block in &self.blocks {
            h = block.forward(&h, cx)?;
        }
        let pooled = ops::global_avg_pool(&h)?;
        self.fc.forward(&pooled, cx)
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut out: Vec<(String, &dyn Module)> =
            vec![("conv1".into(), &self.conv1), ("bn1".into(), &self.bn1)];
        for (i, b) in self.blocks.iter().enumerate() {
            out.push((format!("blocks.{i}"), b));
        }
        out.push(("fc".into(), &self.fc));
        out
    }
}

/// Number of weighted layers counted as the ResNet paper counts depth (convolutions and dense
/// layers on the main path; projection shortcuts excluded).
pub fn weighted_layer_count(m: &dyn Module) -> usize {
    let mut n = 0;
    walk(m, "", &mut |_, module| n += usize::from(module.counts_as_weighted_layer()));
    n
}
