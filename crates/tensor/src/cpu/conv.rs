//! 2-D convolution on the CPU, all three passes as matrix products over groups of images.
//!
//! - forward: im2col unfolds a group of images into `col[(c, r, s), (image, p, q)]`, then
//!   `y = w * col` (M = out channels, K = C·R·S, N = images·P·Q). Batching images makes N large
//!   even on 7x7 maps, where one image alone would leave the product mostly tail.
//! - backward data: `dcol = wᵀ * dy`, then col2im folds `dcol` back onto the input planes.
//! - backward filter: im2row lays the group out as `row[(image, p, q), (r, s, c)]` (from a
//!   zero-padded NHWC copy, so each row is R contiguous copies), then `dw' = dy * row`; the
//!   `(r, s, c)` column order is permuted back to KCRS once at the end.
//!
//! 1x1 stride-1 unpadded convolutions of single-image groups skip the unfolding entirely.
//! Threads take contiguous ranges of images; backward filter sums the per-range partial
//! gradients in range order. All scratch memory lives in per-thread buffers, reused across
//! calls.

use super::matmul::{matmul, MatMut, MatRef};
use super::{for_each_range, new_vec_with, split_even, threads, zero_init, CpuFloat};
use crate::backend::Conv2dParams;
use crate::error::{shape_err, Result};
use crate::Tensor;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Bytes of unfolded (im2col / im2row) data per group of images: small enough to stay in the
/// L2 cache between being written and being read by the product.
const COL_BUDGET_BYTES: usize = 1 << 20;

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
        let detail = |why: &str| shape_err(op, format!("x {x_dims:?}, w {w_dims:?}, {prm:?}: {why}"));
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

    /// A 1x1, stride-1, unpadded convolution: the input already is its own im2col.
    fn is_pointwise(&self) -> bool {
        self.r == 1 && self.s == 1 && self.stride == 1 && self.pad == 0
    }

    /// Images per group for a thread whose range holds `range_len` images.
    fn group_size<T>(&self, range_len: usize) -> usize {
        let per_image = (self.kc() * self.pq() * std::mem::size_of::<T>()).max(1);
        (COL_BUDGET_BYTES / per_image).clamp(1, range_len.max(1))
    }

    /// Output positions `o` (along one axis) whose input `o * stride + tap - pad` lies in
    /// `0..len`, as a range within `0..out_len`.
    fn valid(&self, tap: usize, len: usize, out_len: usize) -> Range<usize> {
        if len == 0 {
            return 0..0;
        }
        let lo = if self.pad > tap { (self.pad - tap).div_ceil(self.stride) } else { 0 };
        let last = len - 1 + self.pad;
        let hi = if last >= tap { ((last - tap) / self.stride + 1).min(out_len) } else { 0 };
        lo.min(hi)..hi
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
    let group = g.group_size::<T>(imgs.len());
    let w = MatRef::row_major(w, m, kc);
    T::with_scratch((kc + m) * group * pq, |scratch| {
        let (col, tmp) = scratch.split_at_mut(kc * group * pq);
        let mut done = 0;
        while done < imgs.len() {
            let gs = group.min(imgs.len() - done);
            let cols = gs * pq;
            let x_grp = &x[(imgs.start + done) * chw..][..gs * chw];
            let y_grp = &mut y[done * m * pq..][..gs * m * pq];

            let rhs = if g.is_pointwise() && gs == 1 {
                x_grp
            } else {
                im2col(x_grp, gs, g, &mut col[..kc * cols]);
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
    let group = g.group_size::<T>(imgs.len());
    let wt = MatRef::transposed(w, kc, m);
    T::with_scratch((kc + m) * group * pq, |scratch| {
        let (dcol, dy_rows) = scratch.split_at_mut(kc * group * pq);
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
                col2im(dcol, gs, g, dx_grp);
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
    let (kc, pq, m, chw) = (g.kc(), g.pq(), g.k, g.c * g.hw());
    let group = g.group_size::<T>(imgs.len());
    let padded = (g.h + 2 * g.pad) * (g.w + 2 * g.pad) * g.c;
    let mut dw = vec![T::zero(); m * kc];
    T::with_scratch(group * (padded + (kc + m) * pq), |scratch| {
        let (xpad, rest) = scratch.split_at_mut(group * padded);
        let (rows, dy_rows) = rest.split_at_mut(group * pq * kc);
        let mut done = 0;
        while done < imgs.len() {
            let gs = group.min(imgs.len() - done);
            let cols = gs * pq;
            let x_grp = &x[(imgs.start + done) * chw..][..gs * chw];
            let dy_grp = &dy[(imgs.start + done) * m * pq..][..gs * m * pq];

            let rows = &mut rows[..cols * kc];
            im2row(x_grp, g, &mut xpad[..gs * padded], rows);
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

/// Unfold `gs` images of `x` into `col[(c, r, s), (image, p, q)]`, zeros where the window
/// reaches into the padding.
fn im2col<T: CpuFloat>(x: &[T], gs: usize, g: &ConvGeom, col: &mut [T]) {
    let (pq, hw, cols, st) = (g.pq(), g.hw(), gs * g.pq(), g.stride);
    for ch in 0..g.c {
        for r in 0..g.r {
            let oh_ok = g.valid(r, g.h, g.p);
            for s in 0..g.s {
                let ow_ok = g.valid(s, g.w, g.q);
                let row = &mut col[((ch * g.r + r) * g.s + s) * cols..][..cols];
                for (img, dst) in row.chunks_exact_mut(pq).enumerate() {
                    let plane = &x[(img * g.c + ch) * hw..][..hw];
                    dst[..oh_ok.start * g.q].fill(T::zero());
                    dst[oh_ok.end * g.q..].fill(T::zero());
                    for oh in oh_ok.clone() {
                        let src = &plane[(oh * st + r - g.pad) * g.w..][..g.w];
                        let out = &mut dst[oh * g.q..][..g.q];
                        out[..ow_ok.start].fill(T::zero());
                        out[ow_ok.end..].fill(T::zero());
                        let out = &mut out[ow_ok.clone()];
                        let first = ow_ok.start * st + s - g.pad;
                        if st == 1 {
                            out.copy_from_slice(&src[first..][..out.len()]);
                        } else {
                            let taps = src[first..].iter().step_by(st);
                            out.iter_mut().zip(taps).for_each(|(o, v)| *o = *v);
                        }
                    }
                }
            }
        }
    }
}

/// Fold `dcol[(c, r, s), (image, p, q)]` back onto the input planes of `gs` images, writing
/// every element of `dx`.
fn col2im<T: CpuFloat>(dcol: &[T], gs: usize, g: &ConvGeom, dx: &mut [MaybeUninit<T>]) {
    let (pq, hw, cols, st) = (g.pq(), g.hw(), gs * g.pq(), g.stride);
    for (plane_idx, plane) in dx.chunks_exact_mut(hw).enumerate() {
        let (img, ch) = (plane_idx / g.c, plane_idx % g.c);
        let plane = zero_init(plane);
        for r in 0..g.r {
            let oh_ok = g.valid(r, g.h, g.p);
            for s in 0..g.s {
                let ow_ok = g.valid(s, g.w, g.q);
                let row = &dcol[((ch * g.r + r) * g.s + s) * cols + img * pq..][..pq];
                for oh in oh_ok.clone() {
                    let dst = &mut plane[(oh * st + r - g.pad) * g.w..][..g.w];
                    let src = &row[oh * g.q..][..g.q][ow_ok.clone()];
                    let first = ow_ok.start * st + s - g.pad;
                    if st == 1 {
                        let dst = &mut dst[first..][..src.len()];
                        dst.iter_mut().zip(src).for_each(|(d, v)| *d += *v);
                    } else {
                        let taps = dst[first..].iter_mut().step_by(st);
                        taps.zip(src).for_each(|(d, v)| *d += *v);
                    }
                }
            }
        }
    }
}

/// Lay the images of `x` out as `rows[(image, p, q), (r, s, c)]` for backward filter, via a
/// zero-padded NHWC copy in `xpad` so that each row is `r` contiguous runs of `s · c` values.
fn im2row<T: CpuFloat>(x: &[T], g: &ConvGeom, xpad: &mut [T], rows: &mut [T]) {
    let (hp, wp, c) = (g.h + 2 * g.pad, g.w + 2 * g.pad, g.c);
    let padded = hp * wp * c;
    for (img, xp) in xpad.chunks_exact_mut(padded).enumerate() {
        pad_to_nhwc(&x[img * c * g.hw()..][..c * g.hw()], g, xp);
    }
    let (run, kc, st) = (g.s * c, g.kc(), g.stride);
    for (pix, row) in rows.chunks_exact_mut(kc).enumerate() {
        let (img, oh, ow) = (pix / g.pq(), pix % g.pq() / g.q, pix % g.q);
        let xp = &xpad[img * padded..][..padded];
        for (r, out) in row.chunks_exact_mut(run).enumerate() {
            out.copy_from_slice(&xp[((oh * st + r) * wp + ow * st) * c..][..run]);
        }
    }
}

/// Copy one image `[c, h, w]` into `xp` as `[h + 2 pad, w + 2 pad, c]`, zero in the border.
fn pad_to_nhwc<T: CpuFloat>(x: &[T], g: &ConvGeom, xp: &mut [T]) {
    let (wp, c, pad) = (g.w + 2 * g.pad, g.c, g.pad);
    let line = wp * c;
    xp[..pad * line].fill(T::zero());
    xp[(pad + g.h) * line..].fill(T::zero());
    for ih in 0..g.h {
        let dst = &mut xp[(pad + ih) * line..][..line];
        dst[..pad * c].fill(T::zero());
        dst[(pad + g.w) * c..].fill(T::zero());
        let dst = &mut dst[pad * c..][..g.w * c];
        for ch in 0..c {
            let src = &x[ch * g.hw() + ih * g.w..][..g.w];
            let taps = dst[ch..].iter_mut().step_by(c);
            taps.zip(src).for_each(|(d, v)| *d = *v);
        }
    }
}

/// `rows[ch, (image, i)] = images[image, ch, i]` for `gs` images of `m` channels of `len`.
fn rows_from_images<T: CpuFloat>(images: &[T], rows: &mut [T], gs: usize, m: usize, len: usize) {
    for (img, image) in images.chunks_exact(m * len).enumerate() {
        for (ch, src) in image.chunks_exact(len).enumerate() {
            rows[(ch * gs + img) * len..][..len].copy_from_slice(src);
        }
    }
}

/// `images[image, ch, i] = rows[ch, (image, i)]`, writing every element of `images`.
fn images_from_rows<T: CpuFloat>(
    rows: &[T],
    images: &mut [MaybeUninit<T>],
    gs: usize,
    m: usize,
    len: usize,
) {
    for (img, image) in images.chunks_exact_mut(m * len).enumerate() {
        for (ch, dst) in image.chunks_exact_mut(len).enumerate() {
            dst.write_copy_of_slice(&rows[(ch * gs + img) * len..][..len]);
        }
    }
}
