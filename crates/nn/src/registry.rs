//! The layer registry: layer types by name, each built from its TOML table of arguments and
//! its input shape, so a config can assemble a model layer by layer (`model.kind =
//! "sequential"` with `[[model.layers]]` entries). The built-in layers are registered from the
//! start; [`register_layer`] adds a user's own.
//!
//! ```toml
//! [[model.layers]]
//! type = "conv2d"
//! out_channels = 16
//! [[model.layers]]
//! type = "batch_norm"
//! [[model.layers]]
//! type = "relu"
//! [[model.layers]]
//! type = "global_avg_pool"
//! [[model.layers]]
//! type = "linear"          # out_features defaults to the number of classes
//! ```

use crate::init::{Init, InitRng};
use crate::layers::{BatchNorm, Conv2d, Dropout, Flatten, GlobalAvgPool, Linear, MaxPool2d};
use crate::layers::{Relu, Sequential};
use crate::resnet::{BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck, ResNetOptions};
use crate::stochastic_depth::StochasticDepth;
use crate::{Ctx, Module, NnError, Result};
use rand::SeedableRng;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{OnceLock, RwLock};
use strata_autodiff::Var;
use strata_tensor::{DType, Device, Pool2dParams, Tensor};

/// Builds one layer from its arguments and what it is built for. A constructor that reads every
/// argument before it returns an error lets that error also name any unknown (mistyped) key.
pub type LayerCtor = fn(&LayerArgs, &mut LayerBuild) -> Result<Box<dyn Module>>;

/// What a layer is built for: its input shape and the model around it.
pub struct LayerBuild<'a> {
    /// Shape of one sample at the layer's input, without the batch axis (`[C, H, W]` or `[F]`).
    pub input_shape: &'a [usize],
    /// Classes of the model's output (the default `out_features` of `linear`).
    pub num_classes: usize,
    /// Position of the layer in the model, from 0 (dropout stream, stochastic-depth index).
    pub index: usize,
    pub dtype: DType,
    /// The model's initialisation stream, shared by its layers in order.
    pub rng: &'a mut InitRng,
}

/// A layer's TOML arguments. Each getter marks its key as read; after the constructor returns,
/// a key nobody read is reported as unknown, so typos fail loudly.
pub struct LayerArgs<'a> {
    layer: &'a str,
    index: usize,
    table: &'a toml::Table,
    read: RefCell<BTreeSet<String>>,
}

