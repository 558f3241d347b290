//! The CPU backend: validation of every operation's operands, dispatch on dtype to the generic
//! kernels of the sibling modules (one per op family), and what those kernels share: the sealed
//! element trait, per-thread scratch buffers and the helpers that split work over rayon threads.
//!
//! Threads: kernels use the current rayon pool, which the caller sizes to the worker's thread
//! count. With one thread no kernel touches rayon. Work is split into fixed, contiguous ranges
//! and partial results are combined in range order, so results depend on the thread count but
//! never on scheduling: a run is bit-for-bit repeatable.

mod adamw;
mod batch_norm;
mod conv;
mod elementwise;
mod linear;
mod loss;
mod matmul;
mod pool;
mod sgd;
mod simd;

use crate::backend::{
    AdamWParams, Backend, BatchNormGrads, BatchNormOutput, Conv2dParams, LinearGrads, Pool2dParams,
    SgdParams,
};
use crate::error::{shape_err, Result, TensorError};
use crate::{DType, Device, StorageElement, Tensor};
use rayon::prelude::*;
use std::cell::Cell;
use std::mem::MaybeUninit;
use std::ops::Range;

use conv::ConvGeom;
pub(crate) use simd::{vectorized, TILE};

/// The CPU backend: f32 and f64 kernels, matrix products by the `gemm` crate, threads by rayon.
pub struct CpuBackend;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

thread_local! {
    static SCRATCH_F32: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    static SCRATCH_F64: Cell<Vec<f64>> = const { Cell::new(Vec::new()) };
}

/// The element types the CPU kernels compute in: f32 and f64 (sealed, so `gemm` always
/// supports `Self`).
pub(crate) trait CpuFloat: StorageElement + sealed::Sealed + Copy {
    /// Widen (or keep) to f64.
    fn as_f64(self) -> f64;

    /// Run `f` on this thread's scratch buffer of `len` elements (contents unspecified). The
    /// buffer is kept between calls (up to [`SCRATCH_KEEP_MAX`] elements), so hot loops
    /// allocate nothing; a nested call on the same thread (rayon work stealing) gets a fresh
    /// buffer instead of a conflict. Scratch is not counted by [`crate::memory`]: it is
    /// bounded per thread by the kernels' group budgets (a few MiB for the ResNet layers).
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;

    /// Transpose the tile `src[i · stride + j]` (`i`, `j` < [`TILE`]) into
    /// `dst[offsets[j] + i]`.
    ///
    /// # Panics
    ///
    /// If the tile or a destination row lies outside its slice.
    #[inline(always)]
    fn transpose_tile(src: &[Self], stride: usize, dst: &mut [Self], offsets: &[usize; TILE]) {
        simd::transpose_tile_scalar(src, stride, dst, offsets)
    }
}

fn with_scratch_in<T: Copy + Default, R>(
    key: &'static std::thread::LocalKey<Cell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    let mut buf = key.with(Cell::take);
    if buf.len() < len {
        buf.clear();
        buf.resize(len, T::default());
    }
    let out = f(&mut buf[..len]);
    if buf.len() <= SCRATCH_KEEP_MAX {
        key.with(|slot| slot.set(buf));
    }
    out
}

/// Largest scratch buffer (in elements) a thread keeps between calls; larger ones, needed only
/// for single images far bigger than the ResNet inputs, are freed after use.
const SCRATCH_KEEP_MAX: usize = 16 << 20;

impl CpuFloat for f32 {
    fn as_f64(self) -> f64 {
        self as f64
    }
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
        with_scratch_in(&SCRATCH_F32, len, f)
    }
    #[inline(always)]
    fn transpose_tile(src: &[Self], stride: usize, dst: &mut [Self], offsets: &[usize; TILE]) {
        simd::transpose_tile_f32(src, stride, dst, offsets)
    }
}

impl CpuFloat for f64 {
    fn as_f64(self) -> f64 {
        self
    }
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
        with_scratch_in(&SCRATCH_F64, len, f)
    }
}

