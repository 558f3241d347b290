//! The `Module` trait, the forward context, and traversal of a module tree.

use crate::Result;
use std::cell::RefCell;
use std::rc::Rc;
use strata_autodiff::{Param, Tape, Var};
use strata_tensor::Tensor;

/// A non-trainable state tensor (batch-norm running statistics).
pub type Buffer = Rc<RefCell<Tensor>>;

/// What a forward pass needs besides its input: the tape (none in evaluation or no-grad mode)
/// and whether the model is training.
#[derive(Clone, Default)]
pub struct Ctx {
    /// Where parameters and operations are recorded; `None` records nothing.
    pub tape: Option<Rc<Tape>>,
    /// Training mode: batch statistics in batch norm, dropout active.
    pub train: bool,
    /// Whether batch norm updates its running statistics (off when a checkpointed segment
    /// re-runs its forward, so no statistic is updated twice).
    pub update_running_stats: bool,
}

impl Ctx {
    /// Training mode, recording on `tape`.
    pub fn train(tape: Rc<Tape>) -> Ctx {
        Ctx { tape: Some(tape), train: true, update_running_stats: true }
    }

    /// Evaluation mode: running statistics, nothing recorded.
    pub fn eval() -> Ctx {
        Ctx { tape: None, train: false, update_running_stats: false }
    }

    /// A parameter as a variable: a leaf on the tape, or a constant without one.
    pub fn param(&self, p: &Rc<Param>) -> Var {
        match &self.tape {
            Some(t) => t.param(p),
            None => Var::constant(p.value().clone()),
        }
    }
}

/// A layer or a model: a forward function plus named parameters, buffers and children.
pub trait Module {
    /// The type name shown in summaries, such as `Conv2d`.
    fn type_name(&self) -> &'static str;

    /// Run the module on `x`.
    fn forward(&self, x: &Var, cx: &Ctx) -> Result<Var>;

    /// This module's own parameters (not its children's), with local names.
    fn local_params(&self) -> Vec<(&'static str, &Rc<Param>)> {
        Vec::new()
    }

    /// This module's own buffers, with local names.
    fn local_buffers(&self) -> Vec<(&'static str, &Buffer)> {
        Vec::new()
    }

    /// Child modules, with local names, in registration order.
    fn children(&self) -> Vec<(String, &dyn Module)> {
        Vec::new()
    }

    /// True for layers that count as weighted layers in the ResNet paper's depth (convolutions
    /// and dense layers on the main path; projection shortcuts say false).
    fn counts_as_weighted_layer(&self) -> bool {
        false
    }
}

/// Visit `m` and its descendants depth-first in registration order, with dotted path names.
pub fn walk<'a>(m: &'a dyn Module, prefix: &str, f: &mut dyn FnMut(&str, &'a dyn Module)) {
    f(prefix, m);
    for (name, child) in m.children() {
        let path = if prefix.is_empty() { name } else { format!("{prefix}.{name}") };
        walk(child, &path, f);
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Every parameter with its dotted name, in registration order.
pub fn named_parameters(m: &dyn Module) -> Vec<(String, Rc<Param>)> {
    let mut out = Vec::new();
    walk(m, "", &mut |path, module| {
        for (name, p) in module.local_params() {
            out.push((join(path, name), p.clone()));
        }
    });
    out
}

/// Every buffer with its dotted name, in registration order.
pub fn named_buffers(m: &dyn Module) -> Vec<(String, Buffer)> {
    let mut out = Vec::new();
    walk(m, "", &mut |path, module| {
        for (name, b) in module.local_buffers() {
            out.push((join(path, name), b.clone()));
        }
    });
    out
}

/// Total number of trainable scalars.
pub fn parameter_count(m: &dyn Module) -> usize {
    named_parameters(m).iter().map(|(_, p)| p.value().elem_count()).sum()
}
