//! Stochastic depth and dropout: decisions shared by all ranks, dropped blocks get no gradient,
//! evaluation scales each branch by its survival probability, and dropout masks are keyed by
//! (seed, rank, epoch, step) and have the right statistics.

use rand::{Rng, SeedableRng};
use strata_autodiff::{ops, Tape, Var};
use strata_nn::init::InitRng;
use strata_nn::layers::Dropout;
use strata_nn::resnet::{CifarResNet, PreActBasicBlock, ResNetOptions};
use strata_nn::stochastic_depth::{linear_decay, StochasticDepth};
use strata_nn::{named_parameters, Ctx, Module};
use strata_tensor::{DType, Tensor};

fn input(dims: &[usize], seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = dims.iter().product();
    Tensor::from_vec((0..n).map(|_| rng.gen_range(-1.0..1.0)).collect::<Vec<f32>>(), dims).unwrap()
}

fn resnet20(survival_prob: f64) -> CifarResNet {
    CifarResNet::new(20, &ResNetOptions { survival_prob, seed: 4, ..ResNetOptions::default() })
        .unwrap()
}

fn decisions(model: &CifarResNet, cx: &Ctx) -> Vec<bool> {
    model.blocks.iter().map(|b| b.stochastic_depth.keeps(cx)).collect()
}

#[test]
fn survival_probabilities_decay_linearly_from_1_to_p_l() {
    let p: Vec<f64> = linear_decay(5, 0.5).unwrap().iter().map(|s| s.survival_prob).collect();
    assert_eq!(p, [1.0, 0.875, 0.75, 0.625, 0.5]);
    let model = resnet20(0.5);
    let first = model.blocks[0].stochastic_depth;
    let last = model.blocks[8].stochastic_depth;
    assert_eq!((first.survival_prob, first.index), (1.0, 0));
    assert_eq!((last.survival_prob, last.index), (0.5, 8));
    for bad in [0.0, -0.1, 1.5, f64::NAN] {
        let err = linear_decay(4, bad).unwrap_err().to_string();
        assert!(err.contains("(0, 1]"), "{err}");
    }
}

#[test]
fn decisions_are_the_same_on_every_rank_and_change_with_the_step() {
    let model = resnet20(0.5);
    let mut differ = false;
    for step in 0..50 {
        let rank0 = Ctx::train(Tape::new()).with_rng(11, 0, 0, step);
        let rank1 = Ctx::train(Tape::new()).with_rng(11, 1, 3, step);
        let d = decisions(&model, &rank0);
        assert_eq!(d, decisions(&model, &rank1), "step {step}");
        assert!(d[0], "the first block survives with probability 1");
        differ |= d != decisions(&model, &Ctx::train(Tape::new()).with_rng(11, 0, 0, step + 1));
    }
    assert!(differ, "decisions never changed between consecutive steps");

    // And the forward passes of two ranks on the same batch agree bit for bit.
    let x = Var::constant(input(&[2, 3, 8, 8], 1));
    let y0 = model.forward(&x, &Ctx::train(Tape::new()).with_rng(11, 0, 0, 5)).unwrap();
    let y1 = model.forward(&x, &Ctx::train(Tape::new()).with_rng(11, 1, 0, 5)).unwrap();
    assert_eq!(y0.value().to_vec::<f32>().unwrap(), y1.value().to_vec::<f32>().unwrap());
}

#[test]
fn blocks_survive_at_their_survival_rate() {
    let sd = StochasticDepth::new(0.5, 3).unwrap();
    let n = 4000;
    let kept = (0..n).filter(|s| sd.keeps(&Ctx::train(Tape::new()).with_rng(1, 0, 0, *s))).count();
    // Binomial(4000, 0.5): std 31.6; 5 std is 158.
    assert!((kept as i64 - 2000).abs() < 158, "kept {kept} of {n}");
}

#[test]
fn a_dropped_block_gets_no_gradient_and_a_kept_block_does() {
    let model = resnet20(0.5);
    // A step at which some identity-shortcut block is dropped.
    let (step, keep) = (0..100)
        .map(|s| (s, decisions(&model, &Ctx::train(Tape::new()).with_rng(2, 0, 0, s))))
        .find(|(_, d)| d.iter().zip(&model.blocks).any(|(k, b)| !k && b.shortcut.is_none()))
        .expect("a dropped identity block within 100 steps");
    let tape = Tape::new();
    let cx = Ctx::train(tape.clone()).with_rng(2, 0, 0, step);
    let x = Var::constant(input(&[2, 3, 8, 8], 3));
    let loss = ops::softmax_cross_entropy(&model.forward(&x, &cx).unwrap(), &[1, 2]).unwrap();
    named_parameters(&model).iter().for_each(|(_, p)| p.zero_grad());
    tape.backward(&loss).unwrap();
    for (i, (block, kept)) in model.blocks.iter().zip(&keep).enumerate() {
        for (name, p) in named_parameters(block) {
            let has = p.grad().is_some();
            // A dropped projection block still runs its shortcut (conv + BN), which trains.
            let on_shortcut = name.starts_with("shortcut");
            assert_eq!(has, *kept || on_shortcut, "block {i} ({kept}) parameter {name}");
        }
    }
    assert!(keep.iter().any(|k| !k) && keep.iter().any(|k| *k));
}

