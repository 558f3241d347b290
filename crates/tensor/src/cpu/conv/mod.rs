//! 2-D convolution on the CPU: all three passes as matrix products (`gemm`) over groups of
//! images, with the data movement in [`unfold`].
//!
//! - forward: im2col unfolds a group of images into `col[(c, r, s), (image, p, q)]`, then
//!   `y = w · col` (M = out channels, K = C·R·S, N = images·P·Q). Batching images makes N large
//!   even on 7x7 maps, where one image alone would leave the product mostly tail.
//! - backward data: `dcol = wᵀ · dy`, then col2im folds `dcol` back onto the input planes.
//! - backward filter, stride 1 on large maps: `r` products straight from a padded NHWC copy of
//!   the input, whose overlapping rows the product reads in place (see [`filter_by_shifts`]).
//! - backward filter otherwise: im2row lays the group out as `row[(image, p, q), (r, s, c)]`,
//!   then `dw' = dy · row`.
//!
//! Both filter paths produce the `(k, r, s, c)` order, permuted to KCRS once at the end.
//! 1x1 stride-1 unpadded convolutions of single-image groups skip the unfolding entirely.
//! Threads take contiguous ranges of images, each with its own scratch and single-threaded
//! products; backward filter sums the per-range partial gradients in range order. All
//! scratch memory lives in per-thread buffers, reused across calls.

mod unfold;

use super::matmul::{matmul, MatMut, MatRef};
use super::{for_each_range, new_vec_with, split_even, threads, CpuFloat};
use crate::backend::Conv2dParams;
use crate::error::{shape_err, Result};
use crate::Tensor;
use std::mem::MaybeUninit;
use std::ops::Range;
use unfold::spread_over_padded;
use unfold::{col2im, im2col, im2row, images_from_rows, pad_to_nhwc, rows_from_images};

/// Bytes of scratch (unfolded input, product output) per group of images: about the size of
/// the L2 cache, so that what im2col writes is still cached when the product reads it, yet
/// enough images that the product's N dimension is long. Measured on Zen 5 (1 MiB L2) between
/// 256 KiB and 2 MiB; 1 MiB was best or within noise of best on every ResNet layer.
const COL_BUDGET_BYTES: usize = 1 << 20;

/// Largest ratio of padded input positions to output positions at which backward filter
/// computes by shifted products (which spend work on the padding positions too) rather than
/// through im2row (which copies each input value `r · s` times): 32x32 and 28x28 maps with
/// padding 1 qualify (1.13, 1.15), 16x16 and smaller do not (1.27 and up), where im2row
/// measured as fast or faster.
const SHIFTED_MAX_WASTE: f64 = 1.2;

/// Validated geometry of one convolution: input `[n, c, h, w]`, weights `[k, c, r, s]`,
/// output `[n, k, p, q]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub r: usize,
    pub s: usize,
    pub stride: usize,
    pub pad: usize,
    pub p: usize,
    pub q: usize,
}

impl ConvGeom {
    /// The geometry of convolving `x_dims` with `w_dims`, or a shape error for `op`.
    pub(crate) fn new(
        op: &'static str,
        x_dims: [usize; 4],
        w_dims: [usize; 4],
        prm: Conv2dParams,
    ) -> Result<Self> {
        let ([n, c, h, w], [k, wc, r, s]) = (x_dims, w_dims);
        let Conv2dParams { stride, padding: pad } = prm;
        let detail =
            |why: &str| shape_err(op, format!("x {x_dims:?}, w {w_dims:?}, {prm:?}: {why}"));
        if wc != c {
            return Err(detail("w's input channels differ from x's channels"));
        }
        if stride == 0 || r == 0 || s == 0 {
            return Err(detail("stride and window must be at least 1"));
        }
        if h + 2 * pad < r || w + 2 * pad < s {
            return Err(detail("the window is larger than the padded input"));
        }
        let (p, q) = ((h + 2 * pad - r) / stride + 1, (w + 2 * pad - s) / stride + 1);
        Ok(ConvGeom { n, c, h, w, k, r, s, stride, pad, p, q })
    }

    /// True when some dimension is zero: every output element is then zero (or there is none).
    fn is_empty(&self) -> bool {
        [self.n, self.c, self.h, self.w, self.k].contains(&0)
    }

    /// Dims of the output `[n, k, p, q]`.
    pub(crate) fn y_dims(&self) -> [usize; 4] {
        [self.n, self.k, self.p, self.q]
    }

    /// Rows of the unfolded input: `c · r · s`.
    fn kc(&self) -> usize {
        self.c * self.r * self.s
    }

