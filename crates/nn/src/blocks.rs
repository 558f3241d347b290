//! Residual blocks: basic (two 3x3 convolutions) and bottleneck (1x1, 3x3, 1x1 with 4x
//! expansion), each in the post-activation form of He et al. (2016a, "Deep Residual Learning")
//! and the pre-activation form of He et al. (2016b, "Identity Mappings in Deep Residual
//! Networks"). Every block takes part in stochastic depth through its [`StochasticDepth`].
//!
//! Shortcuts are the identity where the shape is kept, else a strided 1x1 projection: followed
//! by batch norm in post-activation blocks; in pre-activation blocks applied to the block's
//! pre-activated input `relu(bn1(x))`, which the branch shares, as in the authors' code.
//!
//! A dropped block returns its shortcut path alone: the identity costs nothing; a projection
//! still runs (and in pre-activation form so does the shared `bn1`), so only those parameters
//! of a dropped projection block receive gradients.

use crate::init::{Init, InitRng};
use crate::layers::{BatchNorm, Conv2d};
use crate::resnet::ResNetOptions;
use crate::stochastic_depth::StochasticDepth;
use crate::{Ctx, Module, Result};
use strata_autodiff::{ops, Var};

/// Output channels of a bottleneck block per channel of its 3x3 convolution.
pub const BOTTLENECK_EXPANSION: usize = 4;

fn conv(
    in_ch: usize,
    out_ch: usize,
    kernel: usize,
    stride: usize,
    opts: &ResNetOptions,
    rng: &mut InitRng,
) -> Result<Conv2d> {
    Conv2d::new(in_ch, out_ch, kernel, stride, kernel / 2, Init::HeNormal, opts.dtype, rng)
}

fn projection(
    in_ch: usize,
    out_ch: usize,
    stride: usize,
    opts: &ResNetOptions,
    rng: &mut InitRng,
) -> Result<Option<Conv2d>> {
    if stride == 1 && in_ch == out_ch {
        return Ok(None);
    }
    let mut proj = conv(in_ch, out_ch, 1, stride, opts, rng)?;
    proj.main_path = false;
    Ok(Some(proj))
}

/// The last batch norm of a post-activation branch, at gamma 0 under `zero_init_residual`.
fn last_bn(channels: usize, opts: &ResNetOptions) -> Result<BatchNorm> {
    let bn = BatchNorm::new(channels, opts.dtype)?;
    if opts.zero_init_residual {
        bn.zero_gamma()
    } else {
        Ok(bn)
    }
}

/// The last convolution of a pre-activation branch, at zero under `zero_init_residual` (the
/// branch has no final batch norm to zero), so the block starts as the identity.
fn last_conv(conv: Conv2d, opts: &ResNetOptions) -> Result<Conv2d> {
    if opts.zero_init_residual {
        let zeros = conv.weight.value().zeros_like()?;
        *conv.weight.value_mut() = zeros;
    }
    Ok(conv)
}

fn bn_relu(cx: &Ctx, name: &str, bn: &BatchNorm, x: &Var) -> Result<Var> {
    Ok(ops::relu(&cx.call(name, bn, x)?)?)
}

/// Post-activation basic block: conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut (identity, or
/// 1x1 conv + BN projection where the shape changes), then ReLU.
pub struct BasicBlock {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub shortcut: Option<(Conv2d, BatchNorm)>,
    pub stochastic_depth: StochasticDepth,
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
        let conv1 = conv(in_ch, out_ch, 3, stride, opts, rng)?;
        let conv2 = conv(out_ch, out_ch, 3, 1, opts, rng)?;
        let shortcut = match projection(in_ch, out_ch, stride, opts, rng)? {
            Some(proj) => Some((proj, BatchNorm::new(out_ch, opts.dtype)?)),
            None => None,
        };
        Ok(BasicBlock {
            conv1,
            bn1: BatchNorm::new(out_ch, opts.dtype)?,
            conv2,
            bn2: last_bn(out_ch, opts)?,
            shortcut,
            stochastic_depth: StochasticDepth::OFF,
        })
    }

    /// The same block with stochastic depth `sd`.
    pub fn with_stochastic_depth(self, sd: StochasticDepth) -> Self {
        BasicBlock { stochastic_depth: sd, ..self }
    }

    fn branch(&self, x: &Var, cx: &Ctx) -> Result<Var> {
        let h = bn_relu(cx, "bn1", &self.bn1, &cx.call("conv1", &self.conv1, x)?)?;
        cx.call("bn2", &self.bn2, &cx.call("conv2", &self.conv2, &h)?)
    }
}

