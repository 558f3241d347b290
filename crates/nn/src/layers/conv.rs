//! `Conv2d`: a square-kernel 2-D convolution without bias (batch norm follows it in ResNets).

use crate::init::{Init, InitRng};
use crate::{Ctx, Module, Result};
use std::rc::Rc;
use strata_autodiff::{ops, Param, Var};
use strata_tensor::{Conv2dParams, DType};

/// 2-D convolution, weight `[out, in, k, k]`, no bias.
pub struct Conv2d {
    pub weight: Rc<Param>,
    pub params: Conv2dParams,
    /// False for projection shortcuts, which the ResNet paper's depth does not count.
    pub main_path: bool,
}

impl Conv2d {
    /// A convolution initialised by `init` (fan-in `in * k * k`, fan-out `out * k * k`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        init: Init,
        dtype: DType,
        rng: &mut InitRng,
    ) -> Result<Conv2d> {
        let dims = [out_ch, in_ch, kernel, kernel];
        let w =
            init.sample(&dims, in_ch * kernel * kernel, out_ch * kernel * kernel, dtype, rng)?;
        Ok(Conv2d {
            weight: Rc::new(Param::new(w)),
            params: Conv2dParams { stride, padding },
            main_path: true,
        })
    }
}

impl Module for Conv2d {
    fn type_name(&self) -> &'static str {
        "Conv2d"
    }

    fn forward(&self, x: &Var, cx: &Ctx) -> Result<Var> {
        Ok(ops::conv2d(x, &cx.param(&self.weight), self.params)?)
    }

    fn local_params(&self) -> Vec<(&'static str, &Rc<Param>)> {
        vec![("weight", &self.weight)]
    }

    fn forward_flops(&self, output_shape: &[usize]) -> u64 {
        // Each output element of each image: C·R·S multiply-adds.
        let positions: usize = output_shape.iter().skip(2).product();
        let per_output_channel = self.weight.value().elem_count();
        2 * (per_output_channel * positions) as u64
    }

    fn counts_as_weighted_layer(&self) -> bool {
        self.main_path
    }
}
