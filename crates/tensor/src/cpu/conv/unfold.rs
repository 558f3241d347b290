//! The data movement of the convolution passes: im2col and its transpose col2im, im2row, the
//! padded NHWC copy, and the regrouping of per-image planes into matrix rows.
//!
//! Every window tap is handled as a shift of a plane: output `(oh, ow)` reads
//! `(oh·st + dr, ow·st + dc)`. For stride 1 the plane is the input plane itself. For larger
//! strides with more taps than phases (3x3 stride 2), the input is first split into `st²` phase
//! planes (rows and columns by remainder modulo `st`), so that each tap reads one of them with
//! stride 1; 1x1 strided windows read the input plane directly. When output rows are as wide
//! as the plane and the stride is 1, a shifted copy of the whole plane is one contiguous copy,
//! fixed up at the wrapped columns.

use super::ConvGeom;
use crate::cpu::{vectorized, zero_init, CpuFloat, TILE};
use std::mem::MaybeUninit;
use std::ops::Range;

/// One window tap as a shift over a plane of `h x w`: output `(oh, ow)` of a `p x q` output
/// reads `(oh·st + dr, ow·st + dc)`, zero outside the plane.
#[derive(Debug, Clone, Copy)]
struct Shift {
    h: usize,
    w: usize,
    p: usize,
    q: usize,
    st: usize,
    dr: isize,
    dc: isize,
}

impl Shift {
    /// Outputs `o < out` whose input `o·st + d` lies in `0..len`.
    fn valid(&self, d: isize, len: usize, out: usize) -> Range<usize> {
        let st = self.st as isize;
        let lo = if d < 0 { (-d + st - 1) / st } else { 0 };
        let last = len as isize - 1 - d;
        let hi = if last < 0 { 0 } else { ((last / st + 1) as usize).min(out) };
        (lo as usize).min(hi)..hi
    }

    fn rows(&self) -> Range<usize> {
        self.valid(self.dr, self.h, self.p)
    }

    fn cols(&self) -> Range<usize> {
        self.valid(self.dc, self.w, self.q)
    }

    /// For stride 1 and output rows as wide as the plane's, output flat index `i` reads plane
    /// flat index `i + off`: that offset.
    fn flat_offset(&self) -> Option<isize> {
        (self.st == 1 && self.q == self.w).then(|| self.dr * self.w as isize + self.dc)
    }

    /// Plane flat index read by output `(oh, ow)` (which must be valid).
    fn source(&self, oh: usize, ow: usize) -> usize {
        let (ih, iw) = ((oh * self.st) as isize + self.dr, (ow * self.st) as isize + self.dc);
        (ih * self.w as isize + iw) as usize
    }

    /// Output flat indices of the valid rows `rows` whose input `i + off` lies in the plane.
    fn flat_span(&self, rows: &Range<usize>, off: isize) -> Range<usize> {
        let (start, end) = ((rows.start * self.q) as isize, (rows.end * self.q) as isize);
        let lo = start.max(-off);
        let hi = end.min((self.h * self.w) as isize - off);
        if hi <= lo {
            return rows.start * self.q..rows.start * self.q;
        }
        lo as usize..hi as usize
    }
}

impl ConvGeom {
    /// Whether taps read phase planes: strided windows with at least as many taps as phases.
    fn uses_phases(&self) -> bool {
        self.stride > 1 && self.r * self.s >= self.stride * self.stride
    }

    /// Rows and columns of each phase plane: the input split by remainder modulo the stride,
    /// zero-extended to a common size.
    fn phase_dims(&self) -> (usize, usize) {
        (self.h.div_ceil(self.stride), self.w.div_ceil(self.stride))
    }

    /// Elements of the phase planes of one input plane (0 where there are none).
    pub(super) fn phases_per_plane(&self) -> usize {
        let (hs, ws) = self.phase_dims();
        if self.uses_phases() {
            self.stride * self.stride * hs * ws
        } else {
            0
        }
    }

