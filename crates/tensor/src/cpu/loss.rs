//! Softmax cross-entropy on the CPU, numerically stable (log-sum-exp after subtracting the
//! row maximum), with sums in f64.

use super::CpuFloat;
use crate::error::Result;
use crate::Tensor;

/// Mean over rows of `logsumexp(logits[n]) - logits[n, label[n]]`, and the softmax
/// probabilities. The loss is a `[1]` tensor of the logits' dtype.
pub(super) fn softmax_cross_entropy_forward<T: CpuFloat>(
    logits: &Tensor,
    labels: &[u32],
    dims: (usize, usize),
) -> Result<(Tensor, Tensor)> {
    let (n, k) = dims;
    let xs = logits.as_slice::<T>()?;
    let mut probs = Vec::with_capacity(n * k);
    let mut total = 0.0f64;
    for (row, &label) in xs.chunks_exact(k).zip(labels) {
        let max = row.iter().fold(T::neg_infinity(), |m, &v| if v > m { v } else { m });
        let start = probs.len();
        probs.extend(row.iter().map(|&v| (v - max).exp()));
        let sum: f64 = probs[start..].iter().map(|p| p.as_f64()).sum();
        let inv = T::from_f64_lossy(1.0 / sum);
        probs[start..].iter_mut().for_each(|p| *p *= inv);
        total += max.as_f64() + sum.ln() - row[label as usize].as_f64();
    }
    let loss = Tensor::from_vec(vec![T::from_f64_lossy(total / n as f64)], [1])?;
    Ok((loss, Tensor::from_vec(probs, [n, k])?))
}

/// `dlogits = dloss · (probs - onehot(labels)) / N`.
pub(super) fn softmax_cross_entropy_backward<T: CpuFloat>(
    probs: &Tensor,
    labels: &[u32],
    dloss: f64,
    dims: (usize, usize),
) -> Result<Tensor> {
    let (n, k) = dims;
    let scale = T::from_f64_lossy(dloss / n as f64);
    let mut d: Vec<T> = probs.as_slice::<T>()?.iter().map(|&p| p * scale).collect();
    for (row, &label) in d.chunks_exact_mut(k.max(1)).zip(labels) {
        row[label as usize] = row[label as usize] - scale;
    }
    Tensor::from_vec(d, [n, k])
}
