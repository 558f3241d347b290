//! Batch norm on the CPU backend: training-mode statistics, evaluation with given statistics,
//! and finite-difference gradient checks of dx, dgamma and dbeta on 4-D and 2-D inputs.

mod common;

use common::{assert_close, check_gradients, cpu, random, t64, tol, vals};
use strata_tensor::{DType, Tensor};

const EPS: f64 = 1e-5;

/// Per-channel (mean, biased variance) of `y` laid out `[n, c, l]`, in f64.
fn channel_moments(y: &[f64], n: usize, c: usize, l: usize) -> Vec<(f64, f64)> {
    (0..c)
        .map(|ch| {
            let vals: Vec<f64> =
                (0..n).flat_map(|i| y[(i * c + ch) * l..][..l].iter().copied()).collect();
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
            (mean, var)
        })
        .collect()
}

#[test]
fn training_output_is_normalised_per_channel() {
    // Expected by definition: with gamma = 1 and beta = 0 every channel of y has mean 0 and
    // biased variance var / (var + eps), i.e. 1 up to eps / var. Inputs are shifted by 1000
    // (f32 spacing there is 6e-5) to check that the statistics do not cancel.
    for dtype in [DType::F32, DType::F64] {
        let (n, c, h, w) = (4, 3, 5, 6);
        let noise = vals(&random(&[n, c, h, w], 21, DType::F64));
        let shifted: Vec<f64> = noise.iter().map(|v| 1000.0 + v).collect();
        let x = t64(&shifted, &[n, c, h, w]).to_dtype(dtype).unwrap();
        let ones = Tensor::full([c], 1.0, dtype, strata_tensor::Device::Cpu).unwrap();
        let zeros = ones.zeros_like().unwrap();
        let out = cpu().batch_norm_forward_train(&x, &ones, &zeros, EPS).unwrap();
        let var = vals(&out.var);
        for (ch, (mean, v)) in channel_moments(&vals(&out.y), n, c, h * w).into_iter().enumerate() {
            let t = if dtype == DType::F32 { 2e-3 } else { 1e-9 };
            assert!(mean.abs() < t, "{dtype:?} channel {ch}: mean {mean}");
            let want = var[ch] / (var[ch] + EPS);
            assert!((v - want).abs() < t, "{dtype:?} channel {ch}: variance {v}, want {want}");
        }
        // The returned statistics match the data's (1000 + noise) moments.
        let moments = channel_moments(&vals(&x), n, c, h * w);
        let (m_want, v_want): (Vec<f64>, Vec<f64>) = moments.into_iter().unzip();
        assert_close(
            "mean",
            &vals(&out.mean),
            &m_want,
            if dtype == DType::F32 { 1e-6 } else { 1e-14 },
        );
        assert_close("var", &var, &v_want, if dtype == DType::F32 { 2e-3 } else { 1e-10 });
        let inv: Vec<f64> = v_want.iter().map(|v| 1.0 / (v + EPS).sqrt()).collect();
        assert_close(
            "invstd",
            &vals(&out.invstd),
            &inv,
            if dtype == DType::F32 { 2e-3 } else { 1e-10 },
        );
    }
}

#[test]
fn evaluation_uses_the_given_statistics() {
    // Hand-computed: channel 0 has mean 1, var 4 - eps, gamma 2, beta 0.5, so x = 3 maps to
    // (3 - 1) / 2 · 2 + 0.5 = 2.5 and x = -1 to -1.5; channel 1 has mean 0, var 1 - eps,
    // gamma 1, beta -1, so x = 3 maps to 2 and x = -1 to -2.
    for dtype in [DType::F32, DType::F64] {
        let x = t64(&[3.0, -1.0, 3.0, -1.0], &[1, 2, 2]).reshape([1, 2, 2, 1]).unwrap();
        let x = x.to_dtype(dtype).unwrap();
        let c = |v: &[f64]| t64(v, &[2]).to_dtype(dtype).unwrap();
        let y = cpu()
            .batch_norm_forward_eval(
                &x,
                &c(&[2.0, 1.0]),
                &c(&[0.5, -1.0]),
                &c(&[1.0, 0.0]),
                &c(&[4.0 - EPS, 1.0 - EPS]),
                EPS,
            )
            .unwrap();
        assert_close("eval", &vals(&y), &[2.5, -1.5, 2.0, -2.0], tol(dtype));
    }
}

/// Finite-difference check of batch norm on an input of `dims`.
fn gradcheck(dims: &[usize]) {
    let c = dims[1];
    let inputs =
        [random(dims, 31, DType::F64), random(&[c], 32, DType::F64), random(&[c], 33, DType::F64)];
    check_gradients(
        &format!("batch_norm {dims:?}"),
        &inputs,
        |t| cpu().batch_norm_forward_train(&t[0], &t[1], &t[2], EPS).unwrap().y,
        |t, dy| {
            let out = cpu().batch_norm_forward_train(&t[0], &t[1], &t[2], EPS).unwrap();
            let g = cpu().batch_norm_backward(dy, &t[0], &t[1], &out.mean, &out.invstd).unwrap();
            vec![Some(g.dx), Some(g.dgamma), Some(g.dbeta)]
        },
    );
}

#[test]
fn gradients_match_finite_differences() {
    // Expected: central differences of L = Σ bn(x, gamma, beta) · r (common::check_gradients).
    gradcheck(&[3, 2, 4, 5]);
    gradcheck(&[2, 5, 1, 1]);
    gradcheck(&[6, 4]);
}

#[test]
fn large_tensors_take_the_parallel_path_with_the_same_result() {
    // Expected: identical results from a 1-thread pool and a 2-thread pool (the statistics are
    // per channel and the output per element, so no sum is regrouped). 2 · 32 · 32 · 32 · 32
    // elements are above the parallel threshold.
    let x = random(&[32, 32, 32, 32], 41, DType::F32);
    let g = random(&[32], 42, DType::F32);
    let b = random(&[32], 43, DType::F32);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let out = cpu().batch_norm_forward_train(&x, &g, &b, EPS).unwrap();
            let grads = cpu().batch_norm_backward(&x, &x, &g, &out.mean, &out.invstd).unwrap();
            (vals(&out.y), vals(&grads.dx), vals(&grads.dgamma))
        })
    };
    assert_eq!(run(1), run(2));
}
