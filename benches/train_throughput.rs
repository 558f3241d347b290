//! Training throughput of the CIFAR ResNet on synthetic data in one process, the same work as
//! `../shared/bench/torch_resnet.py`: forward, softmax cross-entropy, backward, SGD with
//! momentum. Prints one JSON line per model; compare with the PyTorch script run alongside.
//!
//!     cargo bench --bench train_throughput -- [--depths 20,56] [--threads 2] [--batch 128]
//!         [--in-ch 3] [--size 32] [--windows 5] [--window-s 3]

use rand::{Rng, SeedableRng};
use std::time::Instant;
use strata::comm::SingleProcess;
use strata::nn::resnet::{CifarResNet, ResNetOptions};
use strata::nn::{named_parameters, Ctx, Module};
use strata::tensor::Tensor;
use strata::train::config::OptimizerConfig;
use strata::train::ddp::Reducer;
use strata::train::optim::Optimizer;
use strata::train::trainer::{optimizer_step, train_step, MicroStep};

struct Args {
    depths: Vec<usize>,
    threads: usize,
    batch: usize,
    in_ch: usize,
    size: usize,
    windows: usize,
    window_s: f64,
}

fn parse_args() -> Args {
    let mut a = Args {
        depths: vec![20, 56],
        threads: 2,
        batch: 128,
        in_ch: 3,
        size: 32,
        windows: 5,
        window_s: 3.0,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--depths" => a.depths = value.split(',').filter_map(|d| d.parse().ok()).collect(),
            "--threads" => a.threads = value.parse().unwrap_or(a.threads),
            "--batch" => a.batch = value.parse().unwrap_or(a.batch),
            "--in-ch" => a.in_ch = value.parse().unwrap_or(a.in_ch),
            "--size" => a.size = value.parse().unwrap_or(a.size),
            "--windows" => a.windows = value.parse().unwrap_or(a.windows),
            "--window-s" => a.window_s = value.parse().unwrap_or(a.window_s),
            _ => {
                i += 1; // cargo bench passes --bench; ignore what we do not know
                continue;
            }
        }
        i += 2;
    }
    a
}

fn main() {
    let a = parse_args();
    rayon::ThreadPoolBuilder::new().num_threads(a.threads).build_global().expect("thread pool");
    for &depth in &a.depths {
        let opts = ResNetOptions { in_channels: a.in_ch, ..ResNetOptions::default() };
        let model = CifarResNet::new(depth, &opts).expect("valid depth");
        let named = named_parameters(&model);
        let params: Vec<_> = named.iter().map(|(_, p)| p.clone()).collect();
        let cfg = OptimizerConfig {
            momentum: 0.9,
            weight_decay: 1e-4,
            ..OptimizerConfig::new("sgd", 0.1)
        };
        let mut opt = Optimizer::new(named, cfg.clone()).expect("a known optimizer");
        let mut reducer = Reducer::world_of_one(&params);
        let mut comm = SingleProcess;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let n = a.batch * a.in_ch * a.size * a.size;
        let x: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let x = Tensor::from_vec(x, [a.batch, a.in_ch, a.size, a.size]).expect("shape");
        let labels: Vec<u32> = (0..a.batch).map(|_| rng.gen_range(0..10)).collect();
        let mut step = || {
            train_step(
                &model,
                &mut reducer,
                &mut opt,
                x.clone(),
                &labels,
                &Ctx::default(),
                MicroStep::SINGLE,
            )
            .expect("training step");
            optimizer_step(&mut opt, &mut comm, 0.1, &cfg, false, false).expect("update");
        };

        for _ in 0..2 {
            step();
        }
        let t0 = Instant::now();
        step();
        let steps = ((a.window_s / t0.elapsed().as_secs_f64()).round() as usize).max(2);
        let mut rates = Vec::new();
        for _ in 0..a.windows {
            let t0 = Instant::now();
            for _ in 0..steps {
                step();
            }
            rates.push((a.batch * steps) as f64 / t0.elapsed().as_secs_f64());
        }
        rates.sort_by(|x, y| x.total_cmp(y));
        let median = rates[rates.len() / 2];
        println!(
            "{{\"framework\":\"strata\",\"model\":\"resnet{depth}\",\"input\":[{},{},{}],\
             \"threads\":{},\"batch\":{},\"dtype\":\"f32\",\"img_per_s_median\":{:.1},\
             \"img_per_s_min\":{:.1},\"img_per_s_max\":{:.1},\"type\":\"{}\"}}",
            a.in_ch,
            a.size,
            a.size,
            a.threads,
            a.batch,
            median,
            rates[0],
            rates[rates.len() - 1],
            model.type_name()
        );
    }
}
