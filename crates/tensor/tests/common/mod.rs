//! Test support shared by the CPU kernel tests: seeded random tensors, closeness checks that
//! print the worst element, the finite-difference gradient check, and naive reference
//! convolutions (direct loops in f64) that the fast kernels are compared against.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use strata_tensor::{Backend, Conv2dParams, DType, Tensor};

/// The CPU backend.
pub fn cpu() -> &'static dyn Backend {
    &strata_tensor::cpu::CpuBackend
}

/// A tensor of `dims` with elements uniform in `[-1, 1)`, drawn from `seed`, in `dtype`.
pub fn random(dims: &[usize], seed: u64, dtype: DType) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = dims.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, dims).unwrap().to_dtype(dtype).unwrap()
}

/// An f64 tensor from values.
pub fn t64(v: &[f64], dims: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), dims).unwrap()
}

/// The elements as f64.
pub fn vals(t: &Tensor) -> Vec<f64> {
    t.to_vec::<f64>().unwrap()
}

/// Per-dtype tolerance for comparing a kernel against an f64 reference: f32 kernels round
/// each of up to several hundred products (relative error ~1e-7 each); f64 ones are exact to
/// ~1e-15.
pub fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-11,
        _ => 2e-5,
    }
}

/// Assert `|got - want| <= tol · max(1, |want|)` element-wise, naming the worst element.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length {} vs {}", got.len(), want.len());
    let mut worst = (0.0f64, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / w.abs().max(1.0);
        if err > worst.0 || err.is_nan() {
            worst = (err, i);
            if err.is_nan() {
                break;
            }
        }
    }
    let i = worst.1;
    assert!(
        worst.0 <= tol,
        "{what}: worst element {i}: got {}, want {}, error {:.3e} > {tol:.1e}",
        got[i],
        want[i],
        worst.0
    );
}

/// `Σ y · r`, the scalar loss of the gradient checks.
fn weighted_sum(y: &Tensor, r: &[f64]) -> f64 {
    vals(y).iter().zip(r).map(|(a, b)| a * b).sum()
}

/// Finite-difference gradient check in f64.
///
/// `forward` maps the inputs to an output `y`; the loss is `L = Σ y · r` for a fixed random
/// `r`, so `dL/dy = r`. `backward(inputs, r)` returns the analytic gradient of each input
/// (`None` where it has none). Every element of every returned gradient is compared with the
/// central difference `(L(x + h) - L(x - h)) / 2h`, `h = 1e-6`, whose error is O(h²) plus
/// rounding of ~1e-16·|L|/h; the relative error `|a - n| / max(|a|, |n|, 1e-2)` must be at
/// most 1e-6.
pub fn check_gradients(
    name: &str,
    inputs: &[Tensor],
    forward: impl Fn(&[Tensor]) -> Tensor,
    backward: impl Fn(&[Tensor], &Tensor) -> Vec<Option<Tensor>>,
) {
    const H: f64 = 1e-6;
    let y = forward(inputs);
    let r = random(y.dims(), 0x5eed, DType::F64);
    let rv = vals(&r);
    let grads = backward(inputs, &r);
    assert_eq!(grads.len(), inputs.len(), "{name}: one gradient slot per input");
    for (i, grad) in grads.iter().enumerate() {
        let Some(grad) = grad else { continue };
        assert_eq!(grad.dims(), inputs[i].dims(), "{name}: shape of the gradient of input {i}");
        let analytic = vals(grad);
        let base = vals(&inputs[i]);
        let mut worst = (0.0f64, 0usize, 0.0f64, 0.0f64);
        for j in 0..base.len() {
            let loss_at = |delta: f64| {
                let mut v = base.clone();
                v[j] += delta;
                let mut moved = inputs.to_vec();
                moved[i] = t64(&v, inputs[i].dims());
                weighted_sum(&forward(&moved), &rv)
            };
            let numeric = (loss_at(H) - loss_at(-H)) / (2.0 * H);
            let a = analytic[j];
            let err = (a - numeric).abs() / a.abs().max(numeric.abs()).max(1e-2);
            if err > worst.0 || err.is_nan() {
                worst = (err, j, a, numeric);
            }
        }
        let (err, j, a, numeric) = worst;
        assert!(
            err <= 1e-6,
            "{name}: gradient of input {i}, worst element {j}: analytic {a}, numeric {numeric}, \
             relative error {err:.3e}"
        );
    }
}

/// Output spatial size of a convolution along one axis.
pub fn out_len(len: usize, k: usize, p: Conv2dParams) -> usize {
    (len + 2 * p.padding - k) / p.stride + 1
}

/// Input index along one axis for output `o` and tap `t`, if inside the input.
fn tap(o: usize, t: usize, len: usize, p: Conv2dParams) -> Option<usize> {
    (o * p.stride + t).checked_sub(p.padding).filter(|&i| i < len)
}

/// Direct convolution in f64, straight from the definition
/// `y[n,k,p,q] = Σ_{c,r,s} x[n,c,p·stride+r-pad, q·stride+s-pad] · w[k,c,r,s]`.
pub fn naive_conv(x: &Tensor, w: &Tensor, prm: Conv2dParams) -> Vec<f64> {
    let [n, c, h, wd] = x.shape().dims_n::<4>().unwrap();
    let [k, _, r, s] = w.shape().dims_n::<4>().unwrap();
    let (xv, wv) = (vals(x), vals(w));
    let (p, q) = (out_len(h, r, prm), out_len(wd, s, prm));
    let mut y = vec![0.0; n * k * p * q];
    for img in 0..n {
        for ko in 0..k {
            for oh in 0..p {
                for ow in 0..q {
                    let mut acc = 0.0;
                    for ch in 0..c {
                        for ri in 0..r {
                            for si in 0..s {
                                let (Some(ih), Some(iw)) =
                                    (tap(oh, ri, h, prm), tap(ow, si, wd, prm))
                                else {
                                    continue;
                                };
                                acc += xv[((img * c + ch) * h + ih) * wd + iw]
                                    * wv[((ko * c + ch) * r + ri) * s + si];
                            }
                        }
                    }
                    y[((img * k + ko) * p + oh) * q + ow] = acc;
                }
            }
        }
    }
    y
}

/// Direct gradients of the convolution in f64 (the transposes of `naive_conv`): `(dx, dw)`.
pub fn naive_conv_grads(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    prm: Conv2dParams,
) -> (Vec<f64>, Vec<f64>) {
    let [n, c, h, wd] = x.shape().dims_n::<4>().unwrap();
    let [k, _, r, s] = w.shape().dims_n::<4>().unwrap();
    let (xv, wv, dyv) = (vals(x), vals(w), vals(dy));
    let (p, q) = (out_len(h, r, prm), out_len(wd, s, prm));
    let (mut dx, mut dw) = (vec![0.0; xv.len()], vec![0.0; wv.len()]);
    for img in 0..n {
        for ko in 0..k {
            for oh in 0..p {
                for ow in 0..q {
                    let g = dyv[((img * k + ko) * p + oh) * q + ow];
                    for ch in 0..c {
                        for ri in 0..r {
                            for si in 0..s {
                                let (Some(ih), Some(iw)) =
                                    (tap(oh, ri, h, prm), tap(ow, si, wd, prm))
                                else {
                                    continue;
                                };
                                let xi = ((img * c + ch) * h + ih) * wd + iw;
                                let wi = ((ko * c + ch) * r + ri) * s + si;
                                dx[xi] += g * wv[wi];
                                dw[wi] += g * xv[xi];
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw)
}