    /// Whether some tap reads phase plane `a · stride + b`.
    fn phase_used(&self, phase: usize) -> bool {
        (0..self.r).any(|r| (0..self.s).any(|s| self.shift(r, s).0 == phase))
    }

    /// Every tap `(r, s)` of the window, in row-major order, with its ranges worked out.
    fn taps(&self) -> Vec<Tap> {
        let taps = (0..self.r).flat_map(|r| (0..self.s).map(move |s| (r, s)));
        taps.map(|(r, s)| Tap::new(self.shift(r, s))).collect()
    }

    /// Tap `(r, s)` as a shift of phase plane number `a · stride + b`, or (phase 0) of the
    /// input plane where there are no phases.
    fn shift(&self, r: usize, s: usize) -> (usize, Shift) {
        let (u, v) = (r as isize - self.pad as isize, s as isize - self.pad as isize);
        let (phase, st, (h, w), dr, dc) = if self.uses_phases() {
            let st = self.stride as isize;
            let phase = u.rem_euclid(st) as usize * self.stride + v.rem_euclid(st) as usize;
            (phase, 1, self.phase_dims(), u.div_euclid(st), v.div_euclid(st))
        } else {
            (0, self.stride, (self.h, self.w), u, v)
        };
        let (p, q) = (self.p, self.q);
        (phase, Shift { h, w, p, q, st, dr, dc })
    }
}

/// A tap's shift with its valid output rows and columns and, for the flat case, the offset
/// and output span of its single contiguous copy.
struct Tap {
    phase: usize,
    sh: Shift,
    rows: Range<usize>,
    cols: Range<usize>,
    flat: Option<(isize, Range<usize>)>,
}

impl Tap {
    fn new((phase, sh): (usize, Shift)) -> Self {
        let (rows, cols) = (sh.rows(), sh.cols());
        let flat = sh.flat_offset().map(|off| (off, sh.flat_span(&rows, off)));
        Tap { phase, sh, rows, cols, flat }
    }
}

/// Unfold `gs` images of `x` into `col[(c, r, s), (image, p, q)]`, zeros where the window
/// reaches into the padding. `phases` holds `gs · c ·` [`ConvGeom::phases_per_plane`]
/// elements of scratch.
pub(super) fn im2col<T: CpuFloat>(
    x: &[T],
    gs: usize,
    g: &ConvGeom,
    col: &mut [T],
    phases: &mut [T],
) {
    let (pq, hw, cols, per) = (g.pq(), g.hw(), gs * g.pq(), g.phases_per_plane());
    let (hs, ws) = g.phase_dims();
    vectorized(
        #[inline(always)]
        || {
            if g.uses_phases() {
                let used: Vec<bool> = (0..g.stride * g.stride).map(|ph| g.phase_used(ph)).collect();
                for (plane, out) in x.chunks_exact(hw).zip(phases.chunks_exact_mut(per)) {
                    split_phases(plane, g, out, &used);
                }
            }
            let taps = g.taps();
            for ch in 0..g.c {
                for (t, tap) in taps.iter().enumerate() {
                    let row = &mut col[(ch * taps.len() + t) * cols..][..cols];
                    for (img, dst) in row.chunks_exact_mut(pq).enumerate() {
                        let plane = if !g.uses_phases() {
                            &x[(img * g.c + ch) * hw..][..hw]
                        } else {
                            &phases[(img * g.c + ch) * per + tap.phase * hs * ws..][..hs * ws]
                        };
                        unfold(plane, dst, tap);
                    }
                }
            }
        },
    )
}

