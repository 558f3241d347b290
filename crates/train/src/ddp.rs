//! Data parallelism: the same initial parameters everywhere (broadcast from rank 0), gradients
//! averaged over the world by a bucketed [`Reducer`] that overlaps the all-reduces with
//! backward, batch-norm running statistics averaged before evaluation and checkpoints, and
//! the sum that synchronised batch norm needs ([`CommStats`]).
//!
//! Which reduction each collective performs:
//!
//! | what | collective | reduction |
//! |---|---|---|
//! | initial parameters ([`broadcast_parameters`]) | broadcast from rank 0 | none (copy) |
//! | gradient buckets ([`Reducer`]) | f32 all-reduce per bucket | mean over ranks |
//! | running statistics ([`all_reduce_buffers`]) | one f32 all-reduce | mean over ranks |
//! | sync-BN statistics ([`CommStats`]) | f64 all-reduce per layer, forward and backward | sum |

use crate::error::{Result, TrainError};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};
use strata_autodiff::{Param, Tape};
use strata_comm::{CommHandle, Communicator, Pending, ReduceOp};
use strata_nn::{Buffer, StatsAllReduce};
use strata_tensor::{DType, Tensor};

/// Broadcast every parameter's value from rank 0, so all replicas start identical.
pub fn broadcast_parameters(comm: &mut dyn Communicator, params: &[Rc<Param>]) -> Result<()> {
    let mut flat = Vec::new();
    for p in params {
        flat.extend(p.value().to_vec::<f32>()?);
    }
    comm.broadcast(&mut flat, 0)?;
    let mut offset = 0;
    for p in params {
        let mut v = p.value_mut();
        offset += write_back(&mut v, &flat[offset..])?;
    }
    Ok(())
}

/// Average batch-norm running statistics (or any buffers) over the world (mean over ranks).
pub fn all_reduce_buffers(comm: &mut dyn Communicator, buffers: &[Buffer]) -> Result<()> {
    if comm.world_size() == 1 {
        return Ok(());
    }
    let mut flat = Vec::new();
    for b in buffers {
        flat.extend(b.borrow().to_vec::<f32>()?);
    }
    comm.all_reduce(&mut flat, ReduceOp::Mean)?;
    let mut offset = 0;
    for b in buffers {
        offset += write_back(&mut b.borrow_mut(), &flat[offset..])?;
    }
    Ok(())
}

/// The sum over workers that batch norm with `sync_bn` needs, on the communication thread: a
/// blocking f64 all-reduce (sum), queued behind any gradient bucket already in flight.
pub struct CommStats(pub CommHandle);

impl StatsAllReduce for CommStats {
    fn all_reduce_sum(&self, values: &mut [f64]) -> std::result::Result<(), String> {
        let out = self.0.start_all_reduce_f64(values.to_vec(), ReduceOp::Sum).wait();
        out.map(|v| values.copy_from_slice(&v)).map_err(|e| e.to_string())
    }
}

/// How the [`Reducer`] groups gradients (the config's `[ddp]` section).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketOptions {
    /// A bucket is closed once it holds at least this many bytes of f32 gradients; 0 gives
    /// one bucket per parameter.
    pub cap_bytes: usize,
    /// The same cap for the first bucket (the last layers' gradients, which are ready first),
    /// kept small so communication starts early in backward.
    pub first_cap_bytes: usize,
    /// Start each bucket's all-reduce during backward, as soon as its last gradient is final
    /// (true), or start them all after backward (false).
    pub overlap: bool,
}

impl Default for BucketOptions {
    /// PyTorch DDP's defaults: 25 MiB buckets, a 1 MiB first bucket, overlapped.
    fn default() -> Self {
        BucketOptions { cap_bytes: 25 << 20, first_cap_bytes: 1 << 20, overlap: true }
    }
}

/// Time the reducer spent in one step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReduceTimes {
    /// Wall time in [`Reducer::finish`]: communication not hidden behind backward.
    pub exposed: Duration,
    /// Total time the communication thread spent in this step's bucket all-reduces.
    pub comm: Duration,
}

