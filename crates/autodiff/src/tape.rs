//! The tape: records of operations in forward order, replayed in reverse by `backward`.

use crate::{AutodiffError, Param, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use strata_tensor::{DType, Tensor};

/// A backward rule: from the gradient of the output, the gradients of each input (in the order
/// the inputs were recorded; `None` where an input needs none). It owns what forward saved, and
/// is dropped, freeing that, as soon as backward has run it.
pub type BackwardFn = Box<dyn FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>>>;

/// Called with a parameter's index (in the order [`Tape::param`] first saw it) once its gradient
/// for this backward pass is final and accumulated into the parameter.
pub type GradReadyHook = Box<dyn FnMut(usize, &Rc<Param>) -> Result<()>>;

struct Node {
    output: usize,
    inputs: Vec<Option<usize>>,
    backward: BackwardFn,
}

#[derive(Default)]
struct Inner {
    next_id: usize,
    nodes: Vec<Node>,
    /// Parameter leaves: var id to (first-seen index, parameter).
    params: HashMap<usize, (usize, Rc<Param>)>,
    /// Ids of the leaves that are not parameters (inputs whose gradient the caller wants).
    leaves: Vec<usize>,
    /// Number of recorded uses of each leaf not yet processed by backward.
    pending_uses: HashMap<usize, usize>,
    hook: Option<GradReadyHook>,
}

/// A reverse-mode tape. Create one per forward pass; it is consumed by [`Tape::backward`].
#[derive(Default)]
pub struct Tape {
    inner: RefCell<Inner>,
}

/// A tensor in a computation: its value, and where it sits on a tape if it needs a gradient.
#[derive(Clone)]
pub struct Var {
    value: Tensor,
    id: Option<usize>,
    tape: Option<Rc<Tape>>,
}

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Var(id={:?}, shape={:?})", self.id, self.value.shape())
    }
}

/// Gradients of the non-parameter leaves, returned by [`Tape::backward`].
#[derive(Default)]
pub struct Gradients(HashMap<usize, Tensor>);

impl Gradients {
    /// The gradient of `leaf`, if backward reached it.
    pub fn get(&self, leaf: &Var) -> Option<&Tensor> {
        leaf.id.and_then(|id| self.0.get(&id))
    }
}

impl Var {
    /// A value that needs no gradient.
    pub fn constant(value: Tensor) -> Var {
        Var { value, id: None, tape: None }
    }

    /// The value.
    pub fn value(&self) -> &Tensor {
        &self.value
    }

    /// The dimensions of the value.
    pub fn dims(&self) -> &[usize] {
        self.value.dims()
    }

    /// True if this value is recorded on a tape.
    pub fn requires_grad(&self) -> bool {
        self.id.is_some()
    }

    /// The tape this value is recorded on.
    pub fn tape(&self) -> Option<&Rc<Tape>> {
        self.tape.as_ref()
    }

    /// The same value, detached from the tape.
    pub fn detach(&self) -> Var {
        Var::constant(self.value.clone())
    }

    /// Record an operation producing `value` from `inputs`. If no input is recorded on a tape,
    /// nothing is recorded and `backward` is dropped at once.
    pub fn record(
        op: &'static str,
        inputs: &[&Var],
        value: Tensor,
        backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + 'static,
    ) -> Result<Var> {
        let mut tape: Option<&Rc<Tape>> = None;
        for v in inputs {
            if let (Some(t), Some(_)) = (&v.tape, v.id) {
                match tape {
                    Some(seen) if !Rc::ptr_eq(seen, t) => {
                        return Err(AutodiffError::MixedTapes(op))
                    }
                    _ => tape = Some(t),
                }
            }
        }
        let Some(tape) = tape else {
            return Ok(Var::constant(value));
        };
        let ids: Vec<Option<usize>> = inputs.iter().map(|v| v.id).collect();
        let id = tape.push(ids, Box::new(backward));
        Ok(Var { value, id: Some(id), tape: Some(tape.clone()) })
    }
}

impl Tape {
    /// A new, empty tape.
    pub fn new() -> Rc<Tape> {
        Rc::new(Tape::default())
    }

    fn fresh_id(&self) -> usize {
        let mut inner = self.inner.borrow_mut();
        inner.next_id += 1;
        inner.next_id - 1
    }

    fn push(&self, inputs: Vec<Option<usize>>, backward: BackwardFn) -> usize {
        let output = self.fresh_id();
        let mut inner = self.inner.borrow_mut();
        for id in inputs.iter().flatten() {
            if let Some(n) = inner.pending_uses.get_mut(id) {
                *n += 1;
            }
        }
        inner.nodes.push(Node { output, inputs, backward });
        output
    }

