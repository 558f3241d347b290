//! The AdamW step on the CPU backend against PyTorch's `torch.optim.AdamW` over two steps.

mod common;

use common::{assert_close, cpu, t64, tol, vals};
use strata_tensor::{AdamWParams, DType, Tensor};

#[test]
fn two_adamw_steps_match_pytorch() {
    // Reference: ~/.ref/bin/python with torch.optim.AdamW([p], lr=0.1, betas=(0.9, 0.999),
    // eps=1e-8, weight_decay=0.01) in float64 on p = [1, -2], grads [0.5, 0.5] then [-1, 2];
    // p, exp_avg and exp_avg_sq printed after each step. By hand, step 1: p = 0.999 p, then
    // m = 0.05, v = 2.5e-4, m_hat / sqrt(v_hat) = 1, so p -= 0.1 (eps aside): [0.899, -2.098].
    let p1 = [0.899000002, -2.097999998];
    let p2 = [0.9347113542385653, -2.1843396464530556];
    let m2 = [-0.055, 0.245];
    let v2 = [0.00124975, 0.00424975];
    for dtype in [DType::F32, DType::F64] {
        let mut param = t64(&[1.0, -2.0], &[2]).to_dtype(dtype).unwrap();
        let mut m = Tensor::zeros([2], dtype, strata_tensor::Device::Cpu).unwrap();
        let mut v = Tensor::zeros([2], dtype, strata_tensor::Device::Cpu).unwrap();
        let hp = AdamWParams {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            step: 1,
        };
        let g1 = t64(&[0.5, 0.5], &[2]).to_dtype(dtype).unwrap();
        cpu().adamw_step(&mut param, &g1, &mut m, &mut v, hp).unwrap();
        assert_close("step 1", &vals(&param), &p1, tol(dtype));
        let g2 = t64(&[-1.0, 2.0], &[2]).to_dtype(dtype).unwrap();
        cpu().adamw_step(&mut param, &g2, &mut m, &mut v, AdamWParams { step: 2, ..hp }).unwrap();
        assert_close("step 2", &vals(&param), &p2, tol(dtype));
        assert_close("exp_avg", &vals(&m), &m2, tol(dtype));
        assert_close("exp_avg_sq", &vals(&v), &v2, tol(dtype));
    }
}

#[test]
fn adamw_rejects_moments_of_another_shape() {
    let mut param = t64(&[1.0, -2.0], &[2]);
    let g = t64(&[0.5, 0.5], &[2]);
    let mut m = t64(&[0.0; 3], &[3]);
    let mut v = t64(&[0.0, 0.0], &[2]);
    let hp =
        AdamWParams { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, step: 1 };
    let err = cpu().adamw_step(&mut param, &g, &mut m, &mut v, hp).unwrap_err().to_string();
    assert!(err.contains("adamw_step"), "{err}");
}
