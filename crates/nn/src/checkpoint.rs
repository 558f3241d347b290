//! Gradient checkpointing of a model's block sequence: the policy a config names, the
//! segments of consecutive blocks it gives, and the forward that runs each segment without
//! recording and re-runs it in backward ([`strata_autodiff::checkpoint::segment`]).
//!
//! Models built of a sequence of blocks (the ResNets, the deep CNN, `Sequential` and so the
//! MLP and registry models) run that sequence through [`run_blocks`], which reads the
//! [`SegmentPlan`] in [`Ctx::checkpoint`]. The first, unrecorded forward of a segment updates
//! batch-norm running statistics and draws dropout masks and stochastic-depth decisions; the
//! re-run uses a clone of the same context with `update_running_stats` off, so it redraws the
//! same masks and decisions and updates no statistic a second time.

use crate::{Ctx, Module, NnError, Result};
use std::cell::RefCell;
use std::collections::HashSet;
use std::ops::Range;
use std::rc::Rc;
use strata_autodiff::checkpoint::{segment, Rerun};
use strata_autodiff::{AutodiffError, Param, Tape, Var};

/// How a model's block sequence is checkpointed (`model.gradient_checkpointing` in a config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointPolicy {
    /// Record every block (no recomputation).
    None,
    /// Segments of `k` consecutive blocks (the last may be shorter).
    Every(usize),
    /// About `sqrt(n)` near-equal parts of `n` blocks (Chen et al., 2016), all checkpointed but
    /// the last, as [`SegmentPlan::sqrt`] says.
    Sqrt,
    /// The fewest checkpointed blocks whose predicted peak memory per worker stays within
    /// this many bytes (see [`crate::plan::plan_for_budget`]).
    Budget(u64),
}

/// Which consecutive blocks run as checkpointed segments; blocks in no segment are recorded
/// as usual. Segments are sorted and disjoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentPlan {
    segments: Vec<Range<usize>>,
}

impl SegmentPlan {
    /// No segments: every block is recorded.
    pub fn none() -> SegmentPlan {
        SegmentPlan::default()
    }

    /// `segments`, sorted and disjoint, none empty.
    ///
    /// # Errors
    /// [`NnError::InvalidArgument`] if they overlap, are out of order or one is empty.
    pub fn new(segments: Vec<Range<usize>>) -> Result<SegmentPlan> {
        let mut end = 0;
        for r in &segments {
            if r.is_empty() || r.start < end {
                return Err(NnError::InvalidArgument {
                    model: "checkpoint",
                    detail: format!("segments {segments:?} must be non-empty, sorted and disjoint"),
                });
            }
            end = r.end;
        }
        Ok(SegmentPlan { segments })
    }

    /// Segments of `k` blocks (`k >= 1`) covering blocks `first..n`.
    pub fn every(n: usize, k: usize, first: usize) -> SegmentPlan {
        let k = k.max(1);
        let segments =
            (first..n).step_by(k).map(|start| start..(start + k).min(n)).collect::<Vec<_>>();
        SegmentPlan { segments }
    }

    /// The `n` blocks cut into `s = round(sqrt(n))` near-equal parts (the first `n mod s` one
    /// block longer), each a checkpointed segment except the last, which stays recorded as in
    /// `torch.utils.checkpoint.checkpoint_sequential`: backward needs its activations first, so
    /// re-running it would cost time and save no peak memory. A single part is checkpointed.
    pub fn sqrt(n: usize) -> SegmentPlan {
        if n == 0 {
            return SegmentPlan::none();
        }
        let s = ((n as f64).sqrt().round() as usize).clamp(1, n);
        let (base, longer) = (n / s, n % s);
        let mut start = 0;
        let mut segments: Vec<_> = (0..s)
            .map(|i| {
                let len = base + usize::from(i < longer);
                start += len;
                start - len..start
            })
            .collect();
        if segments.len() > 1 {
            segments.pop();
        }
        SegmentPlan { segments }
    }

    /// The segments.
    pub fn segments(&self) -> &[Range<usize>] {
        &self.segments
    }

    /// Number of blocks inside segments (each re-runs once in backward).
    pub fn checkpointed_blocks(&self) -> usize {
        self.segments.iter().map(|r| r.len()).sum()
    }

    /// True if no block is checkpointed.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    fn starting_at(&self, block: usize) -> Option<Range<usize>> {
        self.segments.iter().find(|r| r.start == block).cloned()
    }
}