impl<'a> LayerArgs<'a> {
    /// Arguments `table` of layer `index`, whose type is `layer` (the `type` key counts as read).
    pub fn new(layer: &'a str, index: usize, table: &'a toml::Table) -> LayerArgs<'a> {
        let read = RefCell::new(BTreeSet::from(["type".to_string()]));
        LayerArgs { layer, index, table, read }
    }

    /// An error about this layer.
    pub fn error(&self, detail: impl Into<String>) -> NnError {
        NnError::LayerConfig { index: self.index, layer: self.layer.into(), detail: detail.into() }
    }

    fn get(&self, key: &str) -> Option<&'a toml::Value> {
        self.read.borrow_mut().insert(key.to_string());
        self.table.get(key)
    }

    /// A non-negative integer, if present.
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) if *i >= 0 => Ok(Some(*i as usize)),
            Some(v) => Err(self.error(format!("`{key}` = {v} is not a non-negative integer"))),
        }
    }

    /// A required non-negative integer.
    pub fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.error(format!("missing `{key}`")))
    }

    /// A non-negative integer, `default` if absent.
    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        Ok(self.opt_usize(key)?.unwrap_or(default))
    }

    /// A number (integer or float), if present.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(toml::Value::Float(f)) => Ok(Some(*f)),
            Some(toml::Value::Integer(i)) => Ok(Some(*i as f64)),
            Some(v) => Err(self.error(format!("`{key}` = {v} is not a number"))),
        }
    }

    /// A required number.
    pub fn f64(&self, key: &str) -> Result<f64> {
        self.opt_f64(key)?.ok_or_else(|| self.error(format!("missing `{key}`")))
    }

    /// A number, `default` if absent.
    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        Ok(self.opt_f64(key)?.unwrap_or(default))
    }

    /// A boolean, `default` if absent.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(toml::Value::Boolean(b)) => Ok(*b),
            Some(v) => Err(self.error(format!("`{key}` = {v} is not true or false"))),
        }
    }

    /// A string, `default` if absent.
    pub fn str_or(&self, key: &str, default: &'a str) -> Result<&'a str> {
        match self.get(key) {
            None => Ok(default),
            Some(toml::Value::String(s)) => Ok(s),
            Some(v) => Err(self.error(format!("`{key}` = {v} is not a string"))),
        }
    }

    /// An initialiser by name, `default` if absent.
    pub fn init_or(&self, key: &str, default: Init) -> Result<Init> {
        match self.get(key) {
            None => Ok(default),
            Some(toml::Value::String(s)) => Init::from_name(s).ok_or_else(|| {
                let names: Vec<&str> = Init::NAMES.iter().map(|(n, _)| *n).collect();
                self.error(format!("`{key}` = {s:?}: known initialisers: {}", names.join(", ")))
            }),
            Some(v) => Err(self.error(format!("`{key}` = {v} is not an initialiser name"))),
        }
    }

    /// The keys of the table no getter has asked for yet.
    pub fn unread(&self) -> Vec<&'a str> {
        let read = self.read.borrow();
        self.table.keys().filter(|k| !read.contains(*k)).map(String::as_str).collect()
    }

    /// Error if the table has a key no getter asked for.
    pub fn finish(&self) -> Result<()> {
        let unknown = self.unread();
        let read = self.read.borrow();
        if unknown.is_empty() {
            return Ok(());
        }
        let known: Vec<&str> = read.iter().map(String::as_str).collect();
        Err(self.error(format!(
            "unknown argument(s) {}; this layer takes: {}",
            unknown.join(", "),
            known.join(", ")
        )))
    }
}

fn registry() -> &'static RwLock<BTreeMap<String, LayerCtor>> {
    static REGISTRY: OnceLock<RwLock<BTreeMap<String, LayerCtor>>> = OnceLock::new();
    REGISTRY.get_or_init(|| RwLock::new(builtins()))
}

/// Register a layer type under `name`, for every later model build in this process.
///
/// # Errors
/// [`NnError::AlreadyRegistered`] if `name` is taken (built-in names included);
/// [`NnError::InvalidArgument`] if `name` is empty.
pub fn register_layer(name: &str, ctor: LayerCtor) -> Result<()> {
    if name.is_empty() {
        return Err(NnError::InvalidArgument {
            model: "layer registry",
            detail: "a layer type needs a non-empty name".into(),
        });
    }
    let mut map = registry().write().unwrap_or_else(|e| e.into_inner());
    if map.contains_key(name) {
        return Err(NnError::AlreadyRegistered(name.into()));
    }
    map.insert(name.into(), ctor);
    Ok(())
}

/// The registered layer type names, sorted.
pub fn registered_layers() -> Vec<String> {
    registry().read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
}

