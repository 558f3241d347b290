//! The memory and compute plan of one training step per worker: forward FLOPs per sample and
//! the predicted peak memory (parameters, gradients, optimizer state, saved activations and
//! the largest temporary) for a batch size and a [`SegmentPlan`]. `launcher plan` prints it
//! and the `budget` checkpointing policy ([`plan_for_budget`]) searches with it, so both use
//! this one estimate.
//!
//! The estimate comes from a profile: one training-mode forward on a batch of
//! [`PROFILE_BATCH`] zero samples, recorded on a tape whose [`NodeRecord`]s say which tensors
//! each operation keeps for backward, with the block sequence ([`crate::checkpoint::run_blocks`])
//! marking where each block's records start and end. Kept tensors are counted once per
//! storage, parameter storage excluded; a tensor whose leading axis is the batch scales with
//! the batch size, others (batch-norm statistics) do not. Every stochastic-depth branch runs
//! (the worst case) and no running statistic changes.
//!
//! The step it models is the trainer's: forward (previous step's gradients still held), then
//! gradients are cleared and backward runs; a checkpointed segment re-runs its blocks when
//! backward reaches it. The peak is the largest of: each block's forward (with its
//! intermediates in flight), the end of forward, and the backward of each block or checkpointed
//! segment (a segment's blocks recorded again, everything before it still held, the gradients
//! of everything after it delivered). Only tensors count, as in the tensor
//! layer's allocation accounting; kernel scratch and the data loader's buffers do not.

use crate::checkpoint::SegmentPlan;
use crate::{named_buffers, named_parameters, walk, Ctx, Module, NnError, Result, ShapeTrace};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::rc::Rc;
use strata_autodiff::{ops, NodeRecord, Tape, Var};
use strata_tensor::{DType, Device, Tensor};

/// Samples in the profiling forward pass (2, so batch norm over a 1x1 map is well defined and
/// a leading axis of 2 marks the tensors that scale with the batch).
pub const PROFILE_BATCH: usize = 2;

/// Filled by the block sequence during a profiling forward: where each block's records are.
#[derive(Default)]
pub struct BlockProfile {
    blocks: RefCell<Vec<BlockMark>>,
    /// Block sequences entered and not yet left (a block may hold a sequence of its own).
    depth: Rc<Cell<usize>>,
}

/// Leaves a block sequence when dropped.
pub struct SequenceGuard(Rc<Cell<usize>>);

impl Drop for SequenceGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

struct BlockMark {
    nodes: Range<usize>,
    input: (usize, usize),
    output: (usize, usize),
    param_bytes: usize,
}

impl BlockProfile {
    /// Enter a block sequence, until the guard drops.
    pub fn enter_sequence(&self) -> SequenceGuard {
        self.depth.set(self.depth.get() + 1);
        SequenceGuard(self.depth.clone())
    }

    /// True inside the outermost block sequence and no deeper one: its blocks are recorded.
    pub fn in_outermost_sequence(&self) -> bool {
        self.depth.get() == 1
    }

    /// Note that `block` recorded the tape's nodes `nodes` from `x` to `y`.
    pub fn record_block(&self, block: &dyn Module, nodes: Range<usize>, x: &Tensor, y: &Tensor) {
        let param_bytes =
            named_parameters(block).iter().map(|(_, p)| p.value().size_in_bytes()).sum();
        self.blocks.borrow_mut().push(BlockMark {
            nodes,
            input: (x.storage_id(), x.size_in_bytes()),
            output: (y.storage_id(), y.size_in_bytes()),
            param_bytes,
        });
    }
}

/// What one part of the model (the stem before the blocks, a block, or the head after them)
/// keeps for backward, per storage index of its [`ModelProfile`].
#[derive(Debug, Clone, Default)]
pub struct UnitCost {
    /// Kept storages: index, bytes per sample, bytes that do not scale with the batch.
    pub saved: Vec<(usize, u64, u64)>,
    /// Storage index and bytes per sample of the unit's input and output.
    pub input: Option<(usize, u64)>,
    pub output: Option<(usize, u64)>,
    /// Bytes of the unit's parameters (and so of their gradients).
    pub param_bytes: u64,
    /// The largest tensor the unit produces or reads, bytes per sample.
    pub max_tensor: u64,
}

