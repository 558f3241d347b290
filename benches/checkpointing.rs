//! Gradient checkpointing: peak memory (the tensor layer's allocation accounting) and step
//! time of training steps with and without checkpointed segments, next to the memory plan's
//! prediction. One process, synthetic data, SGD with momentum; each step mirrors the trainer's
//! `train_step` in a world of one (forward, loss, clear gradients, backward, update) with forward and
//! backward timed apart. Prints one JSON line per (model, policy), then one with the ratios.
//!
//!     cargo bench --bench checkpointing -- [--case preact1001|resnet1202|resnet56|all]
//!         [--threads 2] [--steps 2] [--warmup 1]
//!
//! The cases of the checkpointing issue: pre-activation ResNet-1001 at batch 32 (none vs
//! "sqrt"), ResNet-1202 at batch 64 with "sqrt" (does it fit in 24 GiB), ResNet-56 at batch
//! 128 with a segment per block (compare with `../shared/bench/torch_resnet.py --ckpt`).

use rand::{Rng, SeedableRng};
use std::rc::Rc;
use std::time::Instant;
use strata::autodiff::{ops, Tape, Var};
use strata::nn::checkpoint::SegmentPlan;
use strata::nn::plan::{bytes_text, profile};
use strata::nn::resnet::{CifarResNet, PreActResNet, ResNetOptions};
use strata::nn::{named_parameters, parameter_count, Ctx, Module};
use strata::tensor::memory::{peak_bytes, reset_peak};
use strata::tensor::{Device, Tensor};
use strata::train::config::OptimizerConfig;
use strata::train::optim::Optimizer;

struct Args {
    case: String,
    threads: usize,
    steps: usize,
    warmup: usize,
}

fn parse_args() -> Args {
    let mut a = Args { case: "all".into(), threads: 2, steps: 2, warmup: 1 };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--case" => a.case = value,
            "--threads" => a.threads = value.parse().unwrap_or(a.threads),
            "--steps" => a.steps = value.parse().unwrap_or(a.steps),
            "--warmup" => a.warmup = value.parse().unwrap_or(a.warmup),
            _ => {
                i += 1; // cargo bench passes --bench; ignore what we do not know
                continue;
            }
        }
        i += 2;
    }
    a
}

