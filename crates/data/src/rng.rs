//! Seeded random streams: every random choice in strata-data comes from a ChaCha8 stream keyed
//! by what it is for, so results never depend on thread count or scheduling.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a stream is used for; part of the key, so streams of different purposes never coincide.
#[derive(Clone, Copy)]
pub(crate) enum Purpose {
    /// The sampler's per-epoch permutation, keyed by (seed, epoch).
    Sampler = 1,
    /// Per-sample augmentation, keyed by (seed, rank, epoch), stream = sample position.
    Augment = 2,
    /// Synthetic images, keyed by (seed, kind), stream = sample index or class.
    Synthetic = 3,
}

/// The ChaCha8 stream for `purpose` keyed by three words, positioned at stream number `stream`.
pub(crate) fn stream(purpose: Purpose, key: [u64; 3], stream: u64) -> ChaCha8Rng {
    let mut seed = [0u8; 32];
    let words = [purpose as u64, key[0], key[1], key[2]];
    for (chunk, word) in seed.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    let mut rng = ChaCha8Rng::from_seed(seed);
    rng.set_stream(stream);
    rng
}
