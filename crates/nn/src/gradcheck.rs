//! Finite-difference gradient checks of whole modules (parameters and input), in f64.

use crate::{named_parameters, Ctx, Module, NnError, Result};
use rand::{Rng, SeedableRng};
use strata_autodiff::{ops, Tape, Var};
use strata_tensor::Tensor;

/// Check every parameter gradient and the input gradient of `module` at input `x` (f64, and
/// the module built in f64) against central differences of `L = sum(module(x) * r)` for a fixed
/// random `r`. Runs in training mode without updating running statistics, so batch norm uses
/// batch statistics and is left unchanged. Returns the worst relative error
/// `|a - n| / max(1, |a|, |n|)`.
///
/// # Errors
/// [`NnError::InvalidArgument`] naming the worst element if its error exceeds `tol`.
pub fn check_module_gradients(module: &dyn Module, x: &Tensor, h: f64, tol: f64) -> Result<f64> {
    check_module_gradients_at(module, x, h, tol, &Ctx::default())
}

/// [`check_module_gradients`] at the seed, rank, epoch and step of `at` (which key dropout
/// masks and stochastic-depth decisions), so a check sees one fixed mask or decision.
///
/// # Errors
/// As [`check_module_gradients`].
pub fn check_module_gradients_at(
    module: &dyn Module,
    x: &Tensor,
    h: f64,
    tol: f64,
    at: &Ctx,
) -> Result<f64> {
    let cx_const =
        Ctx { tape: None, train: true, update_running_stats: false, trace: None, ..at.clone() };
    let y0 = module.forward(&Var::constant(x.clone()), &cx_const)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let r: Vec<f64> = (0..y0.value().elem_count()).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let rt = Tensor::from_vec(r.clone(), y0.dims())?;
    let objective = |input: &Tensor| -> Result<f64> {
        let y = module.forward(&Var::constant(input.clone()), &cx_const)?;
        Ok(y.value().to_vec::<f64>()?.iter().zip(&r).map(|(a, b)| a * b).sum())
    };

    let params = named_parameters(module);
    params.iter().for_each(|(_, p)| p.zero_grad());
    let tape = Tape::new();
    let cx = Ctx { tape: Some(tape.clone()), ..cx_const.clone() };
    let xin = tape.leaf(x.clone());
    let y = module.forward(&xin, &cx)?;
    let weighted = ops::mul_mask(&y, &rt)?;
    let n = weighted.value().elem_count();
    let flat = ops::reshape(&weighted, &[1, n])?;
    let ones = Tensor::from_vec(vec![1.0f64; n], [1, n])?;
    let loss = ops::reshape(&ops::linear(&flat, &Var::constant(ones), None)?, &[1])?;
    let grads = tape.backward(&loss)?;

    let mut worst = (0.0f64, String::new());
    let mut consider = |what: String, a: f64, num: f64| {
        let err = (a - num).abs() / 1f64.max(a.abs()).max(num.abs());
        if err > worst.0 {
            worst = (err, format!("{what}: analytic {a:.9e}, numeric {num:.9e}"));
        }
    };
    for (name, p) in &params {
        let analytic = match p.grad().as_ref() {
            Some(g) => g.to_vec::<f64>()?,
            None => vec![0.0; p.value().elem_count()],
        };
        for (j, &a) in analytic.iter().enumerate() {
            let base = p.value().as_slice::<f64>()?[j];
            p.value_mut().as_mut_slice::<f64>()?[j] = base + h;
            let plus = objective(x)?;
            p.value_mut().as_mut_slice::<f64>()?[j] = base - h;
            let minus = objective(x)?;
            p.value_mut().as_mut_slice::<f64>()?[j] = base;
            consider(format!("{name}[{j}]"), a, (plus - minus) / (2.0 * h));
        }
    }
    let dx = match grads.get(&xin) {
        Some(g) => g.to_vec::<f64>()?,
        None => vec![0.0; x.elem_count()],
    };
    let mut xp = x.clone();
    for (j, &a) in dx.iter().enumerate() {
        let base = x.as_slice::<f64>()?[j];
        xp.as_mut_slice::<f64>()?[j] = base + h;
        let plus = objective(&xp)?;
        xp.as_mut_slice::<f64>()?[j] = base - h;
        let minus = objective(&xp)?;
        xp.as_mut_slice::<f64>()?[j] = base;
        consider(format!("input[{j}]"), a, (plus - minus) / (2.0 * h));
    }
    params.iter().for_each(|(_, p)| p.zero_grad());
    if worst.0 > tol {
        return Err(NnError::InvalidArgument {
            model: "gradient check",
            detail: format!("{} (relative error {:.3e} > {tol:.1e})", worst.1, worst.0),
        });
    }
    Ok(worst.0)
}
