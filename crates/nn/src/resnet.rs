//! Residual networks: the CIFAR-style ResNet of depth 6n+2 (basic blocks), the pre-activation
//! ResNet of depth 9n+2 (bottlenecks; ResNet-164 and -1001), and the ImageNet-style ResNet-50,
//! -101 and -152. Each takes stochastic depth with a linearly decaying survival probability.

use crate::checkpoint::run_blocks;
use crate::init::{Init, InitRng};
use crate::layers::{BatchNorm, Conv2d, GlobalAvgPool, Linear, MaxPool2d};
use crate::stochastic_depth::linear_decay;
use crate::{walk, Ctx, Module, NnError, Result};
use rand::SeedableRng;
use std::rc::Rc;
use strata_autodiff::{ops, Var};
use strata_tensor::{DType, Pool2dParams};

pub use crate::blocks::{BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck};

/// Options shared by the ResNet builders.
#[derive(Debug, Clone)]
pub struct ResNetOptions {
    pub in_channels: usize,
    pub num_classes: usize,
    /// Seed of the initialisation stream (the same on every rank).
    pub seed: u64,
    /// Start each residual branch as zero, so every block starts as the identity (Goyal et al.,
    /// 2017; PyTorch's `zero_init_residual`): the branch's last batch norm gets gamma = 0 in
    /// post-activation blocks, the last convolution gets zero weights in pre-activation blocks.
    pub zero_init_residual: bool,
    /// Stochastic depth: survival probability `p_L` of the last residual block, decaying
    /// linearly from 1 at the first block; 1 disables it.
    pub survival_prob: f64,
    pub dtype: DType,
}

impl Default for ResNetOptions {
    fn default() -> Self {
        ResNetOptions {
            in_channels: 3,
            num_classes: 10,
            seed: 0,
            zero_init_residual: false,
            survival_prob: 1.0,
            dtype: DType::F32,
        }
    }
}

impl ResNetOptions {
    /// Check the sizes; `model` names the builder in errors.
    pub(crate) fn check(&self, model: &'static str) -> Result<()> {
        if self.in_channels == 0 || self.num_classes == 0 {
            return Err(NnError::InvalidArgument {
                model,
                detail: format!(
                    "input channels {} and classes {} must both be at least 1",
                    self.in_channels, self.num_classes
                ),
            });
        }
        Ok(())
    }
}

fn input_4d(layer: &'static str, x: &Var) -> Result<()> {
    if x.dims().len() == 4 {
        return Ok(());
    }
    Err(NnError::InputShape { layer, expected: "[N, C, H, W]".into(), got: x.dims().to_vec() })
}

/// The CIFAR-style ResNet of He et al. (2016): stem conv3x3-BN-ReLU; three stages of n basic
/// blocks with 16, 32 and 64 filters, stride 2 at the start of stages 2 and 3; global average
/// pooling; a dense classifier. Depth `6n + 2` counts the weighted layers on the main path.
pub struct CifarResNet {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub blocks: Vec<Rc<BasicBlock>>,
    pub pool: GlobalAvgPool,
    pub fc: Linear,
}

impl CifarResNet {
    /// Build ResNet-`depth` (20, 32, 44, 56, 110, 1202, ...).
    ///
    /// # Errors
    /// [`NnError::InvalidArgument`] if `depth` is not `6n + 2` with `n >= 1`, naming valid depths,
    /// or if a size or the survival probability is out of range.
    pub fn new(depth: usize, opts: &ResNetOptions) -> Result<CifarResNet> {
        opts.check("cifar_resnet")?;
        if depth < 8 || !(depth - 2).is_multiple_of(6) {
            return Err(NnError::InvalidArgument {
                model: "cifar_resnet",
                detail: format!(
                    "depth {depth} is not 6n+2; valid depths are 8, 14, 20, 26, 32, 44, 56, 110, \
                     1202, ... (6n+2 for n >= 1)"
                ),
            });
        }
        let n = (depth - 2) / 6;
        let survival = linear_decay(3 * n, opts.survival_prob)?;
        let mut rng = InitRng::seed_from_u64(opts.seed);
        let (init, dt) = (Init::HeNormal, opts.dtype);
        let conv1 = Conv2d::new(opts.in_channels, 16, 3, 1, 1, init, dt, &mut rng)?;
        let mut blocks = Vec::with_capacity(3 * n);
        let mut in_ch = 16;
        for (stage, width) in [16, 32, 64].into_iter().enumerate() {
            for j in 0..n {
                let stride = if stage > 0 && j == 0 { 2 } else { 1 };
                let block = BasicBlock::new(in_ch, width, stride, opts, &mut rng)?;
                blocks.push(Rc::new(block.with_stochastic_depth(survival[blocks.len()])));
                in_ch = width;
            }
        }
        let fc = Linear::new(64, opts.num_classes, true, Init::XavierUniform, dt, &mut rng)?;
        let bn1 = BatchNorm::new(16, dt)?;
        Ok(CifarResNet { conv1, bn1, blocks, pool: GlobalAvgPool, fc })
    }
}