impl Module for BasicBlock {
    fn type_name(&self) -> &'static str {
        "BasicBlock"
    }

    fn forward(&self, x: &Var, cx: &Ctx) -> Result<Var> {
        let s = match &self.shortcut {
            Some((conv, bn)) => cx.call("shortcut.1", bn, &cx.call("shortcut.0", conv, x)?)?,
            None => x.clone(),
        };
        let y = self.stochastic_depth.merge(cx, s, || self.branch(x, cx))?;
        Ok(ops::relu(&y)?)
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

/// Post-activation bottleneck block: conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1-BN from
/// `in_ch` through `width` to `4 * width` channels, plus the shortcut, then ReLU. The stride
/// sits on the 3x3 convolution (torchvision's "ResNet v1.5").
pub struct Bottleneck {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub conv3: Conv2d,
    pub bn3: BatchNorm,
    pub shortcut: Option<(Conv2d, BatchNorm)>,
    pub stochastic_depth: StochasticDepth,
}

impl Bottleneck {
    /// A block from `in_ch` to `4 * width` channels with `stride` on its 3x3 convolution.
    pub fn new(
        in_ch: usize,
        width: usize,
        stride: usize,
        opts: &ResNetOptions,
        rng: &mut InitRng,
    ) -> Result<Bottleneck> {
        let out_ch = BOTTLENECK_EXPANSION * width;
        let conv1 = conv(in_ch, width, 1, 1, opts, rng)?;
        let conv2 = conv(width, width, 3, stride, opts, rng)?;
        let conv3 = conv(width, out_ch, 1, 1, opts, rng)?;
        let shortcut = match projection(in_ch, out_ch, stride, opts, rng)? {
            Some(proj) => Some((proj, BatchNorm::new(out_ch, opts.dtype)?)),
            None => None,
        };
        Ok(Bottleneck {
            conv1,
            bn1: BatchNorm::new(width, opts.dtype)?,
            conv2,
            bn2: BatchNorm::new(width, opts.dtype)?,
            conv3,
            bn3: last_bn(out_ch, opts)?,
            shortcut,
            stochastic_depth: StochasticDepth::OFF,
        })
    }

    /// The same block with stochastic depth `sd`.
    pub fn with_stochastic_depth(self, sd: StochasticDepth) -> Self {
        Bottleneck { stochastic_depth: sd, ..self }
    }

    fn branch(&self, x: &Var, cx: &Ctx) -> Result<Var> {
        let h = bn_relu(cx, "bn1", &self.bn1, &cx.call("conv1", &self.conv1, x)?)?;
        let h = bn_relu(cx, "bn2", &self.bn2, &cx.call("conv2", &self.conv2, &h)?)?;
        cx.call("bn3", &self.bn3, &cx.call("conv3", &self.conv3, &h)?)
    }
}

impl Module for Bottleneck {
    fn type_name(&self) -> &'static str {
        "Bottleneck"
    }

    fn forward(&self, x: &Var, cx: &Ctx) -> Result<Var> {
        let s = match &self.shortcut {
            Some((conv, bn)) => cx.call("shortcut.1", bn, &cx.call("shortcut.0", conv, x)?)?,
            None => x.clone(),
        };
        let y = self.stochastic_depth.merge(cx, s, || self.branch(x, cx))?;
        Ok(ops::relu(&y)?)
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut out: Vec<(String, &dyn Module)> = vec![
            ("conv1".into(), &self.conv1),
            ("bn1".into(), &self.bn1),
            ("conv2".into(), &self.conv2),
            ("bn2".into(), &self.bn2),
            ("conv3".into(), &self.conv3),
            ("bn3".into(), &self.bn3),
        ];
        if let Some((conv, bn)) = &self.shortcut {
            out.push(("shortcut.0".into(), conv));
            out.push(("shortcut.1".into(), bn));
        }
        out
    }
}

/// Pre-activation basic block: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3, plus the shortcut
/// (identity, or a 1x1 projection of the pre-activated input); no activation after the sum.
pub struct PreActBasicBlock {
    pub bn1: BatchNorm,
    pub conv1: Conv2d,
    pub bn2: BatchNorm,
    pub conv2: Conv2d,
    pub shortcut: Option<Conv2d>,
    pub stochastic_depth: StochasticDepth,
}

impl PreActBasicBlock {
    /// A block from `in_ch` to `out_ch` channels; the first conv has `stride`.
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        stride: usize,
        opts: &ResNetOptions,
        rng: &mut InitRng,
    ) -> Result<PreActBasicBlock> {
        let conv1 = conv(in_ch, out_ch, 3, stride, opts, rng)?;
        let conv2 = last_conv(conv(out_ch, out_ch, 3, 1, opts, rng)?, opts)?;
        Ok(PreActBasicBlock {
            bn1: BatchNorm::new(in_ch, opts.dtype)?,
            conv1,
            bn2: BatchNorm::new(out_ch, opts.dtype)?,
            conv2,
            shortcut: projection(in_ch, out_ch, stride, opts, rng)?,
            stochastic_depth: StochasticDepth::OFF,
        })
    }

    /// The same block with stochastic depth `sd`.
    pub fn with_stochastic_depth(self, sd: StochasticDepth) -> Self {
        PreActBasicBlock { stochastic_depth: sd, ..self }
    }

    /// The branch after the first BN-ReLU.
    fn branch(&self, preact: &Var, cx: &Ctx) -> Result<Var> {
        let h = bn_relu(cx, "bn2", &self.bn2, &cx.call("conv1", &self.conv1, preact)?)?;
        cx.call("conv2", &self.conv2, &h)
    }
}

