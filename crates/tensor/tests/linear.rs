//! The linear layer on the CPU backend: a hand-computed product and finite-difference
//! gradient checks with and without bias.

mod common;

use common::{assert_close, check_gradients, cpu, random, t64, tol, vals};
use strata_tensor::DType;

#[test]
fn forward_matches_hand_computation() {
    // Hand-computed: x = [[1, 2, 3]], w = [[1, 0, -1], [2, 1, 0]], b = [0.5, -1]:
    // y = [1 - 3 + 0.5, 2 + 2 - 1] = [-1.5, 3].
    for dtype in [DType::F32, DType::F64] {
        let x = t64(&[1.0, 2.0, 3.0], &[1, 3]).to_dtype(dtype).unwrap();
        let w = t64(&[1.0, 0.0, -1.0, 2.0, 1.0, 0.0], &[2, 3]).to_dtype(dtype).unwrap();
        let b = t64(&[0.5, -1.0], &[2]).to_dtype(dtype).unwrap();
        let y = cpu().linear_forward(&x, &w, Some(&b)).unwrap();
        assert_close("linear", &vals(&y), &[-1.5, 3.0], tol(dtype));
        let y = cpu().linear_forward(&x, &w, None).unwrap();
        assert_close("linear without bias", &vals(&y), &[-2.0, 4.0], tol(dtype));
    }
}

#[test]
fn gradients_match_finite_differences() {
    // Expected: central differences of L = Σ linear(x, w, b) · r (common::check_gradients).
    let (x, w, b) = (
        random(&[4, 7], 81, DType::F64),
        random(&[5, 7], 82, DType::F64),
        random(&[5], 83, DType::F64),
    );
    check_gradients(
        "linear with bias",
        &[x.clone(), w.clone(), b],
        |t| cpu().linear_forward(&t[0], &t[1], Some(&t[2])).unwrap(),
        |t, dy| {
            let g = cpu().linear_backward(dy, &t[0], &t[1], true).unwrap();
            vec![Some(g.dx), Some(g.dw), g.db]
        },
    );
    check_gradients(
        "linear without bias",
        &[x, w],
        |t| cpu().linear_forward(&t[0], &t[1], None).unwrap(),
        |t, dy| {
            let g = cpu().linear_backward(dy, &t[0], &t[1], false).unwrap();
            assert!(g.db.is_none());
            vec![Some(g.dx), Some(g.dw)]
        },
    );
}