impl Module for CifarResNet {
    fn type_name(&self) -> &'static str {
        "CifarResNet"
    }

    fn forward(&self, x: &Var, cx: &Ctx) -> Result<Var> {
        input_4d("CifarResNet", x)?;
        let h = ops::relu(&cx.call("bn1", &self.bn1, &cx.call("conv1", &self.conv1, x)?)?)?;
        let h = run_blocks(cx, "blocks.", &self.blocks, h)?;
        cx.call("fc", &self.fc, &cx.call("pool", &self.pool, &h)?)
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut out: Vec<(String, &dyn Module)> =
            vec![("conv1".into(), &self.conv1), ("bn1".into(), &self.bn1)];
        for (i, b) in self.blocks.iter().enumerate() {
            out.push((format!("blocks.{i}"), b.as_ref()));
        }
        out.push(("pool".into(), &self.pool));
        out.push(("fc".into(), &self.fc));
        out
    }
}

/// The pre-activation ResNet of He et al. (2016b, "Identity Mappings in Deep Residual
/// Networks") for CIFAR-sized inputs: stem conv3x3 to 16 channels; three stages of n
/// pre-activation bottlenecks of widths 16, 32 and 64 (outputs 64, 128 and 256), stride 2 at the
/// start of stages 2 and 3; a final BN-ReLU; global average pooling; a dense classifier.
/// Depth `9n + 2` counts the weighted layers on the main path (ResNet-164: n = 18; ResNet-1001:
/// n = 111).
pub struct PreActResNet {
    pub conv1: Conv2d,
    pub blocks: Vec<Rc<PreActBottleneck>>,
    pub bn: BatchNorm,
    pub pool: GlobalAvgPool,
    pub fc: Linear,
}

impl PreActResNet {
    /// Build pre-activation ResNet-`depth` (164, 1001, or any 9n+2).
    ///
    /// # Errors
    /// [`NnError::InvalidArgument`] if `depth` is not `9n + 2` with `n >= 1`, naming valid
    /// depths, or if a size or the survival probability is out of range.
    pub fn new(depth: usize, opts: &ResNetOptions) -> Result<PreActResNet> {
        opts.check("preact_resnet")?;
        if depth < 11 || !(depth - 2).is_multiple_of(9) {
            return Err(NnError::InvalidArgument {
                model: "preact_resnet",
                detail: format!(
                    "depth {depth} is not 9n+2; valid depths are 11, 20, 29, 38, 47, 56, ..., 164, \
                     ..., 1001, ... (9n+2 for n >= 1)"
                ),
            });
        }
        let n = (depth - 2) / 9;
        let survival = linear_decay(3 * n, opts.survival_prob)?;
        let mut rng = InitRng::seed_from_u64(opts.seed);
        let dt = opts.dtype;
        let conv1 = Conv2d::new(opts.in_channels, 16, 3, 1, 1, Init::HeNormal, dt, &mut rng)?;
        let mut blocks = Vec::with_capacity(3 * n);
        let mut in_ch = 16;
        for (stage, width) in [16, 32, 64].into_iter().enumerate() {
            for j in 0..n {
                let stride = if stage > 0 && j == 0 { 2 } else { 1 };
                let block = PreActBottleneck::new(in_ch, width, stride, opts, &mut rng)?;
                blocks.push(Rc::new(block.with_stochastic_depth(survival[blocks.len()])));
                in_ch = 4 * width;
            }
        }
        let fc = Linear::new(in_ch, opts.num_classes, true, Init::XavierUniform, dt, &mut rng)?;
        let bn = BatchNorm::new(in_ch, dt)?;
        Ok(PreActResNet { conv1, blocks, bn, pool: GlobalAvgPool, fc })
    }
}