/// Build layer `b.index` from its TOML `table`, whose `type` names a registered layer.
///
/// # Errors
/// [`NnError::UnknownLayer`] listing the registered names; [`NnError::LayerConfig`] for a
/// missing `type`, a bad or unknown argument, or an input the layer cannot take.
pub fn build_layer(table: &toml::Table, b: &mut LayerBuild) -> Result<Box<dyn Module>> {
    let name = match table.get("type") {
        Some(toml::Value::String(s)) => s.as_str(),
        _ => {
            return Err(NnError::LayerConfig {
                index: b.index,
                layer: "?".into(),
                detail: format!(
                    "needs `type = \"...\"`, one of: {}",
                    registered_layers().join(", ")
                ),
            })
        }
    };
    let ctor = registry().read().unwrap_or_else(|e| e.into_inner()).get(name).copied();
    let Some(ctor) = ctor else {
        return Err(NnError::UnknownLayer {
            index: b.index,
            name: name.into(),
            known: registered_layers(),
        });
    };
    let args = LayerArgs::new(name, b.index, table);
    let layer = ctor(&args, b).map_err(|e| match (e, args.unread()) {
        // A typo often causes the error (`out_channel` for `out_channels`): say so.
        (NnError::LayerConfig { index, layer, detail }, unread) if !unread.is_empty() => {
            let detail = format!("{detail} (unknown: {})", unread.join(", "));
            NnError::LayerConfig { index, layer, detail }
        }
        (e, _) => e,
    })?;
    args.finish()?;
    Ok(layer)
}

/// Output shape (without the batch axis) of `layer` for a sample of `input_shape`, found by
/// running it on one zero sample in evaluation mode.
///
/// # Errors
/// Whatever the layer's forward returns for that input.
pub fn infer_output_shape(
    layer: &dyn Module,
    input_shape: &[usize],
    dtype: DType,
) -> Result<Vec<usize>> {
    let mut dims = vec![1];
    dims.extend_from_slice(input_shape);
    let x = Var::constant(Tensor::zeros(dims, dtype, Device::Cpu)?);
    let y = layer.forward(&x, &Ctx::eval())?;
    Ok(y.dims().get(1..).unwrap_or_default().to_vec())
}

/// What [`build_sequential`] builds for.
#[derive(Debug, Clone)]
pub struct SequentialOptions {
    /// Shape of one input sample, such as `[1, 28, 28]`.
    pub sample_shape: Vec<usize>,
    pub num_classes: usize,
    /// Seed of the initialisation stream.
    pub seed: u64,
    pub dtype: DType,
}

/// Build a model from `layers`, each a TOML table with a `type` and that layer's arguments,
/// applied in order. Each layer learns its input shape from the one before.
///
/// # Errors
/// [`NnError::UnknownLayer`] or [`NnError::LayerConfig`] naming the layer's position; an error
/// if the list is empty or the last layer does not output `[num_classes]` per sample.
pub fn build_sequential(layers: &[toml::Table], o: &SequentialOptions) -> Result<Sequential> {
    if layers.is_empty() {
        return Err(NnError::InvalidArgument {
            model: "sequential",
            detail: format!(
                "model.layers is empty; add [[model.layers]] tables with a `type`, one of: {}",
                registered_layers().join(", ")
            ),
        });
    }
    let mut rng = InitRng::seed_from_u64(o.seed);
    let mut shape = o.sample_shape.clone();
    let mut model = Sequential::new();
    for (index, table) in layers.iter().enumerate() {
        let mut b = LayerBuild {
            input_shape: &shape,
            num_classes: o.num_classes,
            index,
            dtype: o.dtype,
            rng: &mut rng,
        };
        let layer = build_layer(table, &mut b)?;
        shape = infer_output_shape(layer.as_ref(), &shape, o.dtype).map_err(|e| {
            NnError::LayerConfig {
                index,
                layer: layer.type_name().into(),
                detail: format!("does not fit its input of shape {shape:?} per sample: {e}"),
            }
        })?;
        model.push_boxed(layer);
    }
    if shape != [o.num_classes] {
        return Err(NnError::InvalidArgument {
            model: "sequential",
            detail: format!(
                "the last layer outputs {shape:?} per sample, but a classifier of {} classes must \
                 output [{}]; end with global_avg_pool or flatten, then linear",
                o.num_classes, o.num_classes
            ),
        });
    }
    Ok(model)
}