/// Parameters a segment's unrecorded forward read, once each, in first-read order.
#[derive(Default)]
pub struct ParamLog {
    seen: RefCell<HashSet<*const Param>>,
    params: RefCell<Vec<Rc<Param>>>,
}

impl ParamLog {
    /// Note that `p` was read.
    pub fn read(&self, p: &Rc<Param>) {
        if self.seen.borrow_mut().insert(Rc::as_ptr(p)) {
            self.params.borrow_mut().push(p.clone());
        }
    }

    fn take(&self) -> Vec<Rc<Param>> {
        std::mem::take(&mut self.params.borrow_mut())
    }
}

/// Run `blocks` (children named `{prefix}{i}`) one after another on `x`, as the segments of
/// `cx.checkpoint` say when training on a tape, recorded block by block otherwise. The blocks
/// run with a context without a plan, so nested sequences are not checkpointed again.
///
/// # Errors
/// Whatever a block's forward returns.
pub fn run_blocks<M: Module + ?Sized + 'static>(
    cx: &Ctx,
    prefix: &str,
    blocks: &[Rc<M>],
    x: Var,
) -> Result<Var> {
    let inner = Ctx { checkpoint: None, ..cx.clone() };
    let plan = cx.checkpoint.as_ref().filter(|_| cx.train && cx.tape.is_some());
    // A profile records the outermost block sequence only.
    let _nested = cx.profile.as_ref().map(|p| p.enter_sequence());
    let mut h = x;
    let mut i = 0;
    while i < blocks.len() {
        match plan.and_then(|p| p.starting_at(i)) {
            Some(r) if r.end <= blocks.len() => {
                h = run_segment(&inner, prefix, &blocks[r.clone()], r.start, &h)?;
                i = r.end;
            }
            _ => {
                h = run_one(&inner, prefix, i, &blocks[i], &h)?;
                i += 1;
            }
        }
    }
    Ok(h)
}

fn run_one(cx: &Ctx, prefix: &str, i: usize, block: &dyn Module, x: &Var) -> Result<Var> {
    let name = format!("{prefix}{i}");
    let Some(profile) = cx.profile.as_ref().filter(|p| p.in_outermost_sequence()) else {
        return cx.call(&name, block, x);
    };
    let start = cx.tape.as_ref().map_or(0, |t| t.len());
    let y = cx.call(&name, block, x)?;
    let end = cx.tape.as_ref().map_or(0, |t| t.len());
    profile.record_block(block, start..end, x.value(), y.value());
    Ok(y)
}

fn run_all<M: Module + ?Sized>(
    cx: &Ctx,
    prefix: &str,
    blocks: &[Rc<M>],
    first: usize,
    x: &Var,
) -> Result<Var> {
    let mut h = x.clone();
    for (j, block) in blocks.iter().enumerate() {
        h = cx.call(&format!("{prefix}{}", first + j), block, &h)?;
    }
    Ok(h)
}

/// One checkpointed segment: an unrecorded forward that logs the parameters it reads, then a
/// node on the outer tape that re-runs the blocks in backward.
fn run_segment<M: Module + ?Sized + 'static>(
    cx: &Ctx,
    prefix: &str,
    blocks: &[Rc<M>],
    first: usize,
    x: &Var,
) -> Result<Var> {
    let log = Rc::new(ParamLog::default());
    let unrecorded = Ctx { tape: None, param_log: Some(log.clone()), ..cx.clone() };
    let y = run_all(&unrecorded, prefix, blocks, first, &x.detach())?;
    let params = log.take();

    // The re-run's context holds no outer tape: the node it lives in is on that tape.
    let at = Ctx { tape: None, ..cx.clone() };
    let (blocks, prefix) = (blocks.to_vec(), prefix.to_string());
    let rerun: Rerun = Box::new(move |tape: &Rc<Tape>, xin: &Var| {
        let cx = Ctx {
            tape: Some(tape.clone()),
            update_running_stats: false,
            param_log: None,
            trace: None,
            ..at
        };
        run_all(&cx, &prefix, &blocks, first, xin).map_err(|e| match e {
            NnError::Autodiff(e) => e,
            other => AutodiffError::Rerun(Box::new(other)),
        })
    });
    Ok(segment(cx.tape.as_ref(), x, y.value().clone(), params, rerun)?)
}
