//! The ResNet builder: depth counting as the ResNet paper counts it, parameter counts, argument
//! validation, and one forward and backward pass of ResNet-110.

use std::rc::Rc;
use strata_autodiff::{ops, Tape, Var};
use strata_nn::resnet::{weighted_layer_count, CifarResNet, ResNetOptions};
use strata_nn::{named_parameters, parameter_count, Ctx, Module};
use strata_tensor::Tensor;

/// Parameters of the CIFAR ResNet of depth 6n+2 with 1x1 conv + BN projections, derived layer
/// by layer: stem conv 3x3 (c*16*9) + BN (2*16); per block two 3x3 convs and two BNs; a
/// projection (cin*w + 2*w) where the width changes; the classifier 64*10 + 10.
fn expected_params(n: usize, in_ch: usize) -> usize {
    let mut total = in_ch * 16 * 9 + 2 * 16;
    let mut cin = 16;
    for w in [16, 32, 64] {
        for _ in 0..n {
            total += cin * w * 9 + w * w * 9 + 4 * w;
            if cin != w {
                total += cin * w + 2 * w;
            }
            cin = w;
        }
    }
    total + 64 * 10 + 10
}

#[test]
fn resnet110_has_110_weighted_layers_and_1_73_million_parameters() {
    let model = CifarResNet::new(110, &ResNetOptions::default()).unwrap();
    assert_eq!(weighted_layer_count(&model), 110);
    let params = parameter_count(&model);
    assert_eq!(params, expected_params(18, 3));
    // The paper's "1.7M"; 1,730,714 with projection shortcuts.
    assert!((1_725_000..1_735_000).contains(&params), "{params}");
}

#[test]
fn resnet20_and_56_count_their_depth() {
    for (depth, n) in [(20, 3), (56, 9)] {
        let model = CifarResNet::new(depth, &ResNetOptions::default()).unwrap();
        assert_eq!(weighted_layer_count(&model), depth);
        assert_eq!(parameter_count(&model), expected_params(n, 3));
    }
}

#[test]
fn a_depth_that_is_not_6n_plus_2_names_the_valid_depths() {
    let err = CifarResNet::new(100, &ResNetOptions::default()).err().expect("100 is not 6n+2");
    let msg = err.to_string();
    assert!(msg.contains("100") && msg.contains("6n+2") && msg.contains("110"), "{msg}");
}

#[test]
fn resnet110_runs_forward_and_backward_on_a_small_batch() {
    let model = CifarResNet::new(110, &ResNetOptions::default()).unwrap();
    let x: Vec<f32> = (0..2 * 3 * 32 * 32).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    let x = Var::constant(Tensor::from_vec(x, [2, 3, 32, 32]).unwrap());
    let tape = Tape::new();
    let logits = model.forward(&x, &Ctx::train(tape.clone())).unwrap();
    assert_eq!(logits.dims(), &[2, 10]);
    let loss = ops::softmax_cross_entropy(&logits, &[3, 7]).unwrap();
    let l = loss.value().to_scalar().unwrap();
    // He-initialised logits are O(1): the loss is near ln 10 = 2.30, finite and positive.
    assert!(l.is_finite() && l > 0.5 && l < 10.0, "loss {l}");
    tape.backward(&loss).unwrap();
    let params = named_parameters(&model);
    for (name, p) in &params {
        let g = p.grad();
        let g = g.as_ref().unwrap_or_else(|| panic!("{name} got no gradient"));
        assert_eq!(g.dims(), p.value().dims(), "{name}");
        assert!(g.to_vec::<f32>().unwrap().iter().all(|v| v.is_finite()), "{name}");
    }
    let fc = params.iter().find(|(n, _)| n == "fc.weight").map(|(_, p)| Rc::clone(p)).unwrap();
    let norm: f32 =
        fc.grad().as_ref().unwrap().to_vec::<f32>().unwrap().iter().map(|v| v * v).sum();
    assert!(norm > 0.0, "the classifier's gradient is zero");
}
