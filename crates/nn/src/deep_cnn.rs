//! The deep CNN: residual basic blocks in stages of two, each stage followed by a stride-2
//! basic block that doubles the filters, so resolution halves and width doubles every third
//! block.

use crate::checkpoint::run_blocks;
use crate::init::{Init, InitRng};
use crate::layers::{BatchNorm, Conv2d, GlobalAvgPool, Linear};
use crate::resnet::{BasicBlock, ResNetOptions};
use crate::stochastic_depth::linear_decay;
use crate::{Ctx, Module, NnError, Result};
use rand::SeedableRng;
use std::rc::Rc;
use strata_autodiff::{ops, Var};

/// Widest layer the builder accepts, in filters (a guard against a mistyped stage count
/// asking for terabytes).
pub const MAX_FILTERS: usize = 1 << 14;

/// Stem conv3x3(width)-BN-ReLU; then `stages` stages of two basic blocks, stage `s` with
/// `width * 2^s` filters, consecutive stages joined by a stride-2 basic block that doubles the
/// filters; global average pooling; a dense classifier. `3 * stages - 1` residual blocks,
/// `6 * stages` weighted layers.
pub struct DeepCnn {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub blocks: Vec<Rc<BasicBlock>>,
    pub pool: GlobalAvgPool,
    pub fc: Linear,
}

impl DeepCnn {
    /// Build the deep CNN with `stages` stages and `width` filters in the first.
    ///
    /// # Errors
    /// [`NnError::InvalidArgument`] if `stages` or `width` is zero, if the last stage would be
    /// wider than [`MAX_FILTERS`] (naming the largest valid stage count), or if a size or the
    /// survival probability is out of range.
    pub fn new(stages: usize, width: usize, opts: &ResNetOptions) -> Result<DeepCnn> {
        opts.check("deep_cnn")?;
        // width * 2^(s-1) <= MAX_FILTERS  <=>  s - 1 <= log2(MAX_FILTERS / width).
        let max_stages = match MAX_FILTERS.checked_div(width) {
            Some(q) if q > 0 => q.ilog2() as usize + 1,
            _ => 0,
        };
        if stages == 0 || width == 0 || stages > max_stages {
            return Err(NnError::InvalidArgument {
                model: "deep_cnn",
                detail: format!(
                    "{stages} stages of base width {width}: need width >= 1 and 1 <= stages <= \
                     {max_stages} (the last stage has width * 2^(stages-1) <= {MAX_FILTERS} \
                     filters)"
                ),
            });
        }
        let survival = linear_decay(3 * stages - 1, opts.survival_prob)?;
        let mut rng = InitRng::seed_from_u64(opts.seed);
        let dt = opts.dtype;
        let conv1 = Conv2d::new(opts.in_channels, width, 3, 1, 1, Init::HeNormal, dt, &mut rng)?;
        let mut blocks = Vec::with_capacity(survival.len());
        let mut w = width;
        for stage in 0..stages {
            if stage > 0 {
                let block = BasicBlock::new(w, 2 * w, 2, opts, &mut rng)?;
                blocks.push(Rc::new(block.with_stochastic_depth(survival[blocks.len()])));
                w *= 2;
            }
            for _ in 0..2 {
                let block = BasicBlock::new(w, w, 1, opts, &mut rng)?;
                blocks.push(Rc::new(block.with_stochastic_depth(survival[blocks.len()])));
            }
        }
        let fc = Linear::new(w, opts.num_classes, true, Init::XavierUniform, dt, &mut rng)?;
        let bn1 = BatchNorm::new(width, dt)?;
        Ok(DeepCnn { conv1, bn1, blocks, pool: GlobalAvgPool, fc })
    }
}

impl Module for DeepCnn {
    fn type_name(&self) -> &'static str {
        "DeepCnn"
    }

    fn forward(&self, x: &Var, cx: &Ctx) -> Result<Var> {
        if x.dims().len() != 4 {
            return Err(NnError::InputShape {
                layer: "DeepCnn",
                expected: "[N, C, H, W]".into(),
                got: x.dims().to_vec(),
            });
        }
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