fn builtins() -> BTreeMap<String, LayerCtor> {
    let table: [(&str, LayerCtor); 12] = [
        ("conv2d", conv2d),
        ("linear", linear),
        ("batch_norm", batch_norm),
        ("relu", |_, _| Ok(Box::new(Relu))),
        ("flatten", |_, _| Ok(Box::new(Flatten))),
        ("global_avg_pool", |_, _| Ok(Box::new(GlobalAvgPool))),
        ("max_pool2d", max_pool2d),
        ("dropout", dropout),
        ("basic_block", |a, b| block(a, b, BlockKind::Basic)),
        ("preact_basic_block", |a, b| block(a, b, BlockKind::PreActBasic)),
        ("bottleneck", |a, b| block(a, b, BlockKind::Bottleneck)),
        ("preact_bottleneck", |a, b| block(a, b, BlockKind::PreActBottleneck)),
    ];
    table.into_iter().map(|(n, c)| (n.into(), c)).collect()
}

/// The channel count of a `[C, H, W]` input, or an error naming the layer.
fn image_channels(a: &LayerArgs, b: &LayerBuild) -> Result<usize> {
    match b.input_shape {
        [c, _, _] => Ok(*c),
        other => Err(a.error(format!("needs [C, H, W] samples, got {other:?}"))),
    }
}

/// `conv2d`: `out_channels`; `kernel` (3), `stride` (1), `padding` (kernel / 2), `init`
/// (`he_normal`). No bias.
fn conv2d(a: &LayerArgs, b: &mut LayerBuild) -> Result<Box<dyn Module>> {
    // Every argument is read before any error returns, so a typo is reported with the error.
    let (out_ch, kernel, stride) =
        (a.opt_usize("out_channels"), a.usize_or("kernel", 3), a.usize_or("stride", 1));
    let (padding, init) = (a.opt_usize("padding"), a.init_or("init", Init::HeNormal));
    let (kernel, stride, padding, init) = (kernel?, stride?, padding?, init?);
    let out_ch = out_ch?.ok_or_else(|| a.error("missing `out_channels`"))?;
    if out_ch == 0 || kernel == 0 || stride == 0 {
        return Err(a.error("out_channels, kernel and stride must be at least 1"));
    }
    let in_ch = image_channels(a, b)?;
    let padding = padding.unwrap_or(kernel / 2);
    Ok(Box::new(Conv2d::new(in_ch, out_ch, kernel, stride, padding, init, b.dtype, b.rng)?))
}

/// `linear`: `out_features` (the class count), `bias` (true), `init` (`he_normal`).
fn linear(a: &LayerArgs, b: &mut LayerBuild) -> Result<Box<dyn Module>> {
    let (out, bias, init) = (
        a.usize_or("out_features", b.num_classes),
        a.bool_or("bias", true),
        a.init_or("init", Init::HeNormal),
    );
    let (out, bias, init) = (out?, bias?, init?);
    if out == 0 {
        return Err(a.error("out_features must be at least 1"));
    }
    let [in_features] = b.input_shape else {
        return Err(a.error(format!(
            "needs [features] samples, got {:?}; put flatten or global_avg_pool before it",
            b.input_shape
        )));
    };
    Ok(Box::new(Linear::new(*in_features, out, bias, init, b.dtype, b.rng)?))
}

/// `batch_norm`: over the channels of `[C, H, W]` or the features of `[F]`; `momentum` (0.1),
/// `eps` (1e-5).
fn batch_norm(a: &LayerArgs, b: &mut LayerBuild) -> Result<Box<dyn Module>> {
    let (momentum, eps) = (a.f64_or("momentum", 0.1), a.f64_or("eps", 1e-5));
    let (momentum, eps) = (momentum?, eps?);
    if !(0.0..=1.0).contains(&momentum) || eps.is_nan() || eps <= 0.0 {
        return Err(a.error("needs 0 <= momentum <= 1 and eps > 0"));
    }
    let channels = match b.input_shape {
        [c, _, _] | [c] => *c,
        other => return Err(a.error(format!("needs [C, H, W] or [F] samples, got {other:?}"))),
    };
    let mut bn = BatchNorm::new(channels, b.dtype)?;
    (bn.momentum, bn.eps) = (momentum, eps);
    Ok(Box::new(bn))
}