/// The profile of a model for one sample shape: what each part keeps for backward.
#[derive(Debug, Clone)]
pub struct ModelProfile {
    pub sample_shape: Vec<usize>,
    pub stem: UnitCost,
    pub blocks: Vec<UnitCost>,
    pub head: UnitCost,
    /// Bytes of all parameters, and of buffers (batch-norm running statistics).
    pub param_bytes: u64,
    pub buffer_bytes: u64,
    /// Number of distinct storages the units refer to.
    pub storages: usize,
}

/// Profile `model` for samples of `sample_shape` (see the module documentation). Output
/// `[N, K]` models get a softmax cross-entropy loss as in training.
///
/// # Errors
/// Whatever the model's forward returns for such an input.
pub fn profile(model: &dyn Module, sample_shape: &[usize]) -> Result<ModelProfile> {
    let params = named_parameters(model);
    let dtype = params.first().map(|(_, p)| p.value().dtype()).unwrap_or(DType::F32);
    let mut dims = vec![PROFILE_BATCH];
    dims.extend_from_slice(sample_shape);
    let x = Tensor::zeros(dims, dtype, Device::Cpu)?;
    let tape = Tape::new();
    let marks = Rc::new(BlockProfile::default());
    let cx = Ctx { profile: Some(marks.clone()), update_running_stats: false, ..Ctx::train(tape) };
    let tape = cx.tape.clone().expect("Ctx::train sets a tape");
    let y = model.forward(&Var::constant(x.clone()), &cx)?;
    let loss = match y.dims() {
        [n, _] => Some(ops::softmax_cross_entropy(&y, &vec![0; *n])?),
        _ => None,
    };
    let records = tape.records();
    drop((loss, y));

    let param_storage: HashSet<usize> =
        params.iter().map(|(_, p)| p.value().storage_id()).collect();
    let marks = std::mem::take(&mut *marks.blocks.borrow_mut());
    let mut ids = StorageIds::default();
    let first = marks.first().map_or(records.len(), |m| m.nodes.start);
    let last = marks.last().map_or(records.len(), |m| m.nodes.end);

    let mut stem = unit_cost(&records[0..first], &param_storage, &mut ids);
    stem.input = Some((ids.index(x.storage_id()), per_sample(x.size_in_bytes())));
    stem.max_tensor = stem.max_tensor.max(per_sample(x.size_in_bytes()));
    let mut blocks = Vec::with_capacity(marks.len());
    for m in &marks {
        let mut b = unit_cost(&records[m.nodes.clone()], &param_storage, &mut ids);
        b.param_bytes = m.param_bytes as u64;
        b.input = Some((ids.index(m.input.0), per_sample(m.input.1)));
        b.output = Some((ids.index(m.output.0), per_sample(m.output.1)));
        b.max_tensor = b.max_tensor.max(per_sample(m.input.1)).max(per_sample(m.output.1));
        blocks.push(b);
    }
    let mut head = unit_cost(&records[last..], &param_storage, &mut ids);
    let param_bytes: u64 = params.iter().map(|(_, p)| p.value().size_in_bytes() as u64).sum();
    let block_params: u64 = blocks.iter().map(|b| b.param_bytes).sum();
    // The stem's and head's parameters, split as their records use them.
    head.param_bytes = param_bytes - block_params;
    stem.output = blocks.first().and_then(|b| b.input);
    let buffer_bytes =
        named_buffers(model).iter().map(|(_, b)| b.borrow().size_in_bytes() as u64).sum();
    Ok(ModelProfile {
        sample_shape: sample_shape.to_vec(),
        stem,
        blocks,
        head,
        param_bytes,
        buffer_bytes,
        storages: ids.map.len(),
    })
}

#[derive(Default)]
struct StorageIds {
    map: HashMap<usize, usize>,
}

impl StorageIds {
    fn index(&mut self, storage: usize) -> usize {
        let next = self.map.len();
        *self.map.entry(storage).or_insert(next)
    }
}

fn per_sample(bytes: usize) -> u64 {
    (bytes / PROFILE_BATCH) as u64
}

fn unit_cost(
    records: &[NodeRecord],
    param_storage: &HashSet<usize>,
    ids: &mut StorageIds,
) -> UnitCost {
    let mut cost = UnitCost::default();
    let mut seen = HashSet::new();
    for r in records {
        cost.max_tensor = cost.max_tensor.max(per_sample(r.output.bytes));
        for s in &r.saved {
            if param_storage.contains(&s.storage) || !seen.insert(s.storage) {
                continue;
            }
            let scales = s.dims.len() >= 2 && s.dims[0] == PROFILE_BATCH;
            let (per, fixed) = if scales { (per_sample(s.bytes), 0) } else { (0, s.bytes as u64) };
            cost.saved.push((ids.index(s.storage), per, fixed));
        }
    }
    cost
}

