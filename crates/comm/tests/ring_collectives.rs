//! TcpRing broadcast, broadcast_bytes, all_gather_bytes and barrier; SingleProcess; argument
//! and ordering errors.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::on_ring;
use strata_comm::{CommError, Communicator, ReduceOp, SingleProcess};

/// Root `root`'s broadcast payload of `len` elements; other ranks start from -1.
fn payload(root: usize, len: usize) -> Vec<f32> {
    (0..len).map(|i| (i * 3 + root) as f32).collect()
}

#[test]
fn broadcast_from_root_0_and_root_1_reaches_every_rank() {
    // 300_000 f32 spans several 256 KiB sub-chunks; 0 and 1 are the edge cases.
    let lens = [0usize, 1, 7, 300_000];
    for world in [2, 3, 4] {
        let results = on_ring(world, move |ring| {
            let mut outputs = Vec::new();
            for root in [0, 1] {
                for len in lens {
                    let mut buf =
                        if ring.rank() == root { payload(root, len) } else { vec![-1.0; len] };
                    ring.broadcast(&mut buf, root).unwrap();
                    outputs.push((root, len, buf));
                }
            }
            outputs
        });
        for (rank, outputs) in results.iter().enumerate() {
            for (root, len, buf) in outputs {
                assert!(
                    *buf == payload(*root, *len),
                    "world {world}, rank {rank}: broadcast of {len} from root {root} differs"
                );
            }
        }
    }
}

#[test]
fn broadcast_bytes_resizes_every_rank_to_the_roots_bytes() {
    // The root's 1 MB pattern; the others start empty or with a different length.
    let message: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    let sent = message.clone();
    let results = on_ring(3, move |ring| {
        let mut buf = match ring.rank() {
            1 => sent.clone(),
            0 => Vec::new(),
            _ => b"stale".to_vec(),
        };
        ring.broadcast_bytes(&mut buf, 1).unwrap();
        let first = buf;

        // Then an empty broadcast from root 0 empties everyone.
        let mut buf = if ring.rank() == 0 { Vec::new() } else { b"x".to_vec() };
        ring.broadcast_bytes(&mut buf, 0).unwrap();
        (first, buf)
    });
    for (rank, (first, second)) in results.iter().enumerate() {
        assert!(*first == message, "rank {rank} did not receive root 1's bytes");
        assert!(second.is_empty(), "rank {rank} kept {second:?}");
    }
}

#[test]
fn all_gather_bytes_returns_every_ranks_bytes_in_rank_order() {
    // Rank r contributes r * 3 + 1 copies of byte r, except rank 2, which sends nothing.
    let local = |rank: usize| {
        if rank == 2 {
            Vec::new()
        } else {
            vec![rank as u8; rank * 3 + 1]
        }
    };
    for world in [2, 3, 4] {
        let results =
            on_ring(world, move |ring| ring.all_gather_bytes(&local(ring.rank())).unwrap());
        let want: Vec<Vec<u8>> = (0..world).map(local).collect();
        for (rank, got) in results.iter().enumerate() {
            assert_eq!(got, &want, "world {world}, rank {rank}");
        }
    }
}

#[test]
fn barrier_returns_only_after_every_rank_entered() {
    const WORLD: usize = 4;
    let entered = Arc::new(AtomicUsize::new(0));
    let counter = entered.clone();
    let seen = on_ring(WORLD, move |ring| {
        // Ranks arrive 0, 50, 100 and 150 ms apart.
        std::thread::sleep(Duration::from_millis(50 * ring.rank() as u64));
        counter.fetch_add(1, Ordering::SeqCst);
        ring.barrier().unwrap();
        counter.load(Ordering::SeqCst)
    });
    // Every rank saw all four arrivals when it left the barrier.
    assert_eq!(seen, vec![WORLD; WORLD]);
}

#[test]
fn a_long_sequence_of_mixed_collectives_stays_in_step() {
    let results = on_ring(3, |ring| {
        let mut total = 0.0f64;
        for step in 0..200 {
            // Each rank adds rank + step; the sum over ranks 0, 1, 2 is 3 + 3 step.
            let mut x = [(ring.rank() + step) as f64];
            ring.all_reduce_f64(&mut x, ReduceOp::Sum).unwrap();
            total += x[0];
            if step % 50 == 0 {
                ring.barrier().unwrap();
            }
        }
        total
    });
    // Sum over steps 0..200 of (3 + 3 step) = 3 * 200 + 3 * 19_900 = 60_300.
    assert_eq!(results, vec![60_300.0; 3]);
}

#[test]
fn single_process_collectives_are_identities() {
    let mut comm = SingleProcess::new();
    assert_eq!((comm.rank(), comm.world_size()), (0, 1));

    let mut buf = vec![1.0f32, 2.5];
    comm.all_reduce(&mut buf, ReduceOp::Mean).unwrap();
    comm.broadcast(&mut buf, 0).unwrap();
    assert_eq!(buf, vec![1.0, 2.5]);

    let mut bytes = b"abc".to_vec();
    comm.broadcast_bytes(&mut bytes, 0).unwrap();
    assert_eq!(bytes, b"abc");
    assert_eq!(comm.all_gather_bytes(b"xy").unwrap(), vec![b"xy".to_vec()]);
    comm.barrier().unwrap();

    let err = comm.broadcast(&mut buf, 1).unwrap_err();
    assert!(matches!(err, CommError::InvalidArgument { .. }), "{err}");
}

#[test]
fn a_root_outside_the_world_is_an_invalid_argument() {
    let results = on_ring(2, |ring| {
        let err = ring.broadcast(&mut [0.0], 2).unwrap_err();
        let ok_after = ring.barrier().is_ok();
        (err.to_string(), ok_after)
    });
    for (message, ok_after) in results {
        assert!(message.contains("root 2"), "{message}");
        // The check happens before any message is sent, so the ring is still usable.
        assert!(ok_after);
    }
}

#[test]
fn different_buffer_lengths_are_a_mismatch_naming_both_ranks() {
    let results = on_ring(2, |ring| {
        // Rank 0 reduces 4 elements, rank 1 reduces 5: both see the other's header.
        let mut buf = vec![1.0f32; 4 + ring.rank()];
        let first = ring.all_reduce(&mut buf, ReduceOp::Sum).unwrap_err();
        let after = ring.barrier().unwrap_err();
        (first, after)
    });
    for (rank, (first, after)) in results.iter().enumerate() {
        assert!(
            matches!(first, CommError::Mismatch { seq: 1, peer, .. } if *peer == 1 - rank),
            "rank {rank}: {first}"
        );
        assert!(first.to_string().contains("len 4") && first.to_string().contains("len 5"));
        assert!(matches!(after, CommError::Broken { .. }), "rank {rank}: {after}");
    }
}

#[test]
fn different_collectives_at_the_same_step_are_reported() {
    let results = on_ring(2, |ring| {
        let mut buf = vec![0.0f32; 4];
        if ring.rank() == 0 {
            ring.all_reduce(&mut buf, ReduceOp::Sum).unwrap_err()
        } else {
            ring.broadcast(&mut buf, 0).unwrap_err()
        }
    });
    // Rank 1 (in broadcast) reads rank 0's all_reduce header. Rank 0 then sees either rank 1's
    // hang-up or nothing at all, depending on timing; both must be errors, not hangs.
    let message = results[1].to_string();
    assert!(matches!(results[1], CommError::Mismatch { .. }), "{message}");
    assert!(message.contains("broadcast") && message.contains("all_reduce"), "{message}");
}
