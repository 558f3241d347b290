//! Model weights as safetensors files (readable by other tools), written to a temporary file
//! and renamed into place so a crash never leaves a half-written file.

use crate::error::{io_err, Result, TrainError};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::Path;
use strata_nn::{named_buffers, named_parameters, Module};
use strata_tensor::Tensor;

/// Write every parameter and buffer of `model`, by dotted name, as f32 to `path`.
pub fn save_weights(model: &dyn Module, path: &Path) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (name, p) in named_parameters(model) {
        tensors.push((name, p.value().clone()));
    }
    for (name, b) in named_buffers(model) {
        tensors.push((name, b.borrow().clone()));
    }
    save_tensors(&tensors, path)
}

/// Write named tensors as f32 safetensors to `path`, through a temporary file.
pub fn save_tensors(tensors: &[(String, Tensor)], path: &Path) -> Result<()> {
    let mut raw: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        raw.push((name.clone(), t.dims().to_vec(), f32_bytes(&t.to_vec::<f32>()?)));
    }
    let views = raw
        .iter()
        .map(|(name, dims, bytes)| {
            TensorView::new(Dtype::F32, dims.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| safetensors_err(path, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, &None).map_err(|e| safetensors_err(path, e))?;
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Read a safetensors file of f32 tensors into name → (dims, values).
pub fn load_weights(path: &Path) -> Result<HashMap<String, (Vec<usize>, Vec<f32>)>> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| safetensors_err(path, e))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(TrainError::Config {
                path: path.display().to_string(),
                detail: format!("tensor {name} is {:?}; Strata reads f32 weights", view.dtype()),
            });
        }
        let values =
            view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        out.insert(name, (view.shape().to_vec(), values.collect()));
    }
    Ok(out)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn safetensors_err(path: &Path, e: safetensors::SafeTensorError) -> TrainError {
    TrainError::Config { path: path.display().to_string(), detail: format!("safetensors: {e}") }
}