/// Where in the step the predicted peak falls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeakAt {
    /// The end of forward (the previous step's gradients still held).
    EndOfForward,
    /// During forward, inside block `block`.
    Forward { block: usize },
    /// The backward of the checkpointed segment over these blocks.
    SegmentBackward(Range<usize>),
    /// The backward of the recorded block `block` (or of the stem or head when `None`).
    Backward { block: Option<usize> },
}

/// Predicted peak memory per worker of one training step, and its parts at that moment.
#[derive(Debug, Clone)]
pub struct MemoryEstimate {
    pub batch: usize,
    pub parameters: u64,
    /// Batch-norm running statistics.
    pub buffers: u64,
    /// Gradients held at the peak.
    pub gradients: u64,
    pub optimizer_state: u64,
    /// Activations kept for backward (and re-recorded by a segment's re-run) at the peak.
    pub saved_activations: u64,
    /// Tensors in flight at the peak beyond those kept: a block's intermediates in forward,
    /// incoming and outgoing gradients in backward.
    pub largest_temporary: u64,
    pub peak: u64,
    pub at: PeakAt,
    /// Blocks that run forward twice.
    pub recomputed_blocks: usize,
}

impl ModelProfile {
    /// The peak-memory estimate at batch `batch` with `plan`, for an optimizer holding
    /// `optimizer_copies` parameter-sized tensors of state (1 for SGD's momentum buffers).
    pub fn estimate(
        &self,
        batch: usize,
        plan: &SegmentPlan,
        optimizer_copies: u64,
    ) -> MemoryEstimate {
        let n = batch as u64;
        let p = self.param_bytes;
        let fixed = p + self.buffer_bytes + optimizer_copies * p;
        let mut held = Marks::new(self.storages);
        let mut best = (0u64, 0u64, 0u64, 0u64, PeakAt::EndOfForward); // total, grads, act, temp
        let mut consider = |grads: u64, act: u64, temp: u64, at: PeakAt| {
            let total = fixed + grads + act + temp;
            if total > best.0 {
                best = (total, grads, act, temp, at);
            }
        };
        // Gradients delivered once backward has passed block i: the head's and blocks' after i.
        let mut after = vec![self.head.param_bytes; self.blocks.len() + 1];
        for i in (0..self.blocks.len()).rev() {
            after[i] = after[i + 1] + self.blocks[i].param_bytes;
        }

        held.add(&self.stem.saved, n);
        let seg_of = |i: usize| plan.segments().iter().find(|r| r.start == i).cloned();
        let mut i = 0;
        while i < self.blocks.len() {
            let b = &self.blocks[i];
            match seg_of(i).filter(|r| r.end <= self.blocks.len()) {
                Some(r) => {
                    let blocks = &self.blocks[r.clone()];
                    let max_t = blocks.iter().map(|b| b.max_tensor).max().unwrap_or(0) * n;
                    let input = b.input.map(|(s, per)| (s, per, 0));
                    let extra_in = input.map_or(0, |s| held.bytes_if_added(&[s], n));
                    // Forward: the segment's input kept, a block's intermediates in flight.
                    consider(p, held.total + extra_in, 3 * max_t, PeakAt::Forward { block: i });
                    // Backward: the re-run's records on top of what is held before the segment,
                    // the re-computed output and its incoming gradient in flight.
                    let mut rerun: Vec<(usize, u64, u64)> = input.into_iter().collect();
                    rerun.extend(blocks.iter().flat_map(|blk| blk.saved.iter().copied()));
                    let rerun_bytes = held.total + held.bytes_if_added(&rerun, n);
                    let out = blocks.last().and_then(|l| l.output);
                    let out_extra = out.map_or(0, |(s, per)| {
                        rerun.push((s, per, 0));
                        held.total + held.bytes_if_added(&rerun, n) - rerun_bytes
                    });
                    let dout = out.map_or(0, |(_, per)| per * n);
                    let last_t = blocks.last().map_or(0, |l| l.max_tensor) * n;
                    let seg_params: u64 = blocks.iter().map(|b| b.param_bytes).sum();
                    consider(
                        after[r.end] + seg_params,
                        rerun_bytes,
                        out_extra + dout + last_t,
                        PeakAt::SegmentBackward(r.clone()),
                    );
                    held.add(input.as_slice(), n);
                    i = r.end;
                }
                None => {
                    held.add(&b.saved, n);
                    consider(p, held.total, b.max_tensor * n, PeakAt::Forward { block: i });
                    consider(
                        after[i],
                        held.total,
                        2 * b.max_tensor * n,
                        PeakAt::Backward { block: Some(i) },
                    );
                    i += 1;
                }
            }
        }
        held.add(&self.head.saved, n);
        consider(p, held.total, self.head.max_tensor * n, PeakAt::EndOfForward);
        consider(0, held.total, 2 * self.head.max_tensor * n, PeakAt::Backward { block: None });

        let (peak, gradients, saved_activations, largest_temporary, at) = best;
        MemoryEstimate {
            batch,
            parameters: p,
            buffers: self.buffer_bytes,
            gradients,
            optimizer_state: optimizer_copies * p,
            saved_activations,
            largest_temporary,
            peak,
            at,
            recomputed_blocks: plan.checkpointed_blocks(),
        }
    }
}

