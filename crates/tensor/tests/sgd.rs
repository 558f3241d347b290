//! The SGD step on the CPU backend against two steps worked out by hand with PyTorch's formula
//! (`torch.optim.SGD`, dampening 0): with and without Nesterov, with weight decay, and without
//! momentum.

mod common;

use common::{assert_close, cpu, t64, tol, vals};
use strata_tensor::{DType, SgdParams, Tensor};

/// Two steps on p = [1, -2] with gradients g1 = [0.5, 0.5], g2 = [-1, 2]; returns p after each
/// step and the momentum buffer after the second.
fn two_steps(dtype: DType, p: SgdParams) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut param = t64(&[1.0, -2.0], &[2]).to_dtype(dtype).unwrap();
    let mut buf = Tensor::zeros([2], dtype, strata_tensor::Device::Cpu).unwrap();
    let g1 = t64(&[0.5, 0.5], &[2]).to_dtype(dtype).unwrap();
    let g2 = t64(&[-1.0, 2.0], &[2]).to_dtype(dtype).unwrap();
    cpu().sgd_step(&mut param, &g1, &mut buf, SgdParams { first_step: true, ..p }).unwrap();
    let after1 = vals(&param);
    cpu().sgd_step(&mut param, &g2, &mut buf, SgdParams { first_step: false, ..p }).unwrap();
    (after1, vals(&param), vals(&buf))
}

#[test]
fn momentum_with_weight_decay() {
    // lr 0.1, momentum 0.9, wd 0.01. Step 1: d = g1 + 0.01 p = [0.51, 0.48]; buf = d;
    // p = [1 - 0.051, -2 - 0.048] = [0.949, -2.048].
    // Step 2: d = g2 + 0.01 p = [-0.99051, 1.97952]; buf = 0.9 [0.51, 0.48] + d
    // = [-0.53151, 2.41152]; p = [0.949 + 0.053151, -2.048 - 0.241152] = [1.002151, -2.289152].
    for dtype in [DType::F32, DType::F64] {
        let p = SgdParams {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
            nesterov: false,
            first_step: true,
        };
        let (p1, p2, buf) = two_steps(dtype, p);
        assert_close("step 1", &p1, &[0.949, -2.048], tol(dtype));
        assert_close("step 2", &p2, &[1.002151, -2.289152], tol(dtype));
        assert_close("buffer", &buf, &[-0.53151, 2.41152], tol(dtype));
    }
}

#[test]
fn nesterov_momentum_with_weight_decay() {
    // As above, but the step uses d + 0.9 buf. Step 1: buf = d = [0.51, 0.48];
    // step = 1.9 d = [0.969, 0.912]; p = [0.9031, -2.0912].
    // Step 2: d = g2 + 0.01 p = [-0.990969, 1.979088]; buf = 0.9 [0.51, 0.48] + d
    // = [-0.531969, 2.411088]; step = d + 0.9 buf = [-1.4697411, 4.1490672];
    // p = [0.9031 + 0.14697411, -2.0912 - 0.41490672] = [1.05007411, -2.50610672].
    for dtype in [DType::F32, DType::F64] {
        let p = SgdParams {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
            nesterov: true,
            first_step: true,
        };
        let (p1, p2, buf) = two_steps(dtype, p);
        assert_close("step 1", &p1, &[0.9031, -2.0912], tol(dtype));
        assert_close("step 2", &p2, &[1.05007411, -2.50610672], tol(dtype));
        assert_close("buffer", &buf, &[-0.531969, 2.411088], tol(dtype));
    }
}

#[test]
fn plain_sgd_leaves_the_buffer_alone() {
    // lr 0.5, no momentum, no decay: p = [1, -2] - 0.5 [0.5, 0.5] = [0.75, -2.25], then
    // - 0.5 [-1, 2] = [1.25, -3.25]; the buffer is not used (PyTorch keeps none).
    let p =
        SgdParams { lr: 0.5, momentum: 0.0, weight_decay: 0.0, nesterov: false, first_step: true };
    let (p1, p2, buf) = two_steps(DType::F64, p);
    assert_eq!((p1, p2, buf), (vec![0.75, -2.25], vec![1.25, -3.25], vec![0.0, 0.0]));
}
