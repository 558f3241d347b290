//! Checkpointed segments (gradient checkpointing, Chen et al., 2016): a function of one input
//! that runs forward without recording, keeps only its input, and in backward re-runs itself
//! with recording on a tape of its own and back-propagates the incoming gradient through it.

use crate::{Param, Result, Tape, Var};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use strata_tensor::Tensor;

/// Re-runs a segment's forward with recording: from a tape made by [`Tape::for_segment`] and
/// the segment's input (a leaf on that tape when its gradient is needed), the segment's output.
/// It must compute what the unrecorded forward computed, reading the same parameters.
pub type Rerun = Box<dyn FnOnce(&Rc<Tape>, &Var) -> Result<Var>>;

/// Record a checkpointed segment on the tape of `x` or of `params`, whose forward the caller
/// has just run without recording (its input `x` detached, parameters read as constants):
/// `output` is that forward's result and `params` the parameters it read, once each, in the
/// order it first read them. The segment keeps only `x`.
///
/// In backward, the segment's node calls `rerun` on a fresh segment tape, back-propagates the
/// incoming gradient through the re-run, and returns the input's gradient and each
/// parameter's, which the outer tape then accumulates and hands on (grad-ready hook included)
/// once each, as it would for the un-checkpointed operations: all of the segment's parameters
/// when its backward ends (that is when their gradients are final), in the order the re-run's
/// backward made them final, which is the un-checkpointed order. On the CPU backend the re-run
/// computes the same values, so gradients are bit-identical with and without checkpointing.
///
/// `params` are recorded on `tape` (the outer tape; `x`'s when `None`) as leaves now, so their
/// first-seen indices are the ones the un-checkpointed forward would have given them. Without
/// any tape, nothing is recorded and `rerun` is dropped.
///
/// # Errors
/// [`crate::AutodiffError::MixedTapes`] if `x` is recorded on another tape than `tape`.
pub fn segment(
    tape: Option<&Rc<Tape>>,
    x: &Var,
    output: Tensor,
    params: Vec<Rc<Param>>,
    rerun: Rerun,
) -> Result<Var> {
    let tape = tape.or(x.tape());
    let param_vars: Vec<Var> = match tape {
        Some(t) => params.iter().map(|p| t.param(p)).collect(),
        None => Vec::new(),
    };
    let mut inputs: Vec<&Var> = vec![x];
    inputs.extend(param_vars.iter());
    let xv = x.value().clone();
    let need_dx = x.requires_grad();
    let saved = [xv.clone()];
    let order: Rc<RefCell<Vec<usize>>> = Rc::default();
    let write_order = order.clone();
    let backward = move |dy: &Tensor| -> Result<Vec<Option<Tensor>>> {
        let inner = Tape::for_segment();
        let xin = if need_dx { inner.leaf(xv) } else { Var::constant(xv) };
        let y = rerun(&inner, &xin)?;
        let mut grads = inner.backward_from(&y, dy.clone())?;
        drop(y);

        let slot: HashMap<*const Param, usize> =
            params.iter().enumerate().map(|(i, p)| (Rc::as_ptr(p), i)).collect();
        let mut out: Vec<Option<Tensor>> = vec![None; 1 + params.len()];
        out[0] = if need_dx { grads.take(&xin) } else { None };
        // Hand the parameters on in the order the re-run made them final, as the
        // un-checkpointed backward would; those it never reached come last.
        let mut use_order = vec![0];
        for (p, g) in grads.take_params() {
            let Some(&i) = slot.get(&Rc::as_ptr(&p)) else {
                return Err(crate::AutodiffError::SegmentParam(params.len()));
            };
            match &mut out[1 + i] {
                Some(acc) => acc.backend()?.add_assign(acc, &g)?,
                empty => {
                    *empty = Some(g);
                    use_order.push(1 + i);
                }
            }
        }
        use_order.extend((1..out.len()).filter(|i| out[*i].is_none()));
        *write_order.borrow_mut() = use_order;
        Ok(out)
    };
    Var::record_ordered("checkpoint", &inputs, output, &saved, Some(order), Box::new(backward))
}