impl Module for PreActResNet {
    fn type_name(&self) -> &'static str {
        "PreActResNet"
    }

    fn forward(&self, x: &Var, cx: &Ctx) -> Result<Var> {
        input_4d("PreActResNet", x)?;
        let h = cx.call("conv1", &self.conv1, x)?;
        let h = run_blocks(cx, "blocks.", &self.blocks, h)?;
        let h = ops::relu(&cx.call("bn", &self.bn, &h)?)?;
        cx.call("fc", &self.fc, &cx.call("pool", &self.pool, &h)?)
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut out: Vec<(String, &dyn Module)> = vec![("conv1".into(), &self.conv1)];
        for (i, b) in self.blocks.iter().enumerate() {
            out.push((format!("blocks.{i}"), b.as_ref()));
        }
        out.push(("bn".into(), &self.bn));
        out.push(("pool".into(), &self.pool));
        out.push(("fc".into(), &self.fc));
        out
    }
}

/// The ImageNet-style ResNet of He et al. (2016a) with bottlenecks: stem conv7x7 stride 2 to
/// 64 channels, BN, ReLU, max pool 3x3 stride 2; four stages of bottlenecks of widths 64, 128,
/// 256 and 512 (outputs 256 to 2048), stride 2 at the start of stages 2 to 4; global average
/// pooling; a dense classifier. Stage lengths [3, 4, 6, 3] (ResNet-50), [3, 4, 23, 3] (-101),
/// [3, 8, 36, 3] (-152).
pub struct ImageNetResNet {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub maxpool: MaxPool2d,
    pub blocks: Vec<Rc<Bottleneck>>,
    pub pool: GlobalAvgPool,
    pub fc: Linear,
}

impl ImageNetResNet {
    /// Depths this builder knows, with their stage lengths.
    pub const DEPTHS: [(usize, [usize; 4]); 3] =
        [(50, [3, 4, 6, 3]), (101, [3, 4, 23, 3]), (152, [3, 8, 36, 3])];

    /// Build ResNet-`depth` for `depth` in 50, 101, 152.
    ///
    /// # Errors
    /// [`NnError::InvalidArgument`] for another depth, naming the valid ones, or if a size or
    /// the survival probability is out of range.
    pub fn new(depth: usize, opts: &ResNetOptions) -> Result<ImageNetResNet> {
        opts.check("imagenet_resnet")?;
        let Some(&(_, stages)) = Self::DEPTHS.iter().find(|(d, _)| *d == depth) else {
            return Err(NnError::InvalidArgument {
                model: "imagenet_resnet",
                detail: format!("depth {depth} is not one of the valid depths 50, 101, 152"),
            });
        };
        let survival = linear_decay(stages.iter().sum(), opts.survival_prob)?;
        let mut rng = InitRng::seed_from_u64(opts.seed);
        let dt = opts.dtype;
        let conv1 = Conv2d::new(opts.in_channels, 64, 7, 2, 3, Init::HeNormal, dt, &mut rng)?;
        let mut blocks = Vec::with_capacity(survival.len());
        let mut in_ch = 64;
        for (stage, (&count, width)) in stages.iter().zip([64, 128, 256, 512]).enumerate() {
            for j in 0..count {
                let stride = if stage > 0 && j == 0 { 2 } else { 1 };
                let block = Bottleneck::new(in_ch, width, stride, opts, &mut rng)?;
                blocks.push(Rc::new(block.with_stochastic_depth(survival[blocks.len()])));
                in_ch = 4 * width;
            }
        }
        let fc = Linear::new(in_ch, opts.num_classes, true, Init::XavierUniform, dt, &mut rng)?;
        Ok(ImageNetResNet {
            conv1,
            bn1: BatchNorm::new(64, dt)?,
            maxpool: MaxPool2d(Pool2dParams { kernel: 3, stride: 2, padding: 1 }),
            blocks,
            pool: GlobalAvgPool,
            fc,
        })
    }
}

impl Module for ImageNetResNet {
    fn type_name(&self) -> &'static str {
        "ImageNetResNet"
    }

    fn forward(&self, x: &Var, cx: &Ctx) -> Result<Var> {
        input_4d("ImageNetResNet", x)?;
        let h = ops::relu(&cx.call("bn1", &self.bn1, &cx.call("conv1", &self.conv1, x)?)?)?;
        let h = cx.call("maxpool", &self.maxpool, &h)?;
        let h = run_blocks(cx, "blocks.", &self.blocks, h)?;
        cx.call("fc", &self.fc, &cx.call("pool", &self.pool, &h)?)
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut out: Vec<(String, &dyn Module)> = vec![
            ("conv1".into(), &self.conv1),
            ("bn1".into(), &self.bn1),
            ("maxpool".into(), &self.maxpool),
        ];
        for (i, b) in self.blocks.iter().enumerate() {
            out.push((format!("blocks.{i}"), b.as_ref()));
        }
        out.push(("pool".into(), &self.pool));
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
