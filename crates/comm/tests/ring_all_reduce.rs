//! TcpRing all-reduce: sum, mean and max for world sizes 1 to 4, on empty, tiny, odd-sized and
//! multi-MiB buffers, against values computed directly; determinism across ranks and runs.

mod common;

use common::{assert_bits_eq, on_ring};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use strata_comm::{Communicator, ReduceOp};

/// Buffer lengths: empty, one element (fewer than the ranks), five (not a multiple of 2, 3 or
/// 4), 1000, and 3 MiB of f32 (many 256 KiB sub-chunks per ring chunk).
const SIZES: [usize; 5] = [0, 1, 5, 1000, 3 << 18];

/// Rank `rank`'s element `i`: an integer in [-50, 50], so sums over 4 ranks are exact in f32.
fn value(rank: usize, i: usize) -> f32 {
    ((i * 7 + rank * 13) % 101) as f32 - 50.0
}

/// The expected result, computed directly over the ranks' inputs.
fn expected(world: usize, len: usize, op: ReduceOp) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let values = (0..world).map(|rank| value(rank, i));
            match op {
                // Integer sums are exact in any order.
                ReduceOp::Sum => values.sum(),
                // The ring divides the exact sum once by the world size, in f32.
                ReduceOp::Mean => values.sum::<f32>() / world as f32,
                ReduceOp::Max => values.fold(f32::MIN, f32::max),
            }
        })
        .collect()
}

fn check_world(world: usize) {
    let results = on_ring(world, move |ring| {
        let mut outputs = Vec::new();
        for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max] {
            for len in SIZES {
                let mut buf: Vec<f32> = (0..len).map(|i| value(ring.rank(), i)).collect();
                ring.all_reduce(&mut buf, op).unwrap();
                outputs.push((op, len, buf));
            }
        }
        outputs
    });

    for (rank, outputs) in results.iter().enumerate() {
        for (op, len, got) in outputs {
            let what = format!("world {world}, rank {rank}, {op} of {len}");
            assert_bits_eq(got, &expected(world, *len, *op), &what);
        }
    }
}

#[test]
fn all_reduce_world_2_matches_direct_sums() {
    check_world(2);
}

#[test]
fn all_reduce_world_3_matches_direct_sums() {
    check_world(3);
}

#[test]
fn all_reduce_world_4_matches_direct_sums() {
    check_world(4);
}

#[test]
fn all_reduce_world_1_is_the_identity() {
    let results = on_ring(1, |ring| {
        let mut buf = vec![1.5f32, -2.0, 3.25];
        ring.all_reduce(&mut buf, ReduceOp::Mean).unwrap();
        buf
    });
    // A mean over one rank changes nothing.
    assert_eq!(results[0], vec![1.5, -2.0, 3.25]);
}

/// Random inputs of rank `rank`, from a fixed seed.
fn random_input(rank: usize, len: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(1000 + rank as u64);
    (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

#[test]
fn random_sums_are_close_to_f64_sums_and_bit_identical_across_ranks_and_runs() {
    const WORLD: usize = 3;
    const LEN: usize = 100_003;
    let run = || {
        on_ring(WORLD, |ring| {
            let mut buf = random_input(ring.rank(), LEN);
            ring.all_reduce(&mut buf, ReduceOp::Sum).unwrap();
            buf
        })
    };
    let first = run();
    let second = run();

    // Three f32 additions of values in (-1, 1): the error is below 3 ulp of 3, about 1e-6.
    let inputs: Vec<Vec<f32>> = (0..WORLD).map(|rank| random_input(rank, LEN)).collect();
    let mut worst = (0, 0.0f64);
    for i in 0..LEN {
        let exact: f64 = inputs.iter().map(|input| f64::from(input[i])).sum();
        let error = (f64::from(first[0][i]) - exact).abs();
        if error > worst.1 {
            worst = (i, error);
        }
    }
    assert!(worst.1 <= 1e-6, "element {} is off by {}", worst.0, worst.1);

    for rank in 1..WORLD {
        assert_bits_eq(&first[rank], &first[0], &format!("rank {rank} vs rank 0"));
    }
    assert_bits_eq(&second[0], &first[0], "second run vs first run");
}

#[test]
fn all_reduce_f64_sum_mean_max() {
    const WORLD: usize = 3;
    let results = on_ring(WORLD, |ring| {
        let rank = ring.rank() as f64;
        // Ranks hold [r, 10 r, -r, 0.1] (1000 copies), so the sum is [3, 30, -3, 0.1 * 3].
        let input: Vec<f64> = [rank, 10.0 * rank, -rank, 0.1].repeat(1000);
        [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max].map(|op| {
            let mut buf = input.clone();
            ring.all_reduce_f64(&mut buf, op).unwrap();
            buf
        })
    });

    // Ranks 0, 1, 2: sums 0+1+2 = 3 and 0+10+20 = 30; the ring adds 0.1 in order
    // ((0.1 + 0.1) + 0.1) starting at the chunk's owner, as written here.
    let tenths = (0.1f64 + 0.1) + 0.1;
    let sum = [3.0, 30.0, -3.0, tenths].repeat(1000);
    let mean = [1.0, 10.0, -1.0, tenths / 3.0].repeat(1000);
    let max = [2.0, 20.0, 0.0, 0.1].repeat(1000);
    for (rank, [got_sum, got_mean, got_max]) in results.iter().enumerate() {
        assert_eq!(got_sum, &sum, "rank {rank} sum");
        assert_eq!(got_mean, &mean, "rank {rank} mean");
        assert_eq!(got_max, &max, "rank {rank} max");
    }
}

#[test]
fn max_propagates_nan_from_any_rank() {
    let results = on_ring(2, |ring| {
        // Rank 1 holds a NaN in element 0 (an overflow flag, say); rank 0 a larger number.
        let mut buf = if ring.rank() == 0 { vec![5.0f32, 1.0] } else { vec![f32::NAN, 2.0] };
        ring.all_reduce(&mut buf, ReduceOp::Max).unwrap();
        buf
    });
    for buf in results {
        assert!(buf[0].is_nan(), "NaN must win a max: {buf:?}");
        assert_eq!(buf[1], 2.0);
    }
}
