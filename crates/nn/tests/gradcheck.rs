//! Finite-difference gradient checks in f64 of every layer and residual block, through the tape
//! (parameters and input), with batch norm in training mode; dropout and stochastic depth at
//! fixed seeds and steps (a kept and a dropped block).

use rand::{Rng, SeedableRng};
use strata_autodiff::Tape;
use strata_nn::deep_cnn::DeepCnn;
use strata_nn::gradcheck::{check_module_gradients, check_module_gradients_at};
use strata_nn::init::{Init, InitRng};
use strata_nn::layers::Relu;
use strata_nn::layers::{BatchNorm, Conv2d, Dropout, Flatten, GlobalAvgPool, Linear, MaxPool2d};
use strata_nn::mlp::{Mlp, MlpOptions};
use strata_nn::resnet::{
    BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck, ResNetOptions,
};
use strata_nn::stochastic_depth::StochasticDepth;
use strata_nn::{Ctx, Module};
use strata_tensor::{DType, Pool2dParams, Tensor};

const H: f64 = 1e-6;
/// Central differences in f64 with h = 1e-6 have truncation and rounding errors near 1e-8
/// relative; 1e-5 leaves room for the batch-norm variance's curvature.
const TOL: f64 = 1e-5;

fn input(dims: &[usize], seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = dims.iter().product();
    Tensor::from_vec((0..n).map(|_| rng.gen_range(-1.0..1.0)).collect::<Vec<f64>>(), dims).unwrap()
}

fn check(m: &dyn Module, dims: &[usize]) {
    let err = check_module_gradients(m, &input(dims, 5), H, TOL)
        .unwrap_or_else(|e| panic!("{}: {e}", m.type_name()));
    assert!(err < TOL, "{}: {err}", m.type_name());
}

fn rng() -> InitRng {
    InitRng::seed_from_u64(1)
}

#[test]
fn conv2d_stride_1_and_2() {
    for (stride, pad, k) in [(1, 1, 3), (2, 1, 3), (2, 0, 1), (1, 0, 1)] {
        let conv =
            Conv2d::new(2, 3, k, stride, pad, Init::HeNormal, DType::F64, &mut rng()).unwrap();
        check(&conv, &[2, 2, 5, 4]);
    }
}

#[test]
fn batch_norm_2d_and_1d_in_training_mode() {
    let bn = BatchNorm::new(3, DType::F64).unwrap();
    // Non-trivial gamma and beta so their gradients are exercised away from 1 and 0.
    *bn.gamma.value_mut() = Tensor::from_vec(vec![0.5f64, -1.5, 2.0], [3]).unwrap();
    *bn.beta.value_mut() = Tensor::from_vec(vec![0.1f64, 0.2, -0.3], [3]).unwrap();
    check(&bn, &[4, 3, 3, 2]);
    check(&bn, &[6, 3]);
}

#[test]
fn linear_with_and_without_bias() {
    for bias in [true, false] {
        let l = Linear::new(5, 4, bias, Init::XavierUniform, DType::F64, &mut rng()).unwrap();
        check(&l, &[3, 5]);
    }
}

#[test]
fn parameter_free_layers() {
    check(&Relu, &[2, 3, 4]);
    check(&GlobalAvgPool, &[2, 3, 4, 5]);
    check(&Flatten, &[2, 3, 2, 2]);
    check(&MaxPool2d(Pool2dParams { kernel: 2, stride: 2, padding: 0 }), &[2, 2, 4, 4]);
}

#[test]
fn basic_block_with_identity_and_projection_shortcuts() {
    let opts = ResNetOptions { dtype: DType::F64, ..ResNetOptions::default() };
    let identity = BasicBlock::new(3, 3, 1, &opts, &mut rng()).unwrap();
    assert!(identity.shortcut.is_none());
    check(&identity, &[2, 3, 4, 4]);
    let projection = BasicBlock::new(2, 4, 2, &opts, &mut rng()).unwrap();
    assert!(projection.shortcut.is_some());
    check(&projection, &[2, 2, 4, 4]);
}

#[test]
fn deep_mlp_with_batch_norm() {
    let opts = MlpOptions {
        in_features: 6,
        width: 5,
        depth: 3,
        num_classes: 3,
        batch_norm: true,
        dropout: 0.25,
        seed: 2,
        dtype: DType::F64,
    };
    // Dropout masks at seed 0, step 0: fixed, so finite differences see one function.
    check(&Mlp::new(&opts).unwrap(), &[4, 6]);
}

fn f64_opts() -> ResNetOptions {
    ResNetOptions { dtype: DType::F64, ..ResNetOptions::default() }
}

