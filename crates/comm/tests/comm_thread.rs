//! `CommThread`: collectives queued without waiting run in queue order and give the same
//! results as blocking calls on the ring; a handle is itself a communicator.

mod common;

use common::on_ring;
use strata_comm::{CommThread, Communicator, ReduceOp};

#[test]
fn queued_all_reduces_finish_in_order_with_the_blocking_results() {
    for world in [2, 3] {
        let results = on_ring(world, |ring| {
            let rank = ring.rank() as f32;
            std::thread::scope(|scope| {
                let thread = CommThread::spawn(scope, ring).unwrap();
                let handle = thread.handle();
                // Three buckets queued back to back, then a blocking f64 sum behind them.
                let pending: Vec<_> = (0..3)
                    .map(|b| {
                        let buf = vec![rank + b as f32; 1000 + 70_000 * b];
                        handle.start_all_reduce(buf, ReduceOp::Mean)
                    })
                    .collect();
                let mut blocking = handle.clone();
                let mut count = [1.0f64];
                blocking.all_reduce_f64(&mut count, ReduceOp::Sum).unwrap();
                let buckets: Vec<Vec<f32>> =
                    pending.into_iter().map(|p| p.wait().unwrap()).collect();
                drop((handle, blocking));
                thread.join().unwrap();
                (buckets, count[0])
            })
        });
        // The mean over ranks of rank + b is (world - 1) / 2 + b, exact in f32 for these
        // small values; the sum of ones is the world size.
        let want_mean = (world - 1) as f32 / 2.0;
        for (rank, (buckets, count)) in results.iter().enumerate() {
            assert_eq!(*count, world as f64, "rank {rank}");
            for (b, bucket) in buckets.iter().enumerate() {
                assert_eq!(bucket.len(), 1000 + 70_000 * b);
                let bad = bucket.iter().position(|&v| v != want_mean + b as f32);
                assert!(bad.is_none(), "world {world} rank {rank} bucket {b}: {:?}", bad);
            }
        }
    }
}

#[test]
fn a_failed_collective_comes_back_through_wait_and_breaks_the_rest() {
    let results = on_ring(2, |ring| {
        let len = 10 + ring.rank(); // the ranks disagree on the length
        std::thread::scope(|scope| {
            let thread = CommThread::spawn(scope, ring).unwrap();
            let handle = thread.handle();
            let first = handle.start_all_reduce(vec![1.0; len], ReduceOp::Sum).wait();
            let second = handle.start_all_reduce(vec![1.0; 10], ReduceOp::Sum).wait();
            drop(handle);
            thread.join().unwrap();
            (
                first.map(|_| ()).map_err(|e| e.to_string()),
                second.map(|_| ()).map_err(|e| e.to_string()),
            )
        })
    });
    for (rank, (first, second)) in results.iter().enumerate() {
        let first = first.as_ref().expect_err("mismatched lengths must fail");
        assert!(first.contains("all_reduce"), "rank {rank}: {first}");
        let second = second.as_ref().expect_err("the communicator is broken after an error");
        assert!(second.contains("unusable"), "rank {rank}: {second}");
    }
}