fn preact_block(survival_prob: f64) -> PreActBasicBlock {
    let opts = ResNetOptions { dtype: DType::F64, ..ResNetOptions::default() };
    let block = PreActBasicBlock::new(3, 3, 1, &opts, &mut InitRng::seed_from_u64(9)).unwrap();
    block.with_stochastic_depth(StochasticDepth::new(survival_prob, 0).unwrap())
}

#[test]
fn evaluation_scales_the_residual_branch_by_its_survival_probability() {
    // Pre-activation blocks have no activation after the sum: y = x + p F(x), exactly.
    let x64: Vec<f64> =
        input(&[2, 3, 4, 4], 6).to_vec::<f32>().unwrap().iter().map(|v| *v as f64).collect();
    let x = Var::constant(Tensor::from_vec(x64.clone(), [2, 3, 4, 4]).unwrap());
    let full =
        preact_block(1.0).forward(&x, &Ctx::eval()).unwrap().value().to_vec::<f64>().unwrap();
    let scaled =
        preact_block(0.3).forward(&x, &Ctx::eval()).unwrap().value().to_vec::<f64>().unwrap();
    let mut worst = 0.0f64;
    for ((f, s), x) in full.iter().zip(&scaled).zip(&x64) {
        worst = worst.max(((s - x) - 0.3 * (f - x)).abs());
    }
    assert!(worst < 1e-12, "y - x != 0.3 (y_full - x): worst {worst:e}");
    assert!(full.iter().zip(&x64).any(|(f, x)| (f - x).abs() > 1e-3), "the branch is zero");

    // Training, dropped: the identity; kept: unscaled, the same as survival 1.
    let sd = StochasticDepth::new(0.3, 0).unwrap();
    let at = |s| Ctx::train(Tape::new()).with_rng(5, 0, 0, s);
    let dropped = (0..100).find(|s| !sd.keeps(&at(*s))).unwrap();
    let kept = (0..100).find(|s| sd.keeps(&at(*s))).unwrap();
    let y = preact_block(0.3).forward(&x, &at(dropped)).unwrap();
    assert_eq!(y.value().to_vec::<f64>().unwrap(), x64);
    let y = preact_block(0.3).forward(&x, &at(kept)).unwrap().value().to_vec::<f64>().unwrap();
    let y1 = preact_block(1.0).forward(&x, &at(kept)).unwrap().value().to_vec::<f64>().unwrap();
    assert_eq!(y, y1);
}

fn mask(d: &Dropout, seed: u64, rank: usize, epoch: u64, step: u64) -> Vec<f32> {
    let cx = Ctx::train(Tape::new()).with_rng(seed, rank, epoch, step);
    d.mask(&[100, 100], DType::F32, &cx).unwrap().to_vec::<f32>().unwrap()
}

#[test]
fn dropout_masks_are_keyed_by_seed_rank_epoch_and_step_and_inverted() {
    let d = Dropout::new(0.2, 0).unwrap();
    let m = mask(&d, 1, 0, 0, 0);
    assert_eq!(m, mask(&d, 1, 0, 0, 0), "same coordinates, same mask");
    for other in
        [mask(&d, 2, 0, 0, 0), mask(&d, 1, 1, 0, 0), mask(&d, 1, 0, 1, 0), mask(&d, 1, 0, 0, 1)]
    {
        assert_ne!(m, other);
    }
    assert_ne!(m, mask(&Dropout::new(0.2, 1).unwrap(), 1, 0, 0, 0), "another layer's stream");
    // Entries are 0 or 1 / 0.8; Binomial(10000, 0.2) zeros: std 40, 5 std is 200.
    assert!(m.iter().all(|v| *v == 0.0 || (*v - 1.25).abs() < 1e-6));
    let zeros = m.iter().filter(|v| **v == 0.0).count();
    assert!((zeros as i64 - 2000).abs() < 200, "{zeros} zeros of 10000");

    // Evaluation is the identity; training multiplies by the mask.
    let x = Var::constant(input(&[100, 100], 8));
    let y = d.forward(&x, &Ctx::eval()).unwrap();
    assert_eq!(y.value().to_vec::<f32>().unwrap(), x.value().to_vec::<f32>().unwrap());
    let y = d.forward(&x, &Ctx::train(Tape::new()).with_rng(1, 0, 0, 0)).unwrap();
    let xv = x.value().to_vec::<f32>().unwrap();
    for ((y, x), m) in y.value().to_vec::<f32>().unwrap().iter().zip(&xv).zip(&m) {
        assert_eq!(*y, x * m);
    }
    assert!(Dropout::new(1.5, 0).unwrap_err().to_string().contains("0 <= p <= 1"));
}

#[test]
fn a_model_with_stochastic_depth_trains_and_evaluates() {
    let model = resnet20(0.5);
    let tape = Tape::new();
    let x = Var::constant(input(&[2, 3, 8, 8], 3));
    let cx = Ctx::train(tape.clone()).with_rng(0, 0, 0, 1);
    let loss = ops::softmax_cross_entropy(&model.forward(&x, &cx).unwrap(), &[1, 2]).unwrap();
    assert!(loss.value().to_scalar().unwrap().is_finite());
    tape.backward(&loss).unwrap();
    let y = model.forward(&x, &Ctx::eval()).unwrap();
    assert!(y.value().to_vec::<f32>().unwrap().iter().all(|v| v.is_finite()));
    let fc = named_parameters(&model).into_iter().find(|(n, _)| n == "fc.weight").unwrap().1;
    assert!(fc.grad().is_some(), "the classifier got no gradient");
}
