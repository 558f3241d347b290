//! The backend trait: every compute operation of the tensor layer, implemented once per device.
//!
//! Shapes: images are NCHW, convolution weights KCRS (out channels, in channels, rows, columns),
//! linear weights `[out, in]`. All operations produce new tensors unless the name ends in
//! `_assign` or `_step`, which update their first argument in place. Backward passes overwrite
//! (never accumulate into) the tensors they return; accumulation is the tape's job.

use crate::error::{Result, TensorError};
use crate::{Device, Tensor};

/// Stride and zero padding of a square 2-D convolution or pooling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    pub stride: usize,
    pub padding: usize,
}

/// Max pooling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dParams {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

/// What batch-norm forward in training mode returns: the output and the per-channel batch
/// statistics that backward and the running-statistics update need.
#[derive(Debug, Clone)]
pub struct BatchNormOutput {
    /// Normalised, scaled and shifted output, same shape as the input.
    pub y: Tensor,
    /// Per-channel batch mean, shape `[C]`.
    pub mean: Tensor,
    /// Per-channel biased batch variance (divided by the count), shape `[C]`.
    pub var: Tensor,
    /// Per-channel `1 / sqrt(var + eps)`, shape `[C]`.
    pub invstd: Tensor,
}

/// Gradients of batch norm.
#[derive(Debug, Clone)]
pub struct BatchNormGrads {
    pub dx: Tensor,
    pub dgamma: Tensor,
    pub dbeta: Tensor,
}

/// Gradients of a linear layer `y = x wᵀ + b`.
#[derive(Debug, Clone)]
pub struct LinearGrads {
    pub dx: Tensor,
    pub dw: Tensor,
    /// Present when the layer has a bias.
    pub db: Option<Tensor>,
}

/// Hyper-parameters of one SGD step (PyTorch's formulation): `g = grad + wd * p`;
/// `buf = momentum * buf + g` (buf = g on the first step); `g = nesterov ? g + momentum * buf :
/// buf`; `p -= lr * g`. With `momentum == 0` the buffer is neither read nor written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdParams {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    /// True on the first step of this parameter, when the momentum buffer is set to the gradient.
    pub first_step: bool,
}

/// Hyper-parameters of one AdamW step (PyTorch's `AdamW`, decoupled weight decay):
/// `p *= 1 - lr * wd`; `m = beta1 * m + (1 - beta1) * g`; `v = beta2 * v + (1 - beta2) * g^2`;
/// `p -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// The number of this step for this parameter, counted from 1 (for the bias corrections).
    pub step: u64,
}

/// Every compute operation, for one device. Batch norm works on `[N, C, H, W]` and on `[N, C]`
/// (BatchNorm1d), reducing over every axis but C.
pub trait Backend: Send + Sync {
    /// Name of the backend, for messages.
    fn name(&self) -> &'static str;

    /// `y[n,k,p,q] = sum_{c,r,s} x[n,c,p*stride+r-pad, q*stride+s-pad] * w[k,c,r,s]`.
    fn conv2d_forward(&self, x: &Tensor, w: &Tensor, p: Conv2dParams) -> Result<Tensor>;
    /// Gradient of the convolution's input: `dx` of shape `x_dims` from `dy` and `w`.
    fn conv2d_backward_data(
        &self,
        dy: &Tensor,
        w: &Tensor,
        x_dims: [usize; 4],
        p: Conv2dParams,
    ) -> Result<Tensor>;
    /// Gradient of the convolution's weight: `dw` of shape `w_dims` from `dy` and `x`.
    fn conv2d_backward_filter(
        &self,
        dy: &Tensor,
        x: &Tensor,
        w_dims: [usize; 4],
        p: Conv2dParams,
    ) -> Result<Tensor>;