    /// A leaf that needs a gradient; [`Tape::backward`] returns it in [`Gradients`].
    pub fn leaf(self: &Rc<Self>, value: Tensor) -> Var {
        let id = self.fresh_id();
        let mut inner = self.inner.borrow_mut();
        inner.leaves.push(id);
        inner.pending_uses.insert(id, 0);
        Var { value, id: Some(id), tape: Some(self.clone()) }
    }

    /// A parameter as a leaf; backward accumulates its gradient into the parameter.
    pub fn param(self: &Rc<Self>, p: &Rc<Param>) -> Var {
        let value = p.value().clone();
        let id = self.fresh_id();
        let mut inner = self.inner.borrow_mut();
        let index = inner.params.len();
        inner.params.insert(id, (index, p.clone()));
        inner.pending_uses.insert(id, 0);
        Var { value, id: Some(id), tape: Some(self.clone()) }
    }

    /// Call `hook` for each parameter as soon as its gradient is final during backward.
    pub fn set_grad_ready_hook(&self, hook: GradReadyHook) {
        self.inner.borrow_mut().hook = Some(hook);
    }

    /// Number of operations recorded.
    pub fn len(&self) -> usize {
        self.inner.borrow().nodes.len()
    }

    /// True if nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Back-propagate from the one-element `loss` with seed gradient 1. Parameter gradients
    /// are accumulated into the parameters (the grad-ready hook fires for each as it becomes
    /// final); gradients of other leaves are returned. The records are consumed: what forward
    /// saved is freed as backward passes it.
    pub fn backward(&self, loss: &Var) -> Result<Gradients> {
        let value = loss.value();
        if value.elem_count() != 1 {
            return Err(AutodiffError::NonScalarLoss(value.dims().to_vec()));
        }
        let seed = match value.dtype() {
            DType::F64 => Tensor::from_vec(vec![1.0f64], value.dims())?,
            _ => Tensor::from_vec(vec![1.0f32], value.dims())?,
        };

        let (nodes, mut pending, params, leaves, mut hook) = {
            let mut inner = self.inner.borrow_mut();
            (
                std::mem::take(&mut inner.nodes),
                std::mem::take(&mut inner.pending_uses),
                std::mem::take(&mut inner.params),
                std::mem::take(&mut inner.leaves),
                inner.hook.take(),
            )
        };
        let mut grads: HashMap<usize, Tensor> = HashMap::new();
        if let Some(id) = loss.id {
            grads.insert(id, seed);
        }

        for node in nodes.into_iter().rev() {
            let Some(dout) = grads.remove(&node.output) else {
                // Nothing downstream needs this value's gradient: skip the rule, but the
                // leaves it uses still count the use as done.
                finish_uses(&node.inputs, &mut pending, &params, &mut grads, &mut hook)?;
                continue;
            };
            let dinputs = (node.backward)(&dout)?;
            drop(dout);
            for (input, dinput) in node.inputs.iter().zip(dinputs) {
                if let (Some(id), Some(g)) = (input, dinput) {
                    accumulate(&mut grads, *id, g)?;
                }
            }
            finish_uses(&node.inputs, &mut pending, &params, &mut grads, &mut hook)?;
        }

        // A parameter read directly as the loss has no consuming node.
        for (id, (index, p)) in &params {
            if pending.get(id) == Some(&0) {
                if let Some(g) = grads.remove(id) {
                    deliver(*index, p, g, &mut hook)?;
                }
            }
        }
        let out = leaves.iter().filter_map(|id| grads.remove(id).map(|g| (*id, g))).collect();
        self.inner.borrow_mut().hook = hook;
        Ok(Gradients(out))
    }
}

fn accumulate(grads: &mut HashMap<usize, Tensor>, id: usize, g: Tensor) -> Result<()> {
    match grads.get_mut(&id) {
        Some(acc) => acc.backend()?.add_assign(acc, &g)?,
        None => {
            grads.insert(id, g);
        }
    }
    Ok(())
}

/// Count one processed use of each leaf input; a parameter whose uses are all processed has
/// its final gradient, which is delivered to it.
fn finish_uses(
    inputs: &[Option<usize>],
    pending: &mut HashMap<usize, usize>,
    params: &HashMap<usize, (usize, Rc<Param>)>,
    grads: &mut HashMap<usize, Tensor>,
    hook: &mut Option<GradReadyHook>,
) -> Result<()> {
    for id in inputs.iter().flatten() {
        let Some(n) = pending.get_mut(id) else { continue };
        *n -= 1;
        if *n == 0 {
            if let Some((index, p)) = params.get(id) {
                if let Some(g) = grads.remove(id) {
                    deliver(*index, p, g, hook)?;
                }
            }
        }
    }
    Ok(())
}

fn deliver(index: usize, p: &Rc<Param>, g: Tensor, hook: &mut Option<GradReadyHook>) -> Result<()> {
    p.accumulate_grad(g)?;
    if let Some(h) = hook.as_mut() {
        h(index, p)?;
    }
    Ok(())
}
