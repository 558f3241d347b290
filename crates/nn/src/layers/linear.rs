//! `Linear`: a dense layer `y = x wᵀ + b`.

use crate::init::{constant, Init, InitRng};
use crate::{Ctx, Module, Result};
use std::rc::Rc;
use strata_autodiff::{ops, Param, Var};
use strata_tensor::DType;

/// Dense layer with weight `[out, in]` and an optional bias `[out]` (excluded from weight decay).
pub struct Linear {
    pub weight: Rc<Param>,
    pub bias: Option<Rc<Param>>,
}

impl Linear {
    /// A dense layer with the weight drawn by `init` and a zero bias.
    pub fn new(
        in_features: usize,
        out_features: usize,
        bias: bool,
        init: Init,
        dtype: DType,
        rng: &mut InitRng,
    ) -> Result<Linear> {
        let w = init.sample(&[out_features, in_features], in_features, out_features, dtype, rng)?;
        let bias = if bias {
            Some(Rc::new(Param::without_weight_decay(constant(&[out_features], 0.0, dtype)?)))
        } else {
            None
        };
        Ok(Linear { weight: Rc::new(Param::new(w)), bias })
    }
}

impl Module for Linear {
    fn type_name(&self) -> &'static str {
        "Linear"
    }

    fn forward(&self, x: &Var, cx: &Ctx) -> Result<Var> {
        let b = self.bias.as_ref().map(|b| cx.param(b));
        Ok(ops::linear(x, &cx.param(&self.weight), b.as_ref())?)
    }

    fn local_params(&self) -> Vec<(&'static str, &Rc<Param>)> {
        let mut out = vec![("weight", &self.weight)];
        out.extend(self.bias.as_ref().map(|b| ("bias", b)));
        out
    }

    fn forward_flops(&self, _output_shape: &[usize]) -> u64 {
        2 * self.weight.value().elem_count() as u64
    }

    fn counts_as_weighted_layer(&self) -> bool {
        true
    }
}