/// Averages gradients over the world (mean over ranks) in buckets, overlapped with backward.
///
/// Parameters are grouped into buckets in reverse registration order, the order in which
/// backward makes their gradients final; each bucket closes once it reaches
/// [`BucketOptions::cap_bytes`] (the first at [`BucketOptions::first_cap_bytes`]). Use per
/// step:
///
/// 1. [`Reducer::prepare`] on the step's tape, before `backward`: it hangs a grad-ready hook
///    on the tape. When a bucket's last gradient is final, the hook copies the bucket's
///    gradients into its flat buffer and queues its all-reduce on the communication thread,
///    while backward continues.
/// 2. [`Reducer::finish`] after `backward`: it queues the buckets not started yet, waits for
///    all of them and writes the averages back into the parameters' gradients. Only this wait
///    is exposed communication.
///
/// Buckets start strictly in bucket order, so every rank issues the same all-reduces in the
/// same order. A parameter that received no gradient this step (a dropped block) contributes
/// zeros and receives the average; its bucket is then started by `finish`, never skipped, so
/// no rank waits on a collective another rank skipped. In a world of one no collective runs,
/// but such a parameter still gets a zero gradient, so the optimizer treats it alike whatever
/// the world size.
///
/// [`Reducer::set_no_sync`] turns reduction off for gradient accumulation: backward then only
/// accumulates local gradients into the parameters, and the next synchronised step reduces the
/// accumulated sums once (PyTorch's `no_sync`).
pub struct Reducer {
    comm: Option<CommHandle>,
    opts: BucketOptions,
    no_sync: bool,
    state: Rc<RefCell<Buckets>>,
}

/// A bucket's queued all-reduce: the averaged values and the time the collective took.
type InFlight = Pending<(Vec<f32>, Duration)>;

/// The buckets and the per-step state the grad-ready hook shares with the reducer.
struct Buckets {
    params: Vec<Rc<Param>>,
    /// Parameter indices of each bucket, in the order their gradients are packed.
    members: Vec<Vec<usize>>,
    /// Bucket of each parameter.
    bucket_of: Vec<usize>,
    /// Parameter index by address, to map the tape's hook calls back.
    index: HashMap<*const Param, usize>,
    /// Per step: which gradients are final, how many are missing per bucket, the next bucket
    /// to start, and what is in flight.
    ready: Vec<bool>,
    missing: Vec<usize>,
    next: usize,
    in_flight: Vec<Option<InFlight>>,
    /// Reused flat buffers, one per bucket, while no all-reduce holds them.
    spare: Vec<Vec<f32>>,
    /// The first error the hook met; `finish` returns it.
    error: Option<TrainError>,
}

impl Reducer {
    /// A reducer over `params` (registration order) that all-reduces on `comm`'s thread.
    pub fn new(params: &[Rc<Param>], comm: CommHandle, opts: BucketOptions) -> Reducer {
        let comm = (comm.world_size() > 1).then_some(comm);
        Reducer {
            comm,
            opts,
            no_sync: false,
            state: Rc::new(RefCell::new(Buckets::new(params, opts))),
        }
    }

    /// A reducer for a world of one: no collectives; missing gradients become zeros.
    pub fn world_of_one(params: &[Rc<Param>]) -> Reducer {
        let opts = BucketOptions::default();
        Reducer {
            comm: None,
            opts,
            no_sync: false,
            state: Rc::new(RefCell::new(Buckets::new(params, opts))),
        }
    }

    /// The parameter indices (registration order) of each bucket, first-reduced first.
    pub fn buckets(&self) -> Vec<Vec<usize>> {
        self.state.borrow().members.clone()
    }

    /// While `true`, [`prepare`](Self::prepare) and [`finish`](Self::finish) reduce nothing:
    /// gradients accumulate locally until a step with `false` averages the sums. Every rank
    /// must switch at the same steps.
    pub fn set_no_sync(&mut self, no_sync: bool) {
        self.no_sync = no_sync;
    }

    /// Whether reduction is currently off (see [`set_no_sync`](Self::set_no_sync)).
    pub fn no_sync(&self) -> bool {
        self.no_sync
    }

    /// Get ready for one backward pass on `tape`: reset the per-step state and, when
    /// overlapping, hang the grad-ready hook that starts buckets during backward.
    pub fn prepare(&mut self, tape: &Tape) {
        self.state.borrow_mut().reset();
        if self.no_sync || !self.opts.overlap {
            return;
        }
        let Some(comm) = self.comm.clone() else { return };
        let state = self.state.clone();
        tape.set_grad_ready_hook(Box::new(move |_, param| {
            state.borrow_mut().mark_ready(param, &comm);
            Ok(())
        }));
    }

