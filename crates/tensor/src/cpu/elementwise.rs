//! Element-wise CPU kernels (relu, add, scale, mul and their in-place forms, sum of squares)
//! and the blocked reductions that batch norm and pooling share (sums in the input's dtype
//! within blocks of at most [`REDUCE_CHUNK`] elements, in f64 across blocks).
//!
//! Large tensors are split over threads in chunks of at least [`PAR_GRAIN`] elements; small
//! ones, and every tensor when the pool has one thread, stay on the calling thread.

use super::{for_each_range, new_vec_with, split_even, threads, vectorized, CpuFloat, PAR_GRAIN};
use crate::error::Result;
use crate::Tensor;
use rayon::prelude::*;
use std::ops::Range;

/// Independent accumulators per reduction: one vector register of f32, which the compiler
/// keeps in a register (wider arrays of accumulators it spills to the stack).
const LANES: usize = 16;

/// Elements per reduction block. Blocks are summed separately and then in order, so the
/// result does not depend on the thread count.
const REDUCE_BLOCK: usize = 1 << 14;

fn parallel(len: usize) -> bool {
    len >= 2 * PAR_GRAIN && threads() > 1
}

/// Ranges of `0..len`, one per thread for large lengths, else a single one.
fn chunks(len: usize) -> Vec<Range<usize>> {
    let parts = if parallel(len) { threads().min(len / PAR_GRAIN) } else { 1 };
    split_even(len, parts)
}

/// `f` applied to every element of `a`. `f` should be `#[inline(always)]` so that it is
/// compiled into the vectorised loop.
fn map1<T: CpuFloat>(a: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    // SAFETY: the loop writes every element of each part, and the parts cover the vector.
    unsafe {
        new_vec_with(a.len(), |out| {
            for_each_range(out, 1, &chunks(a.len()), |r, part| {
                vectorized(
                    #[inline(always)]
                    || {
                        part.iter_mut().zip(&a[r]).for_each(|(o, &v)| {
                            o.write(f(v));
                        })
                    },
                )
            });
        })
    }
}

/// `f` applied to every pair of elements of `a` and `b` (equal lengths).
fn map2<T: CpuFloat>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    // SAFETY: the loop writes every element of each part, and the parts cover the vector.
    unsafe {
        new_vec_with(a.len(), |out| {
            for_each_range(out, 1, &chunks(a.len()), |r, part| {
                vectorized(
                    #[inline(always)]
                    || {
                        let pairs = a[r.clone()].iter().zip(&b[r]);
                        part.iter_mut().zip(pairs).for_each(|(o, (&u, &v))| {
                            o.write(f(u, v));
                        })
                    },
                )
            });
        })
    }
}

/// `f(d, s)` for every element `d` of `dst` and matching `s` of `src` (`dst` alone when
/// `src` is empty).
fn update<T: CpuFloat>(dst: &mut [T], src: &[T], f: impl Fn(&mut T, T) + Sync) {
    let ranges = chunks(dst.len());
    for_each_range(dst, 1, &ranges, |r, part| {
        vectorized(
            #[inline(always)]
            || {
                if src.is_empty() {
                    part.iter_mut().for_each(|d| f(d, T::zero()));
                } else {
                    part.iter_mut().zip(&src[r]).for_each(|(d, &s)| f(d, s));
                }
            },
        )
    });
}

fn tensor_like<T: CpuFloat>(data: Vec<T>, like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(data, like.shape().clone())
}

/// `max(x, 0)`; NaN stays NaN, as in PyTorch.
pub(super) fn relu_forward<T: CpuFloat>(x: &Tensor) -> Result<Tensor> {
    let zero = T::zero();
    let y = map1(
        x.as_slice::<T>()?,
        #[inline(always)]
        |v| if v <= zero { zero } else { v },
    );
    tensor_like(y, x)
}

/// `dy * (y > 0)`.
pub(super) fn relu_backward<T: CpuFloat>(dy: &Tensor, y: &Tensor) -> Result<Tensor> {
    let zero = T::zero();
    let (dys, ys) = (dy.as_slice::<T>()?, y.as_slice::<T>()?);
    let dx = map2(
        dys,
        ys,
        #[inline(always)]
        |d, v| if v > zero { d } else { zero },
    );
    tensor_like(dx, dy)
}

/// `a + b`.
pub(super) fn add<T: CpuFloat>(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    tensor_like(
        map2(
            a.as_slice::<T>()?,
            b.as_slice::<T>()?,
            #[inline(always)]
            |u, v| u + v,
        ),
        a,
    )
}

/// `a * b`.
pub(super) fn mul<T: CpuFloat>(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    tensor_like(
        map2(
            a.as_slice::<T>()?,
            b.as_slice::<T>()?,
            #[inline(always)]
            |u, v| u * v,
        ),
        a,
    )
}

/// `a * s`.
pub(super) fn scale<T: CpuFloat>(a: &Tensor, s: f64) -> Result<Tensor> {
    let s = T::from_f64_lossy(s);
    tensor_like(
        map1(
            a.as_slice::<T>()?,
            #[inline(always)]
            |v| v * s,
        ),
        a,
    )
}

/// `dst += src`.
pub(super) fn add_assign<T: CpuFloat>(dst: &mut Tensor, src: &Tensor) -> Result<()> {
    let src = src.as_slice::<T>()?;
    update(
        dst.as_mut_slice::<T>()?,
        src,
        #[inline(always)]
        |d, s| *d += s,
    );
    Ok(())
}

