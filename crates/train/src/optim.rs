//! Optimizers, gradient clipping and learning-rate schedules. Updates are identical on every
//! rank because every rank holds the same averaged gradients and applies the same arithmetic.

use crate::config::{OptimizerConfig, ScheduleConfig};
use crate::error::{Result, TrainError};
use std::collections::HashMap;
use std::rc::Rc;
use strata_autodiff::Param;
use strata_tensor::{AdamWParams, SgdParams, Tensor};

/// Optimizer kinds selectable by `optimizer.kind`.
pub const OPTIMIZER_KINDS: &[&str] = &["sgd", "adamw"];

/// Per-parameter state of one optimizer.
enum Slots {
    /// SGD's momentum buffers (none until a parameter's first step, or without momentum).
    Sgd { momentum: Vec<Option<Tensor>> },
    /// AdamW's first and second moments and each parameter's step count.
    AdamW { exp_avg: Vec<Option<Tensor>>, exp_avg_sq: Vec<Option<Tensor>>, steps: Vec<u64> },
}

/// The configured optimizer over a model's named parameters.
///
/// - `sgd`: SGD with momentum and optional Nesterov, L2 weight decay added to the gradient, as
///   PyTorch's `SGD` (no dampening).
/// - `adamw`: Adam with decoupled weight decay, as PyTorch's `AdamW`.
///
/// Weight decay skips parameters marked without it (batch-norm scales and shifts, biases)
/// unless `optimizer.decay_bias_and_norm` is set.
pub struct Optimizer {
    params: Vec<(String, Rc<Param>)>,
    slots: Slots,
    cfg: OptimizerConfig,
}

impl Optimizer {
    /// An optimizer of kind `cfg.kind` over named `params` (in a fixed order shared by all
    /// ranks).
    ///
    /// # Errors
    /// [`TrainError::Config`] naming `optimizer.kind` if the kind is unknown.
    pub fn new(params: Vec<(String, Rc<Param>)>, cfg: OptimizerConfig) -> Result<Optimizer> {
        let n = params.len();
        let slots = match cfg.kind.as_str() {
            "sgd" => Slots::Sgd { momentum: vec![None; n] },
            "adamw" => Slots::AdamW {
                exp_avg: vec![None; n],
                exp_avg_sq: vec![None; n],
                steps: vec![0; n],
            },
            other => {
                return Err(TrainError::Config {
                    path: "optimizer.kind".into(),
                    detail: format!(
                        "unknown optimizer {other:?}; known: {}",
                        OPTIMIZER_KINDS.join(", ")
                    ),
                })
            }
        };
        Ok(Optimizer { params, slots, cfg })
    }

    /// The weight decay that applies to `p`.
    fn decay_of(&self, p: &Param) -> f64 {
        if p.weight_decay || self.cfg.decay_bias_and_norm {
            self.cfg.weight_decay
        } else {
            0.0
        }
    }