/// Threads available to the kernels: the size of the current rayon pool.
pub(crate) fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// Element-wise kernels go parallel only above this many elements per task.
pub(crate) const PAR_GRAIN: usize = 1 << 15;

/// Split `0..n` into at most `parts` contiguous, non-empty ranges of balanced length.
pub(crate) fn split_even(n: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, n.max(1));
    let (base, extra) = (n / parts, n % parts);
    let mut start = 0;
    (0..parts)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .filter(|r| !r.is_empty())
        .collect()
}

/// Run `f(range, part)` for each of `ranges` (contiguous, in order, starting at 0), where `part`
/// is the slice of `out` that holds the range's items at `per_item` elements each. In parallel
/// when there is more than one range; results come back in range order.
pub(crate) fn for_each_range<U: Send, R: Send>(
    out: &mut [U],
    per_item: usize,
    ranges: &[Range<usize>],
    f: impl Fn(Range<usize>, &mut [U]) -> R + Sync,
) -> Vec<R> {
    let mut parts = Vec::with_capacity(ranges.len());
    let mut rest = out;
    for r in ranges {
        let (head, tail) = rest.split_at_mut(r.len() * per_item);
        parts.push((r.clone(), head));
        rest = tail;
    }
    if parts.len() <= 1 {
        parts.into_iter().map(|(r, o)| f(r, o)).collect()
    } else {
        parts.into_par_iter().map(|(r, o)| f(r, o)).collect()
    }
}

/// A vector of `len` elements, each written by `fill`, without zero-filling it first.
///
/// # Safety
///
/// `fill` must initialise every element of the slice it is given.
pub(crate) unsafe fn new_vec_with<T>(
    len: usize,
    fill: impl FnOnce(&mut [MaybeUninit<T>]),
) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: the caller guarantees that `fill` initialised all `len` elements.
    unsafe { v.set_len(len) };
    v
}

/// Initialise `s` with zeros and view it as initialised.
pub(crate) fn zero_init<T: CpuFloat>(s: &mut [MaybeUninit<T>]) -> &mut [T] {
    s.fill(MaybeUninit::new(T::zero()));
    // SAFETY: every element was written just above; MaybeUninit<T> has T's layout.
    unsafe { &mut *(s as *mut [MaybeUninit<T>] as *mut [T]) }
}

fn not_supported(op: &'static str, dtype: DType) -> TensorError {
    TensorError::NotSupported {
        op,
        device: Device::Cpu,
        dtype,
        reason: "the CPU backend computes in f32 and f64",
    }
}

/// Call the generic kernel `$kernel::<T>` for the dtype `$dtype`, or fail for other dtypes.
macro_rules! dispatch {
    ($op:expr, $dtype:expr, $($kernel:ident)::+ ($($arg:expr),* $(,)?)) => {
        match $dtype {
            DType::F32 => $($kernel)::+::<f32>($($arg),*),
            DType::F64 => $($kernel)::+::<f64>($($arg),*),
            other => Err(not_supported($op, other)),
        }
    };
}

/// The common dtype of `ts`, after checking that all live on the CPU.
fn common_dtype(op: &'static str, ts: &[&Tensor]) -> Result<DType> {
    let first = ts[0];
    for t in ts {
        if t.device() != Device::Cpu {
            return Err(TensorError::DeviceMismatch { op, a: Device::Cpu, b: t.device() });
        }
        if t.dtype() != first.dtype() {
            return Err(TensorError::DType { op, expected: first.dtype(), got: t.dtype() });
        }
    }
    Ok(first.dtype())
}

/// The dims of `t` as `[usize; N]`, or a shape error naming the operand.
fn dims_n<const N: usize>(op: &'static str, name: &str, t: &Tensor) -> Result<[usize; N]> {
    t.shape()
        .dims_n::<N>()
        .ok_or_else(|| shape_err(op, format!("{name} must have {N} dims, got {:?}", t.dims())))
}

