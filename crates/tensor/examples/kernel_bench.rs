//! Kernel benchmark of the CPU backend: every convolution shape of ResNet-56 on CIFAR
//! (3x32x32, batch 128) and of ResNet-110 on Fashion-MNIST (1x28x28, batch 64), forward,
//! backward data and backward filter timed apart, at 1 and 2 threads; then the batch-norm and
//! element-wise ops on each activation shape; then whole-network estimates (the sum of kernel
//! times per training step, and the images per second that implies).
//!
//! Run: `cargo run -p strata-tensor --release --example kernel_bench [-- --quick] [-- f64]`.
//! Device: the CPU, one rayon pool per thread count; dtype f32 unless `f64` is given.

use std::time::Instant;
use strata_tensor::{Backend, Conv2dParams, DType, Tensor};

/// One convolution of a network: input `[n, c, h, h]`, `k` filters of `r x r`, and how many
/// times it occurs in the network.
#[derive(Clone, Copy)]
struct Layer {
    name: &'static str,
    n: usize,
    c: usize,
    h: usize,
    k: usize,
    r: usize,
    prm: Conv2dParams,
    count: usize,
    /// The first convolution needs no gradient for its input.
    needs_dx: bool,
}

impl Layer {
    fn out(&self) -> usize {
        (self.h + 2 * self.prm.padding - self.r) / self.prm.stride + 1
    }

    /// FLOPs of one pass (2 per multiply-accumulate).
    fn flops(&self) -> f64 {
        let o = self.out();
        2.0 * (self.n * self.k * o * o * self.c * self.r * self.r) as f64
    }
}

const S1: Conv2dParams = Conv2dParams { stride: 1, padding: 1 };
const S2: Conv2dParams = Conv2dParams { stride: 2, padding: 1 };
const PROJ: Conv2dParams = Conv2dParams { stride: 2, padding: 0 };

/// The convolutions of a CIFAR-style ResNet-(6·blocks+2) on `c0 x h x h` inputs.
fn resnet(n: usize, c0: usize, h: usize, blocks: usize) -> Vec<Layer> {
    let l = |name, c, h, k, r, prm, count, needs_dx| Layer {
        name,
        n,
        c,
        h,
        k,
        r,
        prm,
        count,
        needs_dx,
    };
    let (h2, h3) = (h.div_ceil(2), h.div_ceil(4));
    vec![
        l("stem", c0, h, 16, 3, S1, 1, false),
        l("s1 3x3", 16, h, 16, 3, S1, 2 * blocks, true),
        l("s2 3x3/2", 16, h, 32, 3, S2, 1, true),
        l("s2 1x1/2", 16, h, 32, 1, PROJ, 1, true),
        l("s2 3x3", 32, h2, 32, 3, S1, 2 * blocks - 1, true),
        l("s3 3x3/2", 32, h2, 64, 3, S2, 1, true),
        l("s3 1x1/2", 32, h2, 64, 1, PROJ, 1, true),
        l("s3 3x3", 64, h3, 64, 3, S1, 2 * blocks - 1, true),
    ]
}

fn random(dims: &[usize], dtype: DType) -> Tensor {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let n: usize = dims.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        })
        .collect();
    Tensor::from_vec(v, dims).unwrap().to_dtype(dtype).unwrap()
}

/// Best-of-`reps` seconds of `f`, after two warm-up calls (which also let the allocator settle
/// on reusing the output buffers, as it does in a training loop).
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Seconds of (forward, backward data, backward filter) of one layer.
fn time_conv(be: &dyn Backend, l: &Layer, dtype: DType, reps: usize) -> [f64; 3] {
    let o = l.out();
    let x = random(&[l.n, l.c, l.h, l.h], dtype);
    let w = random(&[l.k, l.c, l.r, l.r], dtype);
    let dy = random(&[l.n, l.k, o, o], dtype);
    let fwd = time(reps, || drop(be.conv2d_forward(&x, &w, l.prm).unwrap()));
    let x_dims = [l.n, l.c, l.h, l.h];
    let bwd_data = time(reps, || drop(be.conv2d_backward_data(&dy, &w, x_dims, l.prm).unwrap()));
    let w_dims = [l.k, l.c, l.r, l.r];
    let bwd_filter =
        time(reps, || drop(be.conv2d_backward_filter(&dy, &x, w_dims, l.prm).unwrap()));
    [fwd, bwd_data, bwd_filter]
}

