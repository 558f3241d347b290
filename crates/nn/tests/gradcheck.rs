//! Finite-difference gradient checks in f64 of every layer and of the residual block, through
//! the tape (parameters and input), with batch norm in training mode.

use rand::{Rng, SeedableRng};
use strata_nn::gradcheck::check_module_gradients;
use strata_nn::init::{Init, InitRng};
use strata_nn::layers::{BatchNorm, Conv2d, Flatten, GlobalAvgPool, Linear, MaxPool2d, Relu};
use strata_nn::mlp::{Mlp, MlpOptions};
use strata_nn::resnet::{BasicBlock, ResNetOptions};
use strata_nn::Module;
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
        let conv = Conv2d::new(2, 3, k, stride, pad, Init::HeNormal, DType::F64, &mut rng()).unwrap();
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
        seed: 2,
        dtype: DType::F64,
    };
    check(&Mlp::new(&opts).unwrap(), &[4, 6]);
}
