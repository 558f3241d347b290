//! The distributed sampler: which sample indices each rank sees in each epoch, as PyTorch's
//! `DistributedSampler` does it.
//!
//! Every rank draws the same permutation of `0..len` from `(seed, epoch)`, pads it by wrapping
//! around to a multiple of the world size (or truncates it, with `drop_last`), and takes every
//! `world_size`-th index starting at its rank. So the k-th batch of size `b` on each of N ranks
//! together hold exactly the samples of the k-th batch of size `N * b` on one rank.
//!
//! For evaluation, [`DistributedSampler::eval`] neither shuffles nor pads: the shards are
//! disjoint and together cover every sample exactly once, their sizes differing by at most one.

use rand::seq::SliceRandom;

use crate::error::{DataError, Result};
use crate::rng::{self, Purpose};

/// Assigns each rank its shard of the sample indices, epoch by epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistributedSampler {
    len: usize,
    world_size: usize,
    rank: usize,
    seed: u64,
    shuffle: bool,
    drop_last: bool,
    pad: bool,
}

impl DistributedSampler {
    /// A training sampler over `len` samples for `rank` of `world_size`: shuffled with seed 0,
    /// padded, keeping the last uneven samples. Change those with the builder methods.
    ///
    /// # Errors
    ///
    /// [`DataError::InvalidArgument`] if `world_size` is 0 or `rank >= world_size`.
    pub fn new(len: usize, world_size: usize, rank: usize) -> Result<Self> {
        if world_size == 0 || rank >= world_size {
            return Err(DataError::InvalidArgument(format!(
                "sampler rank {rank} is not in a world of size {world_size}"
            )));
        }
        Ok(DistributedSampler {
            len,
            world_size,
            rank,
            seed: 0,
            shuffle: true,
            drop_last: false,
            pad: true,
        })
    }

    /// An evaluation sampler: in order, unpadded, shards disjoint and covering every sample
    /// exactly once (rank r takes r, r + world_size, ...).
    ///
    /// # Errors
    ///
    /// As [`DistributedSampler::new`].
    pub fn eval(len: usize, world_size: usize, rank: usize) -> Result<Self> {
        Ok(DistributedSampler { shuffle: false, pad: false, ..Self::new(len, world_size, rank)? })
    }

    /// Sets the seed of the per-epoch permutation; it must be the same on every rank.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets whether each epoch is shuffled (the default) or in index order.
    #[must_use]
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// Sets whether the tail that does not divide evenly among ranks is dropped (`true`) or
    /// filled by wrapping around to the start (`false`, the default). Ignored in eval mode.
    #[must_use]
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// The number of samples in the dataset.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the dataset is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of ranks.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// This sampler's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of indices this rank gets per epoch. In training mode it is the same on every
    /// rank: `ceil(len / world_size)`, or `floor` with `drop_last`. In eval mode rank r gets
    /// the count of `r, r + world_size, ... < len`.
    pub fn num_samples(&self) -> usize {
        let (len, world) = (self.len, self.world_size);
        if !self.pad {
            len / world + usize::from(self.rank < len % world)
        } else if self.drop_last {
            len / world
        } else {
            len.div_ceil(world)
        }
    }

    /// The indices of all ranks together in one epoch, before sharding:
    /// `num_samples() * world_size` in training mode, `len` in eval mode.
    pub fn total_size(&self) -> usize {
        if self.pad {
            self.num_samples() * self.world_size
        } else {
            self.len
        }
    }

    /// This rank's indices for `epoch`, in the order to visit them.
    pub fn indices(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len).collect();
        if self.shuffle {
            order.shuffle(&mut rng::stream(Purpose::Sampler, [self.seed, epoch, 0], 0));
        }

        let total = self.total_size();
        if total <= order.len() {
            order.truncate(total);
        } else if !order.is_empty() {
            // Wrap around as often as needed (the world may be larger than the dataset).
            let wrapped: Vec<usize> = order.iter().copied().cycle().take(total).collect();
            order = wrapped;
        }

        order.into_iter().skip(self.rank).step_by(self.world_size).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_larger_than_dataset_wraps() {
        // 3 samples over 5 ranks: PyTorch pads [p0 p1 p2] to [p0 p1 p2 p0 p1]; one each.
        let shards: Vec<Vec<usize>> = (0..5)
            .map(|r| DistributedSampler::new(3, 5, r).unwrap().shuffle(false).indices(0))
            .collect();
        assert_eq!(shards, vec![vec![0], vec![1], vec![2], vec![0], vec![1]]);
    }

    #[test]
    fn drop_last_truncates_and_rejects_bad_rank() {
        // 10 samples, 3 ranks, drop_last: floor(10 / 3) = 3 each, index 9 is dropped.
        let s = DistributedSampler::new(10, 3, 2).unwrap().shuffle(false).drop_last(true);
        assert_eq!(s.indices(0), vec![2, 5, 8]);
        assert!(DistributedSampler::new(10, 3, 3).is_err());
        assert!(DistributedSampler::new(10, 0, 0).is_err());
    }
}
