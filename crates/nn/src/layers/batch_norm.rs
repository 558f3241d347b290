//! `BatchNorm`: batch normalisation over `[N, C, H, W]` (BatchNorm2d) or `[N, C]` (BatchNorm1d).

use crate::init::constant;
use crate::{Buffer, Ctx, Module, Result};
use std::cell::RefCell;
use std::rc::Rc;
use strata_autodiff::{ops, Param, Var};
use strata_tensor::{DType, Tensor};

/// Batch normalisation with learned scale `gamma` and shift `beta` (both excluded from weight
/// decay). Training mode normalises with batch statistics and updates the running statistics as
/// PyTorch does: `running = (1 - momentum) * running + momentum * batch`, with the unbiased
/// batch variance. Evaluation mode normalises with the running statistics.
pub struct BatchNorm {
    pub gamma: Rc<Param>,
    pub beta: Rc<Param>,
    pub running_mean: Buffer,
    pub running_var: Buffer,
    pub momentum: f64,
    pub eps: f64,
}

impl BatchNorm {
    /// Batch norm over `channels` with gamma 1, beta 0, running mean 0 and variance 1.
    pub fn new(channels: usize, dtype: DType) -> Result<BatchNorm> {
        Ok(BatchNorm {
            gamma: Rc::new(Param::without_weight_decay(constant(&[channels], 1.0, dtype)?)),
            beta: Rc::new(Param::without_weight_decay(constant(&[channels], 0.0, dtype)?)),
            running_mean: Rc::new(RefCell::new(constant(&[channels], 0.0, dtype)?)),
            running_var: Rc::new(RefCell::new(constant(&[channels], 1.0, dtype)?)),
            momentum: 0.1,
            eps: 1e-5,
        })
    }

    /// Set gamma to zero (used on the last batch norm of a residual branch, so each block
    /// starts as the identity).
    pub fn zero_gamma(self) -> Result<BatchNorm> {
        let zeros = self.gamma.value().zeros_like()?;
        *self.gamma.value_mut() = zeros;
        Ok(self)
    }

    fn update_running(&self, mean: &Tensor, var: &Tensor, count: usize) -> Result<()> {
        let unbias = if count > 1 { count as f64 / (count as f64 - 1.0) } else { 1.0 };
        let m = self.momentum;
        for (buf, batch, factor) in
            [(&self.running_mean, mean, 1.0), (&self.running_var, var, unbias)]
        {
            let mut running = buf.borrow_mut();
            let b = running.backend()?;
            b.scale_assign(&mut running, 1.0 - m)?;
            b.add_assign(&mut running, &b.scale(batch, m * factor)?)?;
        }
        Ok(())
    }
}

impl Module for BatchNorm {
    fn type_name(&self) -> &'static str {
        "BatchNorm"
    }

    fn forward(&self, x: &Var, cx: &Ctx) -> Result<Var> {
        let (gamma, beta) = (cx.param(&self.gamma), cx.param(&self.beta));
        if !cx.train {
            let (mean, var) = (self.running_mean.borrow(), self.running_var.borrow());
            return Ok(ops::batch_norm_eval(x, &gamma, &beta, &mean, &var, self.eps)?);
        }
        let (y, mean, var) = ops::batch_norm_train(x, &gamma, &beta, self.eps)?;
        if cx.update_running_stats {
            let count = x.value().elem_count() / x.dims().get(1).copied().unwrap_or(1).max(1);
            self.update_running(&mean, &var, count)?;
        }
        Ok(y)
    }

    fn local_params(&self) -> Vec<(&'static str, &Rc<Param>)> {
        vec![("weight", &self.gamma), ("bias", &self.beta)]
    }

    fn local_buffers(&self) -> Vec<(&'static str, &Buffer)> {
        vec![("running_mean", &self.running_mean), ("running_var", &self.running_var)]
    }
}
