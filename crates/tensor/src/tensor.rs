//! `Tensor`: a shape plus shared, reference-counted storage on one device.

use crate::backend::{backend_for, Backend};
use crate::error::{shape_err, Result, TensorError};
use crate::memory::{track_alloc, track_free};
use crate::{DType, Device, Element, Shape};
use std::sync::Arc;

/// The elements of a tensor. Every variant exists in every build.
#[derive(Debug)]
pub enum Storage {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Storage {
    fn dtype(&self) -> DType {
        match self {
            Storage::F32(_) => DType::F32,
            Storage::F64(_) => DType::F64,
        }
    }

    fn len(&self) -> usize {
        match self {
            Storage::F32(v) => v.len(),
            Storage::F64(v) => v.len(),
        }
    }

    fn bytes(&self) -> usize {
        self.len() * self.dtype().size_in_bytes()
    }
}

/// Storage plus its device; registers its bytes with the allocation accounting.
#[derive(Debug)]
struct Buffer {
    storage: Storage,
    device: Device,
}

impl Buffer {
    fn new(storage: Storage, device: Device) -> Self {
        track_alloc(device, storage.bytes());
        Buffer { storage, device }
    }
}

impl Clone for Buffer {
    fn clone(&self) -> Self {
        let storage = match &self.storage {
            Storage::F32(v) => Storage::F32(v.clone()),
            Storage::F64(v) => Storage::F64(v.clone()),
        };
        Buffer::new(storage, self.device)
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        track_free(self.device, self.storage.bytes());
    }
}

/// A contiguous row-major tensor. Cloning is cheap (the storage is shared); `reshape` is a view;
/// every operation produces a new tensor except the explicit in-place updates (`as_mut_slice`),
/// which copy the storage first if it is shared.
#[derive(Debug, Clone)]
pub struct Tensor {
    buf: Arc<Buffer>,
    shape: Shape,
}

/// Element types that can live in a CPU [`Storage`].
pub trait StorageElement: Element {
    /// Wrap a vector.
    fn wrap(v: Vec<Self>) -> Storage;
    /// Borrow the vector, if the storage has this dtype.
    fn slice(s: &Storage) -> Option<&[Self]>;
    /// Borrow the vector mutably, if the storage has this dtype.
    fn slice_mut(s: &mut Storage) -> Option<&mut [Self]>;
}

impl StorageElement for f32 {
    fn wrap(v: Vec<Self>) -> Storage {
        Storage::F32(v)
    }
    fn slice(s: &Storage) -> Option<&[Self]> {
        match s {
            Storage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn slice_mut(s: &mut Storage) -> Option<&mut [Self]> {
        match s {
            Storage::F32(v) => Some(v),
            _ => None,
        }
    }
}

impl StorageElement for f64 {
    fn wrap(v: Vec<Self>) -> Storage {
        Storage::F64(v)
    }
    fn slice(s: &Storage) -> Option<&[Self]> {
        match s {
            Storage::F64(v) => Some(v),
            _ => None,
        }
    }
    fn slice_mut(s: &mut Storage) -> Option<&mut [Self]> {
        match s {
            Storage::F64(v) => Some(v),
            _ => None,
        }
    }
}

impl Tensor {
    /// A CPU tensor owning `data`, which must hold exactly `shape`'s element count.
    pub fn from_vec<T: StorageElement>(data: Vec<T>, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if data.len() != shape.elem_count() {
            return Err(shape_err(
                "from_vec",
                format!("{} elements for shape {:?}", data.len(), shape),
            ));
        }
        Ok(Tensor { buf: Arc::new(Buffer::new(T::wrap(data), Device::Cpu)), shape })
    }

    /// A tensor of zeros.
    pub fn zeros(shape: impl Into<Shape>, dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full(shape, 0.0, dtype, device)
    }

    /// A tensor filled with `value`.
    pub fn full(
        shape: impl Into<Shape>,
        value: f64,
        dtype: DType,
        device: Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        backend_for(device)?;
        let n = shape.elem_count();
        match dtype {
            DType::F32 => Tensor::from_vec(vec![value as f32; n], shape),
            DType::F64 => Tensor::from_vec(vec![value; n], shape),
            other => Err(TensorError::NotSupported {
                op: "full",
                device,
                dtype: other,
                reason: "the CPU backend computes in f32 and f64",
            }),
        }
    }

    /// A zero tensor with the shape, dtype and device of `self`.
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(self.shape.clone(), self.dtype(), self.device())
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }

    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        self.shape.elem_count()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.buf.storage.dtype()
    }

    /// The device holding the storage.
    pub fn device(&self) -> Device {
        self.buf.device
    }

    /// Bytes of storage.
    pub fn size_in_bytes(&self) -> usize {
        self.buf.storage.bytes()
    }

    /// The backend that computes on this tensor's device.
    pub fn backend(&self) -> Result<&'static dyn Backend> {
        backend_for(self.device())
    }

    /// The same storage seen with another shape of the same element count.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.elem_count() != self.elem_count() {
            return Err(shape_err(
                "reshape",
                format!("{:?} to {:?} changes the element count", self.shape, shape),
            ));
        }
        Ok(Tensor { buf: self.buf.clone(), shape })
    }

    /// Borrow the elements of a CPU tensor of dtype `T`.
    pub fn as_slice<T: StorageElement>(&self) -> Result<&[T]> {
        T::slice(&self.buf.storage).ok_or(TensorError::DType {
            op: "as_slice",
            expected: T::DTYPE,
            got: self.dtype(),
        })
    }

    /// Borrow the elements mutably, copying the storage first if another tensor shares it.
    pub fn as_mut_slice<T: StorageElement>(&mut self) -> Result<&mut [T]> {
        let got = self.dtype();
        let buf = Arc::make_mut(&mut self.buf);
        T::slice_mut(&mut buf.storage).ok_or(TensorError::DType {
            op: "as_mut_slice",
            expected: T::DTYPE,
            got,
        })
    }

    /// Copy the elements out as `T`, converting from the tensor's dtype.
    pub fn to_vec<T: StorageElement>(&self) -> Result<Vec<T>> {
        Ok(match &self.buf.storage {
            Storage::F32(v) => v.iter().map(|&x| T::from_f64_lossy(x as f64)).collect(),
            Storage::F64(v) => v.iter().map(|&x| T::from_f64_lossy(x)).collect(),
        })
    }

    /// The single element of a one-element tensor, as f64.
    pub fn to_scalar(&self) -> Result<f64> {
        if self.elem_count() != 1 {
            return Err(shape_err("to_scalar", format!("shape {:?} is not a scalar", self.shape)));
        }
        Ok(self.to_vec::<f64>()?[0])
    }

    /// A copy converted to `dtype`.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        match dtype {
            DType::F32 => Tensor::from_vec(self.to_vec::<f32>()?, self.shape.clone()),
            DType::F64 => Tensor::from_vec(self.to_vec::<f64>()?, self.shape.clone()),
            other => Err(TensorError::NotSupported {
                op: "to_dtype",
                device: self.device(),
                dtype: other,
                reason: "the CPU backend computes in f32 and f64",
            }),
        }
    }

    /// An identifier of the storage, equal for tensors that share it (views and clones) while
    /// it lives; memory estimates use it to count shared storage once.
    pub fn storage_id(&self) -> usize {
        Arc::as_ptr(&self.buf) as usize
    }

    /// True if both tensors share one storage (a view or a clone of the other).
    pub fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.buf, &other.buf)
    }
}
