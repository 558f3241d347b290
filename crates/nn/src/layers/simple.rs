//! Parameter-free layers and the `Sequential` container.

use crate::checkpoint::run_blocks;
use crate::{Ctx, Module, NnError, Result};
use std::rc::Rc;
use strata_autodiff::{ops, Var};
use strata_tensor::Pool2dParams;

/// Rectified linear unit.
pub struct Relu;

impl Module for Relu {
    fn type_name(&self) -> &'static str {
        "ReLU"
    }
    fn forward(&self, x: &Var, _cx: &Ctx) -> Result<Var> {
        Ok(ops::relu(x)?)
    }
}

/// Mean over the spatial axes: `[N, C, H, W]` to `[N, C]`.
pub struct GlobalAvgPool;

impl Module for GlobalAvgPool {
    fn type_name(&self) -> &'static str {
        "GlobalAvgPool"
    }
    fn forward(&self, x: &Var, _cx: &Ctx) -> Result<Var> {
        Ok(ops::global_avg_pool(x)?)
    }
}

/// Max pooling over square windows.
pub struct MaxPool2d(pub Pool2dParams);

impl Module for MaxPool2d {
    fn type_name(&self) -> &'static str {
        "MaxPool2d"
    }
    fn forward(&self, x: &Var, _cx: &Ctx) -> Result<Var> {
        Ok(ops::max_pool2d(x, self.0)?)
    }
}

/// `[N, ...]` to `[N, rest]`.
pub struct Flatten;

impl Module for Flatten {
    fn type_name(&self) -> &'static str {
        "Flatten"
    }
    fn forward(&self, x: &Var, _cx: &Ctx) -> Result<Var> {
        let dims = x.dims();
        let Some(&n) = dims.first() else {
            return Err(NnError::InputShape {
                layer: "Flatten",
                expected: "at least one axis".into(),
                got: dims.to_vec(),
            });
        };
        let rest = dims[1..].iter().product();
        Ok(ops::reshape(x, &[n, rest])?)
    }
}

/// Modules applied one after another; children are named by their position. The layers are
/// the block sequence that gradient checkpointing splits into segments.
#[derive(Default)]
pub struct Sequential {
    pub layers: Vec<Rc<dyn Module>>,
}

impl Sequential {
    /// An empty container.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a module.
    pub fn push(&mut self, m: impl Module + 'static) {
        self.layers.push(Rc::new(m));
    }

    /// Append a boxed module (such as one built by the layer registry).
    pub fn push_boxed(&mut self, m: Box<dyn Module>) {
        self.layers.push(Rc::from(m));
    }
}

impl Module for Sequential {
    fn type_name(&self) -> &'static str {
        "Sequential"
    }

    fn forward(&self, x: &Var, cx: &Ctx) -> Result<Var> {
        run_blocks(cx, "", &self.layers, x.clone())
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        self.layers.iter().enumerate().map(|(i, m)| (i.to_string(), m.as_ref())).collect()
    }
}
