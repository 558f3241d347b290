//! Gradient checkpointing changes memory, not results: on the CPU backend, gradients (of every
//! parameter and of the input), the loss, the order in which the grad-ready hook hands on
//! parameters, and after several optimizer steps the weights and batch-norm running
//! statistics are bit-identical with and without checkpointed segments, under stochastic depth
//! and dropout too.

use std::cell::RefCell;
use std::rc::Rc;
use strata::autodiff::{ops, Tape};
use strata::comm::SingleProcess;
use strata::nn::checkpoint::SegmentPlan;
use strata::nn::mlp::{Mlp, MlpOptions};
use strata::nn::resnet::{CifarResNet, PreActResNet, ResNetOptions};
use strata::nn::{named_buffers, named_parameters, Ctx, Module};
use strata::tensor::{DType, Tensor};
use strata::train::config::OptimizerConfig;
use strata::train::ddp::Reducer;
use strata::train::optim::Optimizer;
use strata::train::trainer::{optimizer_step, train_step, MicroStep};

type Build = fn() -> Box<dyn Module>;

fn resnet_opts() -> ResNetOptions {
    // Stochastic depth on: some blocks are dropped at the steps used below.
    ResNetOptions { survival_prob: 0.5, seed: 7, ..ResNetOptions::default() }
}

