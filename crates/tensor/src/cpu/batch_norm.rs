//! Batch normalisation on the CPU over `[N, C, L]` views of the input (`L = H·W` for images,
//! 1 for `[N, C]`), with per-channel statistics in f64.
//!
//! Forward (training) reads the input twice: once for the statistics (sums shifted by the
//! channel's first element, so that E[x²] - E[x]² does not cancel), once to write the output.
//! Backward also reads twice: once for `Σ dy` and `Σ dy·(x - mean)`, once to write `dx`.
//! Both passes are also exposed apart (`stats`, `backward_reduce`, `backward_elemt`), so
//! batch norm with statistics synchronised across workers can sum them over the world in
//! between.
//! (Each statistics pass sweeps every plane twice, one sum per sweep, while the plane is in
//! L1: a loop carrying two running sums does not vectorise.) Sums run in the input's dtype
//! over blocks of at most 512 elements and in f64 across blocks. Statistics are computed per
//! channel (in parallel over channels), outputs per image (in parallel over image ranges).

use super::elementwise::sum_planes;
use super::{for_each_range, new_vec_with, split_even, threads, vectorized, CpuFloat, PAR_GRAIN};
use crate::backend::{BatchNormGrads, BatchNormOutput};
use crate::error::Result;
use crate::Tensor;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `(n, c, l)`: images, channels, elements per channel per image.
type Layout = (usize, usize, usize);

fn parallel(len: usize) -> bool {
    len >= 2 * PAR_GRAIN && threads() > 1
}

/// `f(ch)` for every channel, in parallel for large inputs; results in channel order.
fn per_channel<R: Send>(lay: Layout, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    let (n, c, l) = lay;
    if parallel(n * c * l) {
        (0..c).into_par_iter().map(f).collect()
    } else {
        (0..c).map(f).collect()
    }
}

/// A new `[N, C, L]` tensor whose channel `ch` of image `img` is written by
/// `f(ch, img, out)`, which must initialise all of `out` (and should be `#[inline(always)]`,
/// to be compiled into the vectorised loop).
fn per_plane<T: CpuFloat>(
    lay: Layout,
    like: &Tensor,
    f: impl Fn(usize, usize, &mut [MaybeUninit<T>]) + Sync,
) -> Result<Tensor> {
    let (n, c, l) = lay;
    let parts = if parallel(n * c * l) { threads() } else { 1 };
    let ranges = split_even(n, parts);
    // SAFETY: every plane of every image range is handed to `f`, which initialises it.
    let out = unsafe {
        new_vec_with(n * c * l, |out| {
            for_each_range(out, c * l, &ranges, |imgs, part| {
                vectorized(
                    #[inline(always)]
                    || {
                        for (img, image) in imgs.zip(part.chunks_exact_mut(c * l)) {
                            for (ch, plane) in image.chunks_exact_mut(l).enumerate() {
                                f(ch, img, plane);
                            }
                        }
                    },
                )
            });
        })
    };
    Tensor::from_vec(out, like.shape().clone())
}

/// The `l` elements of channel `ch` of image `img`.
fn plane<T>(x: &[T], lay: Layout, img: usize, ch: usize) -> &[T] {
    let (_, c, l) = lay;
    &x[(img * c + ch) * l..][..l]
}

/// Per-channel `[C]` tensor from f64 values.
fn channel_tensor<T: CpuFloat>(v: impl Iterator<Item = f64>) -> Result<Tensor> {
    let v: Vec<T> = v.map(T::from_f64_lossy).collect();
    let c = v.len();
    Tensor::from_vec(v, [c])
}

/// Per-channel `(mean, biased variance)` in f64, from sums shifted by each channel's first
/// element so that E[x²] - E[x]² does not cancel.
fn channel_stats<T: CpuFloat>(xs: &[T], lay: Layout) -> Vec<(f64, f64)> {
    let (n, _, l) = lay;
    let count = (n * l) as f64;
    per_channel(lay, |ch| {
        let pivot = xs[ch * l];
        let planes = || (0..n).map(|img| (plane(xs, lay, img, ch), plane(xs, lay, img, ch)));
        let s1 = sum_planes(
            planes(),
            #[inline(always)]
            |v, _| v - pivot,
        );
        let s2 = sum_planes(
            planes(),
            #[inline(always)]
            |v, _| (v - pivot) * (v - pivot),
        );
        let shift = s1 / count;
        let var = (s2 / count - shift * shift).max(0.0);
        (pivot.as_f64() + shift, var)
    })
}

/// Per-channel batch statistics without normalising: `(mean, biased variance)` in f64.
pub(super) fn stats<T: CpuFloat>(x: &Tensor, lay: Layout) -> Result<Vec<(f64, f64)>> {
    Ok(channel_stats(x.as_slice::<T>()?, lay))
}

/// Training-mode forward: batch mean and biased variance per channel, then
/// `y = (x - mean) · invstd · gamma + beta`.
pub(super) fn forward_train<T: CpuFloat>(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    lay: Layout,
    eps: f64,
) -> Result<BatchNormOutput> {
    let (xs, gs, bs) = (x.as_slice::<T>()?, gamma.as_slice::<T>()?, beta.as_slice::<T>()?);
    let stats: Vec<(f64, f64, f64)> = channel_stats(xs, lay)
        .into_iter()
        .map(|(mean, var)| (mean, var, 1.0 / (var + eps).sqrt()))
        .collect();

    let coef: Vec<(T, T, T)> = stats
        .iter()
        .zip(gs.iter().zip(bs))
        .map(|(&(mean, _, invstd), (g, &b))| {
            (T::from_f64_lossy(mean), T::from_f64_lossy(invstd * g.as_f64()), b)
        })
        .collect();
    let y = per_plane(
        lay,
        x,
        #[inline(always)]
        |ch, img, out| {
            let (mean, scale, shift) = coef[ch];
            for (o, &v) in out.iter_mut().zip(plane(xs, lay, img, ch)) {
                o.write((v - mean) * scale + shift);
            }
        },
    )?;

    Ok(BatchNormOutput {
        y,
        mean: channel_tensor::<T>(stats.iter().map(|s| s.0))?,
        var: channel_tensor::<T>(stats.iter().map(|s| s.1))?,
        invstd: channel_tensor::<T>(stats.iter().map(|s| s.2))?,
    })
}

