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
    record: NodeRecord,
    /// The order in which backward counts the uses of `inputs` done (and so hands on the
    /// parameters among them), if the rule sets one while it runs; input order otherwise.
    use_order: Option<UseOrder>,
}

/// An order of a node's inputs, written by its backward rule (checkpointed segments hand on
/// their parameters in the order their re-run made them final).
pub(crate) type UseOrder = Rc<RefCell<Vec<usize>>>;

/// A tensor a recorded operation keeps for its backward rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedTensor {
    /// [`Tensor::storage_id`] of the kept tensor: equal ids are one allocation.
    pub storage: usize,
    pub dims: Vec<usize>,
    pub bytes: usize,
}

impl SavedTensor {
    fn of(t: &Tensor) -> SavedTensor {
        SavedTensor { storage: t.storage_id(), dims: t.dims().to_vec(), bytes: t.size_in_bytes() }
    }
}

/// What one recorded operation produced and keeps until backward runs it, for memory
/// estimates ([`Tape::records`]).
#[derive(Debug, Clone)]
pub struct NodeRecord {
    pub op: &'static str,
    /// The output's storage, dims and bytes.
    pub output: SavedTensor,
    /// What the backward rule owns (inputs, outputs or statistics it needs).
    pub saved: Vec<SavedTensor>,
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
    /// Segment tapes return parameter gradients instead of accumulating them.
    collect_params: bool,
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

/// Gradients of the non-parameter leaves, returned by [`Tape::backward`]; on a segment tape
/// ([`Tape::for_segment`]) the parameter gradients as well.
#[derive(Default)]
pub struct Gradients {
    leaves: HashMap<usize, Tensor>,
    params: Vec<(Rc<Param>, Tensor)>,
}

impl Gradients {
    /// The gradient of `leaf`, if backward reached it.
    pub fn get(&self, leaf: &Var) -> Option<&Tensor> {
        leaf.id.and_then(|id| self.leaves.get(&id))
    }

    /// Take the gradient of `leaf` out, if backward reached it.
    pub fn take(&mut self, leaf: &Var) -> Option<Tensor> {
        leaf.id.and_then(|id| self.leaves.remove(&id))
    }

