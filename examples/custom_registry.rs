//! Custom layers, way 3: a layer type registered by name, so an experiment's TOML config can
//! place it in a `sequential` model like any built-in layer. An unknown name is an error that
//! lists the registered ones.
//!
//! Run: `cargo run --release --example custom_registry`

use std::error::Error;
use strata::autodiff::{ops, Var};
use strata::nn::registry::{register_layer, LayerArgs, LayerBuild};
use strata::nn::{Ctx, Module, NnError};
use strata::train::model::build_model;
use strata::train::Config;

/// Leaky ReLU, `max(x, 0) + slope * min(x, 0)`, composed of existing ops as
/// `relu(x) - slope * relu(-x)`, so the tape supplies its gradient.
pub struct LeakyRelu {
    pub slope: f64,
}

impl Module for LeakyRelu {
    fn type_name(&self) -> &'static str {
        "LeakyReLU"
    }
    fn forward(&self, x: &Var, _cx: &Ctx) -> strata::nn::Result<Var> {
        let negative = ops::relu(&ops::scale(x, -1.0)?)?;
        Ok(ops::add(&ops::relu(x)?, &ops::scale(&negative, -self.slope)?)?)
    }
}

/// The constructor the registry calls with the layer's TOML table: `slope` (default 0.01).
fn leaky_relu(args: &LayerArgs, _build: &mut LayerBuild) -> strata::nn::Result<Box<dyn Module>> {
    let slope = args.f64_or("slope", 0.01)?;
    if !slope.is_finite() {
        return Err(args.error(format!("`slope` = {slope} must be finite")));
    }
    Ok(Box::new(LeakyRelu { slope }))
}

/// Register `leaky_relu` (once per process; a second call finds it there and is fine).
pub fn register() -> strata::nn::Result<()> {
    match register_layer("leaky_relu", leaky_relu) {
        Ok(()) | Err(NnError::AlreadyRegistered(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// An experiment whose model uses the registered layer between built-in ones.
pub const CONFIG: &str = r#"
name = "leaky-cnn"
epochs = 1

[model]
kind = "sequential"

[[model.layers]]
type = "conv2d"
out_channels = 16
[[model.layers]]
type = "batch_norm"
[[model.layers]]
type = "leaky_relu"
slope = 0.1
[[model.layers]]
type = "basic_block"
out_channels = 32
stride = 2
[[model.layers]]
type = "global_avg_pool"
[[model.layers]]
type = "linear"

[data]
dataset = "fashion-mnist"
dir = "data/fashion-mnist"
batch_size = 64

[optimizer]
kind = "sgd"
lr = 0.1
"#;

/// Build the model of `config` for Fashion-MNIST's 1x28x28 samples and 10 classes.
pub fn build(config: &str) -> Result<Box<dyn Module>, Box<dyn Error>> {
    let cfg = Config::parse(config, "example", &[])?;
    Ok(build_model(&cfg.model, [1, 28, 28], 10, cfg.seed)?)
}

fn main() -> Result<(), Box<dyn Error>> {
    register()?;
    let model = build(CONFIG)?;
    print!("{}", strata::nn::summary::summary(model.as_ref(), &[1, 28, 28])?);
    // To train it, register the layer in your own binary before handing the config to the
    // trainer (`strata::train::train`); the stock `launcher` knows the built-in layers only.
    let typo = CONFIG.replace("\"leaky_relu\"", "\"leaky_rleu\"");
    match build(&typo) {
        Err(e) => println!("a mistyped layer name is an error:\n  {e}"),
        Ok(_) => return Err("a mistyped layer name should not build".into()),
    }
    Ok(())
}