    fn hw(&self) -> usize {
        self.h * self.w
    }

    fn pq(&self) -> usize {
        self.p * self.q
    }

    /// Whether backward filter runs as shifted products over the padded input (see
    /// [`filter_by_shifts`]): stride 1, few enough positions in the padding, and rows of the
    /// product (`s · c` values) long enough to fill a vector register.
    fn filter_by_shifts(&self) -> bool {
        let padded = (self.h + 2 * self.pad) * (self.w + 2 * self.pad);
        let runs_long_enough = self.s * self.c >= 16;
        self.stride == 1
            && runs_long_enough
            && padded as f64 <= SHIFTED_MAX_WASTE * self.pq() as f64
    }

    /// A 1x1, stride-1, unpadded convolution: the input already is its own im2col.
    fn is_pointwise(&self) -> bool {
        self.r == 1 && self.s == 1 && self.stride == 1 && self.pad == 0
    }

    /// Images per group for a thread whose range holds `range_len` images, when each image
    /// needs `per_image` elements of scratch.
    fn group_size<T>(&self, range_len: usize, per_image: usize) -> usize {
        let bytes = (per_image * std::mem::size_of::<T>()).max(1);
        (COL_BUDGET_BYTES / bytes).clamp(1, range_len.max(1))
    }
}

/// Image ranges, one per thread, and the threads each range's products may use (all of them
/// when there is a single range, else one).
fn plan(n: usize) -> (Vec<Range<usize>>, usize) {
    let ranges = split_even(n, threads());
    let inner = if ranges.len() == 1 { threads() } else { 1 };
    (ranges, inner)
}

/// `y = conv(x, w)`.
pub(super) fn forward<T: CpuFloat>(x: &Tensor, w: &Tensor, g: &ConvGeom) -> Result<Tensor> {
    if g.is_empty() {
        return Tensor::from_vec(vec![T::zero(); g.y_dims().iter().product()], g.y_dims());
    }
    let (x, w) = (x.as_slice::<T>()?, w.as_slice::<T>()?);
    let per_image = g.k * g.pq();
    let (ranges, inner) = plan(g.n);
    // SAFETY: forward_range writes every element of its part, and the parts cover `y`.
    let y = unsafe {
        new_vec_with(g.n * per_image, |y| {
            for_each_range(y, per_image, &ranges, |imgs, part| {
                forward_range(x, w, g, imgs, part, inner)
            });
        })
    };
    Tensor::from_vec(y, g.y_dims())
}

/// Forward for the images `imgs`, writing every element of their outputs `y`.
fn forward_range<T: CpuFloat>(
    x: &[T],
    w: &[T],
    g: &ConvGeom,
    imgs: Range<usize>,
    y: &mut [MaybeUninit<T>],
    threads: usize,
) {
    let (kc, pq, m, chw) = (g.kc(), g.pq(), g.k, g.c * g.hw());
    let group = g.group_size::<T>(imgs.len(), (kc + m) * pq + g.c * g.phases_per_plane());
    let w = MatRef::row_major(w, m, kc);
    let phases = group * g.c * g.phases_per_plane();
    T::with_scratch((kc + m) * group * pq + phases, |scratch| {
        let (col, rest) = scratch.split_at_mut(kc * group * pq);
        let (tmp, phases) = rest.split_at_mut(m * group * pq);
        let mut done = 0;
        while done < imgs.len() {
            let gs = group.min(imgs.len() - done);
            let cols = gs * pq;
            let x_grp = &x[(imgs.start + done) * chw..][..gs * chw];
            let y_grp = &mut y[done * m * pq..][..gs * m * pq];

            let rhs = if g.is_pointwise() && gs == 1 {
                x_grp
            } else {
                im2col(x_grp, gs, g, &mut col[..kc * cols], phases);
                &col[..kc * cols]
            };
            let rhs = MatRef::row_major(rhs, kc, cols);

            if gs == 1 {
                matmul(MatMut::row_major_uninit(y_grp, m, cols), w, rhs, false, threads);
            } else {
                let tmp = &mut tmp[..m * cols];
                matmul(MatMut::row_major(tmp, m, cols), w, rhs, false, threads);
                images_from_rows(tmp, y_grp, gs, m, pq);
            }
            done += gs;
        }
    })
}

