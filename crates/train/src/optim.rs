//! Optimizers and learning-rate schedules. Updates are identical on every rank because every
//! rank holds the same averaged gradients and applies the same arithmetic.

use crate::config::{OptimizerConfig, ScheduleConfig};
use crate::Result;
use std::collections::HashMap;
use std::rc::Rc;
use strata_autodiff::Param;
use strata_tensor::{SgdParams, Tensor};

/// SGD with momentum, optional Nesterov, and L2 weight decay added to the gradient (as
/// PyTorch's `SGD`), skipped for parameters marked without it (batch norm, biases).
pub struct Sgd {
    params: Vec<(String, Rc<Param>)>,
    momentum_bufs: Vec<Option<Tensor>>,
    cfg: OptimizerConfig,
}

impl Sgd {
    /// An optimizer over named `params` (in a fixed order shared by all ranks).
    pub fn new(params: Vec<(String, Rc<Param>)>, cfg: OptimizerConfig) -> Sgd {
        let momentum_bufs = vec![None; params.len()];
        Sgd { params, momentum_bufs, cfg }
    }

    /// Apply one step at learning rate `lr`. Parameters without a gradient are left unchanged.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        for ((_, p), buf) in self.params.iter().zip(&mut self.momentum_bufs) {
            let grad = p.grad();
            let Some(g) = grad.as_ref() else { continue };
            let first_step = buf.is_none();
            let m = match buf {
                Some(m) => m,
                None => buf.insert(g.zeros_like()?),
            };
            let hp = SgdParams {
                lr,
                momentum: self.cfg.momentum,
                weight_decay: if p.weight_decay { self.cfg.weight_decay } else { 0.0 },
                nesterov: self.cfg.nesterov,
                first_step,
            };
            let mut value = p.value_mut();
            value.backend()?.sgd_step(&mut value, g, m, hp)?;
        }
        Ok(())
    }

    /// Forget every parameter's gradient.
    pub fn zero_grad(&self) {
        self.params.iter().for_each(|(_, p)| p.zero_grad());
    }

    /// The momentum buffers, named `<parameter>.momentum`, for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(&self.momentum_bufs)
            .filter_map(|((name, _), m)| {
                m.as_ref().map(|m| (format!("{name}.momentum"), m.clone()))
            })
            .collect()
    }

    /// Restore momentum buffers written by [`Sgd::state`]; parameters absent there start
    /// without momentum, as on a first step.
    pub fn load_state(&mut self, state: &HashMap<String, (Vec<usize>, Vec<f32>)>) -> Result<()> {
        for ((name, _), m) in self.params.iter().zip(&mut self.momentum_bufs) {
            *m = match state.get(&format!("{name}.momentum")) {
                Some((dims, values)) => Some(Tensor::from_vec(values.clone(), dims.as_slice())?),
                None => None,
            };
        }
        Ok(())
    }
}

/// The learning rate at each optimizer step.
#[derive(Debug, Clone)]
pub struct Schedule {
    base_lr: f64,
    cfg: ScheduleConfig,
    total_steps: u64,
    steps_per_epoch: u64,
}

impl Schedule {
    /// A schedule over `total_steps` steps of `steps_per_epoch` each.
    pub fn new(base_lr: f64, cfg: ScheduleConfig, total_steps: u64, steps_per_epoch: u64) -> Self {
        Schedule { base_lr, cfg, total_steps, steps_per_epoch: steps_per_epoch.max(1) }
    }

    /// Learning rate for step `step` (0-based): linear warmup from `base/warmup` to `base` over
    /// the warmup steps, then the decay.
    pub fn lr(&self, step: u64) -> f64 {
        let warm = self.cfg.warmup_steps;
        if step < warm {
            return self.base_lr * (step + 1) as f64 / warm as f64;
        }
        match self.cfg.kind.as_str() {
            "cosine" => {
                let span = self.total_steps.saturating_sub(warm).max(1) as f64;
                let t = (step - warm) as f64 / span;
                0.5 * self.base_lr * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
            }
            "multistep" => {
                let epoch = step / self.steps_per_epoch;
                let passed = self.cfg.milestones.iter().filter(|&&m| epoch >= m).count();
                self.base_lr * self.cfg.gamma.powi(passed as i32)
            }
            _ => self.base_lr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: &str, warmup: u64) -> Schedule {
        let cfg = ScheduleConfig {
            kind: kind.into(),
            warmup_steps: warmup,
            milestones: vec![1, 2],
            gamma: 0.1,
        };
        Schedule::new(1.0, cfg, 100, 10)
    }

    #[test]
    fn warmup_is_linear_then_cosine_reaches_zero() {
        // Warmup: lr(s) = base * (s + 1) / warmup, by definition.
        let s = sched("cosine", 10);
        assert!((s.lr(0) - 0.1).abs() < 1e-12);
        assert!((s.lr(9) - 1.0).abs() < 1e-12);
        // Cosine: 0.5 * (1 + cos(pi * t)); t = 0 at step 10, 0.5 at step 55, 1 at step 100.
        assert!((s.lr(10) - 1.0).abs() < 1e-12);
        assert!((s.lr(55) - 0.5).abs() < 1e-12);
        assert!(s.lr(100).abs() < 1e-12);
    }

    #[test]
    fn multistep_divides_at_milestone_epochs() {
        // 10 steps per epoch; milestones at epochs 1 and 2, gamma 0.1.
        let s = sched("multistep", 0);
        assert_eq!(s.lr(9), 1.0);
        assert!((s.lr(10) - 0.1).abs() < 1e-12);
        assert!((s.lr(25) - 0.01).abs() < 1e-12);
    }
}
