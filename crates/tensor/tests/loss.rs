//! Softmax cross-entropy on the CPU backend: hand-derived values, numerical stability at large
//! logits, and a finite-difference gradient check.

mod common;

use common::{assert_close, check_gradients, cpu, random, t64, tol, vals};
use strata_tensor::DType;

#[test]
fn uniform_logits_give_ln_k() {
    // Derivation: equal logits give p = 1/K for every class, so the loss is -ln(1/K) = ln K
    // whatever the labels, and dlogits = (1/K - onehot) / N.
    for dtype in [DType::F32, DType::F64] {
        let logits = t64(&[0.3; 8], &[2, 4]).to_dtype(dtype).unwrap();
        let (loss, probs) = cpu().softmax_cross_entropy_forward(&logits, &[1, 3]).unwrap();
        assert_close("loss", &vals(&loss), &[4f64.ln()], tol(dtype));
        assert_close("probs", &vals(&probs), &[0.25; 8], tol(dtype));
        let d = cpu().softmax_cross_entropy_backward(&probs, &[1, 3], 1.0).unwrap();
        let want = [0.125, -0.375, 0.125, 0.125, 0.125, 0.125, 0.125, -0.375];
        assert_close("dlogits", &vals(&d), &want, tol(dtype));
    }
}

#[test]
fn large_logits_are_stable() {
    // Derivation: logits [1000, 0] with label 0 give loss ln(1 + e^-1000) = 0 (to f64), and
    // with label 1 give 1000 + ln(1 + e^-1000) = 1000; the mean is 500. Logits [1000, 1000 +
    // ln 3] give p = [1/4, 3/4].
    for dtype in [DType::F32, DType::F64] {
        let logits = t64(&[1000.0, 0.0, 1000.0, 0.0], &[2, 2]).to_dtype(dtype).unwrap();
        let (loss, probs) = cpu().softmax_cross_entropy_forward(&logits, &[0, 1]).unwrap();
        assert_close("loss", &vals(&loss), &[500.0], tol(dtype));
        assert_close("probs", &vals(&probs), &[1.0, 0.0, 1.0, 0.0], tol(dtype));
        let logits = t64(&[1000.0, 1000.0 + 3f64.ln()], &[1, 2]).to_dtype(DType::F64).unwrap();
        let (_, probs) = cpu().softmax_cross_entropy_forward(&logits, &[0]).unwrap();
        assert_close("probs", &vals(&probs), &[0.25, 0.75], 1e-12);
    }
}

#[test]
fn gradient_matches_finite_differences() {
    // Expected: central differences of L = loss · r for a random scalar r
    // (common::check_gradients), with dloss = r passed to backward.
    let logits = random(&[5, 7], 91, DType::F64);
    let labels = [0, 6, 3, 3, 1];
    check_gradients(
        "softmax_cross_entropy",
        &[logits],
        |t| cpu().softmax_cross_entropy_forward(&t[0], &labels).unwrap().0,
        |t, r| {
            let (_, probs) = cpu().softmax_cross_entropy_forward(&t[0], &labels).unwrap();
            let dloss = r.to_scalar().unwrap();
            vec![Some(cpu().softmax_cross_entropy_backward(&probs, &labels, dloss).unwrap())]
        },
    );
}
