//! Augmentation of one CHW f32 sample: random crop with padding and random horizontal flip.
//!
//! The crop is torchvision's `RandomCrop(size, padding=pad)`: pad every side by `pad`, then cut
//! an `H x W` window at a random origin in `0..=2 * pad` along each axis. It runs on normalised
//! values, so the padding is filled with the normalised value of a black pixel,
//! `(0 - mean) / std` per channel ([`crate::Dataset::fill_value`]): what padding the 0..255
//! image with zeros before normalising would give. (Padding the normalised image with 0.0
//! instead would fill with the mean colour.)
//!
//! Randomness: each sample draws from its own ChaCha8 stream keyed by (seed, rank, epoch) and
//! numbered by the sample's position in the rank's epoch, so results are reproducible, do not
//! depend on the loader's thread count, and differ across ranks and epochs.

use rand::Rng;

use crate::rng::{self, Purpose};

/// Which random augmentations to apply to each training sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Augment {
    /// Pad each side by this many pixels, then crop back to the original size at a random
    /// offset; 0 disables the crop.
    pub crop_pad: usize,
    /// Mirror left-right with probability 1/2.
    pub hflip: bool,
}

/// The key of the augmentation streams of one rank in one epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AugmentSeed {
    /// The experiment seed (the same on every rank).
    pub seed: u64,
    /// The worker's rank.
    pub rank: usize,
    /// The epoch.
    pub epoch: u64,
}

impl Augment {
    /// The usual CIFAR / Fashion-MNIST recipe: crop with `pad` pixels of padding, and flip.
    pub fn crop_flip(pad: usize) -> Self {
        Augment { crop_pad: pad, hflip: true }
    }

    /// Augments `sample` (shape `[C, H, W]`) in place with the randomness of the sample at
    /// `position` in the epoch of `seed`; `fill` holds one padding value per channel.
    ///
    /// # Panics
    ///
    /// If `sample.len() != C * H * W` or `fill.len() != C`.
    pub fn apply(
        &self,
        sample: &mut [f32],
        shape: [usize; 3],
        fill: &[f32],
        seed: AugmentSeed,
        position: usize,
    ) {
        let key = [seed.seed, seed.rank as u64, seed.epoch];
        let mut rng = rng::stream(Purpose::Augment, key, position as u64);
        if self.crop_pad > 0 {
            let top = rng.gen_range(0..=2 * self.crop_pad);
            let left = rng.gen_range(0..=2 * self.crop_pad);
            pad_crop(sample, shape, self.crop_pad, top, left, fill);
        }
        if self.hflip && rng.gen_bool(0.5) {
            hflip(sample, shape);
        }
    }
}

/// Pads `sample` (shape `[C, H, W]`) by `pad` on every side with `fill[c]`, then crops the
/// `H x W` window whose origin in the padded image is (`top`, `left`), in place. With
/// `top == left == pad` it is the identity.
///
/// # Panics
///
/// If `sample.len() != C * H * W` or `fill.len() != C`.
pub fn pad_crop(
    sample: &mut [f32],
    shape: [usize; 3],
    pad: usize,
    top: usize,
    left: usize,
    fill: &[f32],
) {
    let [channels, height, width] = shape;
    assert_eq!(sample.len(), channels * height * width, "sample length for shape {shape:?}");
    assert_eq!(fill.len(), channels, "one fill value per channel");
    if height * width == 0 {
        return;
    }

    // Output pixel (y, x) is input pixel (y + dy, x + dx), or fill outside the input.
    let (dy, dx) = (top as isize - pad as isize, left as isize - pad as isize);
    let (h, w) = (height as isize, width as isize);
    let (x0, x1) = ((-dx).clamp(0, w), (w - dx).clamp(0, w));

    for (plane, &fill) in sample.chunks_exact_mut(height * width).zip(fill) {
        // Visit rows so that each source row is read before it is overwritten.
        for i in 0..h {
            let y = if dy >= 0 { i } else { h - 1 - i };
            let sy = y + dy;
            let row = (y * w) as usize;
            if !(0..h).contains(&sy) || x0 >= x1 {
                plane[row..row + width].fill(fill);
                continue;
            }
            let src = (sy * w + x0 + dx) as usize;
            plane.copy_within(src..src + (x1 - x0) as usize, row + x0 as usize);
            plane[row..row + x0 as usize].fill(fill);
            plane[row + x1 as usize..row + width].fill(fill);
        }
    }
}

/// Mirrors `sample` (shape `[C, H, W]`) left-right in place.
///
/// # Panics
///
/// If `sample.len() != C * H * W`.
pub fn hflip(sample: &mut [f32], shape: [usize; 3]) {
    let [channels, height, width] = shape;
    assert_eq!(sample.len(), channels * height * width, "sample length for shape {shape:?}");
    if width == 0 {
        return;
    }
    for row in sample.chunks_exact_mut(width) {
        row.reverse();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_shifts_and_fills() {
        // A 1x3x3 image 1..=9, padded by 1 and cropped at origin (0, 2): the window starts one
        // row above and one column right of the image, so output (y, x) = input (y-1, x+1).
        let mut s: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        pad_crop(&mut s, [1, 3, 3], 1, 0, 2, &[-1.0]);
        #[rustfmt::skip]
        let expected = [-1.0, -1.0, -1.0,
                         2.0,  3.0, -1.0,
                         5.0,  6.0, -1.0];
        assert_eq!(s, expected);
    }

    #[test]
    fn crop_from_below_left_and_past_the_image() {
        // Origin (2, 0) with pad 1: output (y, x) = input (y+1, x-1).
        let mut s: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        pad_crop(&mut s, [1, 3, 3], 1, 2, 0, &[0.0]);
        assert_eq!(s, [0.0, 4.0, 5.0, 0.0, 7.0, 8.0, 0.0, 0.0, 0.0]);
        // Pad 5 on a 3x3 image, origin (0, 0): the window lies wholly in the padding.
        let mut s: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        pad_crop(&mut s, [1, 3, 3], 5, 0, 0, &[7.0]);
        assert_eq!(s, [7.0; 9]);
    }

    #[test]
    fn flip_mirrors_each_row() {
        let mut s: Vec<f32> = (0..12).map(|v| v as f32).collect();
        hflip(&mut s, [2, 2, 3]);
        assert_eq!(s, [2.0, 1.0, 0.0, 5.0, 4.0, 3.0, 8.0, 7.0, 6.0, 11.0, 10.0, 9.0]);
    }
}
