//! `Dropout`: inverted dropout with masks drawn from a per-(seed, rank, epoch, step) stream.

use crate::rng::{Stream, DROPOUT_STREAM};
use crate::{Ctx, Module, NnError, Result};
use strata_autodiff::{ops, Var};
use strata_tensor::{DType, Tensor};

/// Inverted dropout (Srivastava et al., 2014): in training, each element is zeroed with
/// probability `p` and the survivors are scaled by `1 / (1 - p)`, so evaluation is the identity.
///
/// The mask of element `i` is draw `i` of the stream keyed by `(seed, rank, epoch, step,
/// stream_id)` of the [`Ctx`]: reproducible, different on every rank and step, and identical
/// when a checkpointed segment re-runs its forward. Layers of one model need distinct
/// `stream_id`s for independent masks; the builders number them in construction order.
#[derive(Debug, Clone)]
pub struct Dropout {
    /// Probability of zeroing an element, in `[0, 1]`.
    pub p: f64,
    /// Distinguishes this layer's masks from those of other dropout layers in the model.
    pub stream_id: u64,
}

impl Dropout {
    /// Dropout with probability `p` on stream `stream_id`.
    ///
    /// # Errors
    /// [`NnError::InvalidArgument`] if `p` is not in `[0, 1]`.
    pub fn new(p: f64, stream_id: u64) -> Result<Dropout> {
        if !(0.0..=1.0).contains(&p) {
            return Err(NnError::InvalidArgument {
                model: "Dropout",
                detail: format!("p = {p} is not a probability; use 0 <= p <= 1 (0 disables)"),
            });
        }
        Ok(Dropout { p, stream_id })
    }

    /// The mask this layer applies to an input of `dims` and `dtype` under `cx`: entries are 0
    /// or `1 / (1 - p)` (all 0 when `p = 1`).
    pub fn mask(&self, dims: &[usize], dtype: DType, cx: &Ctx) -> Result<Tensor> {
        let stream = Stream::new(&[
            DROPOUT_STREAM,
            cx.rng_seed,
            cx.rank as u64,
            cx.epoch,
            cx.step,
            self.stream_id,
        ]);
        let keep = 1.0 - self.p;
        let scale = if keep > 0.0 { 1.0 / keep } else { 0.0 };
        let n: usize = dims.iter().product();
        let value = |i: usize| if stream.uniform(i as u64) < keep { scale } else { 0.0 };
        let t = match dtype {
            DType::F64 => Tensor::from_vec((0..n).map(value).collect::<Vec<f64>>(), dims)?,
            _ => Tensor::from_vec((0..n).map(|i| value(i) as f32).collect::<Vec<f32>>(), dims)?,
        };
        Ok(if t.dtype() == dtype { t } else { t.to_dtype(dtype)? })
    }
}

impl Module for Dropout {
    fn type_name(&self) -> &'static str {
        "Dropout"
    }

    fn forward(&self, x: &Var, cx: &Ctx) -> Result<Var> {
        if !cx.train || self.p == 0.0 {
            return Ok(x.clone());
        }
        // TODO(cuda backend): the mask is drawn on the CPU; a CUDA tensor needs it copied over
        // (or drawn by a kernel from the same counter-based stream).
        let mask = self.mask(x.dims(), x.value().dtype(), cx)?;
        Ok(ops::mul_mask(x, &mask)?)
    }
}