/// What the timed steps of one (model, policy) measured.
struct Measured {
    peak: u64,
    predicted: u64,
    forward_s: f64,
    backward_s: f64,
    step_s: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Train `model` for `warmup + steps` steps on `batch` synthetic samples of 3x32x32 with
/// `plan`; peak bytes and median times over the timed steps.
fn measure(model: &dyn Module, plan: &SegmentPlan, batch: usize, a: &Args) -> Measured {
    let shape = [3, 32, 32];
    let predicted = profile(model, &shape).expect("profile").estimate(batch, plan, 1).peak;
    let named = named_parameters(model);
    let cfg =
        OptimizerConfig { momentum: 0.9, weight_decay: 1e-4, ..OptimizerConfig::new("sgd", 0.01) };
    let mut opt = Optimizer::new(named, cfg).expect("a known optimizer");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let n = batch * 3 * 32 * 32;
    let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let x = Tensor::from_vec(x, [batch, 3, 32, 32]).expect("shape");
    let labels: Vec<u32> = (0..batch).map(|_| rng.gen_range(0..10)).collect();
    let plan = (!plan.is_empty()).then(|| Rc::new(plan.clone()));

    let (mut fwd, mut bwd, mut total, mut peak) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for step in 0..a.warmup + a.steps {
        reset_peak(Device::Cpu);
        let t0 = Instant::now();
        let tape = Tape::new();
        let cx = Ctx { checkpoint: plan.clone(), ..Ctx::train(tape.clone()) }.with_rng(
            0,
            0,
            0,
            step as u64,
        );
        let logits = model.forward(&Var::constant(x.clone()), &cx).expect("forward");
        let loss = ops::softmax_cross_entropy(&logits, &labels).expect("loss");
        drop((logits, cx));
        let t1 = Instant::now();
        opt.zero_grad();
        tape.backward(&loss).expect("backward");
        drop((loss, tape));
        let t2 = Instant::now();
        opt.step(0.01).expect("update");
        if step >= a.warmup {
            fwd.push((t1 - t0).as_secs_f64());
            bwd.push((t2 - t1).as_secs_f64());
            total.push(t0.elapsed().as_secs_f64());
            peak = peak.max(peak_bytes(Device::Cpu) as u64);
        }
    }
    Measured {
        peak,
        predicted,
        forward_s: median(fwd),
        backward_s: median(bwd),
        step_s: median(total),
    }
}

fn report(name: &str, model: &dyn Module, policy: &str, batch: usize, m: &Measured, a: &Args) {
    println!(
        "{{\"bench\":\"checkpointing\",\"model\":\"{name}\",\"params\":{},\"policy\":\"{policy}\",\
         \"batch\":{batch},\"input\":[3,32,32],\"dtype\":\"f32\",\"device\":\"cpu\",\"threads\":{},\
         \"steps\":{},\"peak_bytes\":{},\"peak\":\"{}\",\"predicted_peak_bytes\":{},\
         \"forward_s\":{:.3},\"backward_s\":{:.3},\"step_s\":{:.3}}}",
        parameter_count(model),
        a.threads,
        a.steps,
        m.peak,
        bytes_text(m.peak),
        m.predicted,
        m.forward_s,
        m.backward_s,
        m.step_s
    );
}

/// Run `build()`'s model at `batch` under each `(policy name, plan)`, one model alive at a
/// time (the accounting counts every live tensor); the measurements in order.
fn compare(
    name: &str,
    build: &dyn Fn() -> Box<dyn Module>,
    plans: &dyn Fn(usize) -> Vec<(&'static str, SegmentPlan)>,
    batch: usize,
    a: &Args,
) -> Vec<Measured> {
    let mut out = Vec::new();
    let blocks = profile(build().as_ref(), &[3, 32, 32]).expect("profile").blocks.len();
    for (policy, plan) in plans(blocks) {
        let model = build();
        let m = measure(model.as_ref(), &plan, batch, a);
        report(name, model.as_ref(), policy, batch, &m, a);
        out.push(m);
    }
    out
}

fn main() {
    let a = parse_args();
    rayon::ThreadPoolBuilder::new().num_threads(a.threads).build_global().expect("thread pool");
    let opts = ResNetOptions::default();
    let all = a.case == "all";

    if all || a.case == "preact1001" {
        let build = || Box::new(PreActResNet::new(1001, &opts).expect("depth")) as Box<dyn Module>;
        let plans = |n| vec![("none", SegmentPlan::none()), ("sqrt", SegmentPlan::sqrt(n))];
        let m = compare("preact_resnet1001", &build, &plans, 32, &a);
        println!(
            "{{\"bench\":\"checkpointing\",\"model\":\"preact_resnet1001\",\"batch\":32,\
             \"peak_sqrt_over_none\":{:.3},\"step_time_sqrt_over_none\":{:.3},\
             \"targets\":\"peak <= 0.25, time <= 1.40\"}}",
            m[1].peak as f64 / m[0].peak as f64,
            m[1].step_s / m[0].step_s
        );
    }
    if all || a.case == "resnet1202" {
        let build = || Box::new(CifarResNet::new(1202, &opts).expect("depth")) as Box<dyn Module>;
        let plans = |n| vec![("sqrt", SegmentPlan::sqrt(n))];
        let m = compare("resnet1202", &build, &plans, 64, &a);
        let none = profile(build().as_ref(), &[3, 32, 32]).expect("profile");
        println!(
            "{{\"bench\":\"checkpointing\",\"model\":\"resnet1202\",\"batch\":64,\
             \"peak_sqrt_gib\":{:.3},\"within_24_gib\":{},\"predicted_none_gib\":{:.3}}}",
            m[0].peak as f64 / (1u64 << 30) as f64,
            m[0].peak <= 24 << 30,
            none.estimate(64, &SegmentPlan::none(), 1).peak as f64 / (1u64 << 30) as f64
        );
    }
    if all || a.case == "resnet56" {
        let build = || Box::new(CifarResNet::new(56, &opts).expect("depth")) as Box<dyn Module>;
        let plans =
            |n| vec![("none", SegmentPlan::none()), ("every1", SegmentPlan::every(n, 1, 0))];
        let m = compare("resnet56", &build, &plans, 128, &a);
        println!(
            "{{\"bench\":\"checkpointing\",\"model\":\"resnet56\",\"batch\":128,\
             \"speed_every1_over_none\":{:.3},\"peak_every1_over_none\":{:.3},\
             \"compare\":\"torch_resnet.py --depth 56 --batch 128 --threads 2 [--ckpt]\"}}",
            m[0].step_s / m[1].step_s,
            m[1].peak as f64 / m[0].peak as f64
        );
    }
}