/// Fail unless `t` has exactly the dims `want`.
fn expect_dims(op: &'static str, name: &str, t: &Tensor, want: &[usize]) -> Result<()> {
    if t.dims() == want {
        Ok(())
    } else {
        Err(shape_err(op, format!("{name} has shape {:?}, expected {want:?}", t.dims())))
    }
}

/// Fail unless `a` and `b` have the same shape.
fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dims() == b.dims() {
        Ok(())
    } else {
        Err(shape_err(op, format!("{:?} and {:?} differ", a.dims(), b.dims())))
    }
}

/// `(n, c, l)` of a batch-norm input: `[N, C, H, W]` gives `l = H * W`, `[N, C]` gives 1.
fn batch_norm_layout(op: &'static str, x: &Tensor) -> Result<(usize, usize, usize)> {
    match *x.dims() {
        [n, c, h, w] => Ok((n, c, h * w)),
        [n, c] => Ok((n, c, 1)),
        _ => Err(shape_err(op, format!("x must be [N, C, H, W] or [N, C], got {:?}", x.dims()))),
    }
}

/// The batch-norm layout `(n, c, l)` of `x` after checking its arguments: `dy` shaped as `x`,
/// each per-channel tensor of length `c`, and (with `need_elements`) at least one element per
/// channel.
fn batch_norm_args(
    op: &'static str,
    x: &Tensor,
    dy: Option<&Tensor>,
    per_channel: &[(&str, &Tensor)],
    need_elements: bool,
) -> Result<(usize, usize, usize)> {
    let (n, c, l) = batch_norm_layout(op, x)?;
    if let Some(dy) = dy {
        same_shape(op, dy, x)?;
    }
    for (name, t) in per_channel {
        expect_dims(op, name, t, &[c])?;
    }
    if need_elements && n * l == 0 {
        return Err(shape_err(op, format!("no elements per channel in {:?}", x.dims())));
    }
    Ok((n, c, l))
}

