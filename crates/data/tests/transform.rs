//! Augmentation: crop-with-padding and flip, their identities, and the seeding that makes them
//! reproducible yet different across ranks and epochs.

use strata_data::transform::{hflip, pad_crop};
use strata_data::{Augment, AugmentSeed};

const SHAPE: [usize; 3] = [3, 8, 8];

/// A sample whose every value is distinct, so any move shows.
fn sample() -> Vec<f32> {
    (0..SHAPE.iter().product::<usize>()).map(|v| v as f32).collect()
}

fn augmented(augment: Augment, seed: AugmentSeed, position: usize) -> Vec<f32> {
    let mut s = sample();
    augment.apply(&mut s, SHAPE, &[-1.0, -2.0, -3.0], seed, position);
    s
}

#[test]
fn same_seeds_same_result() {
    let seed = AugmentSeed { seed: 1, rank: 2, epoch: 3 };
    for position in 0..20 {
        let a = augmented(Augment::crop_flip(2), seed, position);
        assert_eq!(a, augmented(Augment::crop_flip(2), seed, position));
    }
}

#[test]
fn results_differ_across_rank_epoch_and_position() {
    // Over 20 positions, each with 25 crops x 2 flips = 50 outcomes, two independent streams
    // agreeing everywhere has probability about 50^-20: a difference must show.
    let aug = Augment::crop_flip(2);
    let base = AugmentSeed { seed: 1, rank: 0, epoch: 0 };
    let run =
        |seed: AugmentSeed| -> Vec<Vec<f32>> { (0..20).map(|p| augmented(aug, seed, p)).collect() };
    let reference = run(base);
    assert_ne!(reference, run(AugmentSeed { rank: 1, ..base }));
    assert_ne!(reference, run(AugmentSeed { epoch: 1, ..base }));
    assert_ne!(reference, run(AugmentSeed { seed: 2, ..base }));
    assert!(reference.iter().any(|r| r != &reference[0]), "positions draw differently");
}

#[test]
fn crop_with_zero_padding_is_identity() {
    let seed = AugmentSeed { seed: 4, rank: 0, epoch: 0 };
    for position in 0..10 {
        let crop_only = Augment { crop_pad: 0, hflip: false };
        assert_eq!(augmented(crop_only, seed, position), sample());
    }
    // The centred window of any padding is the identity too.
    let mut s = sample();
    pad_crop(&mut s, SHAPE, 3, 3, 3, &[0.0; 3]);
    assert_eq!(s, sample());
}

#[test]
fn flip_twice_is_identity() {
    let mut s = sample();
    hflip(&mut s, SHAPE);
    assert_ne!(s, sample());
    // First row of channel 0 was 0..8; mirrored it reads 7..=0.
    assert_eq!(&s[..8], &[7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]);
    hflip(&mut s, SHAPE);
    assert_eq!(s, sample());
}

#[test]
fn crop_keeps_pixels_and_fills_with_the_channel_value() {
    // Every output value is either an input value of the same channel or that channel's fill:
    // the crop moves pixels, never mixes channels.
    let plane = SHAPE[1] * SHAPE[2];
    let fill = [-1.0, -2.0, -3.0];
    for position in 0..50 {
        let seed = AugmentSeed { seed: 8, rank: 1, epoch: 2 };
        let out = augmented(Augment::crop_flip(4), seed, position);
        for (i, &v) in out.iter().enumerate() {
            let c = i / plane;
            let in_channel = (c * plane) as f32 <= v && v < ((c + 1) * plane) as f32;
            assert!(in_channel || v == fill[c], "value {v} at {i}");
        }
    }
}
