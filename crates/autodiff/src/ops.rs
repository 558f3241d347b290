//! Differentiable operations on [`Var`]s: each runs the backend's forward and records the
//! matching backward rule, saving only what that rule needs.

use crate::{Result, Var};
use strata_tensor::{BatchNormOutput, Conv2dParams, Pool2dParams, Tensor};

/// 2-D convolution without bias; saves the input and the weight.
pub fn conv2d(x: &Var, w: &Var, p: Conv2dParams) -> Result<Var> {
    let (xv, wv) = (x.value().clone(), w.value().clone());
    let y = xv.backend()?.conv2d_forward(&xv, &wv, p)?;
    let (need_dx, need_dw) = (x.requires_grad(), w.requires_grad());
    let saved = [xv.clone(), wv.clone()];
    Var::record_saving("conv2d", &[x, w], y, &saved, move |dy| {
        let b = dy.backend()?;
        let dx = if need_dx {
            let x_dims = dims4(&xv)?;
            Some(b.conv2d_backward_data(dy, &wv, x_dims, p)?)
        } else {
            None
        };
        let dw =
            if need_dw { Some(b.conv2d_backward_filter(dy, &xv, dims4(&wv)?, p)?) } else { None };
        Ok(vec![dx, dw])
    })
}

fn dims4(t: &Tensor) -> Result<[usize; 4]> {
    t.shape().dims_n::<4>().ok_or_else(|| {
        strata_tensor::error::shape_err("conv2d", format!("expected 4 dims, got {:?}", t.dims()))
            .into()
    })
}

/// Batch norm with batch statistics (training mode). Returns the output and the batch mean and
/// biased variance, from which the caller updates running statistics. Saves the input.
pub fn batch_norm_train(
    x: &Var,
    gamma: &Var,
    beta: &Var,
    eps: f64,
) -> Result<(Var, Tensor, Tensor)> {
    let xv = x.value().clone();
    let gv = gamma.value().clone();
    let BatchNormOutput { y, mean, var, invstd } =
        xv.backend()?.batch_norm_forward_train(&xv, &gv, beta.value(), eps)?;
    let (m, s) = (mean.clone(), invstd);
    let saved = [xv.clone(), gv.clone(), m.clone(), s.clone()];
    let out = Var::record_saving("batch_norm", &[x, gamma, beta], y, &saved, move |dy| {
        let g = dy.backend()?.batch_norm_backward(dy, &xv, &gv, &m, &s)?;
        Ok(vec![Some(g.dx), Some(g.dgamma), Some(g.dbeta)])
    })?;
    Ok((out, mean, var))
}

/// Batch norm with fixed statistics (evaluation mode); differentiable in x only through the
/// affine map, which evaluation never needs, so nothing is recorded.
pub fn batch_norm_eval(
    x: &Var,
    gamma: &Var,
    beta: &Var,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> Result<Var> {
    let xv = x.value();
    let y =
        xv.backend()?.batch_norm_forward_eval(xv, gamma.value(), beta.value(), mean, var, eps)?;
    Ok(Var::constant(y))
}

/// `max(x, 0)`; saves the output.
pub fn relu(x: &Var) -> Result<Var> {
    let y = x.value().backend()?.relu_forward(x.value())?;
    let saved = y.clone();
    let kept = [y.clone()];
    Var::record_saving("relu", &[x], y, &kept, move |dy| {
        Ok(vec![Some(dy.backend()?.relu_backward(dy, &saved)?)])
    })
}

/// `a + b`; saves nothing.
pub fn add(a: &Var, b: &Var) -> Result<Var> {
    let y = a.value().backend()?.add(a.value(), b.value())?;
    Var::record_saving("add", &[a, b], y, &[], |dy| Ok(vec![Some(dy.clone()), Some(dy.clone())]))
}

/// `a * s` for a constant `s`.
pub fn scale(a: &Var, s: f64) -> Result<Var> {
    let y = a.value().backend()?.scale(a.value(), s)?;
    Var::record_saving("scale", &[a], y, &[], move |dy| Ok(vec![Some(dy.backend()?.scale(dy, s)?)]))
}

/// `a * mask` for a constant mask of the same shape (dropout); saves the mask.
pub fn mul_mask(a: &Var, mask: &Tensor) -> Result<Var> {
    let y = a.value().backend()?.mul(a.value(), mask)?;
    let m = mask.clone();
    Var::record_saving("mul_mask", &[a], y, std::slice::from_ref(mask), move |dy| {
        Ok(vec![Some(dy.backend()?.mul(dy, &m)?)])
    })
}

/// Mean over H and W: `[N, C, H, W]` to `[N, C]`.
pub fn global_avg_pool(x: &Var) -> Result<Var> {
    let x_dims = dims4(x.value())?;
    let y = x.value().backend()?.global_avg_pool_forward(x.value())?;
    Var::record_saving("global_avg_pool", &[x], y, &[], move |dy| {
        Ok(vec![Some(dy.backend()?.global_avg_pool_backward(dy, x_dims)?)])
    })
}

/// Max pooling; saves the argmax positions (a plain vector, not a tensor).
pub fn max_pool2d(x: &Var, p: Pool2dParams) -> Result<Var> {
    let x_dims = dims4(x.value())?;
    let (y, argmax) = x.value().backend()?.max_pool2d_forward(x.value(), p)?;
    Var::record_saving("max_pool2d", &[x], y, &[], move |dy| {
        Ok(vec![Some(dy.backend()?.max_pool2d_backward(dy, &argmax, x_dims)?)])
    })
}

/// `y = x wᵀ + b`; saves the input and the weight.
pub fn linear(x: &Var, w: &Var, b: Option<&Var>) -> Result<Var> {
    let (xv, wv) = (x.value().clone(), w.value().clone());
    let y = xv.backend()?.linear_forward(&xv, &wv, b.map(|b| b.value()))?;
    let has_bias = b.is_some();
    let mut inputs = vec![x, w];
    inputs.extend(b);
    let saved = [xv.clone(), wv.clone()];
    Var::record_saving("linear", &inputs, y, &saved, move |dy| {
        let g = dy.backend()?.linear_backward(dy, &xv, &wv, has_bias)?;
        let mut out = vec![Some(g.dx), Some(g.dw)];
        if has_bias {
            out.push(g.db);
        }
        Ok(out)
    })
}

/// The same values with another shape (flatten, unflatten).
pub fn reshape(x: &Var, dims: &[usize]) -> Result<Var> {
    let old = x.dims().to_vec();
    let y = x.value().reshape(dims)?;
    Var::record_saving("reshape", &[x], y, &[], move |dy| {
        Ok(vec![Some(dy.reshape(old.as_slice())?)])
    })
}

/// Mean softmax cross-entropy of `logits: [N, K]` against `labels`; a `[1]` loss. Saves the
/// probabilities.
pub fn softmax_cross_entropy(logits: &Var, labels: &[u32]) -> Result<Var> {
    let (loss, probs) =
        logits.value().backend()?.softmax_cross_entropy_forward(logits.value(), labels)?;
    let labels = labels.to_vec();
    let saved = probs.clone();
    Var::record_saving("softmax_cross_entropy", &[logits], loss, &[saved], move |dloss| {
        let d = dloss.to_scalar()?;
        Ok(vec![Some(probs.backend()?.softmax_cross_entropy_backward(&probs, &labels, d)?)])
    })
}