/// Fold `dcol[(c, r, s), (image, p, q)]` back onto the input planes of `gs` images, writing
/// every element of `dx`. Entries of `dcol` whose tap falls into the padding are zeroed on
/// the way. `phases` holds [`ConvGeom::phases_per_plane`] elements of scratch.
pub(super) fn col2im<T: CpuFloat>(
    dcol: &mut [T],
    gs: usize,
    g: &ConvGeom,
    dx: &mut [MaybeUninit<T>],
    phases: &mut [T],
) {
    let (pq, hw, cols) = (g.pq(), g.hw(), gs * g.pq());
    let (hs, ws) = g.phase_dims();
    let taps = g.taps();
    vectorized(
        #[inline(always)]
        || {
            for (plane_idx, plane) in dx.chunks_exact_mut(hw).enumerate() {
                let (img, ch) = (plane_idx / g.c, plane_idx % g.c);
                let plane = zero_init(plane);
                phases.fill(T::zero());
                for (t, tap) in taps.iter().enumerate() {
                    let src = &mut dcol[(ch * taps.len() + t) * cols + img * pq..][..pq];
                    if !g.uses_phases() {
                        fold(src, plane, tap);
                    } else {
                        fold(src, &mut phases[tap.phase * hs * ws..][..hs * ws], tap);
                    }
                }
                if g.uses_phases() {
                    merge_phases(phases, g, plane);
                }
            }
        },
    )
}

/// Split one input plane into its `stride²` phase planes:
/// `out[a·st + b][i][j] = plane[i·st + a][j·st + b]`, zero beyond the plane.
#[inline(always)]
fn split_phases<T: CpuFloat>(plane: &[T], g: &ConvGeom, out: &mut [T], used: &[bool]) {
    let (st, (hs, ws)) = (g.stride, g.phase_dims());
    for a in 0..st {
        for i in 0..hs {
            let ih = i * st + a;
            for b in (0..st).filter(|&b| used[a * st + b]) {
                let dst = &mut out[((a * st + b) * hs + i) * ws..][..ws];
                if ih >= g.h {
                    dst.fill(T::zero());
                    continue;
                }
                let row = &plane[ih * g.w..][..g.w];
                let n = (g.w - b.min(g.w)).div_ceil(st);
                gather_strided(&row[b.min(g.w)..], st, &mut dst[..n]);
                zero_short(&mut dst[n..]);
            }
        }
    }
}

/// The transpose of [`split_phases`]: `plane[i·st + a][j·st + b] = phases[a·st + b][i][j]`.
#[inline(always)]
fn merge_phases<T: CpuFloat>(phases: &[T], g: &ConvGeom, plane: &mut [T]) {
    let (st, (hs, ws)) = (g.stride, g.phase_dims());
    for (ih, row) in plane.chunks_exact_mut(g.w).enumerate() {
        let (a, i) = (ih % st, ih / st);
        for b in 0..st.min(g.w) {
            let src = &phases[((a * st + b) * hs + i) * ws..][..ws];
            scatter_strided(src, st, &mut row[b..]);
        }
    }
}

/// Elements per block in the short-row loops below. Rows here are often 7 to 32 elements,
/// too short for the compiler's vectorised loops (which want several vectors' worth before
/// they start); fixed-size blocks are vectorised whole, and only the remainder is scalar.
const BLOCK: usize = 8;

/// `out[k] = src[k · st]` for every `k < out.len()`.
#[inline(always)]
fn gather_strided<T: CpuFloat>(src: &[T], st: usize, out: &mut [T]) {
    if st != 2 {
        out.iter_mut().zip(src.iter().step_by(st)).for_each(|(o, v)| *o = *v);
        return;
    }
    let blocks = (out.len() / BLOCK).min(src.len() / (2 * BLOCK));
    let (head, tail) = out.split_at_mut(blocks * BLOCK);
    for (o, s) in head.chunks_exact_mut(BLOCK).zip(src.chunks_exact(2 * BLOCK)) {
        for k in 0..BLOCK {
            o[k] = s[2 * k];
        }
    }
    let src = &src[2 * blocks * BLOCK..];
    tail.iter_mut().enumerate().for_each(|(k, o)| *o = src[2 * k]);
}

