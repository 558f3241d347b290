//! Parameter initialisation: He (Kaiming) and Xavier (Glorot), normal and uniform, drawn from a
//! seeded stream so every rank builds the same initial model.

use crate::Result;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};
use strata_tensor::{DType, Tensor};

/// The random stream that builders draw initial weights from.
pub type InitRng = ChaCha8Rng;

/// How to draw a weight tensor from its fan-in and fan-out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Normal with std `sqrt(2 / fan_in)` (He et al., 2015).
    HeNormal,
    /// Uniform on `±sqrt(6 / fan_in)`.
    HeUniform,
    /// Normal with std `sqrt(2 / (fan_in + fan_out))` (Glorot and Bengio, 2010).
    XavierNormal,
    /// Uniform on `±sqrt(6 / (fan_in + fan_out))`.
    XavierUniform,
}

impl Init {
    /// Draw a tensor of `dims` with the given fans.
    pub fn sample(
        self,
        dims: &[usize],
        fan_in: usize,
        fan_out: usize,
        dtype: DType,
        rng: &mut impl Rng,
    ) -> Result<Tensor> {
        let n: usize = dims.iter().product();
        let (fi, fo) = (fan_in.max(1) as f64, fan_out.max(1) as f64);
        let values: Vec<f64> = match self {
            Init::HeNormal => draw(Normal::new(0.0, (2.0 / fi).sqrt()).expect("finite std"), n, rng),
            Init::HeUniform => uniform((6.0 / fi).sqrt(), n, rng),
            Init::XavierNormal => {
                draw(Normal::new(0.0, (2.0 / (fi + fo)).sqrt()).expect("finite std"), n, rng)
            }
            Init::XavierUniform => uniform((6.0 / (fi + fo)).sqrt(), n, rng),
        };
        from_f64(values, dims, dtype)
    }
}

fn draw(d: impl Distribution<f64>, n: usize, rng: &mut impl Rng) -> Vec<f64> {
    (0..n).map(|_| d.sample(rng)).collect()
}

fn uniform(bound: f64, n: usize, rng: &mut impl Rng) -> Vec<f64> {
    draw(Uniform::new_inclusive(-bound, bound), n, rng)
}

/// A tensor of `dtype` from f64 values.
pub fn from_f64(values: Vec<f64>, dims: &[usize], dtype: DType) -> Result<Tensor> {
    Ok(Tensor::from_vec(values, dims)?.to_dtype(dtype)?)
}

/// A tensor of `dims` filled with `value`.
pub fn constant(dims: &[usize], value: f64, dtype: DType) -> Result<Tensor> {
    Ok(Tensor::full(dims, value, dtype, strata_tensor::Device::Cpu)?)
}