    /// Apply one step at learning rate `lr`. Parameters without a gradient are left unchanged.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        let decays: Vec<f64> = self.params.iter().map(|(_, p)| self.decay_of(p)).collect();
        let cfg = &self.cfg;
        for (i, ((_, p), wd)) in self.params.iter().zip(decays).enumerate() {
            let grad = p.grad();
            let Some(g) = grad.as_ref() else { continue };
            let mut value = p.value_mut();
            let backend = value.backend()?;
            match &mut self.slots {
                Slots::Sgd { momentum } => {
                    let first_step = momentum[i].is_none();
                    let m = match &mut momentum[i] {
                        Some(m) => m,
                        slot => slot.insert(g.zeros_like()?),
                    };
                    let hp = SgdParams {
                        lr,
                        momentum: cfg.momentum,
                        weight_decay: wd,
                        nesterov: cfg.nesterov,
                        first_step,
                    };
                    backend.sgd_step(&mut value, g, m, hp)?;
                }
                Slots::AdamW { exp_avg, exp_avg_sq, steps } => {
                    if exp_avg[i].is_none() {
                        exp_avg[i] = Some(g.zeros_like()?);
                        exp_avg_sq[i] = Some(g.zeros_like()?);
                    }
                    steps[i] += 1;
                    let (Some(m), Some(v)) = (&mut exp_avg[i], &mut exp_avg_sq[i]) else {
                        unreachable!("both moments were just created together")
                    };
                    let hp = AdamWParams {
                        lr,
                        beta1: cfg.betas[0],
                        beta2: cfg.betas[1],
                        eps: cfg.eps,
                        weight_decay: wd,
                        step: steps[i],
                    };
                    backend.adamw_step(&mut value, g, m, v, hp)?;
                }
            }
        }
        Ok(())
    }

    /// Forget every parameter's gradient.
    pub fn zero_grad(&self) {
        self.params.iter().for_each(|(_, p)| p.zero_grad());
    }

    /// The parameters, in the order every rank shares.
    pub fn params(&self) -> impl Iterator<Item = &Rc<Param>> {
        self.params.iter().map(|(_, p)| p)
    }

    /// The optimizer state by parameter name, for checkpoints: `<parameter>.momentum` (SGD);
    /// `<parameter>.exp_avg`, `<parameter>.exp_avg_sq` and `<parameter>.step` (AdamW; the
    /// step count as a one-element f32 tensor, as PyTorch keeps it, exact to 2^24 steps).
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            match &self.slots {
                Slots::Sgd { momentum } => {
                    if let Some(m) = &momentum[i] {
                        out.push((format!("{name}.momentum"), m.clone()));
                    }
                }
                Slots::AdamW { exp_avg, exp_avg_sq, steps } => {
                    if let (Some(m), Some(v)) = (&exp_avg[i], &exp_avg_sq[i]) {
                        out.push((format!("{name}.exp_avg"), m.clone()));
                        out.push((format!("{name}.exp_avg_sq"), v.clone()));
                        let step = Tensor::from_vec(vec![steps[i] as f32], [1])?;
                        out.push((format!("{name}.step"), step));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Restore state written by [`Optimizer::state`]; parameters absent there start afresh, as
    /// on a first step.
    ///
    /// # Errors
    /// [`TrainError::Config`] if the state holds tensors of another optimizer kind (the
    /// checkpoint was written with another `optimizer.kind`).
    pub fn load_state(&mut self, state: &HashMap<String, (Vec<usize>, Vec<f32>)>) -> Result<()> {
        let ours: &[&str] = match self.slots {
            Slots::Sgd { .. } => &[".momentum"],
            Slots::AdamW { .. } => &[".exp_avg", ".exp_avg_sq", ".step"],
        };
        if let Some(foreign) = state.keys().find(|k| !ours.iter().any(|s| k.ends_with(s))) {
            return Err(TrainError::Config {
                path: "optimizer.kind".into(),
                detail: format!(
                    "the checkpoint's optimizer state has {foreign}, which {:?} does not keep; \
                     resume with the optimizer that wrote it",
                    self.cfg.kind
                ),
            });
        }
        let tensor = |key: String| -> Result<Option<Tensor>> {
            match state.get(&key) {
                Some((dims, values)) => {
                    Ok(Some(Tensor::from_vec(values.clone(), dims.as_slice())?))
                }
                None => Ok(None),
            }
        };
        for (i, (name, _)) in self.params.iter().enumerate() {
            match &mut self.slots {
                Slots::Sgd { momentum } => momentum[i] = tensor(format!("{name}.momentum"))?,
                Slots::AdamW { exp_avg, exp_avg_sq, steps } => {
                    exp_avg[i] = tensor(format!("{name}.exp_avg"))?;
                    exp_avg_sq[i] = tensor(format!("{name}.exp_avg_sq"))?;
                    steps[i] = state.get(&format!("{name}.step")).map_or(0, |(_, v)| v[0] as u64);
                    if exp_avg[i].is_none() != exp_avg_sq[i].is_none() {
                        return Err(TrainError::Config {
                            path: "checkpoint.resume".into(),
                            detail: format!("{name} has only one of its two AdamW moments"),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// Multiply every gradient by `s` in place (as dividing the loss by `1/s` would have).
pub fn scale_gradients<'a>(params: impl Iterator<Item = &'a Rc<Param>>, s: f64) -> Result<()> {
    for p in params {
        if let Some(g) = p.grad_mut().as_mut() {
            g.backend()?.scale_assign(g, s)?;
        }
    }
    Ok(())
}

/// The global L2 norm of all gradients (sum of squares accumulated in f64). On averaged
/// gradients it is the same, bit for bit, on every rank.
pub fn grad_norm<'a>(params: impl Iterator<Item = &'a Rc<Param>>) -> Result<f64> {
    let mut sum = 0.0;
    for p in params {
        if let Some(g) = p.grad().as_ref() {
            sum += g.backend()?.sum_squares(g)?;
        }
    }
    Ok(sum.sqrt())
}

/// Clip the gradients to global norm `max_norm` given their norm `norm`, as PyTorch's
/// `clip_grad_norm_`: every gradient is scaled by `max_norm / (norm + 1e-6)` when that is below
/// 1, and left alone otherwise.
pub fn clip_gradients<'a>(
    params: impl Iterator<Item = &'a Rc<Param>>,
    norm: f64,
    max_norm: f64,
) -> Result<()> {
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        scale_gradients(params, coef)?;
    }
    Ok(())
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

    /// What the schedule is, for the checkpoint's state file: its kind and settings, the peak
    /// learning rate and the span it was laid out over. Its position is the step.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": self.cfg.kind,
            "base_lr": self.base_lr,
            "warmup_steps": self.cfg.warmup_steps,
            "milestones": self.cfg.milestones,
            "gamma": self.cfg.gamma,
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

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

    #[test]
    fn warmup_then_constant_holds_the_peak() {
        let s = sched("constant", 4);
        assert!((s.lr(1) - 0.5).abs() < 1e-12);
        assert_eq!(s.lr(4), 1.0);
        assert_eq!(s.lr(99), 1.0);
    }

    fn optimizer_cfg(sets: &[&str]) -> OptimizerConfig {
        let text = "name = \"t\"\nepochs = 1\n[model]\nkind = \"mlp\"\n[data]\n\
                    dataset = \"synthetic\"\nbatch_size = 4\n[optimizer]\nkind = \"sgd\"\n\
                    lr = 0.1\n";
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::parse(text, "test", &sets).unwrap().optimizer
    }

    /// A weight (decayed by default) and a bias (not), each with gradient zero.
    fn weight_and_bias() -> Vec<(String, Rc<Param>)> {
        let w = Rc::new(Param::new(Tensor::from_vec(vec![2.0f32], [1]).unwrap()));
        let b = Rc::new(Param::without_weight_decay(Tensor::from_vec(vec![2.0f32], [1]).unwrap()));
        for p in [&w, &b] {
            *p.grad_mut() = Some(Tensor::from_vec(vec![0.0f32], [1]).unwrap());
        }
        vec![("w".into(), w), ("b".into(), b)]
    }

    fn values(params: &[(String, Rc<Param>)]) -> Vec<f32> {
        params.iter().map(|(_, p)| p.value().to_vec::<f32>().unwrap()[0]).collect()
    }

    #[test]
    fn weight_decay_skips_biases_and_norms_unless_asked() {
        // Zero gradients, so only weight decay moves a parameter. SGD: p -= lr * wd * p =
        // 2 - 0.1 * 0.5 * 2 = 1.9. AdamW: p *= 1 - lr * wd = 0.95, then m = v = 0 gives a zero
        // Adam step: 1.9 as well.
        for kind in ["sgd", "adamw"] {
            let kind_set = format!("optimizer.kind={kind:?}");
            let params = weight_and_bias();
            let mut opt = Optimizer::new(
                params.clone(),
                optimizer_cfg(&[&kind_set, "optimizer.weight_decay=0.5"]),
            )
            .unwrap();
            opt.step(0.1).unwrap();
            assert_eq!(values(&params), [1.9, 2.0], "{kind}: the bias is not decayed");

            let params = weight_and_bias();
            let all = optimizer_cfg(&[
                &kind_set,
                "optimizer.weight_decay=0.5",
                "optimizer.decay_bias_and_norm=true",
            ]);
            Optimizer::new(params.clone(), all).unwrap().step(0.1).unwrap();
            assert_eq!(values(&params), [1.9, 1.9], "{kind}: decay_bias_and_norm decays all");
        }
    }

    #[test]
    fn adamw_state_round_trips_and_refuses_sgd_state() {
        let params = weight_and_bias();
        for (_, p) in &params {
            *p.grad_mut() = Some(Tensor::from_vec(vec![0.5f32], [1]).unwrap());
        }
        let cfg = optimizer_cfg(&["optimizer.kind=\"adamw\""]);
        let mut opt = Optimizer::new(params.clone(), cfg.clone()).unwrap();
        opt.step(0.1).unwrap();
        opt.step(0.1).unwrap();
        let saved: HashMap<_, _> = opt
            .state()
            .unwrap()
            .into_iter()
            .map(|(n, t)| (n, (t.dims().to_vec(), t.to_vec::<f32>().unwrap())))
            .collect();
        assert_eq!(saved["w.step"].1, [2.0]);
        assert_eq!(saved.len(), 6, "two moments and a step count per parameter");

        // A restored optimizer continues exactly as the original.
        let twin = weight_and_bias();
        for ((_, a), (_, b)) in twin.iter().zip(&params) {
            *a.value_mut() = b.value().clone();
            *a.grad_mut() = b.grad().clone();
        }
        let mut restored = Optimizer::new(twin.clone(), cfg).unwrap();
        restored.load_state(&saved).unwrap();
        opt.step(0.1).unwrap();
        restored.step(0.1).unwrap();
        assert_eq!(values(&twin), values(&params));

        let mut sgd = Optimizer::new(weight_and_bias(), optimizer_cfg(&[])).unwrap();
        let err = sgd.load_state(&saved).unwrap_err().to_string();
        // Any of the AdamW tensors may be the one named (the state is a hash map).
        assert!(err.contains("optimizer.kind") && err.contains("\"sgd\" does not keep"), "{err}");
    }

    #[test]
    fn clipping_scales_to_the_global_norm_and_leaves_small_gradients_alone() {
        // Gradients 3 and 4: global norm 5. Clipping to 1 scales both by 1 / (5 + 1e-6).
        let params = weight_and_bias();
        *params[0].1.grad_mut() = Some(Tensor::from_vec(vec![3.0f32], [1]).unwrap());
        *params[1].1.grad_mut() = Some(Tensor::from_vec(vec![4.0f32], [1]).unwrap());
        let ps = || params.iter().map(|(_, p)| p);
        let norm = grad_norm(ps()).unwrap();
        assert_eq!(norm, 5.0);
        clip_gradients(ps(), norm, 10.0).unwrap();
        assert_eq!(grad_norm(ps()).unwrap(), 5.0, "a norm below the limit is untouched");
        clip_gradients(ps(), norm, 1.0).unwrap();
        assert!((grad_norm(ps()).unwrap() - 1.0).abs() < 1e-6);
    }
}
