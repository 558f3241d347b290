//! Convolution on the CPU backend: forward and both backward passes against direct f64 loops
//! for the ResNet layer shapes (f32 and f64, batches that span several image groups and
//! threads), and finite-difference gradient checks in f64 on small, odd shapes.

mod common;

use common::{
    assert_close, check_gradients, cpu, naive_conv, naive_conv_grads, out_len, random, tol, vals,
};
use strata_tensor::{Conv2dParams, DType, Tensor};

const S1P1: Conv2dParams = Conv2dParams { stride: 1, padding: 1 };
const S2P1: Conv2dParams = Conv2dParams { stride: 2, padding: 1 };
const S2P0: Conv2dParams = Conv2dParams { stride: 2, padding: 0 };
const S1P0: Conv2dParams = Conv2dParams { stride: 1, padding: 0 };

/// (batch, in channels, map size, out channels, kernel, params): every convolution of the
/// CIFAR ResNets (3x32x32 input) and of the Fashion-MNIST ResNets (1x28x28 input).
const LAYERS: &[(usize, usize, usize, usize, usize, Conv2dParams)] = &[
    (2, 3, 32, 16, 3, S1P1),
    (3, 16, 32, 16, 3, S1P1),
    (3, 16, 32, 32, 3, S2P1),
    (3, 16, 32, 32, 1, S2P0),
    (3, 32, 16, 32, 3, S1P1),
    (3, 32, 16, 64, 3, S2P1),
    (3, 32, 16, 64, 1, S2P0),
    (5, 64, 8, 64, 3, S1P1),
    (2, 1, 28, 16, 3, S1P1),
    (3, 16, 28, 16, 3, S1P1),
    (3, 16, 28, 32, 3, S2P1),
    (3, 16, 28, 32, 1, S2P0),
    (3, 32, 14, 32, 3, S1P1),
    (3, 32, 14, 64, 3, S2P1),
    (3, 32, 14, 64, 1, S2P0),
    (17, 64, 7, 64, 3, S1P1),
];

/// Compare all three passes on one layer with the direct loops.
fn check_layer(dtype: DType, layer: (usize, usize, usize, usize, usize, Conv2dParams)) {
    let (n, c, hw, k, r, prm) = layer;
    let x = random(&[n, c, hw, hw], 1, dtype);
    let w = random(&[k, c, r, r], 2, dtype);
    let (p, q) = (out_len(hw, r, prm), out_len(hw, r, prm));
    let dy = random(&[n, k, p, q], 3, dtype);
    let what = format!("{dtype:?} x [{n}, {c}, {hw}, {hw}] w [{k}, {c}, {r}, {r}] {prm:?}");
    let (be, t) = (cpu(), tol(dtype));

    let y = be.conv2d_forward(&x, &w, prm).unwrap();
    assert_eq!(y.dims(), &[n, k, p, q]);
    assert_close(&format!("forward {what}"), &vals(&y), &naive_conv(&x, &w, prm), t);

    let (dx_want, dw_want) = naive_conv_grads(&x, &w, &dy, prm);
    let dx = be.conv2d_backward_data(&dy, &w, [n, c, hw, hw], prm).unwrap();
    assert_close(&format!("backward data {what}"), &vals(&dx), &dx_want, t);
    let dw = be.conv2d_backward_filter(&dy, &x, [k, c, r, r], prm).unwrap();
    // dw sums n·p·q products per element: scale the f32 tolerance with that count.
    let dw_tol = t * ((n * p * q) as f64 / 64.0).max(1.0);
    assert_close(&format!("backward filter {what}"), &vals(&dw), &dw_want, dw_tol);
}

#[test]
fn all_passes_match_direct_loops_f32() {
    for &layer in LAYERS {
        check_layer(DType::F32, layer);
    }
}

#[test]
fn all_passes_match_direct_loops_f64() {
    for &layer in LAYERS {
        check_layer(DType::F64, layer);
    }
}

#[test]
fn results_do_not_depend_on_scheduling_and_match_across_thread_counts() {
    // Expected: the direct loops, whatever the pool size (1, 2 or 3 threads); and two runs on
    // the same pool are bit-identical.
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            check_layer(DType::F32, (7, 16, 14, 32, 3, S2P1));
            check_layer(DType::F64, (9, 8, 7, 8, 3, S1P1));
            let x = random(&[6, 16, 14, 14], 4, DType::F32);
            let dy = random(&[6, 16, 14, 14], 5, DType::F32);
            let dw = |_: ()| cpu().conv2d_backward_filter(&dy, &x, [16, 16, 3, 3], S1P1).unwrap();
            assert_eq!(vals(&dw(())), vals(&dw(())), "{threads} threads: repeatable");
        });
    }
}

