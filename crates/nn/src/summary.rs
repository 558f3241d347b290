//! Model summaries in the manner of Keras's `model.summary()`: one row per module with its
//! path, type, output shape and parameter count, then the totals.
//!
//! Output shapes come from one forward pass on a zero batch of 1 in evaluation mode with a
//! [`ShapeTrace`] on the context: every container runs its children through [`Ctx::call`],
//! which records each output. A child that a user-written container runs by calling `forward`
//! directly shows no shape (`?`). The pass changes nothing: evaluation mode neither updates
//! batch-norm statistics nor records on a tape.

use crate::resnet::weighted_layer_count;
use crate::{named_buffers, parameter_count, Ctx, Module, Result, ShapeTrace};
use std::fmt;
use strata_autodiff::Var;
use strata_tensor::{DType, Device, Tensor};

/// One module of the summary.
#[derive(Debug, Clone)]
pub struct SummaryRow {
    /// Dotted path, as in parameter names (`blocks.3.conv1`).
    pub path: String,
    /// Nesting depth below the model, from 0.
    pub depth: usize,
    pub type_name: &'static str,
    /// Output shape for a batch of 1 (shown with `N` for the batch axis), if the pass saw it.
    pub output_shape: Option<Vec<usize>>,
    /// Trainable scalars of this module and its descendants.
    pub params: usize,
}

/// A model summary; `Display` prints it as a table.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The model's type name.
    pub model: &'static str,
    /// Input shape for a batch of 1.
    pub input_shape: Vec<usize>,
    /// Output shape for a batch of 1.
    pub output_shape: Vec<usize>,
    /// Every module below the model, depth-first in registration order.
    pub rows: Vec<SummaryRow>,
    /// Trainable scalars (parameters).
    pub trainable_params: usize,
    /// Non-trainable scalars (buffers: batch-norm running statistics).
    pub non_trainable_params: usize,
    /// Weighted layers on the main path, as the ResNet papers count depth.
    pub weighted_layers: usize,
}

impl Summary {
    /// Trainable and non-trainable scalars together (Keras's "Total params").
    pub fn total_params(&self) -> usize {
        self.trainable_params + self.non_trainable_params
    }
}

/// Summarise `model` for samples of `sample_shape` (such as `[3, 32, 32]`), running one
/// evaluation-mode forward pass on a zero batch of 1 in the dtype of the model's first
/// parameter (f32 if it has none).
///
/// # Errors
/// Whatever the model's forward returns for such an input.
pub fn summary(model: &dyn Module, sample_shape: &[usize]) -> Result<Summary> {
    let params = crate::named_parameters(model);
    let dtype = params.first().map(|(_, p)| p.value().dtype()).unwrap_or(DType::F32);
    let mut input_shape = vec![1];
    input_shape.extend_from_slice(sample_shape);
    let x = Var::constant(Tensor::zeros(input_shape.clone(), dtype, Device::Cpu)?);
    let trace = ShapeTrace::new();
    let cx = Ctx { trace: Some(trace.clone()), ..Ctx::eval() };
    let y = model.forward(&x, &cx)?;

    let mut rows = Vec::new();
    collect_rows(model, "", 0, &trace, &mut rows);
    let non_trainable = named_buffers(model).iter().map(|(_, b)| b.borrow().elem_count()).sum();
    Ok(Summary {
        model: model.type_name(),
        input_shape,
        output_shape: y.dims().to_vec(),
        rows,
        trainable_params: params.iter().map(|(_, p)| p.value().elem_count()).sum(),
        non_trainable_params: non_trainable,
        weighted_layers: weighted_layer_count(model),
    })
}

fn collect_rows(
    m: &dyn Module,
    prefix: &str,
    depth: usize,
    trace: &ShapeTrace,
    rows: &mut Vec<SummaryRow>,
) {
    for (name, child) in m.children() {
        let path = if prefix.is_empty() { name } else { format!("{prefix}.{name}") };
        rows.push(SummaryRow {
            path: path.clone(),
            depth,
            type_name: child.type_name(),
            output_shape: trace.shape(&path),
            params: parameter_count(child),
        });
        collect_rows(child, &path, depth + 1, trace, rows);
    }
}