/// `dst *= s`.
pub(super) fn scale_assign<T: CpuFloat>(dst: &mut Tensor, s: f64) -> Result<()> {
    let s = T::from_f64_lossy(s);
    update(
        dst.as_mut_slice::<T>()?,
        &[],
        #[inline(always)]
        |d, _| *d *= s,
    );
    Ok(())
}

/// Sum of squares in f64, in fixed blocks summed in order (independent of the thread count).
pub(super) fn sum_squares<T: CpuFloat>(x: &Tensor) -> Result<f64> {
    let x = x.as_slice::<T>()?;
    let block = |b: &[T]| sum_sq_f64(b);
    let sums: Vec<f64> = if parallel(x.len()) {
        x.par_chunks(REDUCE_BLOCK).map(block).collect()
    } else {
        x.chunks(REDUCE_BLOCK).map(block).collect()
    };
    Ok(sums.iter().sum())
}

/// Sums over up to this many elements run in the input's dtype (in [`LANES`] independent
/// lanes, so each lane adds at most `REDUCE_CHUNK / LANES` terms) before they are widened to
/// f64 and added up: f64-grade totals at the speed of the input's own vector width.
const REDUCE_CHUNK: usize = 512;

/// `Σ f(a_k, b_k)` over the pairs of equal-length slices that `planes` yields, with the
/// blocking described at [`REDUCE_CHUNK`]. All planes are summed in one vectorised loop nest,
/// so many short planes (a channel of 7x7 maps) cost little more than one long one.
#[inline(always)]
pub(super) fn sum_planes<'a, T: CpuFloat>(
    planes: impl Iterator<Item = (&'a [T], &'a [T])>,
    f: impl Fn(T, T) -> T,
) -> f64 {
    vectorized(
        #[inline(always)]
        || {
            let zero = [T::zero(); LANES];
            let (mut total, mut tail_sum, mut s, mut pending) = (0.0f64, 0.0f64, zero, 0);
            for (a, b) in planes {
                let b = &b[..a.len()];
                // Four accumulators of one vector each, so that consecutive additions do not
                // wait on one another; then single vectors; then single elements.
                let full = a.len() / (4 * LANES) * (4 * LANES);
                let (mut s0, mut s1, mut s2, mut s3) = (zero, zero, zero, zero);
                let quads =
                    a[..full].chunks_exact(4 * LANES).zip(b[..full].chunks_exact(4 * LANES));
                for (xa, xb) in quads {
                    let xa: &[T; 4 * LANES] = xa.try_into().expect("4 LANES elements");
                    let xb: &[T; 4 * LANES] = xb.try_into().expect("4 LANES elements");
                    for k in 0..LANES {
                        s0[k] += f(xa[k], xb[k]);
                    }
                    for k in 0..LANES {
                        s1[k] += f(xa[LANES + k], xb[LANES + k]);
                    }
                    for k in 0..LANES {
                        s2[k] += f(xa[2 * LANES + k], xb[2 * LANES + k]);
                    }
                    for k in 0..LANES {
                        s3[k] += f(xa[3 * LANES + k], xb[3 * LANES + k]);
                    }
                }
                for k in 0..LANES {
                    s[k] += (s0[k] + s1[k]) + (s2[k] + s3[k]);
                }
                let (ra, rb) = (&a[full..], &b[full..]);
                let tail = ra.len() / LANES * LANES;
                let singles = ra[..tail].chunks_exact(LANES).zip(rb[..tail].chunks_exact(LANES));
                for (xa, xb) in singles {
                    let xa: &[T; LANES] = xa.try_into().expect("LANES elements");
                    let xb: &[T; LANES] = xb.try_into().expect("LANES elements");
                    for k in 0..LANES {
                        s[k] += f(xa[k], xb[k]);
                    }
                }
                // The last few terms go to a scalar, so that `s` can stay in a register.
                let rest = ra[tail..].iter().zip(&rb[tail..]);
                tail_sum += rest.fold(0.0, |acc, (&x, &y)| acc + f(x, y).as_f64());

                // Widen to f64 before a lane has added more than REDUCE_CHUNK / LANES terms.
                pending += a.len();
                if pending >= REDUCE_CHUNK {
                    total += s.iter().map(|v| v.as_f64()).sum::<f64>();
                    (s, pending) = (zero, 0);
                }
            }
            total + tail_sum + s.iter().map(|v| v.as_f64()).sum::<f64>()
        },
    )
}

/// `Σ x²` with every square and sum in f64 (exact to f64 rounding; not a hot path).
fn sum_sq_f64<T: CpuFloat>(xs: &[T]) -> f64 {
    const W: usize = 8;
    vectorized(
        #[inline(always)]
        || {
            let mut s = [0.0f64; W];
            let mut chunks = xs.chunks_exact(W);
            for chunk in &mut chunks {
                for k in 0..W {
                    let v = chunk[k].as_f64();
                    s[k] += v * v;
                }
            }
            let rest: f64 = chunks.remainder().iter().map(|v| v.as_f64() * v.as_f64()).sum();
            s.iter().sum::<f64>() + rest
        },
    )
}

/// `Σ x`, with an f64 total (see [`REDUCE_CHUNK`]).
pub(super) fn sum_f64<T: CpuFloat>(xs: &[T]) -> f64 {
    let blocks = xs.chunks(REDUCE_CHUNK).map(|b| (b, b));
    sum_planes(
        blocks,
        #[inline(always)]
        |x, _| x,
    )
}
