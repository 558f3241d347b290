//! The layer registry: a model assembled from TOML layer tables, errors that name the layer and
//! list what is valid, and a user's own layer type registered by name.

use strata_autodiff::{ops, Tape, Var};
use strata_nn::registry::{build_sequential, register_layer, registered_layers};
use strata_nn::registry::{LayerArgs, LayerBuild, SequentialOptions};
use strata_nn::summary::summary;
use strata_nn::{parameter_count, Ctx, Module, NnError, Result};
use strata_tensor::{DType, Tensor};

fn layers(text: &str) -> Vec<toml::Table> {
    let doc: toml::Table = text.parse().expect("valid TOML");
    match doc.get("layers") {
        Some(toml::Value::Array(a)) => {
            a.iter().map(|v| v.as_table().expect("a table").clone()).collect()
        }
        _ => panic!("no [[layers]]"),
    }
}

fn opts() -> SequentialOptions {
    SequentialOptions { sample_shape: vec![1, 8, 8], num_classes: 10, seed: 3, dtype: DType::F32 }
}

const CNN: &str = r#"
    [[layers]]
    type = "conv2d"
    out_channels = 8
    [[layers]]
    type = "batch_norm"
    [[layers]]
    type = "relu"
    [[layers]]
    type = "preact_basic_block"
    out_channels = 16
    stride = 2
    survival_prob = 0.8
    [[layers]]
    type = "bottleneck"
    width = 4
    [[layers]]
    type = "max_pool2d"
    [[layers]]
    type = "flatten"
    [[layers]]
    type = "dropout"
    p = 0.5
    [[layers]]
    type = "linear"
    out_features = 32
    init = "xavier_normal"
    [[layers]]
    type = "batch_norm"
    [[layers]]
    type = "linear"
"#;

#[test]
fn a_sequential_model_builds_from_toml_layers_and_trains() {
    let model = build_sequential(&layers(CNN), &opts()).unwrap();
    assert_eq!(model.layers.len(), 11);
    // conv 1*8*9 = 72; BN 16; pre-act block 8->16: BN 16 + 8*16*9 + BN 32 + 16*16*9 + proj 128
    // = 3632; bottleneck 16 -> 4 -> 16 (identity): 16*4 + 8 + 144 + 8 + 64 + 32 = 320;
    // after max pool: 16 x 2 x 2 = 64 features; linear 64*32 + 32 = 2080; BN 64; linear 330.
    assert_eq!(parameter_count(&model), 72 + 16 + 3632 + 320 + 2080 + 64 + 330);
    let s = summary(&model, &[1, 8, 8]).unwrap();
    let shapes: Vec<Vec<usize>> =
        s.rows.iter().filter(|r| r.depth == 0).map(|r| r.output_shape.clone().unwrap()).collect();
    assert_eq!(shapes[3], [1, 16, 4, 4]);
    assert_eq!(shapes[5], [1, 16, 2, 2]);
    assert_eq!(shapes[10], [1, 10]);

    let x: Vec<f32> = (0..4 * 64).map(|i| (i % 7) as f32 / 7.0).collect();
    let x = Var::constant(Tensor::from_vec(x, [4, 1, 8, 8]).unwrap());
    let tape = Tape::new();
    let logits = model.forward(&x, &Ctx::train(tape.clone()).with_rng(1, 0, 0, 0)).unwrap();
    let loss = ops::softmax_cross_entropy(&logits, &[0, 1, 2, 3]).unwrap();
    assert!(loss.value().to_scalar().unwrap().is_finite());
    tape.backward(&loss).unwrap();
}

fn build_err(text: &str) -> String {
    build_sequential(&layers(text), &opts()).err().expect("an error").to_string()
}

#[test]
fn an_unknown_layer_type_lists_the_registered_names() {
    let msg = build_err("[[layers]]\ntype = \"conv3d\"");
    assert!(msg.contains("model.layers[0]") && msg.contains("\"conv3d\""), "{msg}");
    for name in ["conv2d", "linear", "batch_norm", "dropout", "preact_bottleneck", "max_pool2d"] {
        assert!(msg.contains(name), "{name} missing from: {msg}");
    }
    let msg = build_err("[[layers]]\nkind = \"conv2d\"");
    assert!(msg.contains("needs `type"), "{msg}");
}

#[test]
fn bad_arguments_name_the_layer_and_what_is_valid() {
    let conv = "[[layers]]\ntype = \"conv2d\"\n";
    let msg = build_err(&format!("{conv}out_channel = 8"));
    assert!(
        msg.contains("missing `out_channels`") && msg.contains("unknown: out_channel"),
        "{msg}"
    );
    let msg = build_err(&format!("{conv}out_channels = 8\nstrides = 2"));
    assert!(msg.contains("unknown argument(s) strides") && msg.contains("stride,"), "{msg}");
    let msg = build_err(&format!("{conv}out_channels = -1"));
    assert!(msg.contains("not a non-negative integer"), "{msg}");
    let msg = build_err(&format!("{conv}out_channels = 4\ninit = \"lecun\""));
    assert!(msg.contains("he_uniform"), "{msg}");
    let msg = build_err("[[layers]]\ntype = \"linear\"");
    assert!(msg.contains("flatten or global_avg_pool"), "{msg}");
    let msg = build_err("[[layers]]\ntype = \"dropout\"");
    assert!(msg.contains("missing `p`"), "{msg}");
    let msg = build_err("[[layers]]\ntype = \"flatten\"\n[[layers]]\ntype = \"relu\"");
    assert!(msg.contains("[64]") && msg.contains("[10]"), "{msg}");
    let msg = build_err(&format!("{conv}out_channels = 4\nkernel = 11\npadding = 0"));
    assert!(msg.contains("model.layers[0] (Conv2d)") && msg.contains("[1, 8, 8]"), "{msg}");
}

/// A user's layer: multiply by a constant `factor` (composed from `ops::scale`).
struct Times(f64);

impl Module for Times {
    fn type_name(&self) -> &'static str {
        "Times"
    }
    fn forward(&self, x: &Var, _cx: &Ctx) -> Result<Var> {
        Ok(ops::scale(x, self.0)?)
    }
}

fn times(a: &LayerArgs, _b: &mut LayerBuild) -> Result<Box<dyn Module>> {
    Ok(Box::new(Times(a.f64_or("factor", 2.0)?)))
}

#[test]
fn a_registered_layer_type_can_be_placed_by_a_config() {
    register_layer("test_times", times).unwrap();
    assert!(registered_layers().contains(&"test_times".to_string()));
    let err = register_layer("test_times", times).unwrap_err();
    assert!(matches!(err, NnError::AlreadyRegistered(_)), "{err}");
    assert!(register_layer("conv2d", times).is_err(), "built-in names are taken");

    let text = "[[layers]]\ntype = \"flatten\"\n[[layers]]\ntype = \"test_times\"\nfactor = 3\n\
                [[layers]]\ntype = \"linear\"";
    let model = build_sequential(&layers(text), &opts()).unwrap();
    assert_eq!(model.layers[1].type_name(), "Times");
    let x = Var::constant(Tensor::from_vec(vec![1.0f32; 64], [1, 1, 8, 8]).unwrap());
    let h = model.layers[1].forward(&x, &Ctx::eval()).unwrap();
    assert!(h.value().to_vec::<f32>().unwrap().iter().all(|v| *v == 3.0));
}
