//! Stochastic depth (Huang et al., 2016, "Deep Networks with Stochastic Depth"): in training,
//! residual block `l` keeps its residual branch with survival probability `p_l` and otherwise
//! returns its shortcut path alone; in evaluation every branch runs, scaled by `p_l`.
//!
//! The survival probabilities decay linearly from 1 at the first block to `p_L` at the last.
//! Keep/drop decisions come from a stream keyed by `(seed, step)` only, so all ranks drop the
//! same blocks at a step and the global batch sees one network (DESIGN.md). A dropped block
//! records nothing on the tape, so its residual branch's parameters receive no gradient (the
//! all-reduce treats a missing gradient as zeros).

use crate::rng::{Stream, STOCHASTIC_DEPTH_STREAM};
use crate::{Ctx, NnError, Result};
use strata_autodiff::{ops, Var};

/// One residual block's stochastic-depth setting: its survival probability and its index among
/// the model's residual blocks (which draw of the `(seed, step)` stream decides it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StochasticDepth {
    /// Probability that the residual branch runs in a training step, in `(0, 1]`.
    pub survival_prob: f64,
    /// Index of the block among the model's residual blocks, counted from 0.
    pub index: usize,
}

/// What a residual block does with its branch in this forward pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BranchMode {
    /// Run the branch and add it to the shortcut (training, kept).
    Run,
    /// Skip the branch: the output is the shortcut path alone (training, dropped).
    Skip,
    /// Run the branch scaled by this survival probability (evaluation).
    Scaled(f64),
}

impl Default for StochasticDepth {
    fn default() -> Self {
        StochasticDepth::OFF
    }
}

impl StochasticDepth {
    /// Never drop: survival probability 1.
    pub const OFF: StochasticDepth = StochasticDepth { survival_prob: 1.0, index: 0 };

    /// Block `index` with survival probability `survival_prob`.
    ///
    /// # Errors
    /// [`NnError::InvalidArgument`] if `survival_prob` is not in `(0, 1]`.
    pub fn new(survival_prob: f64, index: usize) -> Result<StochasticDepth> {
        check_survival(survival_prob)?;
        Ok(StochasticDepth { survival_prob, index })
    }

    /// True if training at `cx` keeps this block's branch: draw `index` of the stream keyed by
    /// `(cx.rng_seed, cx.step)` is below the survival probability. Independent of the rank.
    /// A memory profile ([`Ctx::profile`]) keeps every branch.
    pub fn keeps(&self, cx: &Ctx) -> bool {
        if self.survival_prob >= 1.0 || cx.profile.is_some() {
            return true;
        }
        let stream = Stream::new(&[STOCHASTIC_DEPTH_STREAM, cx.rng_seed, cx.step]);
        stream.uniform(self.index as u64) < self.survival_prob
    }

    /// The branch mode at `cx`: a draw in training, scaling in evaluation.
    pub fn mode(&self, cx: &Ctx) -> BranchMode {
        match (cx.train, self.keeps(cx)) {
            (false, _) => BranchMode::Scaled(self.survival_prob),
            (true, true) => BranchMode::Run,
            (true, false) => BranchMode::Skip,
        }
    }

    /// Combine `shortcut` with the residual branch, which `branch` computes only if this pass
    /// needs it: `shortcut + branch()` (kept), `shortcut` (dropped), or
    /// `shortcut + p * branch()` (evaluation, skipping the scaling when `p = 1`).
    pub fn merge(
        &self,
        cx: &Ctx,
        shortcut: Var,
        branch: impl FnOnce() -> Result<Var>,
    ) -> Result<Var> {
        match self.mode(cx) {
            BranchMode::Skip => Ok(shortcut),
            BranchMode::Run => Ok(ops::add(&branch()?, &shortcut)?),
            BranchMode::Scaled(p) if p >= 1.0 => Ok(ops::add(&branch()?, &shortcut)?),
            BranchMode::Scaled(p) => Ok(ops::add(&ops::scale(&branch()?, p)?, &shortcut)?),
        }
    }
}

fn check_survival(p: f64) -> Result<()> {
    if p > 0.0 && p <= 1.0 {
        return Ok(());
    }
    Err(NnError::InvalidArgument {
        model: "stochastic depth",
        detail: format!(
            "survival probability {p} is not in (0, 1]; use 1 to disable stochastic depth and, \
             for example, 0.5 for the last block as Huang et al. (2016) do"
        ),
    })
}

/// The linear decay rule over `num_blocks` blocks: block `l` (from 0) survives with
/// `1 - l / (num_blocks - 1) * (1 - last)`, so the first block always survives and the last
/// survives with `last` (a single block survives with 1).
///
/// # Errors
/// [`NnError::InvalidArgument`] if `last` is not in `(0, 1]`.
pub fn linear_decay(num_blocks: usize, last: f64) -> Result<Vec<StochasticDepth>> {
    check_survival(last)?;
    let span = num_blocks.saturating_sub(1).max(1) as f64;
    Ok((0..num_blocks)
        .map(|l| StochasticDepth { survival_prob: 1.0 - l as f64 / span * (1.0 - last), index: l })
        .collect())
}
