//! The SGD update on the CPU, in place, following PyTorch's `torch.optim.SGD` (no dampening).

use super::CpuFloat;
use crate::backend::SgdParams;
use crate::error::Result;
use crate::Tensor;

/// One step: `g = grad + wd·p`; with momentum, `buf = g` on the first step, else
/// `buf = momentum·buf + g`, and `g = nesterov ? g + momentum·buf : buf`; then `p -= lr·g`.
/// Without momentum (`momentum == 0`) the buffer is left untouched, as PyTorch keeps none.
/// Arithmetic is in the parameter's dtype, as in PyTorch.
pub(super) fn step<T: CpuFloat>(
    param: &mut Tensor,
    grad: &Tensor,
    momentum_buf: &mut Tensor,
    p: SgdParams,
) -> Result<()> {
    let g = grad.as_slice::<T>()?;
    let ps = param.as_mut_slice::<T>()?;
    let lr = T::from_f64_lossy(p.lr);
    let wd = T::from_f64_lossy(p.weight_decay);
    let mom = T::from_f64_lossy(p.momentum);
    if p.momentum == 0.0 {
        for (w, &d) in ps.iter_mut().zip(g) {
            *w = *w - lr * (d + wd * *w);
        }
        return Ok(());
    }
    let bufs = momentum_buf.as_mut_slice::<T>()?;
    for ((w, &d), b) in ps.iter_mut().zip(g).zip(bufs.iter_mut()) {
        let d = d + wd * *w;
        *b = if p.first_step { d } else { mom * *b + d };
        let step = if p.nesterov { d + mom * *b } else { *b };
        *w = *w - lr * step;
    }
    Ok(())
}
