//! Pooling on the CPU backend: global average and max pooling, hand-computed values and
//! finite-difference gradient checks.

mod common;

use common::{check_gradients, cpu, random, t64, vals};
use strata_tensor::{DType, Pool2dParams};

#[test]
fn global_average_pool_values() {
    // Hand-computed: the means of [1, 2, 3, 4] and [-1, 0, 5, 0] are 2.5 and 1.
    let x = t64(&[1.0, 2.0, 3.0, 4.0, -1.0, 0.0, 5.0, 0.0], &[1, 2, 2, 2]);
    let y = cpu().global_avg_pool_forward(&x).unwrap();
    assert_eq!(y.dims(), &[1, 2]);
    assert_eq!(vals(&y), [2.5, 1.0]);
    let dx = cpu().global_avg_pool_backward(&t64(&[4.0, -8.0], &[1, 2]), [1, 2, 2, 2]).unwrap();
    assert_eq!(vals(&dx), [1.0, 1.0, 1.0, 1.0, -2.0, -2.0, -2.0, -2.0]);
}

#[test]
fn max_pool_values_and_argmax() {
    // Hand-computed on a 4x4 plane with 2x2 windows, stride 2: the maxima are 6 (index 5),
    // 8 (7), 14 (13) and 16 (15); with a 3x3 window, stride 1, padding 1, the top-left output
    // sees rows 0-1 and columns 0-1, whose maximum is 6 at index 5.
    let x: Vec<f64> = (1..=16).map(f64::from).collect();
    let x = t64(&x, &[1, 1, 4, 4]);
    let p = Pool2dParams { kernel: 2, stride: 2, padding: 0 };
    let (y, argmax) = cpu().max_pool2d_forward(&x, p).unwrap();
    assert_eq!(vals(&y), [6.0, 8.0, 14.0, 16.0]);
    assert_eq!(argmax, [5, 7, 13, 15]);
    let dx = cpu().max_pool2d_backward(
        &t64(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2]),
        &argmax,
        [1, 1, 4, 4],
    );
    let mut want = vec![0.0; 16];
    (want[5], want[7], want[13], want[15]) = (1.0, 2.0, 3.0, 4.0);
    assert_eq!(vals(&dx.unwrap()), want);

    let p = Pool2dParams { kernel: 3, stride: 1, padding: 1 };
    let (y, argmax) = cpu().max_pool2d_forward(&x, p).unwrap();
    assert_eq!(y.dims(), &[1, 1, 4, 4]);
    assert_eq!((vals(&y)[0], argmax[0]), (6.0, 5));
}

#[test]
fn gradients_match_finite_differences() {
    // Expected: central differences of L = Σ pool(x) · r (common::check_gradients).
    let x = random(&[2, 3, 5, 6], 71, DType::F64);
    check_gradients(
        "global_avg_pool",
        std::slice::from_ref(&x),
        |t| cpu().global_avg_pool_forward(&t[0]).unwrap(),
        |_, dy| vec![Some(cpu().global_avg_pool_backward(dy, [2, 3, 5, 6]).unwrap())],
    );
    for p in [
        Pool2dParams { kernel: 2, stride: 2, padding: 0 },
        Pool2dParams { kernel: 3, stride: 2, padding: 1 },
    ] {
        check_gradients(
            &format!("max_pool2d {p:?}"),
            std::slice::from_ref(&x),
            |t| cpu().max_pool2d_forward(&t[0], p).unwrap().0,
            |t, dy| {
                let (_, argmax) = cpu().max_pool2d_forward(&t[0], p).unwrap();
                vec![Some(cpu().max_pool2d_backward(dy, &argmax, [2, 3, 5, 6]).unwrap())]
            },
        );
    }
}