impl Module for PreActBasicBlock {
    fn type_name(&self) -> &'static str {
        "PreActBasicBlock"
    }

    fn forward(&self, x: &Var, cx: &Ctx) -> Result<Var> {
        let sd = &self.stochastic_depth;
        match &self.shortcut {
            Some(proj) => {
                let h = bn_relu(cx, "bn1", &self.bn1, x)?;
                let s = cx.call("shortcut", proj, &h)?;
                sd.merge(cx, s, || self.branch(&h, cx))
            }
            None => sd.merge(cx, x.clone(), || self.branch(&bn_relu(cx, "bn1", &self.bn1, x)?, cx)),
        }
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut out: Vec<(String, &dyn Module)> = vec![
            ("bn1".into(), &self.bn1),
            ("conv1".into(), &self.conv1),
            ("bn2".into(), &self.bn2),
            ("conv2".into(), &self.conv2),
        ];
        if let Some(proj) = &self.shortcut {
            out.push(("shortcut".into(), proj));
        }
        out
    }
}

/// Pre-activation bottleneck block: BN-ReLU-conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1
/// from `in_ch` through `width` to `4 * width` channels, plus the shortcut (identity, or a 1x1
/// projection of the pre-activated input); no activation after the sum.
pub struct PreActBottleneck {
    pub bn1: BatchNorm,
    pub conv1: Conv2d,
    pub bn2: BatchNorm,
    pub conv2: Conv2d,
    pub bn3: BatchNorm,
    pub conv3: Conv2d,
    pub shortcut: Option<Conv2d>,
    pub stochastic_depth: StochasticDepth,
}

impl PreActBottleneck {
    /// A block from `in_ch` to `4 * width` channels with `stride` on its 3x3 convolution.
    pub fn new(
        in_ch: usize,
        width: usize,
        stride: usize,
        opts: &ResNetOptions,
        rng: &mut InitRng,
    ) -> Result<PreActBottleneck> {
        let out_ch = BOTTLENECK_EXPANSION * width;
        let conv1 = conv(in_ch, width, 1, 1, opts, rng)?;
        let conv2 = conv(width, width, 3, stride, opts, rng)?;
        let conv3 = last_conv(conv(width, out_ch, 1, 1, opts, rng)?, opts)?;
        Ok(PreActBottleneck {
            bn1: BatchNorm::new(in_ch, opts.dtype)?,
            conv1,
            bn2: BatchNorm::new(width, opts.dtype)?,
            conv2,
            bn3: BatchNorm::new(width, opts.dtype)?,
            conv3,
            shortcut: projection(in_ch, out_ch, stride, opts, rng)?,
            stochastic_depth: StochasticDepth::OFF,
        })
    }

    /// The same block with stochastic depth `sd`.
    pub fn with_stochastic_depth(self, sd: StochasticDepth) -> Self {
        PreActBottleneck { stochastic_depth: sd, ..self }
    }

    /// The branch after the first BN-ReLU.
    fn branch(&self, preact: &Var, cx: &Ctx) -> Result<Var> {
        let h = bn_relu(cx, "bn2", &self.bn2, &cx.call("conv1", &self.conv1, preact)?)?;
        let h = bn_relu(cx, "bn3", &self.bn3, &cx.call("conv2", &self.conv2, &h)?)?;
        cx.call("conv3", &self.conv3, &h)
    }
}

impl Module for PreActBottleneck {
    fn type_name(&self) -> &'static str {
        "PreActBottleneck"
    }

    fn forward(&self, x: &Var, cx: &Ctx) -> Result<Var> {
        let sd = &self.stochastic_depth;
        match &self.shortcut {
            Some(proj) => {
                let h = bn_relu(cx, "bn1", &self.bn1, x)?;
                let s = cx.call("shortcut", proj, &h)?;
                sd.merge(cx, s, || self.branch(&h, cx))
            }
            None => sd.merge(cx, x.clone(), || self.branch(&bn_relu(cx, "bn1", &self.bn1, x)?, cx)),
        }
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut out: Vec<(String, &dyn Module)> = vec![
            ("bn1".into(), &self.bn1),
            ("conv1".into(), &self.conv1),
            ("bn2".into(), &self.bn2),
            ("conv2".into(), &self.conv2),
            ("bn3".into(), &self.bn3),
            ("conv3".into(), &self.conv3),
        ];
        if let Some(proj) = &self.shortcut {
            out.push(("shortcut".into(), proj));
        }
        out
    }
}