/// `out[k · st] = src[k]` for every `k · st < out.len()`.
#[inline(always)]
fn scatter_strided<T: CpuFloat>(src: &[T], st: usize, out: &mut [T]) {
    if st != 2 {
        out.iter_mut().step_by(st).zip(src).for_each(|(o, v)| *o = *v);
        return;
    }
    let n = out.len().div_ceil(2).min(src.len());
    let blocks = (n / BLOCK).min(out.len() / (2 * BLOCK));
    for (o, s) in out.chunks_exact_mut(2 * BLOCK).zip(src.chunks_exact(BLOCK)).take(blocks) {
        for k in 0..BLOCK {
            o[2 * k] = s[k];
        }
    }
    for k in blocks * BLOCK..n {
        out[2 * k] = src[k];
    }
}

/// `out[k · st] += src[k]` for every `k < src.len()`.
#[inline(always)]
fn add_strided<T: CpuFloat>(src: &[T], st: usize, out: &mut [T]) {
    if st != 2 {
        out.iter_mut().step_by(st).zip(src).for_each(|(o, v)| *o += *v);
        return;
    }
    let blocks = (src.len() / BLOCK).min(out.len() / (2 * BLOCK));
    for (o, s) in out.chunks_exact_mut(2 * BLOCK).zip(src.chunks_exact(BLOCK)).take(blocks) {
        for k in 0..BLOCK {
            o[2 * k] += s[k];
        }
    }
    for k in blocks * BLOCK..src.len() {
        out[2 * k] += src[k];
    }
}

/// `out[oh, ow] = plane[oh·st + dr, ow·st + dc]`, zero outside the plane.
#[inline(always)]
fn unfold<T: CpuFloat>(plane: &[T], out: &mut [T], tap: &Tap) {
    let (sh, rows, cols) = (&tap.sh, tap.rows.clone(), &tap.cols);
    if let Some((off, span)) = &tap.flat {
        // One shifted copy of the whole plane; the columns that wrapped are zeroed after.
        zero_short(&mut out[..span.start]);
        zero_short(&mut out[span.end..]);
        let first = (span.start as isize + off) as usize;
        out[span.clone()].copy_from_slice(&plane[first..][..span.len()]);
        zero_wrapped(out, sh.q, rows, cols);
        return;
    }
    zero_short(&mut out[..rows.start * sh.q]);
    zero_short(&mut out[rows.end * sh.q..]);
    for oh in rows {
        let line = &mut out[oh * sh.q..][..sh.q];
        zero_short(&mut line[..cols.start]);
        zero_short(&mut line[cols.end..]);
        let (first, line) = (sh.source(oh, cols.start), &mut line[cols.clone()]);
        if sh.st == 1 {
            line.copy_from_slice(&plane[first..][..line.len()]);
        } else {
            gather_strided(&plane[first..], sh.st, line);
        }
    }
}

/// `plane[oh·st + dr, ow·st + dc] += src[oh, ow]` where inside the plane (the transpose of
/// [`unfold`]).
#[inline(always)]
fn fold<T: CpuFloat>(src: &mut [T], plane: &mut [T], tap: &Tap) {
    let (sh, rows, cols) = (&tap.sh, tap.rows.clone(), &tap.cols);
    if let Some((off, span)) = &tap.flat {
        // One shifted add over the whole plane, after zeroing the entries that would wrap
        // onto the neighbouring row.
        zero_wrapped(src, sh.q, rows, cols);
        let first = (span.start as isize + off) as usize;
        add_to(&mut plane[first..][..span.len()], &src[span.clone()]);
        return;
    }
    for oh in rows {
        let line = &src[oh * sh.q..][..sh.q][cols.clone()];
        let first = sh.source(oh, cols.start);
        if sh.st == 1 {
            add_to(&mut plane[first..][..line.len()], line);
        } else {
            add_strided(line, sh.st, &mut plane[first..]);
        }
    }
}

/// Zero the entries of the rows `rows` (of `q` columns) whose column lies outside `cols_ok`.
#[inline(always)]
fn zero_wrapped<T: CpuFloat>(out: &mut [T], q: usize, rows: Range<usize>, cols_ok: &Range<usize>) {
    let (left, right) = (cols_ok.start, q - cols_ok.end);
    let lines = out[rows.start * q..rows.end * q].chunks_exact_mut(q);
    match (left, right) {
        (0, 0) => {}
        // The common 3x3, pad-1 taps: one element per line, stored without a memset call.
        (1, 0) => lines.for_each(|line| line[0] = T::zero()),
        (0, 1) => lines.for_each(|line| line[q - 1] = T::zero()),
        _ => lines.for_each(|line| {
            zero_short(&mut line[..left]);
            zero_short(&mut line[q - right..]);
        }),
    }
}

