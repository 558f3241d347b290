//! The three ways to write a custom layer, each tested through its runnable example under
//! `examples/`: a module composed of existing ops, an op with a hand-written backward recorded
//! with `Var::record`, and a layer type registered by name and placed by a TOML config.

#[allow(dead_code)]
#[path = "../examples/custom_module.rs"]
mod custom_module;
#[allow(dead_code)]
#[path = "../examples/custom_op.rs"]
mod custom_op;
#[allow(dead_code)]
#[path = "../examples/custom_registry.rs"]
mod custom_registry;

use strata::nn::gradcheck::check_module_gradients;
use strata::nn::summary::summary;
use strata::tensor::Tensor;

#[test]
fn a_composed_module_has_tape_gradients_that_match_finite_differences_and_trains() {
    let worst = custom_module::gradient_check().unwrap();
    assert!(worst < 1e-5, "worst relative error {worst:e}");
    let (first, last) = custom_module::overfit_one_batch(40).unwrap();
    // Starts near ln 10 = 2.30 and falls on a batch it can memorise.
    assert!(first.is_finite() && last < 0.5 * first, "loss {first} -> {last}");
    let s = summary(&custom_module::model().unwrap(), &[1, 8, 8]).unwrap();
    let block = s.rows.iter().find(|r| r.path == "2").unwrap();
    assert_eq!((block.type_name, block.output_shape.clone()), ("ResidualDense", Some(vec![1, 32])));
    // fc1 32*32 (no bias) + BN 64 + fc2 32*32 + 32.
    assert_eq!(block.params, 1024 + 64 + 1024 + 32);
}

#[test]
fn a_custom_op_with_a_hand_written_backward_passes_the_public_gradient_check() {
    let report = custom_op::gradient_check().unwrap();
    assert!(report.max_rel_error < 1e-7, "{report:?}");
    let (loss, with_grad) = custom_op::train_step().unwrap();
    assert!(loss.is_finite());
    // conv weight, BN gamma and beta, linear weight and bias.
    assert_eq!(with_grad, 5);
}

#[test]
fn a_wrong_backward_fails_the_public_gradient_check() {
    // The check is not vacuous: a backward that forgets the sigmoid's derivative fails it.
    use strata::autodiff::Var;
    let wrong = |xs: &[Var]| {
        let y = custom_op::silu(&xs[0])?;
        let v = y.value().clone();
        Var::record("wrong_silu", &[&xs[0]], v, |dy| Ok(vec![Some(dy.clone())]))
    };
    let x = Tensor::from_vec((0..6).map(|i| i as f64 - 2.5).collect::<Vec<_>>(), [6]).unwrap();
    let err = strata::autodiff::gradcheck::check_gradients(wrong, &[x], 1e-6, 1e-6).unwrap_err();
    assert!(err.to_string().contains("gradient check failed"), "{err}");
}

#[test]
fn a_registered_layer_is_placed_by_a_toml_config_and_unknown_names_list_the_registry() {
    custom_registry::register().unwrap();
    custom_registry::register().unwrap();
    let model = custom_registry::build(custom_registry::CONFIG).unwrap();
    let s = summary(model.as_ref(), &[1, 28, 28]).unwrap();
    let leaky = s.rows.iter().find(|r| r.type_name == "LeakyReLU").expect("the custom layer");
    assert_eq!(leaky.output_shape, Some(vec![1, 16, 28, 28]));
    assert_eq!(s.output_shape, [1, 10]);
    check_module_gradients(&custom_registry::LeakyRelu { slope: 0.1 }, &input(), 1e-6, 1e-6)
        .unwrap();

    let typo = custom_registry::CONFIG.replace("\"leaky_relu\"", "\"leaky_rleu\"");
    let msg = custom_registry::build(&typo).err().expect("unknown layer").to_string();
    assert!(msg.contains("model.layers[2]") && msg.contains("leaky_rleu"), "{msg}");
    assert!(msg.contains("leaky_relu") && msg.contains("conv2d"), "lists registered: {msg}");
    let bad = custom_registry::CONFIG.replace("slope = 0.1", "slope = 0.1\nslop = 2");
    let msg = custom_registry::build(&bad).err().expect("unknown argument").to_string();
    assert!(msg.contains("slop") && msg.contains("takes: slope, type"), "{msg}");
}

/// Values away from 0, where leaky ReLU has its kink, so central differences are exact.
fn input() -> Tensor {
    let x: Vec<f64> = (0..12)
        .map(|i| if i % 2 == 0 { 0.3 + i as f64 / 10.0 } else { -0.7 - i as f64 / 9.0 })
        .collect();
    Tensor::from_vec(x, [3, 4]).unwrap()
}
