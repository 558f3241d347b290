//! Custom layers, way 1: a module composed of existing ops. Its gradients come from the tape,
//! so it needs no backward code; a finite-difference check confirms them.
//!
//! Run: `cargo run --release --example custom_module`

use rand::SeedableRng;
use std::error::Error;
use std::rc::Rc;
use strata::autodiff::{ops, Tape, Var};
use strata::nn::gradcheck::check_module_gradients_at;
use strata::nn::init::{Init, InitRng};
use strata::nn::layers::{BatchNorm, Dropout, Flatten, Linear, Sequential};
use strata::nn::{named_parameters, Ctx, Module};
use strata::tensor::{DType, Tensor};

/// A residual dense block: `x + fc2(dropout(relu(bn(fc1(x)))))`, from `[N, F]` to `[N, F]`.
pub struct ResidualDense {
    pub fc1: Linear,
    pub bn: BatchNorm,
    pub dropout: Dropout,
    pub fc2: Linear,
}

impl ResidualDense {
    /// A block of `features` wide, with dropout probability `p` drawn on stream `stream_id`.
    pub fn new(
        features: usize,
        p: f64,
        stream_id: u64,
        dtype: DType,
        rng: &mut InitRng,
    ) -> strata::nn::Result<ResidualDense> {
        Ok(ResidualDense {
            fc1: Linear::new(features, features, false, Init::HeNormal, dtype, rng)?,
            bn: BatchNorm::new(features, dtype)?,
            dropout: Dropout::new(p, stream_id)?,
            fc2: Linear::new(features, features, true, Init::HeNormal, dtype, rng)?,
        })
    }
}

impl Module for ResidualDense {
    fn type_name(&self) -> &'static str {
        "ResidualDense"
    }

    fn forward(&self, x: &Var, cx: &Ctx) -> strata::nn::Result<Var> {
        // Children run through `cx.call` under their `children()` names, so summaries see them.
        let h = cx.call("bn", &self.bn, &cx.call("fc1", &self.fc1, x)?)?;
        let h = cx.call("dropout", &self.dropout, &ops::relu(&h)?)?;
        let h = cx.call("fc2", &self.fc2, &h)?;
        Ok(ops::add(x, &h)?)
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("fc1".into(), &self.fc1),
            ("bn".into(), &self.bn),
            ("dropout".into(), &self.dropout),
            ("fc2".into(), &self.fc2),
        ]
    }
}

/// Check the block's gradients in f64 by finite differences, dropout mask fixed by the seed
/// and step; returns the worst relative error.
pub fn gradient_check() -> strata::nn::Result<f64> {
    let mut rng = InitRng::seed_from_u64(1);
    let block = ResidualDense::new(5, 0.3, 0, DType::F64, &mut rng)?;
    let x: Vec<f64> = (0..4 * 5).map(|i| ((i * 7 % 11) as f64 - 5.0) / 5.0).collect();
    let x = Tensor::from_vec(x, [4, 5])?;
    check_module_gradients_at(&block, &x, 1e-6, 1e-5, &Ctx::default().with_rng(3, 0, 0, 2))
}

/// A classifier of 8x8 images: flatten, dense 64 -> 32, three residual dense blocks, dense
/// 32 -> 10.
pub fn model() -> strata::nn::Result<Sequential> {
    let mut rng = InitRng::seed_from_u64(0);
    let mut m = Sequential::new();
    m.push(Flatten);
    m.push(Linear::new(64, 32, true, Init::HeNormal, DType::F32, &mut rng)?);
    for i in 0..3 {
        m.push(ResidualDense::new(32, 0.1, i, DType::F32, &mut rng)?);
    }
    m.push(Linear::new(32, 10, true, Init::XavierUniform, DType::F32, &mut rng)?);
    Ok(m)
}

/// Plain SGD on one fixed batch of 16 for `steps` steps; returns the first and last losses.
pub fn overfit_one_batch(steps: u64) -> Result<(f64, f64), Box<dyn Error>> {
    let m = model()?;
    let x: Vec<f32> = (0..16 * 64).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    let x = Var::constant(Tensor::from_vec(x, [16, 1, 8, 8])?);
    let labels: Vec<u32> = (0..16).map(|i| i % 10).collect();
    let params: Vec<Rc<_>> = named_parameters(&m).into_iter().map(|(_, p)| p).collect();
    let mut losses = Vec::new();
    for step in 0..steps {
        let tape = Tape::new();
        let logits = m.forward(&x, &Ctx::train(tape.clone()).with_rng(0, 0, 0, step))?;
        let loss = ops::softmax_cross_entropy(&logits, &labels)?;
        losses.push(loss.value().to_scalar()?);
        tape.backward(&loss)?;
        for p in &params {
            if let Some(g) = p.grad().as_ref() {
                let b = g.backend()?;
                b.add_assign(&mut p.value_mut(), &b.scale(g, -0.05)?)?;
            }
            p.zero_grad();
        }
    }
    Ok((losses[0], losses[losses.len() - 1]))
}

fn main() -> Result<(), Box<dyn Error>> {
    println!(
        "gradient check (f64, finite differences): worst relative error {:.2e}",
        gradient_check()?
    );
    print!("{}", strata::nn::summary::summary(&model()?, &[1, 8, 8])?);
    let (first, last) = overfit_one_batch(40)?;
    println!("overfitting one batch: loss {first:.4} -> {last:.4}");
    Ok(())
}