/// A set of storages held, with their total bytes at one batch size.
struct Marks {
    held: Vec<bool>,
    total: u64,
}

impl Marks {
    fn new(storages: usize) -> Marks {
        Marks { held: vec![false; storages], total: 0 }
    }

    fn add(&mut self, saved: &[(usize, u64, u64)], n: u64) {
        for &(s, per, fixed) in saved {
            if !self.held[s] {
                self.held[s] = true;
                self.total += per * n + fixed;
            }
        }
    }

    fn bytes_if_added(&self, saved: &[(usize, u64, u64)], n: u64) -> u64 {
        let mut seen = HashSet::new();
        saved
            .iter()
            .filter(|(s, ..)| !self.held[*s] && seen.insert(*s))
            .map(|&(_, per, fixed)| per * n + fixed)
            .sum()
    }
}

/// The segments the `budget` policy picks: none if the un-checkpointed step fits in `budget`
/// bytes; else the fewest checkpointed blocks (the first `m`, in segments of `k`) whose
/// predicted peak fits, the lowest peak among those.
///
/// # Errors
/// [`NnError::InvalidArgument`] if the model has no block sequence, or if no plan fits,
/// naming the smallest peak found and what to change.
pub fn plan_for_budget(
    profile: &ModelProfile,
    batch: usize,
    optimizer_copies: u64,
    budget: u64,
) -> Result<SegmentPlan> {
    let none = SegmentPlan::none();
    let peak = |plan: &SegmentPlan| profile.estimate(batch, plan, optimizer_copies).peak;
    if peak(&none) <= budget {
        return Ok(none);
    }
    let n = profile.blocks.len();
    if n == 0 {
        return Err(NnError::InvalidArgument {
            model: "checkpoint",
            detail: "this model has no block sequence to checkpoint".into(),
        });
    }
    let mut best: Option<(usize, u64, SegmentPlan)> = None; // (blocks covered, peak, plan)
    let mut lowest = (u64::MAX, SegmentPlan::sqrt(n));
    for k in 1..=n {
        let fits = |m: usize| peak(&SegmentPlan::every(m, k, 0)) <= budget;
        // Covering more blocks lowers the peak: the smallest m that fits, by bisection.
        let full = SegmentPlan::every(n, k, 0);
        let full_peak = peak(&full);
        if full_peak < lowest.0 {
            lowest = (full_peak, full);
        }
        if full_peak > budget {
            continue;
        }
        let (mut lo, mut hi) = (1, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if fits(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let plan = SegmentPlan::every(lo, k, 0);
        let pk = peak(&plan);
        let better = match &best {
            None => true,
            Some((m, bp, _)) => lo < *m || (lo == *m && pk < *bp),
        };
        if better {
            best = Some((lo, pk, plan));
        }
    }
    match best {
        Some((_, _, plan)) => Ok(plan),
        None => Err(NnError::InvalidArgument {
            model: "checkpoint",
            detail: format!(
                "budget {} is below the smallest predicted peak, {} ({}); raise the budget or \
                 lower data.batch_size",
                bytes_text(budget),
                bytes_text(lowest.0),
                segments_text(&lowest.1)
            ),
        }),
    }
}

/// Forward FLOPs per sample: multiply-adds of convolutions and dense layers, two FLOPs each
/// ([`Module::forward_flops`]); element-wise work (batch norm, ReLU, additions) is left out, as
/// common FLOP counters do. Runs one evaluation-mode forward on a zero sample for the shapes.
///
/// # Errors
/// Whatever the model's forward returns for such an input.
pub fn forward_flops(model: &dyn Module, sample_shape: &[usize]) -> Result<u64> {
    let params = named_parameters(model);
    let dtype = params.first().map(|(_, p)| p.value().dtype()).unwrap_or(DType::F32);
    let mut dims = vec![1];
    dims.extend_from_slice(sample_shape);
    let trace = ShapeTrace::new();
    let cx = Ctx { trace: Some(trace.clone()), ..Ctx::eval() };
    model.forward(&Var::constant(Tensor::zeros(dims, dtype, Device::Cpu)?), &cx)?;
    let mut flops = 0;
    walk(model, "", &mut |path, m| {
        if let Some(shape) = trace.shape(path) {
            flops += m.forward_flops(&shape);
        }
    });
    Ok(flops)
}

/// `bytes` in binary units: `1.50 GiB`.
pub fn bytes_text(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", units[u])
    }
}

/// Parse `"2GiB"`, `"512 MiB"`, `"1.5GB"` or a plain byte count.
///
/// # Errors
/// [`NnError::InvalidArgument`] naming the text and the accepted units.
pub fn parse_bytes(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = (t[..split].trim(), t[split..].trim());
    let scale: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024f64.powi(2),
        "g" | "gib" => 1024f64.powi(3),
        "t" | "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => f64::NAN,
    };
    match num.parse::<f64>() {
        Ok(v) if scale.is_finite() && v >= 0.0 => Ok((v * scale).round() as u64),
        _ => Err(NnError::InvalidArgument {
            model: "checkpoint",
            detail: format!(
                "{text:?} is not a size; write a number of bytes with a unit such as \"2GiB\", \
                 \"512MiB\" or \"1.5GB\""
            ),
        }),
    }
}

