//! `BatchNorm`: batch normalisation over `[N, C, H, W]` (BatchNorm2d) or `[N, C]` (BatchNorm1d),
//! with per-worker batch statistics or, when the context carries a [`StatsAllReduce`],
//! statistics over every worker's batch (SyncBatchNorm).

use crate::init::constant;
use crate::{Buffer, Ctx, Module, NnError, Result, StatsAllReduce};
use std::cell::RefCell;
use std::rc::Rc;
use strata_autodiff::{ops, AutodiffError, Param, Var};
use strata_tensor::{DType, Tensor};

/// Batch normalisation with learned scale `gamma` and shift `beta` (both excluded from weight
/// decay). Training mode normalises with batch statistics and updates the running statistics as
/// PyTorch does: `running = (1 - momentum) * running + momentum * batch`, with the unbiased
/// batch variance. Evaluation mode normalises with the running statistics.
///
/// With [`Ctx::sync_stats`] set, training mode uses the statistics of the union of every
/// worker's batch: forward sums each channel's count, sum and sum of squares over the workers
/// (one f64 all-reduce of `1 + 2C` values), backward sums `Σ dy` and `Σ dy·x̂` (`2C` values),
/// and the running statistics are updated from the world's statistics, so N workers with batch
/// b compute what one worker with batch N·b does. `dgamma` and `dbeta` stay this worker's own
/// sums; the data-parallel gradient average combines them as it does every gradient.
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

impl BatchNorm {
    /// Training-mode forward with statistics over every worker's batch; see the type's docs.
    fn forward_synced(
        &self,
        x: &Var,
        gamma: &Var,
        beta: &Var,
        sync: &Rc<dyn StatsAllReduce>,
        update_running_stats: bool,
    ) -> Result<Var> {
        let xv = x.value().clone();
        let backend = xv.backend()?;
        let local = backend.batch_norm_stats(&xv)?;
        let c = local.len();
        if c == 0 {
            let expected = "[N, C, H, W] or [N, C] with C > 0".into();
            return Err(NnError::InputShape {
                layer: "BatchNorm",
                expected,
                got: xv.dims().to_vec(),
            });
        }
        let n_local = (xv.elem_count() / c) as f64;

        // [count, Σx per channel, Σx² per channel]; Σx² = n (var + mean²) from the local
        // (pivot-shifted, f64) statistics, so cancellation happens once, in f64.
        let mut sums = Vec::with_capacity(1 + 2 * c);
        sums.push(n_local);
        sums.extend(local.iter().map(|&(m, _)| n_local * m));
        sums.extend(local.iter().map(|&(m, v)| n_local * (v + m * m)));
        sync.all_reduce_sum(&mut sums)
            .map_err(|detail| NnError::Collective { layer: "BatchNorm", detail })?;
        let count = sums[0];
        let mean: Vec<f64> = sums[1..=c].iter().map(|s| s / count).collect();
        let var: Vec<f64> =
            sums[1 + c..].iter().zip(&mean).map(|(s, m)| (s / count - m * m).max(0.0)).collect();

        let dtype = xv.dtype();
        let as_tensor = |v: &[f64]| channel_tensor(v, dtype);
        let (mean_t, var_t) = (as_tensor(&mean)?, as_tensor(&var)?);
        let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
        let invstd_t = as_tensor(&invstd)?;
        let (gv, bv) = (gamma.value().clone(), beta.value().clone());
        let y = backend.batch_norm_forward_eval(&xv, &gv, &bv, &mean_t, &var_t, self.eps)?;
        if update_running_stats {
            self.update_running(&mean_t, &var_t, count.round() as usize)?;
        }

        let sync = sync.clone();
        let saved_mean = mean_t;
        let out = Var::record("sync_batch_norm", &[x, gamma, beta], y, move |dy| {
            let b = dy.backend()?;
            let local = b.batch_norm_backward_reduce(dy, &xv, &saved_mean, &invstd_t)?;
            let mut flat: Vec<f64> = local.iter().flat_map(|&(s, t)| [s, t]).collect();
            sync.all_reduce_sum(&mut flat)
                .map_err(|detail| AutodiffError::Collective { op: "sync_batch_norm", detail })?;
            let world: Vec<(f64, f64)> = flat.chunks_exact(2).map(|p| (p[0], p[1])).collect();
            let dx =
                b.batch_norm_backward_elemt(dy, &xv, &gv, &saved_mean, &invstd_t, &world, count)?;
            let dgamma = channel_tensor(&local.iter().map(|s| s.1).collect::<Vec<_>>(), dtype)?;
            let dbeta = channel_tensor(&local.iter().map(|s| s.0).collect::<Vec<_>>(), dtype)?;
            Ok(vec![Some(dx), Some(dgamma), Some(dbeta)])
        })?;
        Ok(out)
    }
}

/// A `[C]` tensor of `v` in `dtype` (f64, else f32: the CPU backend computes in those).
fn channel_tensor(v: &[f64], dtype: DType) -> strata_tensor::Result<Tensor> {
    match dtype {
        DType::F64 => Tensor::from_vec(v.to_vec(), [v.len()]),
        _ => Tensor::from_vec(v.iter().map(|&x| x as f32).collect::<Vec<f32>>(), [v.len()]),
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
        if let Some(sync) = &cx.sync_stats {
            return self.forward_synced(x, &gamma, &beta, sync, cx.update_running_stats);
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
