//! TcpRing failures: a rank that never joins, a rank that never enters a collective, and a rank
//! that exits mid-job must fail the others with errors that name it, within the deadline.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{join, store_server, WORKING_TIMEOUT};
use strata_comm::{CommError, Communicator, ReduceOp};

/// The short deadline of the failure tests.
const SHORT: Duration = Duration::from_secs(2);

/// A generous bound on how long a failure may take to surface: the deadline plus slack for a
/// loaded machine. Failing later than this means the deadline is not enforced.
const FAIL_WITHIN: Duration = Duration::from_secs(8);

#[test]
fn a_rank_that_never_joins_fails_connect_with_a_timeout_naming_it() {
    let server = store_server();
    let addr = server.local_addr();

    // World of 3, but rank 2 never starts.
    let threads: Vec<_> = (0..2)
        .map(|rank| {
            std::thread::spawn(move || {
                let start = Instant::now();
                let result = join(addr, rank, 3, SHORT);
                (result.err(), start.elapsed())
            })
        })
        .collect();

    for (rank, thread) in threads.into_iter().enumerate() {
        let (err, elapsed) = thread.join().unwrap();
        let err = err.unwrap_or_else(|| panic!("rank {rank} connected to a missing rank"));
        // Rank 1 waits for rank 2's address; rank 0 waits for rank 2 to connect to it.
        assert!(
            matches!(&err, CommError::Timeout { collective: "connect", missing, .. }
                if missing == &vec![2]),
            "rank {rank}: {err}"
        );
        assert!(err.to_string().contains("[2]"), "{err}");
        assert!(elapsed < FAIL_WITHIN, "rank {rank} took {elapsed:?} to fail");
    }
}

#[test]
fn a_rank_that_skips_a_collective_times_out_the_others_naming_it() {
    let server = store_server();
    let addr = server.local_addr();
    let (release, hold) = mpsc::channel::<()>();

    // Rank 1 joins the ring, then never enters the all-reduce until rank 0 is done.
    let idle = std::thread::spawn(move || {
        let ring = join(addr, 1, 2, SHORT).unwrap();
        let _ = hold.recv();
        drop(ring);
    });
    let mut ring = join(addr, 0, 2, SHORT).unwrap();

    let start = Instant::now();
    let err = ring.all_reduce(&mut [1.0; 1000], ReduceOp::Sum).unwrap_err();
    let elapsed = start.elapsed();
    release.send(()).unwrap();
    idle.join().unwrap();

    assert!(
        matches!(&err, CommError::Timeout { collective: "all_reduce", seq: 1, rank: 0, missing, .. }
            if missing == &vec![1]),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("all_reduce #1") && message.contains("[1]"), "{message}");
    assert!(elapsed >= SHORT - Duration::from_millis(100), "failed early, after {elapsed:?}");
    assert!(elapsed < FAIL_WITHIN, "took {elapsed:?} to fail");

    // The ring is unusable afterwards, and says why.
    let again = ring.barrier().unwrap_err();
    assert!(matches!(again, CommError::Broken { rank: 0, .. }), "{again}");
}

#[test]
fn a_rank_that_exits_fails_the_next_collective_naming_it() {
    let server = store_server();
    let addr = server.local_addr();

    // World of 3; rank 2 does one all-reduce and exits.
    let threads: Vec<_> = (0..3)
        .map(|rank| {
            std::thread::spawn(move || {
                let mut ring = join(addr, rank, 3, WORKING_TIMEOUT).unwrap();
                let mut buf = [1.0f32; 10];
                ring.all_reduce(&mut buf, ReduceOp::Sum).unwrap();
                if rank == 2 {
                    return None;
                }
                let start = Instant::now();
                let err = ring.all_reduce(&mut buf, ReduceOp::Sum).unwrap_err();
                Some((err, start.elapsed()))
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    // Rank 0 receives from rank 2, whose hang-up it sees at once (well before the 20 s
    // timeout). Rank 1 sends to rank 2: it fails on the broken pipe or, failing that, on its
    // neighbour 0 hanging up.
    let (err, elapsed) = results[0].as_ref().unwrap();
    assert!(
        matches!(err, CommError::PeerClosed { collective: "all_reduce", seq: 2, peer: 2, .. }),
        "{err}"
    );
    assert!(*elapsed < FAIL_WITHIN, "rank 0 took {elapsed:?} to notice");
    let (err, _) = results[1].as_ref().unwrap();
    assert!(matches!(err, CommError::PeerClosed { .. }), "rank 1: {err}");
}

#[test]
fn connect_rejects_bad_arguments() {
    let server = store_server();
    let addr = server.local_addr();
    for (rank, world) in [(2, 2), (0, 0)] {
        let err = join(addr, rank, world, SHORT).err().unwrap();
        assert!(matches!(err, CommError::InvalidArgument { .. }), "{err}");
    }
    let err = join(addr, 0, 2, Duration::ZERO).err().unwrap();
    assert!(err.to_string().contains("timeout"), "{err}");
}
