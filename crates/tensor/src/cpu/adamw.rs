//! The AdamW update on the CPU, in place, following PyTorch's `torch.optim.AdamW` (decoupled
//! weight decay, bias-corrected moments, `amsgrad = false`).

use super::CpuFloat;
use crate::backend::AdamWParams;
use crate::error::Result;
use crate::Tensor;

/// One step `t` (1-based): `p *= 1 - lr·wd`; `m = β1·m + (1-β1)·g`; `v = β2·v + (1-β2)·g²`;
/// `p -= lr / (1-β1^t) · m / (sqrt(v) / sqrt(1-β2^t) + eps)`. The bias corrections are
/// computed in f64; the element arithmetic is in the parameter's dtype, as in PyTorch.
pub(super) fn step<T: CpuFloat>(
    param: &mut Tensor,
    grad: &Tensor,
    exp_avg: &mut Tensor,
    exp_avg_sq: &mut Tensor,
    p: AdamWParams,
) -> Result<()> {
    let t = p.step.max(1) as i32;
    let bias1 = 1.0 - p.beta1.powi(t);
    let bias2_sqrt = (1.0 - p.beta2.powi(t)).sqrt();
    let decay = T::from_f64_lossy(1.0 - p.lr * p.weight_decay);
    let step_size = T::from_f64_lossy(p.lr / bias1);
    let (b1, b2) = (T::from_f64_lossy(p.beta1), T::from_f64_lossy(p.beta2));
    let (one_b1, one_b2) = (T::from_f64_lossy(1.0 - p.beta1), T::from_f64_lossy(1.0 - p.beta2));
    let bias2_sqrt = T::from_f64_lossy(bias2_sqrt);
    let eps = T::from_f64_lossy(p.eps);

    let g = grad.as_slice::<T>()?;
    let ms = exp_avg.as_mut_slice::<T>()?;
    let vs = exp_avg_sq.as_mut_slice::<T>()?;
    let ps = param.as_mut_slice::<T>()?;
    for (((w, &d), m), v) in ps.iter_mut().zip(g).zip(ms.iter_mut()).zip(vs.iter_mut()) {
        *w *= decay;
        *m = b1 * *m + one_b1 * d;
        *v = b2 * *v + one_b2 * d * d;
        let denom = v.sqrt() / bias2_sqrt + eps;
        *w = *w - step_size * *m / denom;
    }
    Ok(())
}