/// Seconds of batch norm (forward, backward) + relu (forward, backward) + add on `[n, c, h, h]`.
fn time_pointwise(be: &dyn Backend, dims: [usize; 4], dtype: DType, reps: usize) -> [f64; 5] {
    let x = random(&dims, dtype);
    let dy = random(&dims, dtype);
    let gamma = random(&[dims[1]], dtype);
    let beta = random(&[dims[1]], dtype);
    let out = be.batch_norm_forward_train(&x, &gamma, &beta, 1e-5).unwrap();
    let bn_f = time(reps, || drop(be.batch_norm_forward_train(&x, &gamma, &beta, 1e-5).unwrap()));
    let bn_b = time(reps, || {
        drop(be.batch_norm_backward(&dy, &x, &gamma, &out.mean, &out.invstd).unwrap())
    });
    let relu_f = time(reps, || drop(be.relu_forward(&x).unwrap()));
    let relu_b = time(reps, || drop(be.relu_backward(&dy, &x).unwrap()));
    let add = time(reps, || drop(be.add(&x, &dy).unwrap()));
    [bn_f, bn_b, relu_f, relu_b, add]
}

fn gflops(flops: f64, secs: f64) -> f64 {
    flops / secs / 1e9
}

/// Conv seconds per training step of the network `layers` (weighted by occurrence).
fn bench_network(title: &str, layers: &[Layer], dtype: DType, reps: usize) -> Vec<(usize, f64)> {
    let be = strata_tensor::backend::backend_for(strata_tensor::Device::Cpu).unwrap();
    println!("\n## {title}, {dtype:?}: convolutions (best of {reps}; GFLOP/s = 2·MACs / time)\n");
    println!(
        "| layer | x [n,c,h,w] | w [k,c,r,s] | stride | threads | fwd ms | GFLOP/s | bwd-data ms | \
         GFLOP/s | bwd-filter ms | GFLOP/s | count |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut totals = Vec::new();
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let mut total = 0.0;
        for l in layers {
            let [f, d, w] = pool.install(|| time_conv(be, l, dtype, reps));
            let fl = l.flops();
            println!(
                "| {} | [{},{},{},{}] | [{},{},{},{}] | {} | {threads} | {:.3} | {:.1} | {:.3} | \
                 {:.1} | {:.3} | {:.1} | {} |",
                l.name,
                l.n,
                l.c,
                l.h,
                l.h,
                l.k,
                l.c,
                l.r,
                l.r,
                l.prm.stride,
                f * 1e3,
                gflops(fl, f),
                d * 1e3,
                gflops(fl, d),
                w * 1e3,
                gflops(fl, w),
                l.count
            );
            total += l.count as f64 * (f + w + if l.needs_dx { d } else { 0.0 });
        }
        totals.push((threads, total));
    }
    totals
}

/// Batch-norm and element-wise seconds per training step: every conv output gets BN forward
/// and backward and relu forward and backward; every block output gets an add.
fn bench_pointwise(title: &str, layers: &[Layer], dtype: DType, reps: usize) -> Vec<f64> {
    let be = strata_tensor::backend::backend_for(strata_tensor::Device::Cpu).unwrap();
    println!("\n## {title}, {dtype:?}: batch norm and element-wise ops per activation shape\n");
    println!(
        "| activation | threads | bn fwd ms | bn bwd ms | relu fwd ms | relu bwd ms | add ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut totals = Vec::new();
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let mut total = 0.0;
        for l in layers.iter().filter(|l| l.r == 3) {
            let dims = [l.n, l.k, l.out(), l.out()];
            let t = pool.install(|| time_pointwise(be, dims, dtype, reps));
            println!(
                "| {:?} | {threads} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                dims,
                t[0] * 1e3,
                t[1] * 1e3,
                t[2] * 1e3,
                t[3] * 1e3,
                t[4] * 1e3
            );
            total += l.count as f64 * (t[0] + t[1] + t[2] + t[3] + t[4] / 2.0);
        }
        totals.push(total);
    }
    totals
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let dtype = if args.iter().any(|a| a == "f64") { DType::F64 } else { DType::F32 };
    let reps = if quick { 2 } else { 5 };
    println!("# strata-tensor CPU kernel benchmark (device: CPU, dtype {dtype:?})");

    let nets = [
        ("ResNet-56, CIFAR 3x32x32, batch 128", resnet(128, 3, 32, 9), 128),
        ("ResNet-110, Fashion-MNIST 1x28x28, batch 64", resnet(64, 1, 28, 18), 64),
    ];
    let mut summary = Vec::new();
    for (title, layers, batch) in &nets {
        let conv = bench_network(title, layers, dtype, reps);
        let other = bench_pointwise(title, layers, dtype, reps);
        summary.push((title, *batch, conv, other));
    }

    println!("\n## Whole-network estimates (one training step: forward + backward)\n");
    println!(
        "| network | threads | conv s/step | conv-only img/s | + BN/relu/add s/step | img/s |"
    );
    println!("|---|---|---|---|---|---|");
    for (title, batch, conv, other) in summary {
        for (&(threads, c), &o) in conv.iter().zip(&other) {
            let b = batch as f64;
            println!(
                "| {title} | {threads} | {c:.3} | {:.0} | {:.3} | {:.0} |",
                b / c,
                c + o,
                b / (c + o)
            );
        }
    }
}