/// `dx` of shape `[n, c, h, w]` from `dy` and `w`.
pub(super) fn backward_data<T: CpuFloat>(dy: &Tensor, w: &Tensor, g: &ConvGeom) -> Result<Tensor> {
    if g.is_empty() {
        return Tensor::from_vec(vec![T::zero(); g.n * g.c * g.hw()], [g.n, g.c, g.h, g.w]);
    }
    let (dy, w) = (dy.as_slice::<T>()?, w.as_slice::<T>()?);
    let per_image = g.c * g.hw();
    let (ranges, inner) = plan(g.n);
    // SAFETY: backward_data_range writes every element of its part, and the parts cover `dx`.
    let dx = unsafe {
        new_vec_with(g.n * per_image, |dx| {
            for_each_range(dx, per_image, &ranges, |imgs, part| {
                backward_data_range(dy, w, g, imgs, part, inner)
            });
        })
    };
    Tensor::from_vec(dx, [g.n, g.c, g.h, g.w])
}

/// Backward data for the images `imgs`, writing every element of their gradients `dx`.
fn backward_data_range<T: CpuFloat>(
    dy: &[T],
    w: &[T],
    g: &ConvGeom,
    imgs: Range<usize>,
    dx: &mut [MaybeUninit<T>],
    threads: usize,
) {
    let (kc, pq, m, chw) = (g.kc(), g.pq(), g.k, g.c * g.hw());
    let group = g.group_size::<T>(imgs.len(), (kc + m) * pq);
    let wt = MatRef::transposed(w, kc, m);
    T::with_scratch((kc + m) * group * pq + g.phases_per_plane(), |scratch| {
        let (dcol, rest) = scratch.split_at_mut(kc * group * pq);
        let (dy_rows, phases) = rest.split_at_mut(m * group * pq);
        let mut done = 0;
        while done < imgs.len() {
            let gs = group.min(imgs.len() - done);
            let cols = gs * pq;
            let dy_grp = &dy[(imgs.start + done) * m * pq..][..gs * m * pq];
            let dx_grp = &mut dx[done * chw..][..gs * chw];

            let rhs = if gs == 1 {
                dy_grp
            } else {
                rows_from_images(dy_grp, &mut dy_rows[..m * cols], gs, m, pq);
                &dy_rows[..m * cols]
            };
            let rhs = MatRef::row_major(rhs, m, cols);

            if g.is_pointwise() && gs == 1 {
                matmul(MatMut::row_major_uninit(dx_grp, kc, cols), wt, rhs, false, threads);
            } else {
                let dcol = &mut dcol[..kc * cols];
                matmul(MatMut::row_major(dcol, kc, cols), wt, rhs, false, threads);
                col2im(dcol, gs, g, dx_grp, phases);
            }
            done += gs;
        }
    })
}

/// `dw` of shape `[k, c, r, s]` from `dy` and `x`.
pub(super) fn backward_filter<T: CpuFloat>(
    dy: &Tensor,
    x: &Tensor,
    g: &ConvGeom,
) -> Result<Tensor> {
    if g.is_empty() {
        return Tensor::from_vec(vec![T::zero(); g.k * g.kc()], [g.k, g.c, g.r, g.s]);
    }
    let (dy, x) = (dy.as_slice::<T>()?, x.as_slice::<T>()?);
    let (ranges, inner) = plan(g.n);
    let mut partials = for_each_range(&mut [(); 0], 0, &ranges, |imgs, _| {
        backward_filter_range(dy, x, g, imgs, inner)
    })
    .into_iter();

    // Sum the per-range partials in range order, then permute (k, r, s, c) to (k, c, r, s).
    let mut dw_rsc = partials.next().unwrap_or_else(|| vec![T::zero(); g.k * g.kc()]);
    for part in partials {
        dw_rsc.iter_mut().zip(&part).for_each(|(a, b)| *a += *b);
    }
    let (c, rs) = (g.c, g.r * g.s);
    let mut dw = Vec::with_capacity(dw_rsc.len());
    for filter in dw_rsc.chunks_exact(g.kc()) {
        for ch in 0..c {
            dw.extend((0..rs).map(|tap| filter[tap * c + ch]));
        }
    }
    Tensor::from_vec(dw, [g.k, g.c, g.r, g.s])
}

/// This range's partial filter gradient, laid out `(k, r, s, c)`.
fn backward_filter_range<T: CpuFloat>(
    dy: &[T],
    x: &[T],
    g: &ConvGeom,
    imgs: Range<usize>,
    threads: usize,
) -> Vec<T> {
    if g.filter_by_shifts() {
        filter_by_shifts(dy, x, g, imgs, threads)
    } else {
        filter_by_im2row(dy, x, g, imgs, threads)
    }
}

