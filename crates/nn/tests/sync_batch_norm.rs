//! Batch norm with synchronised statistics: two workers (threads here, summing through a
//! shared buffer) each holding half a batch compute what one batch norm computes on the whole
//! batch (output, input gradient, summed dgamma and dbeta, running statistics); in a world of
//! one the synced path equals the plain one; finite differences check its gradients.

use rand::{Rng, SeedableRng};
use std::rc::Rc;
use std::sync::{Arc, Barrier, Mutex};
use strata_autodiff::{ops, Tape, Var};
use strata_nn::gradcheck::check_module_gradients_at;
use strata_nn::layers::BatchNorm;
use strata_nn::{Ctx, Module, StatsAllReduce};
use strata_tensor::{DType, Tensor};

/// A world of one: the sum over workers is the value itself.
struct Alone;

impl StatsAllReduce for Alone {
    fn all_reduce_sum(&self, _values: &mut [f64]) -> Result<(), String> {
        Ok(())
    }
}

/// An all-reduce between threads: every thread adds its values to a shared buffer.
struct ThreadSum {
    shared: Arc<(Mutex<Vec<f64>>, Barrier)>,
}

impl StatsAllReduce for ThreadSum {
    fn all_reduce_sum(&self, values: &mut [f64]) -> Result<(), String> {
        let (acc, barrier) = &*self.shared;
        if barrier.wait().is_leader() {
            *acc.lock().unwrap() = vec![0.0; values.len()];
        }
        barrier.wait();
        acc.lock().unwrap().iter_mut().zip(values.iter()).for_each(|(a, v)| *a += v);
        barrier.wait();
        values.copy_from_slice(&acc.lock().unwrap());
        barrier.wait();
        Ok(())
    }
}

const C: usize = 3;

fn batch_norm() -> BatchNorm {
    let bn = BatchNorm::new(C, DType::F64).unwrap();
    *bn.gamma.value_mut() = Tensor::from_vec(vec![0.5f64, -1.5, 2.0], [C]).unwrap();
    *bn.beta.value_mut() = Tensor::from_vec(vec![0.1f64, 0.2, -0.3], [C]).unwrap();
    bn
}

/// `n` images of `[C, 2, 3]` with a large channel offset (means far from zero test the
/// cancellation in Σx² - n·mean²), and output weights for the loss `Σ y·r`.
fn data(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let len = n * C * 6;
    let x = (0..len).map(|i| rng.gen_range(-1.0..1.0) + 20.0 * ((i / 6) % C) as f64).collect();
    let r = (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect();
    (x, r)
}

/// Forward and backward of `Σ y·r` on `x` (`n` images); returns y, dx, dgamma, dbeta and the
/// running mean and variance after the one update.
fn run(
    bn: &BatchNorm,
    x: &[f64],
    r: &[f64],
    n: usize,
    sync: Option<Rc<dyn StatsAllReduce>>,
) -> [Vec<f64>; 6] {
    let tape = Tape::new();
    let cx = Ctx { sync_stats: sync, ..Ctx::train(tape.clone()) };
    let xin = tape.leaf(Tensor::from_vec(x.to_vec(), [n, C, 2, 3]).unwrap());
    let y = bn.forward(&xin, &cx).unwrap();
    let weighted = ops::mul_mask(&y, &Tensor::from_vec(r.to_vec(), [n, C, 2, 3]).unwrap()).unwrap();
    let len = x.len();
    let flat = ops::reshape(&weighted, &[1, len]).unwrap();
    let ones = Var::constant(Tensor::from_vec(vec![1.0f64; len], [1, len]).unwrap());
    let loss = ops::reshape(&ops::linear(&flat, &ones, None).unwrap(), &[1]).unwrap();
    let grads = tape.backward(&loss).unwrap();
    let v = |t: &Tensor| t.to_vec::<f64>().unwrap();
    [
        v(y.value()),
        v(grads.get(&xin).unwrap()),
        v(bn.gamma.grad().as_ref().unwrap()),
        v(bn.beta.grad().as_ref().unwrap()),
        v(&bn.running_mean.borrow()),
        v(&bn.running_var.borrow()),
    ]
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}");
    let (i, err) = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() / 1f64.max(b.abs()))
        .enumerate()
        .fold((0, 0.0), |w, (i, e)| if e > w.1 { (i, e) } else { w });
    assert!(err <= tol, "{what}: worst at {i}: got {} want {} (rel err {err:e})", got[i], want[i]);
}

/// f64 sums in another order differ by a few ulps times the element count; 1e-10 is far
/// below any formula error (a wrong count or a missing term is off by percents).
const TOL: f64 = 1e-10;

#[test]
fn two_workers_with_half_batches_match_one_batch_norm_on_the_whole_batch() {
    let n = 6;
    let (x, r) = data(n);
    let whole = run(&batch_norm(), &x, &r, n, None);

    let shared = Arc::new((Mutex::new(Vec::new()), Barrier::new(2)));
    let half = n / 2 * C * 6;
    let parts: Vec<[Vec<f64>; 6]> = (0..2)
        .map(|w| {
            let (shared, x, r) =
                (shared.clone(), x[w * half..][..half].to_vec(), r[w * half..][..half].to_vec());
            std::thread::spawn(move || {
                let sync: Rc<dyn StatsAllReduce> = Rc::new(ThreadSum { shared });
                run(&batch_norm(), &x, &r, n / 2, Some(sync))
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();

    let cat = |k: usize| [parts[0][k].clone(), parts[1][k].clone()].concat();
    assert_close("y", &cat(0), &whole[0], TOL);
    assert_close("dx", &cat(1), &whole[1], TOL);
    // Parameter gradients stay per worker; their sum over workers is the whole batch's.
    let sum =
        |k: usize| parts[0][k].iter().zip(&parts[1][k]).map(|(a, b)| a + b).collect::<Vec<_>>();
    assert_close("dgamma", &sum(2), &whole[2], TOL);
    assert_close("dbeta", &sum(3), &whole[3], TOL);
    for part in &parts {
        assert_close("running_mean", &part[4], &whole[4], TOL);
        assert_close("running_var", &part[5], &whole[5], TOL);
    }
    // Per-worker statistics would differ: the halves have different means.
    let plain = run(&batch_norm(), &x[..half], &r[..half], n / 2, None);
    let moved = (plain[4][0] - whole[4][0]).abs();
    assert!(moved > 1e-4, "the halves' batch means coincide ({moved:e}); the test is vacuous");
}

#[test]
fn in_a_world_of_one_the_synced_path_equals_the_plain_one() {
    let n = 4;
    let (x, r) = data(n);
    let plain = run(&batch_norm(), &x, &r, n, None);
    let synced = run(&batch_norm(), &x, &r, n, Some(Rc::new(Alone)));
    for (k, what) in
        ["y", "dx", "dgamma", "dbeta", "running_mean", "running_var"].iter().enumerate()
    {
        assert_close(what, &synced[k], &plain[k], TOL);
    }
}

#[test]
fn synced_batch_norm_passes_finite_differences() {
    // The gradcheck's own tolerance for batch norm (crates/nn/tests/gradcheck.rs).
    let bn = batch_norm();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let x: Vec<f64> = (0..4 * C * 6).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let x = Tensor::from_vec(x, [4, C, 2, 3]).unwrap();
    let at = Ctx { sync_stats: Some(Rc::new(Alone)), ..Ctx::default() };
    let err = check_module_gradients_at(&bn, &x, 1e-6, 1e-5, &at).unwrap();
    assert!(err < 1e-5, "{err}");
}