fn models() -> [(&'static str, Build); 3] {
    [
        ("ResNet-20", || Box::new(CifarResNet::new(20, &resnet_opts()).unwrap())),
        ("pre-activation ResNet-29", || Box::new(PreActResNet::new(29, &resnet_opts()).unwrap())),
        ("MLP with batch norm and dropout", || {
            Box::new(
                Mlp::new(&MlpOptions {
                    in_features: 3 * 8 * 8,
                    width: 32,
                    depth: 5,
                    num_classes: 10,
                    batch_norm: true,
                    dropout: 0.3,
                    seed: 7,
                    dtype: DType::F32,
                })
                .unwrap(),
            )
        }),
    ]
}

/// Plans over `n` blocks: one block per segment, pairs, sqrt, and a partial plan that leaves
/// the first and last blocks recorded.
fn plans(n: usize) -> Vec<SegmentPlan> {
    vec![
        SegmentPlan::every(n, 1, 0),
        SegmentPlan::every(n, 2, 0),
        SegmentPlan::sqrt(n),
        SegmentPlan::new(vec![1..3, 3..n - 1]).unwrap(),
    ]
}

fn input(batch: usize) -> Tensor {
    // A fixed, varied input: x_i = sin(0.37 i).
    let n = batch * 3 * 8 * 8;
    Tensor::from_vec(
        (0..n).map(|i| (0.37 * i as f32).sin()).collect::<Vec<f32>>(),
        [batch, 3, 8, 8],
    )
    .unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

/// What one forward and backward produces: loss, input gradient, parameter gradients (in
/// parameter order) and the grad-ready hook's sequence of (index, parameter name).
struct Pass {
    loss: u32,
    dx: Vec<u32>,
    grads: Vec<(String, Vec<u32>)>,
    hook: Vec<(usize, String)>,
}

fn pass(model: &dyn Module, plan: Option<SegmentPlan>, step: u64) -> Pass {
    let named = named_parameters(model);
    named.iter().for_each(|(_, p)| p.zero_grad());
    let tape = Tape::new();
    let fired: Rc<RefCell<Vec<(usize, String)>>> = Rc::default();
    let (log, names) = (fired.clone(), named.clone());
    tape.set_grad_ready_hook(Box::new(move |index, p| {
        let name = names.iter().find(|(_, q)| Rc::ptr_eq(p, q)).map(|(n, _)| n.clone());
        log.borrow_mut().push((index, name.unwrap_or_default()));
        Ok(())
    }));
    let cx =
        Ctx { checkpoint: plan.map(Rc::new), ..Ctx::train(tape.clone()) }.with_rng(3, 0, 0, step);
    let x = tape.leaf(input(4));
    let logits = model.forward(&x, &cx).unwrap();
    let loss = ops::softmax_cross_entropy(&logits, &[0, 3, 5, 9]).unwrap();
    let grads = tape.backward(&loss).unwrap();
    let dx = bits(grads.get(&x).unwrap());
    let grads = named
        .iter()
        .map(|(n, p)| (n.clone(), p.grad().as_ref().map(bits).unwrap_or_default()))
        .collect();
    let hook = fired.borrow().clone();
    Pass { loss: bits(loss.value())[0], dx, grads, hook }
}

#[test]
fn gradients_and_the_grad_ready_order_are_bit_identical_with_and_without_checkpointing() {
    for (name, build) in models() {
        let reference_model = build();
        let n =
            strata::nn::plan::profile(reference_model.as_ref(), &[3, 8, 8]).unwrap().blocks.len();
        assert!(n >= 5, "{name}: {n} blocks");
        for step in [0, 5] {
            let want = pass(reference_model.as_ref(), None, step);
            assert!(!want.hook.is_empty());
            for plan in plans(n) {
                let model = build();
                let got = pass(model.as_ref(), Some(plan.clone()), step);
                let what = format!("{name}, step {step}, segments {:?}", plan.segments());
                assert_eq!(got.loss, want.loss, "{what}: loss");
                assert_eq!(got.dx, want.dx, "{what}: input gradient");
                for ((pn, g), (_, w)) in got.grads.iter().zip(&want.grads) {
                    assert_eq!(g, w, "{what}: gradient of {pn}");
                }
                // The same parameters with the same indices, in the same order, once each.
                assert_eq!(got.hook, want.hook, "{what}: grad-ready order");
                let mut g = got.hook.clone();
                g.sort();
                g.dedup();
                assert_eq!(g.len(), got.hook.len(), "{what}: a parameter handed on twice");
            }
        }
    }
}

/// Train `build()`'s model for `steps` SGD steps with `plan`; its weights and buffers after.
fn trained(build: Build, plan: Option<SegmentPlan>, steps: u64) -> Vec<(String, Vec<u32>)> {
    let model = build();
    let named = named_parameters(model.as_ref());
    let params: Vec<_> = named.iter().map(|(_, p)| p.clone()).collect();
    let cfg = OptimizerConfig {
        momentum: 0.9,
        weight_decay: 1e-4,
        nesterov: true,
        ..OptimizerConfig::new("sgd", 0.05)
    };
    let mut opt = Optimizer::new(named.clone(), cfg.clone()).unwrap();
    let mut reducer = Reducer::world_of_one(&params);
    let plan = plan.map(Rc::new);
    for step in 0..steps {
        let cx = Ctx { checkpoint: plan.clone(), ..Ctx::default() }.with_rng(3, 0, 0, step);
        let labels = [0, 3, 5, 9, 1, 2];
        let micro = MicroStep::SINGLE;
        train_step(model.as_ref(), &mut reducer, &mut opt, input(6), &labels, &cx, micro).unwrap();
        optimizer_step(&mut opt, &mut SingleProcess, 0.05, &cfg, false, false).unwrap();
    }
    let mut out: Vec<(String, Vec<u32>)> =
        named.iter().map(|(n, p)| (n.clone(), bits(&p.value()))).collect();
    out.extend(named_buffers(model.as_ref()).iter().map(|(n, b)| (n.clone(), bits(&b.borrow()))));
    out
}

#[test]
fn after_k_steps_weights_and_running_statistics_are_bit_identical() {
    const K: u64 = 3;
    for (name, build) in models() {
        let initial = trained(build, None, 0);
        let want = trained(build, None, K);
        let n = strata::nn::plan::profile(build().as_ref(), &[3, 8, 8]).unwrap().blocks.len();
        for plan in [SegmentPlan::sqrt(n), SegmentPlan::every(n, 1, 0)] {
            let got = trained(build, Some(plan.clone()), K);
            for (((gn, g), (_, w)), (_, i)) in got.iter().zip(&want).zip(&initial) {
                assert_eq!(g, w, "{name}, segments {:?}: {gn} after {K} steps", plan.segments());
                if gn.ends_with("running_mean") {
                    // The statistics moved, so equal values mean each was updated once a step.
                    assert_ne!(g, i, "{name}: {gn} never updated");
                }
            }
        }
    }
}
