//! The memory plan's predicted peak per worker against the peak the tensor layer's allocation
//! accounting measures over a real training step (the trainer's `train_step` and
//! `optimizer_step`: forward, backward, SGD with momentum), for ResNet-110 and pre-activation ResNet-164, with gradient
//! checkpointing off and on (every block, "sqrt", part of the blocks, and the plan the
//! `budget` policy picks). One test: the accounting is process-wide, so nothing else may
//! allocate tensors while it measures.

use rand::{Rng, SeedableRng};
use std::rc::Rc;
use strata::comm::SingleProcess;
use strata::nn::checkpoint::SegmentPlan;
use strata::nn::plan::{plan_for_budget, profile};
use strata::nn::resnet::{CifarResNet, PreActResNet, ResNetOptions};
use strata::nn::{named_parameters, Ctx, Module};
use strata::tensor::memory::{peak_bytes, reset_peak};
use strata::tensor::{Device, Tensor};
use strata::train::config::OptimizerConfig;
use strata::train::ddp::Reducer;
use strata::train::optim::Optimizer;
use strata::train::trainer::{optimizer_step, train_step, MicroStep};

/// Measured peak bytes of the second training step (the first creates the gradients and
/// momentum buffers a steady-state step holds), for `model` on `batch` samples of `shape`.
fn measured_peak(model: &dyn Module, plan: &SegmentPlan, shape: [usize; 3], batch: usize) -> u64 {
    let named = named_parameters(model);
    let params: Vec<_> = named.iter().map(|(_, p)| p.clone()).collect();
    let cfg =
        OptimizerConfig { momentum: 0.9, weight_decay: 1e-4, ..OptimizerConfig::new("sgd", 0.01) };
    let mut opt = Optimizer::new(named, cfg.clone()).unwrap();
    let mut reducer = Reducer::world_of_one(&params);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let n = batch * shape.iter().product::<usize>();
    let labels: Vec<u32> = (0..batch).map(|_| rng.gen_range(0..10)).collect();
    let cx =
        Ctx { checkpoint: (!plan.is_empty()).then(|| Rc::new(plan.clone())), ..Ctx::default() };
    let mut peak = 0;
    for step in 0..2 {
        let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let x = Tensor::from_vec(x, [batch, shape[0], shape[1], shape[2]]).unwrap();
        reset_peak(Device::Cpu);
        let at = cx.clone().with_rng(0, 0, 0, step);
        train_step(model, &mut reducer, &mut opt, x, &labels, &at, MicroStep::SINGLE).unwrap();
        optimizer_step(&mut opt, &mut SingleProcess, 0.01, &cfg, false, false).unwrap();
        peak = peak_bytes(Device::Cpu) as u64;
    }
    peak
}

type Build = fn(&ResNetOptions) -> Box<dyn Module>;

#[test]
fn predicted_peak_is_within_15_percent_of_the_measured_peak() {
    // Fashion-MNIST-sized samples; batches large enough that activations dominate.
    let opts = ResNetOptions { in_channels: 1, ..ResNetOptions::default() };
    let shape = [1, 28, 28];
    let models: [(&str, Build, usize); 2] = [
        ("ResNet-110", |o| Box::new(CifarResNet::new(110, o).unwrap()), 16),
        ("pre-activation ResNet-164", |o| Box::new(PreActResNet::new(164, o).unwrap()), 8),
    ];
    let mut report = Vec::new();
    for (name, build, batch) in models {
        // One model alive at a time: the accounting counts every live tensor in the process.
        let model = build(&opts);
        let prof = profile(model.as_ref(), &shape).unwrap();
        let n = prof.blocks.len();
        // The budget policy's plan for a budget half-way between plain and "sqrt".
        let (none, sqrt) = (
            prof.estimate(batch, &SegmentPlan::none(), 1).peak,
            prof.estimate(batch, &SegmentPlan::sqrt(n), 1).peak,
        );
        let budget = (none + sqrt) / 2;
        let budgeted = plan_for_budget(&prof, batch, 1, budget).unwrap();
        assert!(prof.estimate(batch, &budgeted, 1).peak <= budget);
        let plans = [
            ("budget half-way", budgeted),
            ("none", SegmentPlan::none()),
            ("sqrt", SegmentPlan::sqrt(n)),
            ("every = 1", SegmentPlan::every(n, 1, 0)),
            ("first half, every = 4", SegmentPlan::every(n / 2, 4, 0)),
        ];
        for (policy, plan) in plans {
            let predicted = prof.estimate(batch, &plan, 1);
            let measured = measured_peak(model.as_ref(), &plan, shape, batch);
            let ratio = predicted.peak as f64 / measured as f64;
            eprintln!(
                "{name}, checkpointing {policy}, batch {batch}: predicted {} B, measured {measured} \
                 B, ratio {ratio:.3}\n{predicted}",
                predicted.peak
            );
            report.push(format!("{name} / {policy}: ratio {ratio:.3}"));
            assert!((ratio - 1.0).abs() <= 0.15, "{}", report.join("\n"));
        }
    }
}
