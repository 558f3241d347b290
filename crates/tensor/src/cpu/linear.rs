//! Fully connected layer on the CPU: `y = x wᵀ + b` and its gradients, as `gemm` products.

use super::matmul::{matmul, MatMut, MatRef};
use super::{new_vec_with, threads, CpuFloat};
use crate::backend::LinearGrads;
use crate::error::Result;
use crate::Tensor;

/// `(n, i, o)`: batch, input features, output features.
type Dims = (usize, usize, usize);

/// `y[n, o] = Σ_i x[n, i] · w[o, i] + b[o]`.
pub(super) fn forward<T: CpuFloat>(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    dims: Dims,
) -> Result<Tensor> {
    let (n, i, o) = dims;
    let (xs, ws) = (x.as_slice::<T>()?, w.as_slice::<T>()?);
    let (lhs, rhs) = (MatRef::row_major(xs, n, i), MatRef::transposed(ws, i, o));
    let y = match b {
        Some(b) => {
            let mut y = b.as_slice::<T>()?.repeat(n);
            matmul(MatMut::row_major(&mut y, n, o), lhs, rhs, true, threads());
            y
        }
        // SAFETY: the product with `accumulate = false` writes all n·o elements.
        None => unsafe {
            new_vec_with(n * o, |y| {
                matmul(MatMut::row_major_uninit(y, n, o), lhs, rhs, false, threads())
            })
        },
    };
    Tensor::from_vec(y, [n, o])
}

/// `dx = dy · w`, `dw = dyᵀ · x`, `db = Σ_n dy` (overwritten, not accumulated).
pub(super) fn backward<T: CpuFloat>(
    dy: &Tensor,
    x: &Tensor,
    w: &Tensor,
    has_bias: bool,
    dims: Dims,
) -> Result<LinearGrads> {
    let (n, i, o) = dims;
    let (dys, xs, ws) = (dy.as_slice::<T>()?, x.as_slice::<T>()?, w.as_slice::<T>()?);
    // SAFETY: each product with `accumulate = false` writes every element of its destination.
    let (dx, dw) = unsafe {
        let dx = new_vec_with(n * i, |dx| {
            let (lhs, rhs) = (MatRef::row_major(dys, n, o), MatRef::row_major(ws, o, i));
            matmul(MatMut::row_major_uninit(dx, n, i), lhs, rhs, false, threads())
        });
        let dw = new_vec_with(o * i, |dw| {
            let (lhs, rhs) = (MatRef::transposed(dys, o, n), MatRef::row_major(xs, n, i));
            matmul(MatMut::row_major_uninit(dw, o, i), lhs, rhs, false, threads())
        });
        (dx, dw)
    };
    let db = if has_bias {
        let mut acc = vec![0.0f64; o];
        for row in dys.chunks_exact(o.max(1)) {
            acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v.as_f64());
        }
        Some(Tensor::from_vec(acc.into_iter().map(T::from_f64_lossy).collect::<Vec<T>>(), [o])?)
    } else {
        None
    };
    Ok(LinearGrads { dx: Tensor::from_vec(dx, [n, i])?, dw: Tensor::from_vec(dw, [o, i])?, db })
}
