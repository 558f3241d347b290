//! Trainable parameters: a value, an accumulated gradient, and how the optimizer treats them.

use std::cell::{Ref, RefCell, RefMut};
use strata_tensor::Tensor;

/// A trainable parameter. Gradients accumulate across backward passes until [`Param::zero_grad`],
/// as in PyTorch.
#[derive(Debug)]
pub struct Param {
    value: RefCell<Tensor>,
    grad: RefCell<Option<Tensor>>,
    /// Whether weight decay applies (off by default for batch-norm scales/shifts and biases).
    pub weight_decay: bool,
}

impl Param {
    /// A parameter with weight decay applied.
    pub fn new(value: Tensor) -> Self {
        Param { value: RefCell::new(value), grad: RefCell::new(None), weight_decay: true }
    }

    /// A parameter excluded from weight decay (batch-norm gamma/beta, biases).
    pub fn without_weight_decay(value: Tensor) -> Self {
        Param { weight_decay: false, ..Param::new(value) }
    }

    /// The current value.
    pub fn value(&self) -> Ref<'_, Tensor> {
        self.value.borrow()
    }

    /// The value, for in-place updates by optimizers and broadcasts.
    pub fn value_mut(&self) -> RefMut<'_, Tensor> {
        self.value.borrow_mut()
    }

    /// The accumulated gradient, if any backward pass reached this parameter.
    pub fn grad(&self) -> Ref<'_, Option<Tensor>> {
        self.grad.borrow()
    }

    /// The gradient slot, for reducers that average it in place.
    pub fn grad_mut(&self) -> RefMut<'_, Option<Tensor>> {
        self.grad.borrow_mut()
    }

    /// Forget the accumulated gradient.
    pub fn zero_grad(&self) {
        *self.grad.borrow_mut() = None;
    }

    /// Add `g` to the accumulated gradient (or set it, if none).
    pub fn accumulate_grad(&self, g: Tensor) -> strata_tensor::Result<()> {
        let mut slot = self.grad.borrow_mut();
        match slot.as_mut() {
            Some(acc) => acc.backend()?.add_assign(acc, &g),
            None => {
                *slot = Some(g);
                Ok(())
            }
        }
    }
}