/// Lay the images of `x` out as `rows[(image, p, q), (r, s, c)]` for backward filter, via a
/// zero-padded NHWC copy in `xpad` so that each row is `r` contiguous runs of `s · c` values.
/// For 1x1 windows, via im2col (`phases` as there) and a transpose instead.
pub(super) fn im2row<T: CpuFloat>(
    x: &[T],
    g: &ConvGeom,
    xpad: &mut [T],
    rows: &mut [T],
    phases: &mut [T],
) {
    let gs = x.len() / (g.c * g.hw());
    if g.r == 1 && g.s == 1 && g.pad == 0 {
        // A 1x1 window reads one pixel per output: subsample first, then transpose only the
        // pixels that are used.
        let cols = gs * g.pq();
        im2col(x, gs, g, &mut xpad[..g.c * cols], phases);
        transpose(&xpad[..g.c * cols], g.c, cols, rows);
        return;
    }
    let (hp, wp, c) = (g.h + 2 * g.pad, g.w + 2 * g.pad, g.c);
    let padded = hp * wp * c;
    for (img, xp) in xpad.chunks_exact_mut(padded).enumerate() {
        pad_to_nhwc(&x[img * c * g.hw()..][..c * g.hw()], g, xp);
    }
    let (run, kc, st) = (g.s * c, g.kc(), g.stride);
    vectorized(
        #[inline(always)]
        || {
            for (pix, row) in rows.chunks_exact_mut(kc).enumerate() {
                let (img, oh, ow) = (pix / g.pq(), pix % g.pq() / g.q, pix % g.q);
                let xp = &xpad[img * padded..][..padded];
                for (r, out) in row.chunks_exact_mut(run).enumerate() {
                    copy_short(out, &xp[((oh * st + r) * wp + ow * st) * c..][..run]);
                }
            }
        },
    )
}

/// Copy one image `[c, h, w]` into `xp` as `[h + 2 pad, w + 2 pad, c]`, zero in the border.
/// Full 16x16 (channel, pixel) tiles are transposed in registers, the rest element-wise.
pub(super) fn pad_to_nhwc<T: CpuFloat>(x: &[T], g: &ConvGeom, xp: &mut [T]) {
    let (wp, c, pad, hw) = (g.w + 2 * g.pad, g.c, g.pad, g.hw());
    let line = wp * c;
    xp[..pad * line].fill(T::zero());
    xp[(pad + g.h) * line..].fill(T::zero());
    for ih in 0..g.h {
        let dst = &mut xp[(pad + ih) * line..][..line];
        dst[..pad * c].fill(T::zero());
        dst[(pad + g.w) * c..].fill(T::zero());
    }

    // Offset in `xp` of pixel `p` (flat index into the unpadded plane).
    let at = |p: usize| ((p / g.w + pad) * wp + p % g.w + pad) * c;
    let (tiled_c, tiled_p) = (c - c % TILE, hw - hw % TILE);
    vectorized(
        #[inline(always)]
        || {
            for c0 in (0..tiled_c).step_by(TILE) {
                for p0 in (0..tiled_p).step_by(TILE) {
                    let mut offsets = [0; TILE];
                    for (j, off) in offsets.iter_mut().enumerate() {
                        *off = at(p0 + j) + c0;
                    }
                    T::transpose_tile(&x[c0 * hw + p0..], hw, xp, &offsets);
                }
            }
            for ch in 0..c {
                let first = if ch < tiled_c { tiled_p } else { 0 };
                for p in first..hw {
                    xp[at(p) + ch] = x[ch * hw + p];
                }
            }
        },
    )
}

