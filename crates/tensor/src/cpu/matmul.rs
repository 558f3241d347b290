//! Strided matrix views and the one checked wrapper around `gemm::gemm` that every CPU kernel
//! uses for its matrix products.

use super::CpuFloat;
use std::marker::PhantomData;
use std::mem::MaybeUninit;

/// A read-only strided matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// `rows x cols` stored row by row (`data[i * cols + j]`).
    pub(crate) fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        MatRef { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose of a row-major `cols x rows` matrix: `(i, j)` is `data[j * rows + i]`.
    pub(crate) fn transposed(data: &'a [T], rows: usize, cols: usize) -> Self {
        MatRef { data, rows, cols, rs: 1, cs: rows }
    }

    /// `rows x cols` with row stride `rs` and column stride `cs`. Rows may overlap (a row
    /// stride below `cols · cs`): products only read operands.
    pub(crate) fn strided(data: &'a [T], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        MatRef { data, rows, cols, rs, cs }
    }

    fn fits(&self) -> bool {
        fits(self.data.len(), self.rows, self.cols, self.rs, self.cs)
    }
}

/// The destination of a product: a strided view of either initialised memory (which may be
/// accumulated into) or uninitialised memory (which is only ever written).
pub(crate) struct MatMut<'a, T> {
    ptr: *mut T,
    len: usize,
    initialised: bool,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

impl<'a, T> MatMut<'a, T> {
    /// `rows x cols` row-major over initialised memory.
    pub(crate) fn row_major(data: &'a mut [T], rows: usize, cols: usize) -> Self {
        let (ptr, len) = (data.as_mut_ptr(), data.len());
        MatMut { ptr, len, initialised: true, rows, cols, rs: cols, cs: 1, _borrow: PhantomData }
    }

    /// `rows x cols` with row stride `rs` (at least `cols`) over initialised memory: a block
    /// of columns of a wider row-major matrix.
    pub(crate) fn row_block(data: &'a mut [T], rows: usize, cols: usize, rs: usize) -> Self {
        assert!(rs >= cols, "row_block: rows of {cols} with stride {rs} would overlap");
        let (ptr, len) = (data.as_mut_ptr(), data.len());
        MatMut { ptr, len, initialised: true, rows, cols, rs, cs: 1, _borrow: PhantomData }
    }

    /// `rows x cols` row-major over memory that the product will initialise.
    pub(crate) fn row_major_uninit(
        data: &'a mut [MaybeUninit<T>],
        rows: usize,
        cols: usize,
    ) -> Self {
        let (ptr, len) = (data.as_mut_ptr().cast::<T>(), data.len());
        MatMut { ptr, len, initialised: false, rows, cols, rs: cols, cs: 1, _borrow: PhantomData }
    }
}

/// True if every index `i * rs + j * cs` of a `rows x cols` view is below `len`.
fn fits(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let last = (rows - 1).checked_mul(rs).zip((cols - 1).checked_mul(cs));
    matches!(last, Some((a, b)) if a.checked_add(b).is_some_and(|end| end < len))
}

/// `dst = lhs * rhs`, or `dst += lhs * rhs` when `accumulate`, on `threads` threads (1: the
/// calling thread only, no rayon involvement).
///
/// # Panics
///
/// On operands whose dimensions do not chain or whose views overrun their storage, and on
/// accumulation into uninitialised memory. These are bugs in the calling kernel, which validates
/// user shapes before it gets here.
pub(crate) fn matmul<T: CpuFloat>(
    dst: MatMut<'_, T>,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    accumulate: bool,
    threads: usize,
) {
    assert!(
        lhs.rows == dst.rows && rhs.cols == dst.cols && lhs.cols == rhs.rows,
        "matmul: [{}x{}] = [{}x{}] * [{}x{}]",
        dst.rows,
        dst.cols,
        lhs.rows,
        lhs.cols,
        rhs.rows,
        rhs.cols
    );
    assert!(lhs.fits() && rhs.fits(), "matmul: operand view overruns its storage");
    assert!(fits(dst.len, dst.rows, dst.cols, dst.rs, dst.cs), "matmul: dst view overruns");
    assert!(dst.initialised || !accumulate, "matmul: accumulating into uninitialised memory");
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    let parallelism =
        if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the asserts above keep every index of the three views inside its borrow; `dst` is
    // borrowed mutably for 'a and so aliases neither operand; `T` is f32 or f64 (CpuFloat is
    // sealed), which gemm supports; with `read_dst = false` gemm only writes `dst`.
    unsafe {
        gemm::gemm(
            dst.rows,
            dst.cols,
            lhs.cols,
            dst.ptr,
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}