/// Backward filter as `r` products per group of images, straight from the padded NHWC input.
///
/// Number the positions of the padded planes of a group `d = (image·hp + oh)·wp + ow`, and
/// spread `dy` over them (`dy_ext`, zero where `oh >= p` or `ow >= q`). Then the values that
/// filter row `r` meets at output position `d` are the `s · c` consecutive elements of the
/// padded input starting at `(d + r·wp)·c`: a matrix whose rows overlap, which the product
/// reads in place. So `dw'[:, r, :, :] = dy_ext · A_r`, with no unfolding at all; the cost is
/// the positions in the padding, hence [`SHIFTED_MAX_WASTE`].
fn filter_by_shifts<T: CpuFloat>(
    dy: &[T],
    x: &[T],
    g: &ConvGeom,
    imgs: Range<usize>,
    threads: usize,
) -> Vec<T> {
    let (kc, pq, m, chw) = (g.kc(), g.pq(), g.k, g.c * g.hw());
    let (wp, plane, run) = (g.w + 2 * g.pad, (g.h + 2 * g.pad) * (g.w + 2 * g.pad), g.s * g.c);
    let group = g.group_size::<T>(imgs.len(), plane * (g.c + m));
    let mut dw = vec![T::zero(); m * kc];
    T::with_scratch(group * plane * (g.c + m), |scratch| {
        let (xpad, dy_ext) = scratch.split_at_mut(group * plane * g.c);
        let mut done = 0;
        while done < imgs.len() {
            let gs = group.min(imgs.len() - done);
            let x_grp = &x[(imgs.start + done) * chw..][..gs * chw];
            let dy_grp = &dy[(imgs.start + done) * m * pq..][..gs * m * pq];

            let xpad = &mut xpad[..gs * plane * g.c];
            for (img, xp) in xpad.chunks_exact_mut(plane * g.c).enumerate() {
                pad_to_nhwc(&x_grp[img * chw..][..chw], g, xp);
            }
            // Positions up to the last output of the last image; A_r's last row then ends
            // exactly at the end of `xpad`.
            let depth = (gs - 1) * plane + (g.p - 1) * wp + g.q;
            let dy_ext = &mut dy_ext[..m * depth];
            spread_over_padded(dy_grp, dy_ext, gs, g, depth);

            let lhs = MatRef::row_major(&*dy_ext, m, depth);
            for r in 0..g.r {
                let dst = MatMut::row_block(&mut dw[r * run..], m, run, kc);
                let rhs = MatRef::strided(&xpad[r * wp * g.c..], depth, run, g.c, 1);
                matmul(dst, lhs, rhs, done > 0, threads);
            }
            done += gs;
        }
    });
    dw
}

/// Backward filter through im2row: one product per group of images.
fn filter_by_im2row<T: CpuFloat>(
    dy: &[T],
    x: &[T],
    g: &ConvGeom,
    imgs: Range<usize>,
    threads: usize,
) -> Vec<T> {
    let (kc, pq, m, chw) = (g.kc(), g.pq(), g.k, g.c * g.hw());
    let padded = (g.h + 2 * g.pad) * (g.w + 2 * g.pad) * g.c;
    let per_image = padded + (kc + m) * pq + g.c * g.phases_per_plane();
    let group = g.group_size::<T>(imgs.len(), per_image);
    let mut dw = vec![T::zero(); m * kc];
    let phases = group * g.c * g.phases_per_plane();
    T::with_scratch(group * (padded + (kc + m) * pq) + phases, |scratch| {
        let (xpad, rest) = scratch.split_at_mut(group * padded);
        let (rows, rest) = rest.split_at_mut(group * pq * kc);
        let (dy_rows, phases) = rest.split_at_mut(group * m * pq);
        let mut done = 0;
        while done < imgs.len() {
            let gs = group.min(imgs.len() - done);
            let cols = gs * pq;
            let x_grp = &x[(imgs.start + done) * chw..][..gs * chw];
            let dy_grp = &dy[(imgs.start + done) * m * pq..][..gs * m * pq];

            let rows = &mut rows[..cols * kc];
            im2row(x_grp, g, &mut xpad[..gs * padded], rows, phases);
            let lhs = if gs == 1 {
                dy_grp
            } else {
                rows_from_images(dy_grp, &mut dy_rows[..m * cols], gs, m, pq);
                &dy_rows[..m * cols]
            };

            let dst = MatMut::row_major(&mut dw, m, kc);
            let lhs = MatRef::row_major(lhs, m, cols);
            matmul(dst, lhs, MatRef::row_major(rows, cols, kc), done > 0, threads);
            done += gs;
        }
    });
    dw
}