/// Evaluation-mode forward: `y = (x - mean) / sqrt(var + eps) · gamma + beta` with the given
/// statistics.
pub(super) fn forward_eval<T: CpuFloat>(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    lay: Layout,
    eps: f64,
) -> Result<Tensor> {
    let xs = x.as_slice::<T>()?;
    let (gs, bs) = (gamma.as_slice::<T>()?, beta.as_slice::<T>()?);
    let (ms, vs) = (mean.as_slice::<T>()?, var.as_slice::<T>()?);
    let coef: Vec<(T, T, T)> = (0..lay.1)
        .map(|ch| {
            let scale = gs[ch].as_f64() / (vs[ch].as_f64() + eps).sqrt();
            (ms[ch], T::from_f64_lossy(scale), bs[ch])
        })
        .collect();
    per_plane(
        lay,
        x,
        #[inline(always)]
        |ch, img, out| {
            let (mean, scale, shift) = coef[ch];
            for (o, &v) in out.iter_mut().zip(plane(xs, lay, img, ch)) {
                o.write((v - mean) * scale + shift);
            }
        },
    )
}

/// Backward of training-mode batch norm, from the saved input, mean and invstd:
/// `dbeta = Σ dy`, `dgamma = invstd · Σ dy·(x - mean)`, and
/// `dx = gamma·invstd · (dy - dbeta/count - x̂ · dgamma/count)` with `x̂ = (x - mean)·invstd`.
pub(super) fn backward<T: CpuFloat>(
    dy: &Tensor,
    x: &Tensor,
    gamma: &Tensor,
    mean: &Tensor,
    invstd: &Tensor,
    lay: Layout,
) -> Result<BatchNormGrads> {
    let sums = backward_reduce::<T>(dy, x, mean, invstd, lay)?;
    let count = (lay.0 * lay.2) as f64;
    let dx = backward_elemt::<T>(dy, x, gamma, mean, invstd, &sums, count, lay)?;
    Ok(BatchNormGrads {
        dx,
        dgamma: channel_tensor::<T>(sums.iter().map(|s| s.1))?,
        dbeta: channel_tensor::<T>(sums.iter().map(|s| s.0))?,
    })
}

/// The reduction half of backward: per channel `(Σ dy, Σ dy·x̂)` in f64, with
/// `x̂ = (x - mean)·invstd`; these are `dbeta` and `dgamma`.
pub(super) fn backward_reduce<T: CpuFloat>(
    dy: &Tensor,
    x: &Tensor,
    mean: &Tensor,
    invstd: &Tensor,
    lay: Layout,
) -> Result<Vec<(f64, f64)>> {
    let (dys, xs) = (dy.as_slice::<T>()?, x.as_slice::<T>()?);
    let (ms, is) = (mean.as_slice::<T>()?, invstd.as_slice::<T>()?);
    let n = lay.0;
    Ok(per_channel(lay, |ch| {
        let mean = ms[ch];
        let planes = || (0..n).map(|img| (plane(dys, lay, img, ch), plane(xs, lay, img, ch)));
        let s_dy = sum_planes(
            planes(),
            #[inline(always)]
            |g, _| g,
        );
        let s_dyx = sum_planes(
            planes(),
            #[inline(always)]
            |g, v| g * (v - mean),
        );
        (s_dy, s_dyx * is[ch].as_f64())
    }))
}

/// The element-wise half of backward: `dx = gamma·invstd · (dy - Σdy/count - x̂ · Σdy·x̂/count)`
/// from the per-channel sums (over `count` elements, which may span several workers).
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_elemt<T: CpuFloat>(
    dy: &Tensor,
    x: &Tensor,
    gamma: &Tensor,
    mean: &Tensor,
    invstd: &Tensor,
    sums: &[(f64, f64)],
    count: f64,
    lay: Layout,
) -> Result<Tensor> {
    let (dys, xs) = (dy.as_slice::<T>()?, x.as_slice::<T>()?);
    let (gs, ms, is) = (gamma.as_slice::<T>()?, mean.as_slice::<T>()?, invstd.as_slice::<T>()?);
    // dx = a·dy + b·(x - mean) + d per channel.
    let coef: Vec<(T, T, T, T)> = sums
        .iter()
        .enumerate()
        .map(|(ch, &(dbeta, dgamma))| {
            let (g, inv) = (gs[ch].as_f64(), is[ch].as_f64());
            let a = g * inv;
            let b = -a * inv * dgamma / count;
            let d = -a * dbeta / count;
            (ms[ch], T::from_f64_lossy(a), T::from_f64_lossy(b), T::from_f64_lossy(d))
        })
        .collect();
    per_plane(
        lay,
        x,
        #[inline(always)]
        |ch, img, out| {
            let (mean, a, b, d) = coef[ch];
            let src = plane(dys, lay, img, ch).iter().zip(plane(xs, lay, img, ch));
            for (o, (&g, &v)) in out.iter_mut().zip(src) {
                o.write(a * g + b * (v - mean) + d);
            }
        },
    )
}
