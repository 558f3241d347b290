//! Finite-difference gradient checks in f64, public so that custom operations and layers can be
//! checked the same way Strata checks its own.

use crate::{AutodiffError, Result, Tape, Var};
use rand::{Rng, SeedableRng};
use strata_tensor::Tensor;

/// Outcome of a gradient check: the worst relative error and where it was.
#[derive(Debug, Clone)]
pub struct GradCheckReport {
    /// Largest `|analytic - numeric| / max(1, |analytic|, |numeric|)` over all checked elements.
    pub max_rel_error: f64,
    /// (input index, element index, analytic, numeric) of the worst element.
    pub worst: (usize, usize, f64, f64),
}

/// Check the gradients of `f` at `inputs` (f64 tensors) against central differences.
///
/// The scalar checked is `L = sum(f(inputs) * r)` for a fixed random `r`, so every output
/// element contributes. Each input element is perturbed by `±h`.
///
/// # Errors
/// [`AutodiffError::GradCheck`] naming the worst element if its relative error exceeds `tol`;
/// any error `f` returns.
pub fn check_gradients(
    f: impl Fn(&[Var]) -> Result<Var>,
    inputs: &[Tensor],
    h: f64,
    tol: f64,
) -> Result<GradCheckReport> {
    let weights = {
        let y = f(&inputs.iter().cloned().map(Var::constant).collect::<Vec<_>>())?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let r: Vec<f64> = (0..y.value().elem_count()).map(|_| rng.gen_range(-1.0..1.0)).collect();
        Tensor::from_vec(r, y.dims())?
    };
    let objective = |xs: &[Tensor]| -> Result<f64> {
        let y = f(&xs.iter().cloned().map(Var::constant).collect::<Vec<_>>())?;
        let (yv, rv) = (y.value().to_vec::<f64>()?, weights.as_slice::<f64>()?);
        Ok(yv.iter().zip(rv).map(|(a, b)| a * b).sum())
    };

    let tape = Tape::new();
    let leaves: Vec<Var> = inputs.iter().map(|t| tape.leaf(t.clone())).collect();
    let y = f(&leaves)?;
    let wvar = Var::constant(weights.clone());
    let weighted = crate::ops::mul_mask(&y, wvar.value())?;
    let n = weighted.value().elem_count();
    let flat = crate::ops::reshape(&weighted, &[1, n])?;
    let ones = Tensor::from_vec(vec![1.0f64; n], [1, n])?;
    let loss = crate::ops::linear(&flat, &Var::constant(ones), None)?;
    let loss = crate::ops::reshape(&loss, &[1])?;
    let grads = tape.backward(&loss)?;

    let mut report = GradCheckReport { max_rel_error: 0.0, worst: (0, 0, 0.0, 0.0) };
    for (i, leaf) in leaves.iter().enumerate() {
        let analytic = match grads.get(leaf) {
            Some(g) => g.to_vec::<f64>()?,
            None => vec![0.0; inputs[i].elem_count()],
        };
        for j in 0..inputs[i].elem_count() {
            let mut xs = inputs.to_vec();
            let base = xs[i].as_slice::<f64>()?[j];
            xs[i].as_mut_slice::<f64>()?[j] = base + h;
            let plus = objective(&xs)?;
            xs[i].as_mut_slice::<f64>()?[j] = base - h;
            let minus = objective(&xs)?;
            let numeric = (plus - minus) / (2.0 * h);
            let err =
                (analytic[j] - numeric).abs() / 1f64.max(analytic[j].abs()).max(numeric.abs());
            if err > report.max_rel_error {
                report =
                    GradCheckReport { max_rel_error: err, worst: (i, j, analytic[j], numeric) };
            }
        }
    }
    if report.max_rel_error > tol {
        let (i, j, a, n) = report.worst;
        return Err(AutodiffError::GradCheck(format!(
            "input {i} element {j}: analytic {a:.9e}, numeric {n:.9e}, relative error {:.3e} > {tol:.1e}",
            report.max_rel_error
        )));
    }
    Ok(report)
}
