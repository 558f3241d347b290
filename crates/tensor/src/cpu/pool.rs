//! Pooling on the CPU: global average pooling (`[N, C, H, W]` to `[N, C]`) and max pooling,
//! whose forward records the flat index into `x` of each window's maximum for backward.

use super::elementwise::sum_f64;
use super::CpuFloat;
use crate::backend::Pool2dParams;
use crate::error::{shape_err, Result};
use crate::Tensor;

/// Validated geometry of a max pooling: input `[n, c, h, w]`, output `[n, c, p, q]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolGeom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    p: usize,
    q: usize,
}

impl PoolGeom {
    /// The geometry of pooling `x_dims` with `prm`, or a shape error for `op`. As in PyTorch,
    /// padding may be at most half the window, so every window sees at least one input.
    pub(crate) fn new(op: &'static str, x_dims: [usize; 4], prm: Pool2dParams) -> Result<Self> {
        let [n, c, h, w] = x_dims;
        let Pool2dParams { kernel, stride, padding: pad } = prm;
        let detail = |why: &str| shape_err(op, format!("x {x_dims:?}, {prm:?}: {why}"));
        if kernel == 0 || stride == 0 {
            return Err(detail("kernel and stride must be at least 1"));
        }
        if 2 * pad > kernel {
            return Err(detail("padding must be at most half the kernel"));
        }
        if h + 2 * pad < kernel || w + 2 * pad < kernel {
            return Err(detail("the window is larger than the padded input"));
        }
        if n * c * h * w > u32::MAX as usize + 1 {
            return Err(detail("argmax indices must fit in u32"));
        }
        let (p, q) = ((h + 2 * pad - kernel) / stride + 1, (w + 2 * pad - kernel) / stride + 1);
        Ok(PoolGeom { n, c, h, w, kernel, stride, pad, p, q })
    }

    /// Input rows (or columns) `lo..hi` covered by output row (column) `o` along an axis of
    /// length `len`, clipped to the input.
    fn window(&self, o: usize, len: usize) -> (usize, usize) {
        let start = o * self.stride;
        let lo = start.saturating_sub(self.pad);
        let hi = (start + self.kernel).saturating_sub(self.pad).min(len);
        (lo, hi)
    }
}

/// Mean over H and W: `[N, C, H, W]` to `[N, C]`.
pub(super) fn global_avg_forward<T: CpuFloat>(x: &Tensor, dims: [usize; 4]) -> Result<Tensor> {
    let [n, c, h, w] = dims;
    let hw = h * w;
    let xs = x.as_slice::<T>()?;
    let y = xs.chunks_exact(hw).map(|p| T::from_f64_lossy(sum_f64(p) / hw as f64)).collect();
    Tensor::from_vec(y, [n, c])
}

/// `dx[n, c, :, :] = dy[n, c] / (H·W)`.
pub(super) fn global_avg_backward<T: CpuFloat>(dy: &Tensor, x_dims: [usize; 4]) -> Result<Tensor> {
    let hw = x_dims[2] * x_dims[3];
    let inv = T::from_f64_lossy(1.0 / hw as f64);
    let dys = dy.as_slice::<T>()?;
    let mut dx = Vec::with_capacity(dys.len() * hw);
    for &d in dys {
        dx.extend(std::iter::repeat_n(d * inv, hw));
    }
    Tensor::from_vec(dx, x_dims)
}

/// Max pooling; returns the output and, per output element, the flat index into `x` of the
/// maximum (the last NaN, if the window holds one, as in PyTorch).
pub(super) fn max_forward<T: CpuFloat>(x: &Tensor, g: &PoolGeom) -> Result<(Tensor, Vec<u32>)> {
    let xs = x.as_slice::<T>()?;
    let (hw, pq) = (g.h * g.w, g.p * g.q);
    let planes = g.n * g.c;
    let mut y = Vec::with_capacity(planes * pq);
    let mut argmax = Vec::with_capacity(planes * pq);
    for pl in 0..planes {
        let plane = &xs[pl * hw..][..hw];
        for oh in 0..g.p {
            let (h0, h1) = g.window(oh, g.h);
            for ow in 0..g.q {
                let (w0, w1) = g.window(ow, g.w);
                let mut best = (T::neg_infinity(), h0 * g.w + w0);
                for ih in h0..h1 {
                    for iw in w0..w1 {
                        let v = plane[ih * g.w + iw];
                        if v > best.0 || v.is_nan() {
                            best = (v, ih * g.w + iw);
                        }
                    }
                }
                y.push(best.0);
                argmax.push((pl * hw + best.1) as u32);
            }
        }
    }
    Ok((Tensor::from_vec(y, [g.n, g.c, g.p, g.q])?, argmax))
}

/// Route `dy` to the recorded maxima: `dx[argmax[i]] += dy[i]`, zero elsewhere.
pub(super) fn max_backward<T: CpuFloat>(
    dy: &Tensor,
    argmax: &[u32],
    x_dims: [usize; 4],
) -> Result<Tensor> {
    let dys = dy.as_slice::<T>()?;
    let len = x_dims.iter().product();
    let mut dx = vec![T::zero(); len];
    for (&d, &i) in dys.iter().zip(argmax) {
        dx[i as usize] += d;
    }
    Tensor::from_vec(dx, x_dims)
}
