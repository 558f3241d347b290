//! Custom layers, way 2: a new operation with a hand-written forward and backward, recorded on
//! the tape with `Var::record`, and checked against finite differences with the public helper
//! `strata::autodiff::gradcheck::check_gradients`.
//!
//! Run: `cargo run --release --example custom_op`

use rand::SeedableRng;
use std::error::Error;
use strata::autodiff::gradcheck::{check_gradients, GradCheckReport};
use strata::autodiff::{ops, Tape, Var};
use strata::nn::init::{Init, InitRng};
use strata::nn::layers::{BatchNorm, Conv2d, GlobalAvgPool, Linear, Sequential};
use strata::nn::{named_parameters, Ctx, Module};
use strata::tensor::{DType, Tensor};

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// `values` as a CPU tensor of `dims` and `dtype`.
fn tensor(values: Vec<f64>, dims: &[usize], dtype: DType) -> strata::tensor::Result<Tensor> {
    match dtype {
        DType::F64 => Tensor::from_vec(values, dims),
        _ => Tensor::from_vec(values.into_iter().map(|v| v as f32).collect::<Vec<_>>(), dims)?
            .to_dtype(dtype),
    }
}

/// SiLU (swish), `y = x * sigmoid(x)`. Forward saves the input; backward returns
/// `dx = dy * s * (1 + x (1 - s))` with `s = sigmoid(x)` (it overwrites, the tape accumulates).
pub fn silu(x: &Var) -> strata::autodiff::Result<Var> {
    let (dims, dtype) = (x.dims().to_vec(), x.value().dtype());
    let xs = x.value().to_vec::<f64>()?;
    let y = xs.iter().map(|&v| v * sigmoid(v)).collect();
    let y = tensor(y, &dims, dtype)?;
    Var::record("silu", &[x], y, move |dy| {
        let dys = dy.to_vec::<f64>()?;
        let dx = xs
            .iter()
            .zip(&dys)
            .map(|(&v, &g)| {
                let s = sigmoid(v);
                g * s * (1.0 + v * (1.0 - s))
            })
            .collect();
        Ok(vec![Some(tensor(dx, &dims, dtype)?)])
    })
}

/// The op as a layer.
pub struct Silu;

impl Module for Silu {
    fn type_name(&self) -> &'static str {
        "SiLU"
    }
    fn forward(&self, x: &Var, _cx: &Ctx) -> strata::nn::Result<Var> {
        Ok(silu(x)?)
    }
}

/// Check `silu`'s backward against central differences in f64 at points away from nothing in
/// particular (SiLU is smooth everywhere).
pub fn gradient_check() -> strata::autodiff::Result<GradCheckReport> {
    let x: Vec<f64> = (0..24).map(|i| (i as f64 - 11.5) / 3.0).collect();
    let x = Tensor::from_vec(x, [2, 3, 4])?;
    check_gradients(|xs| silu(&xs[0]), &[x], 1e-6, 1e-7)
}

/// A small convolutional classifier with SiLU activations.
pub fn model() -> strata::nn::Result<Sequential> {
    let mut rng = InitRng::seed_from_u64(0);
    let mut m = Sequential::new();
    m.push(Conv2d::new(1, 8, 3, 1, 1, Init::HeNormal, DType::F32, &mut rng)?);
    m.push(BatchNorm::new(8, DType::F32)?);
    m.push(Silu);
    m.push(GlobalAvgPool);
    m.push(Linear::new(8, 10, true, Init::XavierUniform, DType::F32, &mut rng)?);
    Ok(m)
}

/// One training forward and backward of `model()` on a batch of 4; returns the loss and the
/// number of parameters that received a gradient.
pub fn train_step() -> Result<(f64, usize), Box<dyn Error>> {
    let m = model()?;
    let x: Vec<f32> = (0..4 * 64).map(|i| ((i * 13 % 17) as f32 / 8.0) - 1.0).collect();
    let x = Var::constant(Tensor::from_vec(x, [4, 1, 8, 8])?);
    let tape = Tape::new();
    let loss =
        ops::softmax_cross_entropy(&m.forward(&x, &Ctx::train(tape.clone()))?, &[0, 1, 2, 3])?;
    tape.backward(&loss)?;
    let with_grad = named_parameters(&m).iter().filter(|(_, p)| p.grad().is_some()).count();
    Ok((loss.value().to_scalar()?, with_grad))
}

fn main() -> Result<(), Box<dyn Error>> {
    let report = gradient_check()?;
    println!("silu gradient check (f64): worst relative error {:.2e}", report.max_rel_error);
    let (loss, with_grad) = train_step()?;
    println!("conv-BN-SiLU classifier: loss {loss:.4}, {with_grad} parameters got gradients");
    Ok(())
}
