//! Wide-vector code paths of the CPU kernels, chosen at run time: the build targets baseline
//! x86-64 (SSE2), while the flagship machines have AVX-512.
//!
//! [`vectorized`] recompiles a closure's loops for AVX-512; [`transpose_tile_f32`] is the one
//! kernel written with intrinsics, because no compiler turns a 16x16 transpose into shuffles.

/// Channels and pixels per transposition tile, and elements per block of short copies.
pub(crate) const TILE: usize = 16;

/// Run `f` compiled for AVX-512 where the CPU has it, else as is. `f` must be an
/// `#[inline(always)]` closure (and what it calls small or `#[inline(always)]`), so that it is
/// inlined into the function that enables the wider target features.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if avx512_detected() {
        // SAFETY: the CPU supports every target feature that `with_avx512` enables (checked).
        return unsafe { with_avx512(f) };
    }
    f()
}

#[cfg(target_arch = "x86_64")]
fn avx512_detected() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Check that a tile transpose stays inside its slices.
fn check_tile(src_len: usize, stride: usize, dst_len: usize, offsets: &[usize; TILE]) {
    assert!(stride >= TILE && (TILE - 1) * stride + TILE <= src_len, "tile outside src");
    assert!(offsets.iter().all(|&o| o + TILE <= dst_len), "tile row outside dst");
}

/// `dst[offsets[j] + i] = src[i · stride + j]` for `i`, `j` < [`TILE`], element by element.
#[inline(always)]
pub(crate) fn transpose_tile_scalar<T: Copy>(
    src: &[T],
    stride: usize,
    dst: &mut [T],
    offsets: &[usize; TILE],
) {
    check_tile(src.len(), stride, dst.len(), offsets);
    for (j, &off) in offsets.iter().enumerate() {
        for (i, o) in dst[off..off + TILE].iter_mut().enumerate() {
            *o = src[i * stride + j];
        }
    }
}

/// [`transpose_tile_scalar`] for f32, in AVX-512 registers where the CPU has them.
#[inline(always)]
pub(crate) fn transpose_tile_f32(
    src: &[f32],
    stride: usize,
    dst: &mut [f32],
    offsets: &[usize; TILE],
) {
    #[cfg(target_arch = "x86_64")]
    if avx512_detected() {
        check_tile(src.len(), stride, dst.len(), offsets);
        // SAFETY: AVX-512F is present (checked), and check_tile keeps every row that the
        // kernel loads inside `src` and every row it stores inside `dst`.
        unsafe { transpose_16x16_avx512(src.as_ptr(), stride, dst.as_mut_ptr(), offsets) };
        return;
    }
    transpose_tile_scalar(src, stride, dst, offsets)
}

/// 16x16 f32 transpose in four rounds of shuffles: 32-bit and 64-bit interleaves within
/// 128-bit lanes, then two rounds of 128-bit lane shuffles.
///
/// # Safety
///
/// AVX-512F must be available; rows `src + i·stride` (16 floats each, `i` < 16) must be
/// readable and rows `dst + offsets[j]` writable.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_16x16_avx512(
    src: *const f32,
    stride: usize,
    dst: *mut f32,
    offsets: &[usize; TILE],
) {
    use std::arch::x86_64::*;
    // SAFETY (whole body): the caller guarantees the rows read and written are in bounds.
    unsafe {
        let r: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(src.add(i * stride)));
        // a[2i], a[2i+1]: rows 2i and 2i+1 interleaved, low and high halves of each lane.
        let mut a = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            a[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            a[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        // b[4i + j], lane L: column 4L + j of rows 4i..4i+4.
        let mut b = [_mm512_setzero_ps(); 16];
        let (lo, hi) = (
            |x: __m512, y: __m512| {
                _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(x), _mm512_castps_pd(y)))
            },
            |x: __m512, y: __m512| {
                _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(x), _mm512_castps_pd(y)))
            },
        );
        for i in 0..4 {
            b[4 * i] = lo(a[4 * i], a[4 * i + 2]);
            b[4 * i + 1] = hi(a[4 * i], a[4 * i + 2]);
            b[4 * i + 2] = lo(a[4 * i + 1], a[4 * i + 3]);
            b[4 * i + 3] = hi(a[4 * i + 1], a[4 * i + 3]);
        }
        // Output row 4L + j gathers lane L of b[j], b[4 + j], b[8 + j], b[12 + j].
        for j in 0..4 {
            let c0 = _mm512_shuffle_f32x4::<0x44>(b[j], b[4 + j]);
            let c1 = _mm512_shuffle_f32x4::<0x44>(b[8 + j], b[12 + j]);
            let c2 = _mm512_shuffle_f32x4::<0xEE>(b[j], b[4 + j]);
            let c3 = _mm512_shuffle_f32x4::<0xEE>(b[8 + j], b[12 + j]);
            _mm512_storeu_ps(dst.add(offsets[j]), _mm512_shuffle_f32x4::<0x88>(c0, c1));
            _mm512_storeu_ps(dst.add(offsets[4 + j]), _mm512_shuffle_f32x4::<0xDD>(c0, c1));
            _mm512_storeu_ps(dst.add(offsets[8 + j]), _mm512_shuffle_f32x4::<0x88>(c2, c3));
            _mm512_storeu_ps(dst.add(offsets[12 + j]), _mm512_shuffle_f32x4::<0xDD>(c2, c3));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_transposes_match_the_definition() {
        // Expected: dst[offsets[j] + i] == src[i * stride + j], by definition.
        let stride = 21;
        let src: Vec<f32> = (0..16 * stride).map(|v| v as f32).collect();
        let offsets: [usize; TILE] = std::array::from_fn(|j| 3 + 17 * j);
        let mut fast = vec![-1.0f32; 3 + 17 * 16];
        let mut slow = fast.clone();
        transpose_tile_f32(&src, stride, &mut fast, &offsets);
        transpose_tile_scalar(&src, stride, &mut slow, &offsets);
        assert_eq!(fast, slow);
        for (j, &o) in offsets.iter().enumerate() {
            for i in 0..TILE {
                assert_eq!(fast[o + i], src[i * stride + j]);
            }
        }
    }
}
