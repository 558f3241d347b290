//! The `Module` trait, the forward context, and traversal of a module tree.

use crate::checkpoint::{ParamLog, SegmentPlan};
use crate::plan::BlockProfile;
use crate::Result;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use strata_autodiff::{Param, Tape, Var};
use strata_tensor::Tensor;

/// A non-trainable state tensor (batch-norm running statistics).
pub type Buffer = Rc<RefCell<Tensor>>;

/// What a forward pass needs besides its input: the tape (none in evaluation or no-grad mode),
/// whether the model is training, and where in the run this pass is (seed, rank, epoch, step),
/// which seeds dropout masks and stochastic-depth decisions.
///
/// Dropout draws from a stream keyed by `(rng_seed, rank, epoch, step)`, so ranks see different
/// masks; stochastic depth draws from a stream keyed by `(rng_seed, step)` only, so every rank
/// drops the same blocks and the global batch sees one network. A checkpointed segment that
/// re-runs its forward with a clone of the same `Ctx` redraws the same masks and decisions
/// (see [`crate::checkpoint`]).
#[derive(Clone, Default)]
pub struct Ctx {
    /// Where parameters and operations are recorded; `None` records nothing.
    pub tape: Option<Rc<Tape>>,
    /// Training mode: batch statistics in batch norm, dropout and stochastic depth active.
    pub train: bool,
    /// Whether batch norm updates its running statistics (off when a checkpointed segment
    /// re-runs its forward, so no statistic is updated twice).
    pub update_running_stats: bool,
    /// The run's seed (the config's `seed`).
    pub rng_seed: u64,
    /// This worker's rank; dropout masks differ between ranks.
    pub rank: usize,
    /// The epoch, counted from 0.
    pub epoch: u64,
    /// Training forward passes so far in the run, counted from 0, the same on every rank.
    pub step: u64,
    /// When set, [`Ctx::call`] records each child's output shape by its path (model summaries).
    pub trace: Option<Rc<ShapeTrace>>,
    /// Which blocks of the model's block sequence run as checkpointed segments (training on a
    /// tape only); `None` records every block.
    pub checkpoint: Option<Rc<SegmentPlan>>,
    /// Set while a checkpointed segment runs its unrecorded forward: every parameter read is
    /// logged, so the segment's node can hand on their gradients.
    pub param_log: Option<Rc<ParamLog>>,
    /// Set by memory planning ([`crate::plan::profile`]): the block sequence reports what each
    /// block records, and stochastic depth keeps every branch (the worst case).
    pub profile: Option<Rc<BlockProfile>>,
    /// When set, batch norm in training mode normalises with statistics over every worker's
    /// batch (`sync_bn`), summed through this; `None` uses each worker's own batch.
    pub sync_stats: Option<Rc<dyn StatsAllReduce>>,
}

/// Sums values element-wise over every data-parallel worker: the one collective batch norm
/// with synchronised statistics needs (count, sum and sum of squares per channel in forward;
/// `Σ dy` and `Σ dy·x̂` per channel in backward). The trainer implements it on its
/// communicator, so this crate does not depend on the comm layer.
///
/// Every worker must call it the same number of times, in the same order, with equal lengths,
/// as every collective requires; batch norm does, since all workers run the same network.
pub trait StatsAllReduce {
    /// Replaces `values` with their element-wise sum over every worker.
    ///
    /// # Errors
    ///
    /// The collective's failure, as text.
    fn all_reduce_sum(&self, values: &mut [f64]) -> std::result::Result<(), String>;
}

impl Ctx {
    /// Training mode, recording on `tape`, at seed 0, rank 0, epoch 0, step 0 (set those with
    /// [`Ctx::with_rng`]).
    pub fn train(tape: Rc<Tape>) -> Ctx {
        Ctx { tape: Some(tape), train: true, update_running_stats: true, ..Ctx::default() }
    }

    /// Evaluation mode: running statistics, nothing recorded, no dropout, every residual
    /// branch kept and scaled by its survival probability.
    pub fn eval() -> Ctx {
        Ctx::default()
    }

    /// The same context at another point of the run: `seed` and `step` key stochastic depth;
    /// `seed`, `rank`, `epoch` and `step` key dropout masks.
    pub fn with_rng(self, seed: u64, rank: usize, epoch: u64, step: u64) -> Ctx {
        Ctx { rng_seed: seed, rank, epoch, step, ..self }
    }

    /// A parameter as a variable: a leaf on the tape, or a constant without one.
    pub fn param(&self, p: &Rc<Param>) -> Var {
        match &self.tape {
            Some(t) => t.param(p),
            None => {
                if let Some(log) = &self.param_log {
                    log.read(p);
                }
                Var::constant(p.value().clone())
            }
        }
    }

    /// Run the child module `m`, named `name` as in its parent's [`Module::children`], on `x`.
    /// Containers call their children through this, so a [`ShapeTrace`] sees every output.
    pub fn call(&self, name: &str, m: &dyn Module, x: &Var) -> Result<Var> {
        let Some(trace) = &self.trace else {
            return m.forward(x, self);
        };
        trace.stack.borrow_mut().push(name.to_string());
        let y = m.forward(x, self);
        let path = trace.stack.borrow().join(".");
        if let Ok(y) = &y {
            trace.shapes.borrow_mut().insert(path, y.dims().to_vec());
        }
        trace.stack.borrow_mut().pop();
        y
    }
}

/// Output shapes of the modules a forward pass ran through [`Ctx::call`], keyed by dotted path
/// (the paths of [`named_parameters`]).
#[derive(Default)]
pub struct ShapeTrace {
    stack: RefCell<Vec<String>>,
    shapes: RefCell<HashMap<String, Vec<usize>>>,
}

impl ShapeTrace {
    /// An empty trace.
    pub fn new() -> Rc<ShapeTrace> {
        Rc::new(ShapeTrace::default())
    }

    /// The recorded output shape of the module at `path`, if it ran.
    pub fn shape(&self, path: &str) -> Option<Vec<usize>> {
        self.shapes.borrow().get(path).cloned()
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

    /// FLOPs of one forward pass of this module alone (not its children) producing an output
    /// of `output_shape`: two per multiply-add of a convolution or dense layer; 0 for layers
    /// whose work is element-wise.
    fn forward_flops(&self, _output_shape: &[usize]) -> u64 {
        0
    }

    /// True for layers that count as weighted layers in the ResNet paper's depth (convolutions
    /// and dense layers on the main path; projection shortcuts say false).
    fn counts_as_weighted_layer(&self) -> bool {
        false
    }
}

/// A shared module is the module: models hold their blocks as `Rc`s, so a checkpointed
/// segment can keep them for its re-run in backward.
impl<M: Module + ?Sized> Module for Rc<M> {
    fn type_name(&self) -> &'static str {
        self.as_ref().type_name()
    }

    fn forward(&self, x: &Var, cx: &Ctx) -> Result<Var> {
        self.as_ref().forward(x, cx)
    }

    fn local_params(&self) -> Vec<(&'static str, &Rc<Param>)> {
        self.as_ref().local_params()
    }

    fn local_buffers(&self) -> Vec<(&'static str, &Buffer)> {
        self.as_ref().local_buffers()
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        self.as_ref().children()
    }

    fn forward_flops(&self, output_shape: &[usize]) -> u64 {
        self.as_ref().forward_flops(output_shape)
    }

    fn counts_as_weighted_layer(&self) -> bool {
        self.as_ref().counts_as_weighted_layer()
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
