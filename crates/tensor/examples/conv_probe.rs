//! Temporary probe: one conv pass repeated. args: threads pass n c h k r stride pad reps
use std::time::Instant;
use strata_tensor::{Backend, Conv2dParams, Tensor};
extern "C" {
    fn clock_gettime(clk: i32, ts: *mut [i64; 2]) -> i32;
}
fn main() {
    let a: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().unwrap()).collect();
    let (threads, pass, n, c, h, k, r, stride, pad, reps) =
        (a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let be = strata_tensor::cpu::CpuBackend;
    let prm = Conv2dParams { stride, padding: pad };
    let o = (h + 2 * pad - r) / stride + 1;
    let x = Tensor::from_vec(vec![0.5f32; n * c * h * h], [n, c, h, h]).unwrap();
    let w = Tensor::from_vec(vec![0.25f32; k * c * r * r], [k, c, r, r]).unwrap();
    let dy = Tensor::from_vec(vec![0.5f32; n * k * o * o], [n, k, o, o]).unwrap();
    let g = Tensor::from_vec(vec![1.0f32; c], [c]).unwrap();
    let b = Tensor::from_vec(vec![0.1f32; c], [c]).unwrap();
    pool.install(|| {
        let run = || match pass {
            0 => drop(be.conv2d_forward(&x, &w, prm).unwrap()),
            1 => drop(be.conv2d_backward_data(&dy, &w, [n, c, h, h], prm).unwrap()),
            2 => drop(be.conv2d_backward_filter(&dy, &x, [k, c, r, r], prm).unwrap()),
            3 => drop(be.batch_norm_forward_train(&x, &g, &b, 1e-5).unwrap()),
            4 => drop(be.batch_norm_backward(&x, &x, &g, &b, &b).unwrap()),
            5 => drop(be.relu_forward(&x).unwrap()),
            6 => drop(be.relu_backward(&x, &x).unwrap()),
            _ => drop(be.add(&x, &x).unwrap()),
        };
        run();
        let cpu = || {
            let mut ts = [0i64; 2];
            unsafe { clock_gettime(3, &mut ts) };
            ts[0] as f64 + ts[1] as f64 * 1e-9
        };
        let mut best = f64::INFINITY;
        let mut best_cpu = f64::INFINITY;
        for _ in 0..reps {
            let c0 = cpu();
            let t = Instant::now();
            run();
            best = best.min(t.elapsed().as_secs_f64());
            best_cpu = best_cpu.min(cpu() - c0);
        }
        let dt = best;
        if threads == 1 {
            let fl = 2.0 * (n * k * o * o * c * r * r) as f64;
            print!("cpu {:.3} ms {:.1} GFLOP/s | wall ", best_cpu * 1e3, fl / best_cpu / 1e9);
        }
        let fl = 2.0 * (n * k * o * o * c * r * r) as f64;
        println!("{:.3} ms  {:.1} GFLOP/s", dt * 1e3, fl / dt / 1e9);
    });
}