/// `dst[j · rows + i] = src[i · cols + j]`: the transpose of a row-major `rows x cols` matrix.
fn transpose<T: CpuFloat>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    let (tiled_r, tiled_c) = (rows - rows % TILE, cols - cols % TILE);
    vectorized(
        #[inline(always)]
        || {
            for i0 in (0..tiled_r).step_by(TILE) {
                for j0 in (0..tiled_c).step_by(TILE) {
                    let mut offsets = [0; TILE];
                    for (j, off) in offsets.iter_mut().enumerate() {
                        *off = (j0 + j) * rows + i0;
                    }
                    T::transpose_tile(&src[i0 * cols + j0..], cols, dst, &offsets);
                }
            }
            for i in 0..rows {
                let first = if i < tiled_r { tiled_c } else { 0 };
                for j in first..cols {
                    dst[j * rows + i] = src[i * cols + j];
                }
            }
        },
    )
}

/// `out[ch, (image·hp + oh)·wp + ow] = dy[image, ch, oh, ow]` for the `depth` positions of
/// `gs` padded planes, zero at positions outside the output.
pub(super) fn spread_over_padded<T: CpuFloat>(
    dy: &[T],
    out: &mut [T],
    gs: usize,
    g: &ConvGeom,
    depth: usize,
) {
    let (wp, pq, m) = (g.w + 2 * g.pad, g.pq(), g.k);
    let plane = (g.h + 2 * g.pad) * wp;
    out.fill(T::zero());
    vectorized(
        #[inline(always)]
        || {
            for (ch, line) in out.chunks_exact_mut(depth).enumerate() {
                for img in 0..gs {
                    let src = &dy[(img * m + ch) * pq..][..pq];
                    for (oh, row) in src.chunks_exact(g.q).enumerate() {
                        copy_short(&mut line[img * plane + oh * wp..][..g.q], row);
                    }
                }
            }
        },
    )
}

/// `rows[ch, (image, i)] = images[image, ch, i]` for `gs` images of `m` channels of `len`.
pub(super) fn rows_from_images<T: CpuFloat>(
    images: &[T],
    rows: &mut [T],
    gs: usize,
    m: usize,
    len: usize,
) {
    for (img, image) in images.chunks_exact(m * len).enumerate() {
        for (ch, src) in image.chunks_exact(len).enumerate() {
            rows[(ch * gs + img) * len..][..len].copy_from_slice(src);
        }
    }
}

/// `images[image, ch, i] = rows[ch, (image, i)]`, writing every element of `images`.
pub(super) fn images_from_rows<T: CpuFloat>(
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

/// `dst = src` for short runs: blocks of fixed size compile to plain vector moves, where
/// `copy_from_slice` would call memcpy once per run.
#[inline(always)]
fn copy_short<T: CpuFloat>(dst: &mut [T], src: &[T]) {
    let (mut d, mut s) = (dst.chunks_exact_mut(TILE), src.chunks_exact(TILE));
    for (a, b) in (&mut d).zip(&mut s) {
        let b: &[T; TILE] = b.try_into().expect("chunks_exact yields TILE elements");
        a.copy_from_slice(b);
    }
    d.into_remainder().copy_from_slice(s.remainder());
}

/// Zero `s`, which is usually empty or a padding's width: without a call to memset, which
/// costs more than a few stores.
#[inline(always)]
fn zero_short<T: CpuFloat>(s: &mut [T]) {
    match s {
        [] => {}
        [a] => *a = T::zero(),
        [a, b] => (*a, *b) = (T::zero(), T::zero()),
        _ => s.fill(T::zero()),
    }
}

/// `dst += src`, element-wise.
#[inline(always)]
fn add_to<T: CpuFloat>(dst: &mut [T], src: &[T]) {
    let (mut d, mut s) = (dst.chunks_exact_mut(BLOCK), src.chunks_exact(BLOCK));
    for (a, b) in (&mut d).zip(&mut s) {
        for k in 0..BLOCK {
            a[k] += b[k];
        }
    }
    d.into_remainder().iter_mut().zip(s.remainder()).for_each(|(a, b)| *a += *b);
}