    /// Batch norm with batch statistics (training mode). Running statistics are not touched.
    fn batch_norm_forward_train(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f64,
    ) -> Result<BatchNormOutput>;
    /// Batch norm with given (running) statistics (evaluation mode).
    fn batch_norm_forward_eval(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        mean: &Tensor,
        var: &Tensor,
        eps: f64,
    ) -> Result<Tensor>;
    /// Backward of training-mode batch norm, from the saved input and statistics.
    fn batch_norm_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        gamma: &Tensor,
        mean: &Tensor,
        invstd: &Tensor,
    ) -> Result<BatchNormGrads>;

    /// Per-channel batch statistics of `x` in f64, `(mean, biased variance)`, without
    /// normalising (the first half of synchronised batch norm; the second is
    /// [`batch_norm_forward_eval`](Self::batch_norm_forward_eval) with the world's statistics).
    fn batch_norm_stats(&self, x: &Tensor) -> Result<Vec<(f64, f64)>>;
    /// The reduction half of [`batch_norm_backward`](Self::batch_norm_backward): per channel
    /// `(Σ dy, Σ dy·x̂)` in f64 with `x̂ = (x - mean)·invstd`, which are `dbeta` and `dgamma`.
    fn batch_norm_backward_reduce(
        &self,
        dy: &Tensor,
        x: &Tensor,
        mean: &Tensor,
        invstd: &Tensor,
    ) -> Result<Vec<(f64, f64)>>;
    /// The element-wise half of [`batch_norm_backward`](Self::batch_norm_backward): a new `dx`,
    /// `gamma·invstd · (dy - Σdy/count - x̂ · Σdy·x̂/count)`, from per-channel `sums` as
    /// [`batch_norm_backward_reduce`](Self::batch_norm_backward_reduce) returns them (possibly
    /// summed over workers) over `count` elements per channel.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_backward_elemt(
        &self,
        dy: &Tensor,
        x: &Tensor,
        gamma: &Tensor,
        mean: &Tensor,
        invstd: &Tensor,
        sums: &[(f64, f64)],
        count: f64,
    ) -> Result<Tensor>;

    /// `max(x, 0)`.
    fn relu_forward(&self, x: &Tensor) -> Result<Tensor>;
    /// `dy * (y > 0)`, from the forward output `y`.
    fn relu_backward(&self, dy: &Tensor, y: &Tensor) -> Result<Tensor>;
    /// Element-wise `a + b` of equal shapes.
    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor>;
    /// Element-wise `a * s`.
    fn scale(&self, a: &Tensor, s: f64) -> Result<Tensor>;
    /// Element-wise `a * mask`, where mask has the same shape (dropout).
    fn mul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor>;

    /// Mean over H and W: `[N, C, H, W]` to `[N, C]`.
    fn global_avg_pool_forward(&self, x: &Tensor) -> Result<Tensor>;
    /// Spread `dy[N, C]` evenly over `x_dims`.
    fn global_avg_pool_backward(&self, dy: &Tensor, x_dims: [usize; 4]) -> Result<Tensor>;
    /// Max pooling; returns the output and, for each output element, the index of its
    /// maximum in the flattened `x` (which must have at most 2³² elements). Padding is at most
    /// half the window, as in PyTorch; a window holding NaN yields NaN.
    fn max_pool2d_forward(&self, x: &Tensor, p: Pool2dParams) -> Result<(Tensor, Vec<u32>)>;
    /// Route `dy` to the argmax positions recorded by forward.
    fn max_pool2d_backward(
        &self,
        dy: &Tensor,
        argmax: &[u32],
        x_dims: [usize; 4],
    ) -> Result<Tensor>;

    /// `y = x wᵀ + b` for `x: [N, I]`, `w: [O, I]`, `b: [O]`.
    fn linear_forward(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor>;
    /// Gradients of `linear_forward`.
    fn linear_backward(
        &self,
        dy: &Tensor,
        x: &Tensor,
        w: &Tensor,
        has_bias: bool,
    ) -> Result<LinearGrads>;

    /// Mean softmax cross-entropy of `logits: [N, K]` against class `labels`; returns the loss
    /// (as a `[1]` tensor) and the softmax probabilities, which backward uses.
    fn softmax_cross_entropy_forward(
        &self,
        logits: &Tensor,
        labels: &[u32],
    ) -> Result<(Tensor, Tensor)>;
    /// `dlogits = dloss * (probs - onehot(labels)) / N`.
    fn softmax_cross_entropy_backward(
        &self,
        probs: &Tensor,
        labels: &[u32],
        dloss: f64,
    ) -> Result<Tensor>;

    /// `dst += src` (gradient accumulation).
    fn add_assign(&self, dst: &mut Tensor, src: &Tensor) -> Result<()>;
    /// `dst *= s`.
    fn scale_assign(&self, dst: &mut Tensor, s: f64) -> Result<()>;
    /// Sum of squares of all elements, squared and accumulated in f64 (for gradient norms); the
    /// result does not depend on the thread count.
    fn sum_squares(&self, x: &Tensor) -> Result<f64>;
    /// One SGD step on `param` in place, updating `momentum_buf` in place.
    fn sgd_step(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        momentum_buf: &mut Tensor,
        p: SgdParams,
    ) -> Result<()>;
    /// One AdamW step on `param` in place, updating the first and second moment estimates
    /// `exp_avg` and `exp_avg_sq` in place.
    fn adamw_step(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        exp_avg: &mut Tensor,
        exp_avg_sq: &mut Tensor,
        p: AdamWParams,
    ) -> Result<()>;
}

/// The backend computing on `device`, or an error saying why there is none.
pub fn backend_for(device: Device) -> Result<&'static dyn Backend> {
    match device {
        Device::Cpu => Ok(&crate::cpu::CpuBackend),
        // TODO(cuda backend issue): the cudarc backend (cuBLAS, cuDNN, NVRTC kernels) plugs in
        // here; until it lands, CUDA devices are reported unavailable in every build.
        Device::Cuda(i) => Err(TensorError::CudaUnavailable(
            i,
            if cfg!(feature = "cuda") {
                "the CUDA backend is not implemented yet".into()
            } else {
                "Strata was built without the `cuda` feature".into()
            },
        )),
    }
}