/// A plan in words: `no checkpointing`, `a checkpointed segment per block` or `checkpointed
/// segments of 4 blocks`.
fn segments_text(plan: &SegmentPlan) -> String {
    match plan.segments().first().map(|r| r.len()) {
        None => "no checkpointing".into(),
        Some(1) => "a checkpointed segment per block".into(),
        Some(k) => format!("checkpointed segments of {k} blocks"),
    }
}

/// What [`ModelProfile::estimate`] assumes, as `launcher plan` prints it under the estimate.
pub const ESTIMATE_ASSUMPTIONS: &str = "\
(Per worker, one step without gradient accumulation, tensors only, as the allocation accounting
counts them. Parameters, batch-norm statistics and optimizer state (SGD's momentum buffers, even
at momentum 0; AdamW's two moments) count throughout. During forward all of the previous step's
gradients still exist; they are cleared before backward, so a peak in backward counts only the
gradients delivered so far. Every stochastic-depth branch is kept; kernel scratch, loader
buffers and the all-reduce buffer are left out.)";

impl fmt::Display for MemoryEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = match &self.at {
            PeakAt::EndOfForward => "at the end of forward".to_string(),
            PeakAt::Forward { block } => format!("in forward, block {block}"),
            PeakAt::SegmentBackward(r) => {
                format!("in the backward of the segment over blocks {}..{}", r.start, r.end)
            }
            PeakAt::Backward { block: Some(b) } => format!("in the backward of block {b}"),
            PeakAt::Backward { block: None } => "at the start of backward".to_string(),
        };
        writeln!(
            f,
            "Predicted peak memory per worker at batch {}: {}",
            self.batch,
            bytes_text(self.peak)
        )?;
        writeln!(f, "  (peak {at}; {} blocks re-run in backward)", self.recomputed_blocks)?;
        let grads = match self.at {
            PeakAt::EndOfForward | PeakAt::Forward { .. } => "gradients (previous step's, all)",
            PeakAt::SegmentBackward(_) | PeakAt::Backward { .. } => "gradients (delivered so far)",
        };
        let rows = [
            ("parameters", self.parameters),
            ("buffers (batch-norm statistics)", self.buffers),
            (grads, self.gradients),
            ("optimizer state", self.optimizer_state),
            ("saved activations", self.saved_activations),
            ("largest temporary", self.largest_temporary),
        ];
        for (name, v) in rows {
            writeln!(f, "  {name:<34}{:>12}", bytes_text(v))?;
        }
        writeln!(f, "{ESTIMATE_ASSUMPTIONS}")
    }
}