/// Fail unless every label is a class index below `k` and there is one per row.
fn check_labels(op: &'static str, labels: &[u32], n: usize, k: usize) -> Result<()> {
    if labels.len() != n {
        return Err(shape_err(op, format!("{} labels for {n} rows", labels.len())));
    }
    match labels.iter().position(|&l| l as usize >= k) {
        Some(i) => Err(shape_err(op, format!("label {} at row {i} is not below {k}", labels[i]))),
        None => Ok(()),
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn conv2d_forward(&self, x: &Tensor, w: &Tensor, p: Conv2dParams) -> Result<Tensor> {
        const OP: &str = "conv2d_forward";
        let dt = common_dtype(OP, &[x, w])?;
        let g = ConvGeom::new(OP, dims_n(OP, "x", x)?, dims_n(OP, "w", w)?, p)?;
        dispatch!(OP, dt, conv::forward(x, w, &g))
    }

    fn conv2d_backward_data(
        &self,
        dy: &Tensor,
        w: &Tensor,
        x_dims: [usize; 4],
        p: Conv2dParams,
    ) -> Result<Tensor> {
        const OP: &str = "conv2d_backward_data";
        let dt = common_dtype(OP, &[dy, w])?;
        let g = ConvGeom::new(OP, x_dims, dims_n(OP, "w", w)?, p)?;
        expect_dims(OP, "dy", dy, &g.y_dims())?;
        dispatch!(OP, dt, conv::backward_data(dy, w, &g))
    }

    fn conv2d_backward_filter(
        &self,
        dy: &Tensor,
        x: &Tensor,
        w_dims: [usize; 4],
        p: Conv2dParams,
    ) -> Result<Tensor> {
        const OP: &str = "conv2d_backward_filter";
        let dt = common_dtype(OP, &[dy, x])?;
        let g = ConvGeom::new(OP, dims_n(OP, "x", x)?, w_dims, p)?;
        expect_dims(OP, "dy", dy, &g.y_dims())?;
        dispatch!(OP, dt, conv::backward_filter(dy, x, &g))
    }

    fn batch_norm_forward_train(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f64,
    ) -> Result<BatchNormOutput> {
        const OP: &str = "batch_norm_forward_train";
        let dt = common_dtype(OP, &[x, gamma, beta])?;
        let (n, c, l) = batch_norm_args(OP, x, None, &[("gamma", gamma), ("beta", beta)], true)?;
        dispatch!(OP, dt, batch_norm::forward_train(x, gamma, beta, (n, c, l), eps))
    }

    fn batch_norm_forward_eval(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        mean: &Tensor,
        var: &Tensor,
        eps: f64,
    ) -> Result<Tensor> {
        const OP: &str = "batch_norm_forward_eval";
        let dt = common_dtype(OP, &[x, gamma, beta, mean, var])?;
        let (n, c, l) = batch_norm_layout(OP, x)?;
        for (name, t) in [("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var)] {
            expect_dims(OP, name, t, &[c])?;
        }
        dispatch!(OP, dt, batch_norm::forward_eval(x, gamma, beta, mean, var, (n, c, l), eps))
    }

    fn batch_norm_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        gamma: &Tensor,
        mean: &Tensor,
        invstd: &Tensor,
    ) -> Result<BatchNormGrads> {
        const OP: &str = "batch_norm_backward";
        let dt = common_dtype(OP, &[dy, x, gamma, mean, invstd])?;
        let (n, c, l) = batch_norm_args(
            OP,
            x,
            Some(dy),
            &[("gamma", gamma), ("mean", mean), ("invstd", invstd)],
            true,
        )?;
        dispatch!(OP, dt, batch_norm::backward(dy, x, gamma, mean, invstd, (n, c, l)))
    }

    fn batch_norm_stats(&self, x: &Tensor) -> Result<Vec<(f64, f64)>> {
        const OP: &str = "batch_norm_stats";
        let dt = common_dtype(OP, &[x])?;
        let (n, c, l) = batch_norm_args(OP, x, None, &[], true)?;
        dispatch!(OP, dt, batch_norm::stats(x, (n, c, l)))
    }

    fn batch_norm_backward_reduce(
        &self,
        dy: &Tensor,
        x: &Tensor,
        mean: &Tensor,
        invstd: &Tensor,
    ) -> Result<Vec<(f64, f64)>> {
        const OP: &str = "batch_norm_backward_reduce";
        let dt = common_dtype(OP, &[dy, x, mean, invstd])?;
        let (n, c, l) =
            batch_norm_args(OP, x, Some(dy), &[("mean", mean), ("invstd", invstd)], false)?;
        dispatch!(OP, dt, batch_norm::backward_reduce(dy, x, mean, invstd, (n, c, l)))
    }

    fn batch_norm_backward_elemt(
        &self,
        dy: &Tensor,
        x: &Tensor,
        gamma: &Tensor,
        mean: &Tensor,
        invstd: &Tensor,
        sums: &[(f64, f64)],
        count: f64,
    ) -> Result<Tensor> {
        const OP: &str = "batch_norm_backward_elemt";
        let dt = common_dtype(OP, &[dy, x, gamma, mean, invstd])?;
        let (n, c, l) = batch_norm_args(
            OP,
            x,
            Some(dy),
            &[("gamma", gamma), ("mean", mean), ("invstd", invstd)],
            false,
        )?;
        if sums.len() != c || count.is_nan() || count <= 0.0 {
            return Err(shape_err(
                OP,
                format!("{} channel sums over {count} elements for {c} channels", sums.len()),
            ));
        }
        let lay = (n, c, l);
        dispatch!(OP, dt, batch_norm::backward_elemt(dy, x, gamma, mean, invstd, sums, count, lay))
    }

    fn relu_forward(&self, x: &Tensor) -> Result<Tensor> {
        const OP: &str = "relu_forward";
        let dt = common_dtype(OP, &[x])?;
        dispatch!(OP, dt, elementwise::relu_forward(x))
    }

    fn relu_backward(&self, dy: &Tensor, y: &Tensor) -> Result<Tensor> {
        const OP: &str = "relu_backward";
        let dt = common_dtype(OP, &[dy, y])?;
        same_shape(OP, dy, y)?;
        dispatch!(OP, dt, elementwise::relu_backward(dy, y))
    }

    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        const OP: &str = "add";
        let dt = common_dtype(OP, &[a, b])?;
        same_shape(OP, a, b)?;
        dispatch!(OP, dt, elementwise::add(a, b))
    }

    fn scale(&self, a: &Tensor, s: f64) -> Result<Tensor> {
        const OP: &str = "scale";
        let dt = common_dtype(OP, &[a])?;
        dispatch!(OP, dt, elementwise::scale(a, s))
    }

    fn mul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        const OP: &str = "mul";
        let dt = common_dtype(OP, &[a, b])?;
        same_shape(OP, a, b)?;
        dispatch!(OP, dt, elementwise::mul(a, b))
    }

    fn global_avg_pool_forward(&self, x: &Tensor) -> Result<Tensor> {
        const OP: &str = "global_avg_pool_forward";
        let dt = common_dtype(OP, &[x])?;
        let dims = dims_n::<4>(OP, "x", x)?;
        if dims[2] * dims[3] == 0 {
            return Err(shape_err(OP, format!("empty spatial extent in {dims:?}")));
        }
        dispatch!(OP, dt, pool::global_avg_forward(x, dims))
    }

    fn global_avg_pool_backward(&self, dy: &Tensor, x_dims: [usize; 4]) -> Result<Tensor> {
        const OP: &str = "global_avg_pool_backward";
        let dt = common_dtype(OP, &[dy])?;
        expect_dims(OP, "dy", dy, &x_dims[..2])?;
        if x_dims[2] * x_dims[3] == 0 {
            return Err(shape_err(OP, format!("empty spatial extent in {x_dims:?}")));
        }
        dispatch!(OP, dt, pool::global_avg_backward(dy, x_dims))
    }

    fn max_pool2d_forward(&self, x: &Tensor, p: Pool2dParams) -> Result<(Tensor, Vec<u32>)> {
        const OP: &str = "max_pool2d_forward";
        let dt = common_dtype(OP, &[x])?;
        let g = pool::PoolGeom::new(OP, dims_n(OP, "x", x)?, p)?;
        dispatch!(OP, dt, pool::max_forward(x, &g))
    }

    fn max_pool2d_backward(
        &self,
        dy: &Tensor,
        argmax: &[u32],
        x_dims: [usize; 4],
    ) -> Result<Tensor> {
        const OP: &str = "max_pool2d_backward";
        let dt = common_dtype(OP, &[dy])?;
        let x_len: usize = x_dims.iter().product();
        if argmax.len() != dy.elem_count() {
            let detail = format!("{} argmax entries for dy {:?}", argmax.len(), dy.dims());
            return Err(shape_err(OP, detail));
        }
        if let Some(i) = argmax.iter().position(|&a| a as usize >= x_len) {
            let detail = format!("argmax {} at {i} is outside x {x_dims:?}", argmax[i]);
            return Err(shape_err(OP, detail));
        }
        if dy.dims().len() != 4 || dy.dims()[..2] != x_dims[..2] {
            let detail = format!("dy {:?} does not match x {x_dims:?} in N and C", dy.dims());
            return Err(shape_err(OP, detail));
        }
        dispatch!(OP, dt, pool::max_backward(dy, argmax, x_dims))
    }

    fn linear_forward(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        const OP: &str = "linear_forward";
        let dt = match b {
            Some(b) => common_dtype(OP, &[x, w, b])?,
            None => common_dtype(OP, &[x, w])?,
        };
        let [n, i] = dims_n(OP, "x", x)?;
        let [o, wi] = dims_n(OP, "w", w)?;
        if wi != i {
            return Err(shape_err(OP, format!("x {:?} and w {:?}", x.dims(), w.dims())));
        }
        if let Some(b) = b {
            expect_dims(OP, "b", b, &[o])?;
        }
        dispatch!(OP, dt, linear::forward(x, w, b, (n, i, o)))
    }

    fn linear_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        w: &Tensor,
        has_bias: bool,
    ) -> Result<LinearGrads> {
        const OP: &str = "linear_backward";
        let dt = common_dtype(OP, &[dy, x, w])?;
        let [n, i] = dims_n(OP, "x", x)?;
        let [o, wi] = dims_n(OP, "w", w)?;
        if wi != i {
            return Err(shape_err(OP, format!("x {:?} and w {:?}", x.dims(), w.dims())));
        }
        expect_dims(OP, "dy", dy, &[n, o])?;
        dispatch!(OP, dt, linear::backward(dy, x, w, has_bias, (n, i, o)))
    }

    fn softmax_cross_entropy_forward(
        &self,
        logits: &Tensor,
        labels: &[u32],
    ) -> Result<(Tensor, Tensor)> {
        const OP: &str = "softmax_cross_entropy_forward";
        let dt = common_dtype(OP, &[logits])?;
        let [n, k] = dims_n(OP, "logits", logits)?;
        if n == 0 || k == 0 {
            return Err(shape_err(OP, format!("empty logits {:?}", logits.dims())));
        }
        check_labels(OP, labels, n, k)?;
        dispatch!(OP, dt, loss::softmax_cross_entropy_forward(logits, labels, (n, k)))
    }

    fn softmax_cross_entropy_backward(
        &self,
        probs: &Tensor,
        labels: &[u32],
        dloss: f64,
    ) -> Result<Tensor> {
        const OP: &str = "softmax_cross_entropy_backward";
        let dt = common_dtype(OP, &[probs])?;
        let [n, k] = dims_n(OP, "probs", probs)?;
        if n == 0 {
            return Err(shape_err(OP, format!("empty probs {:?}", probs.dims())));
        }
        check_labels(OP, labels, n, k)?;
        dispatch!(OP, dt, loss::softmax_cross_entropy_backward(probs, labels, dloss, (n, k)))
    }

    fn add_assign(&self, dst: &mut Tensor, src: &Tensor) -> Result<()> {
        const OP: &str = "add_assign";
        let dt = common_dtype(OP, &[dst, src])?;
        same_shape(OP, dst, src)?;
        dispatch!(OP, dt, elementwise::add_assign(dst, src))
    }

    fn scale_assign(&self, dst: &mut Tensor, s: f64) -> Result<()> {
        const OP: &str = "scale_assign";
        let dt = common_dtype(OP, &[dst])?;
        dispatch!(OP, dt, elementwise::scale_assign(dst, s))
    }

    fn sum_squares(&self, x: &Tensor) -> Result<f64> {
        const OP: &str = "sum_squares";
        let dt = common_dtype(OP, &[x])?;
        dispatch!(OP, dt, elementwise::sum_squares(x))
    }

    fn sgd_step(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        momentum_buf: &mut Tensor,
        p: SgdParams,
    ) -> Result<()> {
        const OP: &str = "sgd_step";
        let dt = common_dtype(OP, &[param, grad, momentum_buf])?;
        same_shape(OP, param, grad)?;
        same_shape(OP, param, momentum_buf)?;
        dispatch!(OP, dt, sgd::step(param, grad, momentum_buf, p))
    }

    fn adamw_step(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        exp_avg: &mut Tensor,
        exp_avg_sq: &mut Tensor,
        p: AdamWParams,
    ) -> Result<()> {
        const OP: &str = "adamw_step";
        let dt = common_dtype(OP, &[param, grad, exp_avg, exp_avg_sq])?;
        same_shape(OP, param, grad)?;
        same_shape(OP, param, exp_avg)?;
        same_shape(OP, param, exp_avg_sq)?;
        dispatch!(OP, dt, adamw::step(param, grad, exp_avg, exp_avg_sq, p))
    }
}