    /// After backward: start the buckets still waiting, wait for every bucket, and replace
    /// each gradient with its mean over ranks (zeros where a parameter got none).
    ///
    /// # Errors
    ///
    /// A failed collective (timeout, closed peer, mismatch), or a tensor error while packing.
    pub fn finish(&mut self) -> Result<ReduceTimes> {
        let start = Instant::now();
        if self.no_sync {
            return Ok(ReduceTimes::default());
        }
        let mut state = self.state.borrow_mut();
        if let Some(e) = state.error.take() {
            return Err(e);
        }
        let Some(comm) = self.comm.as_ref() else {
            state.fill_missing()?;
            return Ok(ReduceTimes { exposed: start.elapsed(), comm: Duration::ZERO });
        };
        while state.next < state.members.len() {
            state.start_next(comm)?;
        }
        let mut comm_time = Duration::ZERO;
        for b in 0..state.members.len() {
            let Some(pending) = state.in_flight[b].take() else { continue };
            let (flat, took) = pending.wait()?;
            comm_time += took;
            state.unpack(b, &flat)?;
            state.spare[b] = flat;
        }
        Ok(ReduceTimes { exposed: start.elapsed(), comm: comm_time })
    }
}

impl Buckets {
    fn new(params: &[Rc<Param>], opts: BucketOptions) -> Buckets {
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut bytes = 0;
        for i in (0..params.len()).rev() {
            if members.is_empty() {
                members.push(Vec::new());
            }
            if let Some(m) = members.last_mut() {
                m.push(i);
            }
            bytes += 4 * params[i].value().elem_count();
            let cap = if members.len() == 1 { opts.first_cap_bytes } else { opts.cap_bytes };
            if bytes >= cap && i > 0 {
                members.push(Vec::new());
                bytes = 0;
            }
        }
        let mut bucket_of = vec![0; params.len()];
        for (b, m) in members.iter().enumerate() {
            m.iter().for_each(|&i| bucket_of[i] = b);
        }
        let index = params.iter().enumerate().map(|(i, p)| (Rc::as_ptr(p), i)).collect();
        let nb = members.len();
        Buckets {
            params: params.to_vec(),
            ready: vec![false; params.len()],
            missing: members.iter().map(Vec::len).collect(),
            members,
            bucket_of,
            index,
            next: 0,
            in_flight: (0..nb).map(|_| None).collect(),
            spare: vec![Vec::new(); nb],
            error: None,
        }
    }

    fn reset(&mut self) {
        self.ready.iter_mut().for_each(|r| *r = false);
        for (missing, m) in self.missing.iter_mut().zip(&self.members) {
            *missing = m.len();
        }
        self.next = 0;
        self.error = None;
    }

    /// The hook's work: count `param` as final and start every bucket now complete, in order.
    fn mark_ready(&mut self, param: &Rc<Param>, comm: &CommHandle) {
        let Some(&i) = self.index.get(&Rc::as_ptr(param)) else { return };
        if self.error.is_some() {
            return;
        }
        if self.ready[i] {
            // Harmless while its bucket waits (it is packed when it starts); once the bucket
            // has started, what was added since would be lost.
            if self.bucket_of[i] < self.next {
                self.error = Some(TrainError::Reducer(format!(
                    "parameter {i}'s gradient was reported final again after its bucket {} \
                     started; the grad-ready hook must fire once per parameter per backward",
                    self.bucket_of[i]
                )));
            }
            return;
        }
        self.ready[i] = true;
        self.missing[self.bucket_of[i]] -= 1;
        while self.next < self.members.len() && self.missing[self.next] == 0 {
            if let Err(e) = self.start_next(comm) {
                self.error = Some(e);
                return;
            }
        }
    }

    /// Pack bucket `self.next` (zeros for parameters without a gradient) and queue its
    /// all-reduce (mean).
    fn start_next(&mut self, comm: &CommHandle) -> Result<()> {
        let b = self.next;
        let mut flat = std::mem::take(&mut self.spare[b]);
        flat.clear();
        for &i in &self.members[b] {
            let p = &self.params[i];
            match p.grad().as_ref() {
                Some(g) if g.dtype() == DType::F32 => flat.extend_from_slice(g.as_slice::<f32>()?),
                Some(g) => flat.extend(g.to_vec::<f32>()?),
                None => flat.resize(flat.len() + p.value().elem_count(), 0.0),
            }
        }
        self.in_flight[b] = Some(comm.submit(move |c| {
            let t = Instant::now();
            c.all_reduce(&mut flat, ReduceOp::Mean).map(|()| (flat, t.elapsed()))
        }));
        self.next += 1;
        Ok(())
    }

