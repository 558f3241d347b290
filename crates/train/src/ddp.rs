//! Data parallelism: the same initial parameters everywhere (broadcast from rank 0), gradients
//! averaged over the world after backward, batch-norm running statistics averaged before
//! evaluation. All transfers go through one flat f32 buffer in parameter order.

use crate::Result;
use std::rc::Rc;
use strata_autodiff::Param;
use strata_comm::{Communicator, ReduceOp};
use strata_nn::Buffer;
use strata_tensor::{DType, Tensor};

/// Broadcast every parameter's value from rank 0, so all replicas start identical.
pub fn broadcast_parameters(comm: &mut dyn Communicator, params: &[Rc<Param>]) -> Result<()> {
    let mut flat = Vec::new();
    for p in params {
        flat.extend(p.value().to_vec::<f32>()?);
    }
    comm.broadcast(&mut flat, 0)?;
    let mut offset = 0;
    for p in params {
        let mut v = p.value_mut();
        offset += write_back(&mut v, &flat[offset..])?;
    }
    Ok(())
}

/// Average gradients over the world in place. A parameter that received no gradient this step
/// (a dropped block) contributes zeros and receives the average, so every rank reduces the same
/// buffer; in a world of one it gets a zero gradient too, so the optimizer treats it alike
/// (weight decay and momentum go on) whatever the world size.
pub fn all_reduce_gradients(comm: &mut dyn Communicator, params: &[Rc<Param>]) -> Result<()> {
    if comm.world_size() == 1 {
        for p in params {
            if p.grad().is_none() {
                let zeros = p.value().zeros_like()?;
                *p.grad_mut() = Some(zeros);
            }
        }
        return Ok(());
    }
    let mut flat = Vec::new();
    for p in params {
        match p.grad().as_ref() {
            Some(g) => flat.extend(g.to_vec::<f32>()?),
            None => flat.extend(std::iter::repeat(0.0).take(p.value().elem_count())),
        }
    }
    comm.all_reduce(&mut flat, ReduceOp::Mean)?;
    let mut offset = 0;
    for p in params {
        let mut slot = p.grad_mut();
        let g = match slot.as_mut() {
            Some(g) => g,
            None => slot.insert(p.value().zeros_like()?),
        };
        offset += write_back(g, &flat[offset..])?;
    }
    Ok(())
}

/// Average batch-norm running statistics (or any buffers) over the world.
pub fn all_reduce_buffers(comm: &mut dyn Communicator, buffers: &[Buffer]) -> Result<()> {
    if comm.world_size() == 1 {
        return Ok(());
    }
    let mut flat = Vec::new();
    for b in buffers {
        flat.extend(b.borrow().to_vec::<f32>()?);
    }
    comm.all_reduce(&mut flat, ReduceOp::Mean)?;
    let mut offset = 0;
    for b in buffers {
        offset += write_back(&mut b.borrow_mut(), &flat[offset..])?;
    }
    Ok(())
}

/// Overwrite `t` with the first `t.elem_count()` values of `src`; returns that count.
fn write_back(t: &mut Tensor, src: &[f32]) -> Result<usize> {
    let n = t.elem_count();
    match t.dtype() {
        DType::F64 => {
            let dst = t.as_mut_slice::<f64>()?;
            dst.iter_mut().zip(&src[..n]).for_each(|(d, s)| *d = *s as f64);
        }
        _ => t.as_mut_slice::<f32>()?.copy_from_slice(&src[..n]),
    }
    Ok(n)
}