/// `max_pool2d`: `kernel` (2), `stride` (kernel), `padding` (0).
fn max_pool2d(a: &LayerArgs, b: &mut LayerBuild) -> Result<Box<dyn Module>> {
    let (kernel, stride, padding) =
        (a.usize_or("kernel", 2), a.opt_usize("stride"), a.usize_or("padding", 0));
    let (kernel, stride, padding) = (kernel?, stride?, padding?);
    let stride = stride.unwrap_or(kernel);
    if kernel == 0 || stride == 0 {
        return Err(a.error("kernel and stride must be at least 1"));
    }
    image_channels(a, b)?;
    Ok(Box::new(MaxPool2d(Pool2dParams { kernel, stride, padding })))
}

/// `dropout`: `p`, the probability of zeroing an element; masks on the layer's own stream.
fn dropout(a: &LayerArgs, b: &mut LayerBuild) -> Result<Box<dyn Module>> {
    let p = a.f64("p")?;
    Dropout::new(p, b.index as u64)
        .map(|d| Box::new(d) as Box<dyn Module>)
        .map_err(|e| a.error(format!("`p`: {e}")))
}

#[derive(Clone, Copy)]
enum BlockKind {
    Basic,
    PreActBasic,
    Bottleneck,
    PreActBottleneck,
}

/// Residual blocks. Basic: `out_channels` (the input's); bottleneck: `width` (a quarter of the
/// input's), output `4 * width`. All: `stride` (1), `survival_prob` (1: no stochastic depth;
/// drawn as block `index` of the model), `zero_init_residual` (false).
fn block(a: &LayerArgs, b: &mut LayerBuild, kind: BlockKind) -> Result<Box<dyn Module>> {
    let out = match kind {
        BlockKind::Basic | BlockKind::PreActBasic => a.opt_usize("out_channels"),
        BlockKind::Bottleneck | BlockKind::PreActBottleneck => a.opt_usize("width"),
    };
    let (stride, zero_init, survival) = (
        a.usize_or("stride", 1),
        a.bool_or("zero_init_residual", false),
        a.f64_or("survival_prob", 1.0),
    );
    let (out, stride, zero_init_residual) = (out?, stride?, zero_init?);
    let sd = StochasticDepth::new(survival?, b.index)
        .map_err(|e| a.error(format!("`survival_prob`: {e}")))?;
    let in_ch = image_channels(a, b)?;
    let out = match kind {
        BlockKind::Basic | BlockKind::PreActBasic => out.unwrap_or(in_ch),
        BlockKind::Bottleneck | BlockKind::PreActBottleneck => out.unwrap_or(in_ch / 4),
    };
    if out == 0 || stride == 0 {
        return Err(a.error("the width (or out_channels) and stride must be at least 1"));
    }
    let opts = ResNetOptions { zero_init_residual, dtype: b.dtype, ..ResNetOptions::default() };
    let rng = &mut *b.rng;
    Ok(match kind {
        BlockKind::Basic => {
            Box::new(BasicBlock::new(in_ch, out, stride, &opts, rng)?.with_stochastic_depth(sd))
        }
        BlockKind::PreActBasic => Box::new(
            PreActBasicBlock::new(in_ch, out, stride, &opts, rng)?.with_stochastic_depth(sd),
        ),
        BlockKind::Bottleneck => {
            Box::new(Bottleneck::new(in_ch, out, stride, &opts, rng)?.with_stochastic_depth(sd))
        }
        BlockKind::PreActBottleneck => Box::new(
            PreActBottleneck::new(in_ch, out, stride, &opts, rng)?.with_stochastic_depth(sd),
        ),
    })
}
