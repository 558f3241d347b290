//! The distributed sampler: shards, padding, epochs, and the N-worker / 1-worker batch
//! equivalence the data-parallel semantics rest on (DESIGN.md).

use std::collections::BTreeSet;

use strata_data::DistributedSampler;

fn shards(
    sampler: impl Fn(usize) -> DistributedSampler,
    world: usize,
    epoch: u64,
) -> Vec<Vec<usize>> {
    (0..world).map(|rank| sampler(rank).indices(epoch)).collect()
}

#[test]
fn eval_shards_cover_every_sample_exactly_once() {
    for (len, world) in [(10, 3), (10_000, 3), (7, 8), (12, 4), (0, 2)] {
        let shards = shards(|r| DistributedSampler::eval(len, world, r).unwrap(), world, 5);
        let mut all: Vec<usize> = shards.concat();
        all.sort_unstable();
        assert_eq!(all, (0..len).collect::<Vec<_>>(), "len {len} world {world}");

        // Sizes differ by at most one, and num_samples predicts them.
        let sizes: Vec<usize> = shards.iter().map(Vec::len).collect();
        let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(max - min <= 1, "{sizes:?}");
        for (r, size) in sizes.iter().enumerate() {
            assert_eq!(DistributedSampler::eval(len, world, r).unwrap().num_samples(), *size);
        }
    }
    // 10 samples over 3 ranks in order: rank 0 takes 0, 3, 6, 9 (4 = ceil(10 / 3)).
    assert_eq!(DistributedSampler::eval(10, 3, 0).unwrap().indices(0), vec![0, 3, 6, 9]);
}

#[test]
fn train_shards_are_equal_sized_and_cover_every_sample() {
    let (len, world) = (1003, 4);
    let shards = shards(|r| DistributedSampler::new(len, world, r).unwrap().seed(9), world, 2);

    // ceil(1003 / 4) = 251 each; 1004 slots, so one index is repeated by the wrap-around.
    assert!(shards.iter().all(|s| s.len() == 251));
    let all: Vec<usize> = shards.concat();
    let distinct: BTreeSet<usize> = all.iter().copied().collect();
    assert_eq!(distinct, (0..len).collect());
    assert_eq!(all.len() - distinct.len(), 1);

    // When the world size divides len nothing is padded, so the shards are disjoint.
    assert_eq!(shards_disjoint_check(1000, 4), 1000);
}

/// Returns the number of distinct indices over all shards, asserting no index is in two.
fn shards_disjoint_check(len: usize, world: usize) -> usize {
    let shards = shards(|r| DistributedSampler::new(len, world, r).unwrap().seed(3), world, 0);
    let mut seen = BTreeSet::new();
    for shard in &shards {
        for &i in shard {
            assert!(seen.insert(i), "index {i} is in two shards");
        }
    }
    seen.len()
}

#[test]
fn drop_last_gives_floor_and_disjoint_shards() {
    let (len, world) = (1003, 4);
    let shards =
        shards(|r| DistributedSampler::new(len, world, r).unwrap().drop_last(true), world, 0);
    // floor(1003 / 4) = 250 each; the 3 samples left over this epoch are dropped.
    assert!(shards.iter().all(|s| s.len() == 250));
    let distinct: BTreeSet<usize> = shards.concat().into_iter().collect();
    assert_eq!(distinct.len(), 1000);
}

#[test]
fn order_depends_on_epoch_and_seed_only() {
    let sampler = DistributedSampler::new(500, 2, 1).unwrap().seed(17);
    let again = DistributedSampler::new(500, 2, 1).unwrap().seed(17);
    assert_eq!(sampler.indices(3), again.indices(3));
    assert_ne!(sampler.indices(3), sampler.indices(4));
    assert_ne!(sampler.indices(3), sampler.clone().seed(18).indices(3));
    // Unshuffled, the order is the identity stride whatever the epoch.
    let plain = sampler.clone().shuffle(false);
    assert_eq!(plain.indices(0), plain.indices(7));
    assert_eq!(&plain.indices(0)[..3], &[1, 3, 5]);
}

#[test]
fn n_workers_global_batch_equals_one_worker_batch() {
    // DESIGN.md: a step on N workers with per-worker batch b must see the samples of one step
    // on 1 worker with batch N * b. Check every batch of two epochs for N = 2 and 4.
    let len = 960;
    for (world, b) in [(2, 16), (4, 8)] {
        for epoch in [0, 1] {
            let single = DistributedSampler::new(len, 1, 0).unwrap().seed(5).indices(epoch);
            let shards =
                shards(|r| DistributedSampler::new(len, world, r).unwrap().seed(5), world, epoch);
            for (k, single_batch) in single.chunks(world * b).enumerate() {
                let mut global: Vec<usize> =
                    shards.iter().flat_map(|s| s[k * b..(k + 1) * b].iter().copied()).collect();
                let mut expected = single_batch.to_vec();
                global.sort_unstable();
                expected.sort_unstable();
                assert_eq!(global, expected, "world {world} epoch {epoch} batch {k}");
            }
        }
    }
}