#[test]
fn pointwise_and_unusual_geometries_match_direct_loops() {
    // Expected: the direct loops. 1x1 stride 1 (no unfolding), non-square maps and windows,
    // padding wider than the window's reach, strides 2 and 3 on maps they do not divide, with
    // windows that read phase planes (3x3, 2x2) and windows that do not (1x1, 2x3).
    let cases: &[([usize; 4], [usize; 4], Conv2dParams)] = &[
        ([3, 5, 6, 7], [4, 5, 1, 1], S1P0),
        ([1, 5, 6, 7], [4, 5, 1, 1], S1P0),
        ([2, 3, 5, 9], [4, 3, 3, 2], S1P1),
        ([2, 3, 5, 9], [4, 3, 2, 3], Conv2dParams { stride: 3, padding: 2 }),
        ([2, 2, 4, 4], [3, 2, 3, 3], Conv2dParams { stride: 1, padding: 3 }),
        ([2, 2, 3, 3], [3, 2, 3, 3], S1P0),
        ([2, 3, 9, 7], [4, 3, 3, 3], S2P1),
        ([2, 3, 7, 8], [4, 3, 3, 3], Conv2dParams { stride: 3, padding: 1 }),
        ([1, 2, 5, 5], [2, 2, 2, 2], S2P0),
        ([2, 3, 7, 7], [5, 3, 1, 1], S2P0),
        ([2, 3, 8, 5], [5, 3, 1, 1], Conv2dParams { stride: 3, padding: 1 }),
    ];
    for dtype in [DType::F32, DType::F64] {
        for &(xd, wd, prm) in cases {
            let x = random(&xd, 6, dtype);
            let w = random(&wd, 7, dtype);
            let y = cpu().conv2d_forward(&x, &w, prm).unwrap();
            let dy = random(y.dims(), 8, dtype);
            let (dx_want, dw_want) = naive_conv_grads(&x, &w, &dy, prm);
            let what = format!("{dtype:?} x {xd:?} w {wd:?} {prm:?}");
            assert_close(&what, &vals(&y), &naive_conv(&x, &w, prm), tol(dtype));
            let dx = cpu().conv2d_backward_data(&dy, &w, xd, prm).unwrap();
            assert_close(&format!("dx {what}"), &vals(&dx), &dx_want, tol(dtype));
            let dw = cpu().conv2d_backward_filter(&dy, &x, wd, prm).unwrap();
            assert_close(&format!("dw {what}"), &vals(&dw), &dw_want, tol(dtype));
        }
    }
}

/// Finite-difference check of both gradients of one convolution, in f64.
fn gradcheck(xd: [usize; 4], wd: [usize; 4], prm: Conv2dParams) {
    let inputs = [random(&xd, 11, DType::F64), random(&wd, 12, DType::F64)];
    let name = format!("conv2d x {xd:?} w {wd:?} {prm:?}");
    check_gradients(
        &name,
        &inputs,
        |t| cpu().conv2d_forward(&t[0], &t[1], prm).unwrap(),
        |t, dy| {
            let dx = cpu().conv2d_backward_data(dy, &t[1], xd, prm).unwrap();
            let dw = cpu().conv2d_backward_filter(dy, &t[0], wd, prm).unwrap();
            vec![Some(dx), Some(dw)]
        },
    );
}

#[test]
fn gradients_match_finite_differences() {
    // Expected: central differences of L = Σ conv(x, w) · r (see common::check_gradients).
    gradcheck([2, 3, 7, 6], [4, 3, 3, 3], S1P1);
    gradcheck([2, 3, 7, 6], [4, 3, 3, 3], S2P1);
    gradcheck([2, 3, 7, 6], [4, 3, 3, 3], S1P0);
    gradcheck([2, 3, 7, 6], [4, 3, 3, 3], S2P0);
    gradcheck([2, 3, 7, 6], [5, 3, 1, 1], S1P0);
    gradcheck([2, 3, 7, 6], [5, 3, 1, 1], S2P0);
    gradcheck([2, 3, 5, 8], [2, 3, 1, 1], S1P1);
}

#[test]
fn empty_batch_gives_empty_output_and_zero_filter_gradient() {
    // Expected by definition: no images, no outputs, and dw is an empty sum.
    let x = Tensor::zeros([0, 3, 8, 8], DType::F32, strata_tensor::Device::Cpu).unwrap();
    let w = random(&[4, 3, 3, 3], 1, DType::F32);
    let y = cpu().conv2d_forward(&x, &w, S1P1).unwrap();
    assert_eq!(y.dims(), &[0, 4, 8, 8]);
    let dw = cpu().conv2d_backward_filter(&y, &x, [4, 3, 3, 3], S1P1).unwrap();
    assert_eq!(vals(&dw), vec![0.0; 4 * 27]);
}