    /// Write bucket `b`'s averaged values back into its parameters' gradients.
    fn unpack(&mut self, b: usize, flat: &[f32]) -> Result<()> {
        let mut offset = 0;
        for &i in &self.members[b] {
            let p = &self.params[i];
            let mut slot = p.grad_mut();
            let g = match slot.as_mut() {
                Some(g) => g,
                None => slot.insert(p.value().zeros_like()?),
            };
            offset += write_back(g, &flat[offset..])?;
        }
        Ok(())
    }

    /// A world of one: a zero gradient for every parameter that got none.
    fn fill_missing(&mut self) -> Result<()> {
        for p in &self.params {
            if p.grad().is_none() {
                let zeros = p.value().zeros_like()?;
                *p.grad_mut() = Some(zeros);
            }
        }
        Ok(())
    }
}

/// Overwrite `t` with the first `t.elem_count()` values of `src`; returns that count.
fn write_back(t: &mut Tensor, src: &[f32]) -> Result<usize> {
    let n = t.elem_count();
    match t.dtype() {
        DType::F64 => {
            let dst = t.as_mut_slice::<f64>()?;
            dst.iter_mut().zip(&src[..n]).for_each(|(d, s)| *d = *s as f64);
        }
        _ => t.as_mut_slice::<f32>()?.copy_from_slice(&src[..n]),
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(sizes: &[usize]) -> Vec<Rc<Param>> {
        sizes
            .iter()
            .map(|&n| Rc::new(Param::new(Tensor::from_vec(vec![0f32; n], [n]).unwrap())))
            .collect()
    }

    #[test]
    fn buckets_run_in_reverse_registration_order_with_a_small_first_bucket() {
        // Sizes in f32 elements; caps in bytes: first 40 B (10 elements), then 80 B (20).
        let ps = params(&[5, 5, 30, 4, 8, 6, 3, 7]);
        let opts = BucketOptions { cap_bytes: 80, first_cap_bytes: 40, overlap: true };
        let b = Buckets::new(&ps, opts);
        // From the end: 7 + 3 = 10 closes the first bucket; 6 + 8 + 4 = 18 < 20, + 30 closes
        // the second; 5 + 5 remain.
        assert_eq!(b.members, vec![vec![7, 6], vec![5, 4, 3, 2], vec![1, 0]]);
        assert_eq!(b.bucket_of, vec![2, 2, 1, 1, 1, 1, 0, 0]);
    }

    #[test]
    fn a_gradient_reported_final_again_after_its_bucket_started_is_an_error() {
        let ps = params(&[2, 2]);
        let opts = BucketOptions { cap_bytes: 0, first_cap_bytes: 0, overlap: true };
        let mut comm = strata_comm::SingleProcess::new();
        std::thread::scope(|scope| {
            let thread = strata_comm::CommThread::spawn(scope, &mut comm).unwrap();
            let handle = thread.handle();
            let mut b = Buckets::new(&ps, opts);
            b.mark_ready(&ps[1], &handle); // bucket 0 starts
            b.mark_ready(&ps[1], &handle);
            let err = b.error.take().expect("the second report is an error").to_string();
            assert!(err.contains("parameter 1") && err.contains("bucket 0"), "{err}");
            // Before its bucket starts, a repeat is harmless: parameter 0's bucket waits.
            b.reset();
            b.mark_ready(&ps[0], &handle);
            b.mark_ready(&ps[0], &handle);
            assert!(b.error.is_none());
            b.in_flight.iter_mut().filter_map(Option::take).for_each(|p| drop(p.wait()));
            thread.join().unwrap();
        });
    }

    #[test]
    fn a_zero_cap_gives_one_bucket_per_parameter() {
        let ps = params(&[3, 1, 2]);
        let opts = BucketOptions { cap_bytes: 0, first_cap_bytes: 0, overlap: true };
        assert_eq!(Buckets::new(&ps, opts).members, vec![vec![2], vec![1], vec![0]]);
    }

    /// Backward of `weight · Σ p` over the parameters `used` of `ps`, with `reducer` hung on
    /// the tape; every used gradient gets `weight` added everywhere.
    fn backward_sum(reducer: &mut Reducer, ps: &[Rc<Param>], used: &[usize], weight: f64) {
        use strata_autodiff::{ops, Var};
        let tape = Tape::new();
        let mut loss: Option<Var> = None;
        for &i in used {
            let n = ps[i].value().elem_count();
            let flat = ops::reshape(&tape.param(&ps[i]), &[1, n]).unwrap();
            let ones = Var::constant(Tensor::from_vec(vec![1f32; n], [1, n]).unwrap());
            let sum = ops::linear(&flat, &ones, None).unwrap();
            let term = ops::reshape(&ops::scale(&sum, weight).unwrap(), &[1]).unwrap();
            loss = Some(match loss {
                Some(l) => ops::add(&l, &term).unwrap(),
                None => term,
            });
        }
        reducer.prepare(&tape);
        tape.backward(&loss.unwrap()).unwrap();
        drop(tape);
        reducer.finish().unwrap();
    }

    fn grads(ps: &[Rc<Param>]) -> Vec<Vec<f32>> {
        ps.iter().map(|p| p.grad().as_ref().unwrap().to_vec::<f32>().unwrap()).collect()
    }

    /// Runs `body(rank, reducer, params)` on both ranks of a 2-rank ring, the reducer over
    /// parameters of 4, 3 and 2 elements with one bucket each; returns each rank's result.
    fn on_two_ranks<R: Send + 'static>(
        body: impl Fn(usize, &mut Reducer, &[Rc<Param>]) -> R + Send + Sync + Copy + 'static,
    ) -> Vec<R> {
        use std::time::Duration;
        use strata_comm::{CommThread, RingOptions, StoreClient, StoreServer, TcpRing};
        let server = StoreServer::start("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr();
        let ranks: Vec<_> = (0..2)
            .map(|rank| {
                std::thread::spawn(move || {
                    let store = StoreClient::connect(addr, Duration::from_secs(5)).unwrap();
                    let timeout = Duration::from_secs(20);
                    let opts = RingOptions { timeout, ..Default::default() };
                    let mut ring = TcpRing::connect(&store, rank, 2, opts).unwrap();
                    std::thread::scope(|scope| {
                        let thread = CommThread::spawn(scope, &mut ring).unwrap();
                        let ps = params(&[4, 3, 2]);
                        let opts =
                            BucketOptions { cap_bytes: 0, first_cap_bytes: 0, overlap: true };
                        let mut reducer = Reducer::new(&ps, thread.handle(), opts);
                        let out = body(rank, &mut reducer, &ps);
                        drop(reducer);
                        thread.join().unwrap();
                        out
                    })
                })
            })
            .collect();
        ranks.into_iter().map(|t| t.join().unwrap()).collect()
    }

    #[test]
    fn a_parameter_unused_on_one_rank_only_contributes_zeros_there() {
        // Rank 1 never uses parameter 0, so it starts the buckets of parameters 2 and 1 during
        // backward and that of parameter 0 only in `finish`, while rank 0 starts all three
        // during backward: the ranks must still issue the same all-reduces in the same order.
        let results = on_two_ranks(|rank, reducer, ps| {
            let used: &[usize] = if rank == 0 { &[0, 1, 2] } else { &[1, 2] };
            backward_sum(reducer, ps, used, (rank + 1) as f64);
            grads(ps)
        });
        // Means over the two ranks: (1 + 2) / 2 where both used it, (1 + 0) / 2 where only
        // rank 0 did; both ranks hold the same result.
        let want = vec![vec![0.5f32; 4], vec![1.5; 3], vec![1.5; 2]];
        assert_eq!(results, vec![want.clone(), want]);
    }

    #[test]
    fn no_sync_accumulates_locally_and_the_next_synced_step_reduces_the_sums() {
        let results = on_two_ranks(|rank, reducer, ps| {
            let weight = (rank + 1) as f64;
            reducer.set_no_sync(true);
            backward_sum(reducer, ps, &[0, 1, 2], weight);
            let local = grads(ps);
            reducer.set_no_sync(false);
            backward_sum(reducer, ps, &[0, 1, 2], weight);
            (local, grads(ps))
        });
        for (rank, (local, reduced)) in results.iter().enumerate() {
            // After the no_sync micro-step each rank holds its own gradient, rank + 1; after
            // the synced one, the mean of the sums 2 (rank + 1): (2 + 4) / 2 = 3.
            let own = (rank + 1) as f32;
            assert_eq!(*local, vec![vec![own; 4], vec![own; 3], vec![own; 2]], "rank {rank}");
            assert_eq!(*reduced, vec![vec![3.0f32; 4], vec![3.0; 3], vec![3.0; 2]], "rank {rank}");
        }
    }
}
