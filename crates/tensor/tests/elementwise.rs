//! Element-wise ops on the CPU backend: relu, add, scale, mul (finite-difference gradient
//! checks and hand-computed values), the in-place forms, sum of squares, and equality of the
//! threaded path with the single-threaded one.

mod common;

use common::{assert_close, check_gradients, cpu, random, t64, vals};
use strata_tensor::DType;

#[test]
fn values_match_hand_computation() {
    // Hand-computed from a = [-2, -0, 0.5, 3], b = [1, 2, -4, 0.25].
    let a = t64(&[-2.0, -0.0, 0.5, 3.0], &[2, 2]);
    let b = t64(&[1.0, 2.0, -4.0, 0.25], &[2, 2]);
    let be = cpu();
    assert_eq!(vals(&be.relu_forward(&a).unwrap()), [0.0, 0.0, 0.5, 3.0]);
    let y = be.relu_forward(&a).unwrap();
    assert_eq!(vals(&be.relu_backward(&b, &y).unwrap()), [0.0, 0.0, -4.0, 0.25]);
    assert_eq!(vals(&be.add(&a, &b).unwrap()), [-1.0, 2.0, -3.5, 3.25]);
    assert_eq!(vals(&be.mul(&a, &b).unwrap()), [-2.0, -0.0, -2.0, 0.75]);
    assert_eq!(vals(&be.scale(&a, -2.0).unwrap()), [4.0, 0.0, -1.0, -6.0]);
    // 4 + 0 + 0.25 + 9
    assert_eq!(be.sum_squares(&a).unwrap(), 13.25);

    let mut d = a.clone();
    be.add_assign(&mut d, &b).unwrap();
    assert_eq!(vals(&d), [-1.0, 2.0, -3.5, 3.25]);
    assert_eq!(vals(&a), [-2.0, -0.0, 0.5, 3.0], "the shared source is copied, not changed");
    be.scale_assign(&mut d, 2.0).unwrap();
    assert_eq!(vals(&d), [-2.0, 4.0, -7.0, 6.5]);
}

#[test]
fn relu_propagates_nan() {
    // As in PyTorch: relu(NaN) is NaN.
    let y = cpu().relu_forward(&t64(&[f64::NAN, -1.0], &[2])).unwrap();
    assert!(vals(&y)[0].is_nan());
}

#[test]
fn gradients_match_finite_differences() {
    // Expected: central differences of L = Σ op(inputs) · r (common::check_gradients).
    let dims = [2, 3, 4, 5];
    let (a, b) = (random(&dims, 51, DType::F64), random(&dims, 52, DType::F64));
    check_gradients(
        "relu",
        std::slice::from_ref(&a),
        |t| cpu().relu_forward(&t[0]).unwrap(),
        |t, dy| {
            let y = cpu().relu_forward(&t[0]).unwrap();
            vec![Some(cpu().relu_backward(dy, &y).unwrap())]
        },
    );
    check_gradients(
        "add",
        &[a.clone(), b.clone()],
        |t| cpu().add(&t[0], &t[1]).unwrap(),
        |_, dy| vec![Some(dy.clone()), Some(dy.clone())],
    );
    check_gradients(
        "scale",
        std::slice::from_ref(&a),
        |t| cpu().scale(&t[0], -1.7).unwrap(),
        |_, dy| vec![Some(cpu().scale(dy, -1.7).unwrap())],
    );
    check_gradients(
        "mul",
        &[a, b],
        |t| cpu().mul(&t[0], &t[1]).unwrap(),
        |t, dy| vec![Some(cpu().mul(dy, &t[1]).unwrap()), Some(cpu().mul(dy, &t[0]).unwrap())],
    );
}

#[test]
fn threaded_results_equal_single_threaded_ones() {
    // Expected: bit-identical results at 1 and 3 threads, on a tensor above the parallel
    // threshold; sum of squares is summed in fixed blocks, so it matches too, and it matches
    // a plain f64 sum to f64 rounding.
    let a = random(&[3, 100_003], 61, DType::F32);
    let b = random(&[3, 100_003], 62, DType::F32);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let be = cpu();
            let mut acc = a.clone();
            be.add_assign(&mut acc, &b).unwrap();
            be.scale_assign(&mut acc, 0.5).unwrap();
            let y = be.relu_forward(&a).unwrap();
            (
                vals(&be.add(&a, &b).unwrap()),
                vals(&be.mul(&a, &b).unwrap()),
                vals(&be.relu_backward(&b, &y).unwrap()),
                vals(&acc),
                be.sum_squares(&a).unwrap(),
            )
        })
    };
    let (one, three) = (run(1), run(3));
    assert_eq!(one, three);
    let want: f64 = vals(&a).iter().map(|v| v * v).sum();
    assert_close("sum_squares", &[one.4], &[want], 1e-12);
    let sum: Vec<f64> = vals(&a).iter().zip(vals(&b)).map(|(x, y)| x + y).collect();
    assert_close("add", &one.0, &sum, 1e-6);
}