    /// Parameter gradients a segment tape collected, in the order they became final (a
    /// parameter read twice appears twice); empty for an ordinary tape, which accumulates them
    /// into the parameters instead.
    pub fn take_params(&mut self) -> Vec<(Rc<Param>, Tensor)> {
        std::mem::take(&mut self.params)
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
    /// nothing is recorded and `backward` is dropped at once. Memory estimates assume the rule
    /// keeps the values of `inputs`; [`Var::record_saving`] says exactly what it keeps.
    pub fn record(
        op: &'static str,
        inputs: &[&Var],
        value: Tensor,
        backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + 'static,
    ) -> Result<Var> {
        let saved: Vec<Tensor> = inputs.iter().map(|v| v.value().clone()).collect();
        Var::record_saving(op, inputs, value, &saved, backward)
    }

    /// [`Var::record`], naming the tensors `backward` keeps (`saved`), which the tape's
    /// [`NodeRecord`]s report for memory estimates.
    pub fn record_saving(
        op: &'static str,
        inputs: &[&Var],
        value: Tensor,
        saved: &[Tensor],
        backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + 'static,
    ) -> Result<Var> {
        Var::record_ordered(op, inputs, value, saved, None, Box::new(backward))
    }

    /// [`Var::record_saving`] with an input order the rule may set while it runs.
    pub(crate) fn record_ordered(
        op: &'static str,
        inputs: &[&Var],
        value: Tensor,
        saved: &[Tensor],
        use_order: Option<UseOrder>,
        backward: BackwardFn,
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
        let record = NodeRecord {
            op,
            output: SavedTensor::of(&value),
            saved: saved.iter().map(SavedTensor::of).collect(),
        };
        let id = tape.push(Node { output: 0, inputs: ids, backward, record, use_order });
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

    /// A tape for re-running a checkpointed segment: its backward returns parameter gradients
    /// in [`Gradients::take_params`] rather than accumulating them into the parameters, so the
    /// segment's node on the outer tape hands them on as an ordinary operation would.
    pub fn for_segment() -> Rc<Tape> {
        let tape = Tape::default();
        tape.inner.borrow_mut().collect_params = true;
        Rc::new(tape)
    }

    fn push(&self, mut node: Node) -> usize {
        let output = self.fresh_id();
        let mut inner = self.inner.borrow_mut();
        for id in node.inputs.iter().flatten() {
            if let Some(n) = inner.pending_uses.get_mut(id) {
                *n += 1;
            }
        }
        node.output = output;
        inner.nodes.push(node);
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

    /// What each operation recorded so far produced and keeps, in forward order.
    pub fn records(&self) -> Vec<NodeRecord> {
        self.inner.borrow().nodes.iter().map(|n| n.record.clone()).collect()
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
        self.backward_from(loss, seed)
    }

    /// Back-propagate the gradient `doutput` of `output` (same shape as its value), as
    /// [`Tape::backward`] does from a loss.
    ///
    /// # Errors
    /// [`AutodiffError::Tensor`] if `doutput` does not have the shape of `output`, or a rule
    /// fails.
    pub fn backward_from(&self, output: &Var, doutput: Tensor) -> Result<Gradients> {
        if doutput.dims() != output.dims() {
            return Err(strata_tensor::error::shape_err(
                "backward_from",
                format!("gradient {:?} for an output of {:?}", doutput.dims(), output.dims()),
            )
            .into());
        }
        let (nodes, pending, params, leaves, hook, collect) = {
            let mut inner = self.inner.borrow_mut();
            (
                std::mem::take(&mut inner.nodes),
                std::mem::take(&mut inner.pending_uses),
                std::mem::take(&mut inner.params),
                std::mem::take(&mut inner.leaves),
                inner.hook.take(),
                inner.collect_params,
            )
        };
        let mut grads: HashMap<usize, Tensor> = HashMap::new();
        if let Some(id) = output.id {
            grads.insert(id, doutput);
        }
        let mut sink = Sink { pending, params, hook, collect, collected: Vec::new() };

        for node in nodes.into_iter().rev() {
            let Some(dout) = grads.remove(&node.output) else {
                // Nothing downstream needs this value's gradient: skip the rule, but the
                // leaves it uses still count the use as done.
                sink.finish_uses(&node.inputs, &mut grads)?;
                continue;
            };
            let dinputs = (node.backward)(&dout)?;
            drop(dout);
            for (input, dinput) in node.inputs.iter().zip(dinputs) {
                if let (Some(id), Some(g)) = (input, dinput) {
                    accumulate(&mut grads, *id, g)?;
                }
            }
            let order = node.use_order.as_ref().map(|o| o.borrow().clone()).unwrap_or_default();
            if order.len() == node.inputs.len() {
                let inputs: Vec<Option<usize>> = order.iter().map(|&i| node.inputs[i]).collect();
                sink.finish_uses(&inputs, &mut grads)?;
            } else {
                sink.finish_uses(&node.inputs, &mut grads)?;
            }
        }

        // A parameter read directly as the output has no consuming node.
        let direct: Vec<(usize, usize, Rc<Param>)> = sink
            .params
            .iter()
            .filter(|(id, _)| sink.pending.get(id) == Some(&0))
            .map(|(id, (index, p))| (*id, *index, p.clone()))
            .collect();
        for (id, index, p) in direct {
            if let Some(g) = grads.remove(&id) {
                sink.deliver(index, &p, g)?;
            }
        }
        let out = leaves.iter().filter_map(|id| grads.remove(id).map(|g| (*id, g))).collect();
        self.inner.borrow_mut().hook = sink.hook;
        Ok(Gradients { leaves: out, params: sink.collected })
    }
}

/// Where final parameter gradients go during one backward pass.
struct Sink {
    /// Number of recorded uses of each leaf not yet processed.
    pending: HashMap<usize, usize>,
    params: HashMap<usize, (usize, Rc<Param>)>,
    hook: Option<GradReadyHook>,
    /// Collect gradients (segment tapes) instead of accumulating them.
    collect: bool,
    collected: Vec<(Rc<Param>, Tensor)>,
}

impl Sink {
    /// Count one processed use of each leaf input; a parameter whose uses are all processed
    /// has its final gradient, which is delivered.
    fn finish_uses(
        &mut self,
        inputs: &[Option<usize>],
        grads: &mut HashMap<usize, Tensor>,
    ) -> Result<()> {
        for id in inputs.iter().flatten() {
            let Some(n) = self.pending.get_mut(id) else { continue };
            *n -= 1;
            if *n == 0 {
                if let Some((index, p)) = self.params.get(id).cloned() {
                    if let Some(g) = grads.remove(id) {
                        self.deliver(index, &p, g)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn deliver(&mut self, index: usize, p: &Rc<Param>, g: Tensor) -> Result<()> {
        if self.collect {
            self.collected.push((p.clone(), g));
            return Ok(());
        }
        p.accumulate_grad(g)?;
        if let Some(h) = self.hook.as_mut() {
            h(index, p)?;
        }
        Ok(())
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
