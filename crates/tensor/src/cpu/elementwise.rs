//! Element-wise CPU kernels (relu, add, scale, mul and their in-place forms, sum of squares)
//! and the lane-parallel f64 reductions that other kernels share.
//!
//! Large tensors are split over threads in chunks of at least [`PAR_GRAIN`] elements; small
//! ones, and every tensor when the pool has one thread, stay on the calling thread.

use super::{threads, CpuFloat, PAR_GRAIN};
use crate::error::Result;
use crate::Tensor;
use rayon::prelude::*;

/// Independent accumulators per reduction: enough to fill a vector register and to break the
/// dependency chain of the additions, so the loop vectorises.
const LANES: usize = 8;

/// Elements per reduction block. Blocks are summed separately and then in order, so the
/// result does not depend on the thread count.
const REDUCE_BLOCK: usize = 1 << 14;

fn parallel(len: usize) -> bool {
    len >= 2 * PAR_GRAIN && threads() > 1
}

/// `f` applied to every element of `a`.
fn map1<T: CpuFloat>(a: &[T], f: impl Fn(T) -> T + Sync + Send) -> Vec<T> {
    if parallel(a.len()) {
        a.par_iter().with_min_len(PAR_GRAIN).map(|&v| f(v)).collect()
    } else {
        a.iter().map(|&v| f(v)).collect()
    }
}

/// `f` applied to every pair of elements of `a` and `b` (equal lengths).
fn map2<T: CpuFloat>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync + Send) -> Vec<T> {
    if parallel(a.len()) {
        let pairs = a.par_iter().zip(b).with_min_len(PAR_GRAIN);
        pairs.map(|(&u, &v)| f(u, v)).collect()
    } else {
        a.iter().zip(b).map(|(&u, &v)| f(u, v)).collect()
    }
}

/// `f(d, s)` for every element `d` of `dst` and matching `s` of `src`.
fn update<T: CpuFloat>(dst: &mut [T], src: &[T], f: impl Fn(&mut T, T) + Sync + Send) {
    if parallel(dst.len()) {
        dst.par_iter_mut().zip(src).with_min_len(PAR_GRAIN).for_each(|(d, &s)| f(d, s));
    } else {
        dst.iter_mut().zip(src).for_each(|(d, &s)| f(d, s));
    }
}

fn tensor_like<T: CpuFloat>(data: Vec<T>, like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(data, like.shape().clone())
}

/// `max(x, 0)`; NaN stays NaN, as in PyTorch.
pub(super) fn relu_forward<T: CpuFloat>(x: &Tensor) -> Result<Tensor> {
    let zero = T::zero();
    let y = map1(x.as_slice::<T>()?, |v| if v <= zero { zero } else { v });
    tensor_like(y, x)
}

/// `dy * (y > 0)`.
pub(super) fn relu_backward<T: CpuFloat>(dy: &Tensor, y: &Tensor) -> Result<Tensor> {
    let zero = T::zero();
    let dx = map2(dy.as_slice::<T>()?, y.as_slice::<T>()?, |d, v| if v > zero { d } else { zero });
    tensor_like(dx, dy)
}

/// `a + b`.
pub(super) fn add<T: CpuFloat>(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    tensor_like(map2(a.as_slice::<T>()?, b.as_slice::<T>()?, |u, v| u + v), a)
}

/// `a * b`.
pub(super) fn mul<T: CpuFloat>(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    tensor_like(map2(a.as_slice::<T>()?, b.as_slice::<T>()?, |u, v| u * v), a)
}

/// `a * s`.
pub(super) fn scale<T: CpuFloat>(a: &Tensor, s: f64) -> Result<Tensor> {
    let s = T::from_f64_lossy(s);
    tensor_like(map1(a.as_slice::<T>()?, |v| v * s), a)
}