/// `[N, 16, 32, 32]` for a batch-of-1 shape `[1, 16, 32, 32]`.
fn shape_text(dims: &[usize]) -> String {
    let rest: Vec<String> = dims.iter().skip(1).map(usize::to_string).collect();
    if rest.is_empty() {
        "[N]".into()
    } else {
        format!("[N, {}]", rest.join(", "))
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cells: Vec<[String; 4]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    format!("{}{}", "  ".repeat(r.depth), r.path),
                    r.type_name.to_string(),
                    r.output_shape.as_deref().map_or("?".into(), shape_text),
                    thousands(r.params),
                ]
            })
            .collect();
        let head = ["Layer (path)", "Type", "Output shape", "Params"].map(String::from);
        let mut w = head.clone().map(|h| h.len());
        for row in &cells {
            for (wi, c) in w.iter_mut().zip(row) {
                *wi = (*wi).max(c.chars().count());
            }
        }
        let rule = "=".repeat(w.iter().sum::<usize>() + 6);
        let line = |f: &mut fmt::Formatter<'_>, c: &[String; 4]| {
            writeln!(
                f,
                "{:<a$}  {:<b$}  {:<c$}  {:>d$}",
                c[0],
                c[1],
                c[2],
                c[3],
                a = w[0],
                b = w[1],
                c = w[2],
                d = w[3]
            )
        };
        writeln!(f, "Model: {} (input {})", self.model, shape_text(&self.input_shape))?;
        writeln!(f, "{rule}")?;
        line(f, &head)?;
        writeln!(f, "{rule}")?;
        for row in &cells {
            line(f, row)?;
        }
        writeln!(f, "{rule}")?;
        writeln!(f, "Output: {}", shape_text(&self.output_shape))?;
        writeln!(f, "Total params: {}", thousands(self.total_params()))?;
        writeln!(f, "Trainable params: {}", thousands(self.trainable_params))?;
        writeln!(
            f,
            "Non-trainable params: {} (batch-norm running statistics)",
            thousands(self.non_trainable_params)
        )?;
        writeln!(f, "Weighted layers (depth): {}", self.weighted_layers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resnet::{CifarResNet, ResNetOptions};

    #[test]
    fn resnet20_summary_has_shapes_parameters_and_totals() {
        let model = CifarResNet::new(20, &ResNetOptions::default()).unwrap();
        let s = summary(&model, &[3, 32, 32]).unwrap();
        let row = |path: &str| s.rows.iter().find(|r| r.path == path).unwrap().clone();
        let shape = |path: &str| row(path).output_shape.unwrap();

        assert_eq!(shape("conv1"), [1, 16, 32, 32]);
        assert_eq!(shape("blocks.2"), [1, 16, 32, 32]);
        assert_eq!(shape("blocks.3"), [1, 32, 16, 16]);
        assert_eq!(shape("blocks.3.shortcut.0"), [1, 32, 16, 16]);
        assert_eq!(shape("blocks.8.conv2"), [1, 64, 8, 8]);
        assert_eq!(shape("pool"), [1, 64]);
        assert_eq!(shape("fc"), [1, 10]);
        assert!(s.rows.iter().all(|r| r.output_shape.is_some()), "every module ran");
        assert_eq!(s.output_shape, [1, 10]);

        // Stem conv 3*16*9 = 432; block 0 two 3x3 convs 2*16*16*9 = 4608 and two BNs 64.
        assert_eq!(row("conv1").params, 432);
        assert_eq!(row("blocks.0").params, 4672);
        assert_eq!((row("blocks.0").depth, row("blocks.0.conv1").depth), (0, 1));
        // The CIFAR ResNet-20 with projection shortcuts (resnet tests derive it): 272,474.
        assert_eq!(s.trainable_params, 272_474);
        // Running mean and variance of every BN: 2 x (16 + 6*16 + 6*32 + 32 + 6*64 + 64)
        // channels = 2 x 784.
        assert_eq!(s.non_trainable_params, 1568);
        assert_eq!(s.weighted_layers, 20);

        let text = s.to_string();
        assert!(text.contains("Total params: 274,042"), "{text}");
        assert!(text.contains("Trainable params: 272,474"), "{text}");
        assert!(text.contains("[N, 32, 16, 16]"), "{text}");
        let lines = text.lines().count();
        assert_eq!(lines, s.rows.len() + 10, "{text}");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(25_557_032), "25,557,032");
    }
}
