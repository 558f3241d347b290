//! A deep multi-layer perceptron: Flatten, then `depth` blocks of Dense(width) [- BN] - ReLU
//! [- Dropout], then a dense classifier.

use crate::init::{Init, InitRng};
use crate::layers::{BatchNorm, Dropout, Flatten, Linear, Relu, Sequential};
use crate::{Ctx, Module, NnError, Result};
use rand::SeedableRng;
use strata_autodiff::Var;
use strata_tensor::DType;

/// Arguments of [`Mlp::new`].
#[derive(Debug, Clone)]
pub struct MlpOptions {
    pub in_features: usize,
    pub width: usize,
    pub depth: usize,
    pub num_classes: usize,
    pub batch_norm: bool,
    /// Dropout probability after each hidden block's ReLU (0: no dropout layers).
    pub dropout: f64,
    pub seed: u64,
    pub dtype: DType,
}

/// The deep MLP; see the module documentation.
pub struct Mlp {
    pub body: Sequential,
}

impl Mlp {
    /// Build the MLP; He-normal hidden layers, Xavier-uniform classifier.
    ///
    /// # Errors
    /// [`NnError::InvalidArgument`] if a width, the input size or the class count is zero, or
    /// if the dropout probability is not in `[0, 1]`.
    pub fn new(o: &MlpOptions) -> Result<Mlp> {
        if o.width == 0 || o.in_features == 0 || o.num_classes == 0 {
            return Err(NnError::InvalidArgument {
                model: "mlp",
                detail: format!(
                    "width {}, inputs {} and classes {} must all be at least 1",
                    o.width, o.in_features, o.num_classes
                ),
            });
        }
        let mut rng = InitRng::seed_from_u64(o.seed);
        let mut body = Sequential::new();
        body.push(Flatten);
        let mut fan_in = o.in_features;
        for block in 0..o.depth {
            body.push(Linear::new(
                fan_in,
                o.width,
                !o.batch_norm,
                Init::HeNormal,
                o.dtype,
                &mut rng,
            )?);
            if o.batch_norm {
                body.push(BatchNorm::new(o.width, o.dtype)?);
            }
            body.push(Relu);
            if o.dropout > 0.0 {
                body.push(Dropout::new(o.dropout, block as u64)?);
            }
            fan_in = o.width;
        }
        body.push(Linear::new(
            fan_in,
            o.num_classes,
            true,
            Init::XavierUniform,
            o.dtype,
            &mut rng,
        )?);
        Ok(Mlp { body })
    }
}

impl Module for Mlp {
    fn type_name(&self) -> &'static str {
        "Mlp"
    }
    fn forward(&self, x: &Var, cx: &Ctx) -> Result<Var> {
        cx.call("body", &self.body, x)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("body".into(), &self.body)]
    }
}