#[test]
fn dropout_with_a_fixed_mask() {
    let at = Ctx::default().with_rng(7, 1, 2, 3);
    let d = Dropout::new(0.4, 5).unwrap();
    let x = input(&[3, 4, 5], 5);
    let mask = d.mask(x.dims(), DType::F64, &Ctx::train(Tape::new()).with_rng(7, 1, 2, 3)).unwrap();
    let zeros = mask.to_vec::<f64>().unwrap().iter().filter(|v| **v == 0.0).count();
    assert!(zeros > 0 && zeros < 60, "the mask should drop some but not all of 60: {zeros}");
    check_module_gradients_at(&d, &x, H, TOL, &at).unwrap();
}

#[test]
fn pre_activation_basic_block_with_identity_and_projection_shortcuts() {
    let identity = PreActBasicBlock::new(3, 3, 1, &f64_opts(), &mut rng()).unwrap();
    assert!(identity.shortcut.is_none());
    check(&identity, &[2, 3, 4, 4]);
    let projection = PreActBasicBlock::new(2, 4, 2, &f64_opts(), &mut rng()).unwrap();
    assert!(projection.shortcut.is_some());
    check(&projection, &[2, 2, 5, 5]);
}

#[test]
fn bottleneck_blocks_post_and_pre_activation() {
    // Identity: 8 channels in, width 2, 4 x 2 = 8 out. Projection: 3 in, stride 2, 8 out.
    let identity = Bottleneck::new(8, 2, 1, &f64_opts(), &mut rng()).unwrap();
    assert!(identity.shortcut.is_none());
    check(&identity, &[2, 8, 3, 3]);
    let projection = Bottleneck::new(3, 2, 2, &f64_opts(), &mut rng()).unwrap();
    assert!(projection.shortcut.is_some());
    check(&projection, &[2, 3, 4, 4]);
    let identity = PreActBottleneck::new(8, 2, 1, &f64_opts(), &mut rng()).unwrap();
    assert!(identity.shortcut.is_none());
    check(&identity, &[2, 8, 3, 3]);
    let projection = PreActBottleneck::new(3, 2, 2, &f64_opts(), &mut rng()).unwrap();
    assert!(projection.shortcut.is_some());
    check(&projection, &[2, 3, 4, 4]);
}

/// The first steps (seed 7) at which block 0 with survival 0.5 is kept and dropped.
fn kept_and_dropped_steps(sd: StochasticDepth) -> (u64, u64) {
    let at = |step| Ctx::default().with_rng(7, 0, 0, step);
    let kept = (0..100).find(|s| sd.keeps(&at(*s))).expect("kept within 100 steps");
    let dropped = (0..100).find(|s| !sd.keeps(&at(*s))).expect("dropped within 100 steps");
    (kept, dropped)
}

#[test]
fn stochastic_depth_blocks_kept_and_dropped() {
    let sd = StochasticDepth::new(0.5, 0).unwrap();
    let (kept, dropped) = kept_and_dropped_steps(sd);
    let x = input(&[2, 3, 4, 4], 5);
    let blocks: [Box<dyn Module>; 2] = [
        Box::new(
            BasicBlock::new(3, 3, 1, &f64_opts(), &mut rng()).unwrap().with_stochastic_depth(sd),
        ),
        Box::new(
            PreActBasicBlock::new(3, 3, 1, &f64_opts(), &mut rng())
                .unwrap()
                .with_stochastic_depth(sd),
        ),
    ];
    for block in &blocks {
        for step in [kept, dropped] {
            let at = Ctx::default().with_rng(7, 0, 0, step);
            check_module_gradients_at(block.as_ref(), &x, H, TOL, &at)
                .unwrap_or_else(|e| panic!("{} at step {step}: {e}", block.type_name()));
        }
    }
}

#[test]
fn deep_cnn_with_a_doubling_block_and_stochastic_depth() {
    // 2 stages of width 2: blocks 2->2, 2->2, the stride-2 doubling block 2->4, 4->4, 4->4;
    // survival 0.5 at the last block, at a step of seed 7 where some block is dropped.
    let opts = ResNetOptions { in_channels: 1, num_classes: 3, survival_prob: 0.5, ..f64_opts() };
    let model = DeepCnn::new(2, 2, &opts).unwrap();
    let at = |s| Ctx::default().with_rng(7, 0, 0, s);
    let step = (0..100)
        .find(|s| model.blocks.iter().any(|b| !b.stochastic_depth.keeps(&at(*s))))
        .expect("a dropped block within 100 steps");
    check_module_gradients_at(&model, &input(&[3, 1, 5, 5], 5), H, TOL, &at(step)).unwrap();
}