/// `dst += src`.
pub(super) fn add_assign<T: CpuFloat>(dst: &mut Tensor, src: &Tensor) -> Result<()> {
    let src = src.as_slice::<T>()?;
    update(dst.as_mut_slice::<T>()?, src, |d, s| *d += s);
    Ok(())
}

/// `dst *= s`.
pub(super) fn scale_assign<T: CpuFloat>(dst: &mut Tensor, s: f64) -> Result<()> {
    let s = T::from_f64_lossy(s);
    let dst = dst.as_mut_slice::<T>()?;
    if parallel(dst.len()) {
        dst.par_iter_mut().with_min_len(PAR_GRAIN).for_each(|d| *d *= s);
    } else {
        dst.iter_mut().for_each(|d| *d *= s);
    }
    Ok(())
}

/// Sum of squares in f64, in fixed blocks summed in order (independent of the thread count).
pub(super) fn sum_squares<T: CpuFloat>(x: &Tensor) -> Result<f64> {
    let x = x.as_slice::<T>()?;
    let block = |b: &[T]| sum_sq_shifted(b, 0.0);
    let sums: Vec<f64> = if parallel(x.len()) {
        x.par_chunks(REDUCE_BLOCK).map(block).collect()
    } else {
        x.chunks(REDUCE_BLOCK).map(block).collect()
    };
    Ok(sums.iter().sum())
}

/// `(Σ (x - pivot), Σ (x - pivot)²)` accumulated in f64 over [`LANES`] lanes.
pub(super) fn sums_shifted<T: CpuFloat>(xs: &[T], pivot: f64) -> (f64, f64) {
    let (mut s1, mut s2) = ([0.0f64; LANES], [0.0f64; LANES]);
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for i in 0..LANES {
            let d = chunk[i].as_f64() - pivot;
            s1[i] += d;
            s2[i] += d * d;
        }
    }
    for (i, &v) in chunks.remainder().iter().enumerate() {
        let d = v.as_f64() - pivot;
        s1[i] += d;
        s2[i] += d * d;
    }
    (s1.iter().sum(), s2.iter().sum())
}

/// `Σ (x - pivot)²` accumulated in f64 over [`LANES`] lanes.
pub(super) fn sum_sq_shifted<T: CpuFloat>(xs: &[T], pivot: f64) -> f64 {
    let mut s = [0.0f64; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for i in 0..LANES {
            let d = chunk[i].as_f64() - pivot;
            s[i] += d * d;
        }
    }
    for (i, &v) in chunks.remainder().iter().enumerate() {
        let d = v.as_f64() - pivot;
        s[i] += d * d;
    }
    s.iter().sum()
}

/// `Σ x` accumulated in f64 over [`LANES`] lanes.
pub(super) fn sum_f64<T: CpuFloat>(xs: &[T]) -> f64 {
    let mut s = [0.0f64; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for i in 0..LANES {
            s[i] += chunk[i].as_f64();
        }
    }
    for (i, &v) in chunks.remainder().iter().enumerate() {
        s[i] += v.as_f64();
    }
    s.iter().sum()
}

/// `(Σ dy, Σ dy · (x - pivot))` accumulated in f64 over [`LANES`] lanes.
pub(super) fn sums_dy_dyx<T: CpuFloat>(dy: &[T], x: &[T], pivot: f64) -> (f64, f64) {
    let (mut s1, mut s2) = ([0.0f64; LANES], [0.0f64; LANES]);
    let (mut dys, mut xs) = (dy.chunks_exact(LANES), x.chunks_exact(LANES));
    for (d, v) in (&mut dys).zip(&mut xs) {
        for i in 0..LANES {
            let g = d[i].as_f64();
            s1[i] += g;
            s2[i] += g * (v[i].as_f64() - pivot);
        }
    }
    for (i, (&d, &v)) in dys.remainder().iter().zip(xs.remainder()).enumerate() {
        let g = d.as_f64();
        s1[i] += g;
        s2[i] += g * (v.as_f64() - pivot);
    }
    (s1.iter().sum(), s2.iter().sum())
}
