//! Datasets: the `Dataset` trait, in-memory image datasets read from IDX (MNIST, Fashion-MNIST)
//! and CIFAR-10 binary files, deterministic synthetic images, and subsets.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::Rng;

use crate::error::{DataError, Result};
use crate::idx::{read_idx, read_maybe_gzip, IdxContent};
use crate::rng::{self, Purpose};

/// Fashion-MNIST training-set pixel mean on the 0..1 scale (72.94 / 255, see data.md).
pub const FASHION_MNIST_MEAN: [f32; 1] = [0.2860];
/// Fashion-MNIST training-set pixel standard deviation on the 0..1 scale (90.02 / 255).
pub const FASHION_MNIST_STD: [f32; 1] = [0.3530];
/// MNIST training-set pixel mean on the 0..1 scale (33.32 / 255, the usual 0.1307).
pub const MNIST_MEAN: [f32; 1] = [0.1307];
/// MNIST training-set pixel standard deviation on the 0..1 scale (78.57 / 255, the usual 0.3081).
pub const MNIST_STD: [f32; 1] = [0.3081];
/// CIFAR-10 training-set per-channel (R, G, B) mean on the 0..1 scale.
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// CIFAR-10 training-set per-channel (R, G, B) standard deviation on the 0..1 scale (the
/// population std over all training pixels, not the often-copied 0.2023, 0.1994, 0.2010).
pub const CIFAR10_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

/// Bytes in one CIFAR-10 binary record: a label byte, then 1024 R, 1024 G and 1024 B bytes.
pub const CIFAR10_RECORD: usize = 1 + 3 * 32 * 32;

/// Which part of a dataset to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training split (60,000 images for MNIST and Fashion-MNIST, 50,000 for CIFAR-10).
    Train,
    /// The test split (10,000 images for all three).
    Test,
}

/// A random-access collection of labelled samples, each a `C x H x W` block of normalised f32.
///
/// Implementations are shared between the loader's background threads, so `get` takes `&self`.
pub trait Dataset: Send + Sync {
    /// The number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape of one sample, `[C, H, W]`.
    fn sample_shape(&self) -> [usize; 3];

    /// The number of f32 values in one sample, `C * H * W`.
    fn sample_len(&self) -> usize {
        self.sample_shape().iter().product()
    }

    /// The number of classes; every label is below it.
    fn num_classes(&self) -> usize;

    /// Writes sample `index` into `out` (`C * H * W` values, CHW order, normalised) and returns
    /// its label.
    ///
    /// # Panics
    ///
    /// If `index >= self.len()` or `out.len() != self.sample_len()`; callers check first (the
    /// loader validates its indices when it is built).
    fn get(&self, index: usize, out: &mut [f32]) -> u32;

    /// The value, per channel, of a black (0) pixel after normalisation; augmentation pads with
    /// it. Datasets without a pixel scale use 0.0.
    fn fill_value(&self) -> Vec<f32> {
        vec![0.0; self.sample_shape()[0]]
    }
}

/// Images held in memory as bytes (CHW per sample) with byte labels, normalised on the fly as
/// `(pixel / 255 - mean[c]) / std[c]`.
#[derive(Clone, Debug)]
pub struct ImageDataset {
    pixels: Vec<u8>,
    labels: Vec<u8>,
    shape: [usize; 3],
    num_classes: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
    /// Per channel, the normalised value of each of the 256 pixel values.
    table: Vec<[f32; 256]>,
}

impl ImageDataset {
    /// Builds a dataset from `N * C * H * W` pixel bytes (CHW per sample) and `N` labels.
    ///
    /// # Errors
    ///
    /// [`DataError::InvalidArgument`] if the shape is empty, the pixel count is not
    /// `labels.len() * C * H * W`, `mean` or `std` do not have `C` finite entries (std > 0), or
    /// a label is not below `num_classes`.
    pub fn new(
        pixels: Vec<u8>,
        labels: Vec<u8>,
        shape: [usize; 3],
        num_classes: usize,
        mean: &[f32],
        std: &[f32],
    ) -> Result<Self> {
        let invalid = |what: String| Err(DataError::InvalidArgument(what));
        let sample_len: usize = shape.iter().product();
        if sample_len == 0 {
            return invalid(format!("image shape {shape:?} has no pixels"));
        }
        if Some(pixels.len()) != labels.len().checked_mul(sample_len) {
            let n = labels.len();
            return invalid(format!(
                "{} pixel bytes for {n} labels of shape {shape:?}; expected {n} x {sample_len}",
                pixels.len()
            ));
        }
        let channels = shape[0];
        if mean.len() != channels || std.len() != channels {
            return invalid(format!(
                "mean {mean:?} and std {std:?} must have one entry per channel ({channels})"
            ));
        }
        if mean.iter().any(|m| !m.is_finite()) || std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return invalid(format!("mean {mean:?} must be finite and std {std:?} positive"));
        }
        if let Some(i) = labels.iter().position(|&l| l as usize >= num_classes) {
            let l = labels[i];
            return invalid(format!("label {l} of sample {i} is not below {num_classes} classes"));
        }

        let table = mean
            .iter()
            .zip(std)
            .map(|(&m, &s)| std::array::from_fn(|p| (p as f32 / 255.0 - m) / s))
            .collect();
        Ok(ImageDataset {
            pixels,
            labels,
            shape,
            num_classes,
            mean: mean.to_vec(),
            std: std.to_vec(),
            table,
        })
    }

    /// Reads an IDX image file (`[N, H, W]`, one channel, or `[N, C, H, W]`) and an IDX label
    /// file (`[N]`), raw or gzip. The number of classes is the largest label plus one.
    ///
    /// # Errors
    ///
    /// Any error of [`read_idx`]; [`DataError::BadContent`] if the files do not have those
    /// ranks; [`DataError::CountMismatch`] if they hold different numbers of samples;
    /// [`DataError::InvalidArgument`] for a bad `mean` or `std`.
    pub fn from_idx(images: &Path, labels: &Path, mean: &[f32], std: &[f32]) -> Result<Self> {
        let image_array = read_idx(images, IdxContent::Images)?;
        let shape = match image_array.dims[..] {
            [_, h, w] => [1, h, w],
            [_, c, h, w] => [c, h, w],
            _ => {
                let what = format!(
                    "image IDX file has dims {:?}; expected [N, H, W] or [N, C, H, W]",
                    image_array.dims
                );
                return Err(DataError::BadContent { path: images.to_path_buf(), what });
            }
        };
        let label_array = read_idx(labels, IdxContent::Labels)?;
        if label_array.dims.len() != 1 {
            let what = format!("label IDX file has dims {:?}; expected [N]", label_array.dims);
            return Err(DataError::BadContent { path: labels.to_path_buf(), what });
        }
        if image_array.dims[0] != label_array.dims[0] {
            return Err(DataError::CountMismatch {
                images: images.to_path_buf(),
                num_images: image_array.dims[0],
                labels: labels.to_path_buf(),
                num_labels: label_array.dims[0],
            });
        }

        let num_classes = label_array.data.iter().max().map_or(0, |&m| m as usize + 1);
        Self::new(image_array.data, label_array.data, shape, num_classes, mean, std)
    }

    /// Keeps only the first `n` samples (all of them if there are fewer).
    #[must_use]
    pub fn take(mut self, n: usize) -> Self {
        let n = n.min(self.labels.len());
        self.labels.truncate(n);
        self.pixels.truncate(n * self.sample_len());
        self
    }

    /// The raw pixel bytes, `N * C * H * W`, CHW per sample.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The labels, one byte per sample.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The per-channel mean used for normalisation (0..1 scale).
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// The per-channel standard deviation used for normalisation (0..1 scale).
    pub fn std(&self) -> &[f32] {
        &self.std
    }
}

impl Dataset for ImageDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn sample_shape(&self) -> [usize; 3] {
        self.shape
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn get(&self, index: usize, out: &mut [f32]) -> u32 {
        let sample_len = self.sample_len();
        assert_eq!(out.len(), sample_len, "output buffer length for sample {index}");
        let pixels = &self.pixels[index * sample_len..(index + 1) * sample_len];
        let plane = self.shape[1] * self.shape[2];

        let planes = out.chunks_exact_mut(plane).zip(pixels.chunks_exact(plane));
        for ((out, pixels), table) in planes.zip(&self.table) {
            for (o, &p) in out.iter_mut().zip(pixels) {
                *o = table[p as usize];
            }
        }
        self.labels[index] as u32
    }

    fn fill_value(&self) -> Vec<f32> {
        self.table.iter().map(|t| t[0]).collect()
    }
}

/// Fashion-MNIST from `dir` (the folder `scripts/fetch-data.sh fashion-mnist` fills), normalised
/// with [`FASHION_MNIST_MEAN`] and [`FASHION_MNIST_STD`]. Each file may be raw or `.gz`.
///
/// # Errors
///
/// [`DataError::NotFound`] naming the fetch command if a file is missing; otherwise those of
/// [`ImageDataset::from_idx`].
pub fn fashion_mnist(dir: &Path, split: Split) -> Result<ImageDataset> {
    mnist_like(dir, split, "fashion-mnist", &FASHION_MNIST_MEAN, &FASHION_MNIST_STD)
}

/// MNIST from `dir` (the folder `scripts/fetch-data.sh mnist` fills), normalised with
/// [`MNIST_MEAN`] and [`MNIST_STD`]. Each file may be raw or `.gz`.
///
/// # Errors
///
/// As [`fashion_mnist`].
pub fn mnist(dir: &Path, split: Split) -> Result<ImageDataset> {
    mnist_like(dir, split, "mnist", &MNIST_MEAN, &MNIST_STD)
}

fn mnist_like(
    dir: &Path,
    split: Split,
    name: &str,
    mean: &[f32],
    std: &[f32],
) -> Result<ImageDataset> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let images = find_idx(dir, &format!("{prefix}-images-idx3-ubyte"), name)?;
    let labels = find_idx(dir, &format!("{prefix}-labels-idx1-ubyte"), name)?;
    ImageDataset::from_idx(&images, &labels, mean, std)
}

/// `dir/stem` if it exists, else `dir/stem.gz`, else a not-found error naming both.
fn find_idx(dir: &Path, stem: &str, dataset: &str) -> Result<PathBuf> {
    let raw = dir.join(stem);
    let gz = dir.join(format!("{stem}.gz"));
    if raw.is_file() {
        return Ok(raw);
    }
    if gz.is_file() {
        return Ok(gz);
    }
    Err(DataError::NotFound {
        path: raw,
        hint: format!(
            "neither it nor {} exists; run scripts/fetch-data.sh {dataset} from the repository \
             root (by default it writes data/{dataset}, the folder the configs' data.dir \
             names), or set data.dir (--set data.dir=<folder>) to the folder that holds these \
             files",
            gz.display()
        ),
    })
}

/// CIFAR-10 from a `cifar-10-batches-bin` folder: `data_batch_1.bin` .. `data_batch_5.bin` for
/// [`Split::Train`], `test_batch.bin` for [`Split::Test`]; normalised with [`CIFAR10_MEAN`] and
/// [`CIFAR10_STD`]. `scripts/fetch-data.sh cifar10-samples` writes the first 20 official test
/// images in this layout.
///
/// # Errors
///
/// [`DataError::NotFound`] if a file is missing, [`DataError::CifarSize`] if one is not a whole,
/// non-zero number of 3073-byte records, [`DataError::BadContent`] for a label above 9.
pub fn cifar10_binary(dir: &Path, split: Split) -> Result<ImageDataset> {
    let files: Vec<String> = match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".to_string()],
    };
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for file in files {
        read_cifar10_file(&dir.join(file), &mut pixels, &mut labels)?;
    }
    ImageDataset::new(pixels, labels, [3, 32, 32], 10, &CIFAR10_MEAN, &CIFAR10_STD)
}

/// Appends the records of one CIFAR-10 binary file to `pixels` and `labels`.
fn read_cifar10_file(path: &Path, pixels: &mut Vec<u8>, labels: &mut Vec<u8>) -> Result<()> {
    let bytes = read_maybe_gzip(path).map_err(|e| match e {
        DataError::NotFound { path, .. } => DataError::NotFound {
            path,
            hint: "the CIFAR-10 binary version is in no package registry: put its \
                   cifar-10-batches-bin files there, or run scripts/fetch-data.sh \
                   cifar10-samples for its first 20 test images"
                .to_string(),
        },
        other => other,
    })?;
    let (whole, rest) = (bytes.len() / CIFAR10_RECORD, bytes.len() % CIFAR10_RECORD);
    if rest != 0 || whole == 0 {
        return Err(DataError::CifarSize {
            path: path.to_path_buf(),
            len: bytes.len() as u64,
            record: CIFAR10_RECORD,
            whole: whole as u64,
            rest: rest as u64,
        });
    }

    pixels.reserve(whole * (CIFAR10_RECORD - 1));
    labels.reserve(whole);
    for (i, record) in bytes.chunks_exact(CIFAR10_RECORD).enumerate() {
        if record[0] >= 10 {
            let what = format!("record {i} has label {}; CIFAR-10 labels are 0..=9", record[0]);
            return Err(DataError::BadContent { path: path.to_path_buf(), what });
        }
        labels.push(record[0]);
        pixels.extend_from_slice(&record[1..]);
    }
    Ok(())
}

/// Deterministic random images for benchmarks and tests: sample `i` has label
/// `i % num_classes` and is its class's prototype (uniform in [-1, 1), drawn from the seed and
/// the class) plus uniform noise in [-0.5, 0.5) drawn from the seed and `i`. The classes are
/// separable, so a network can learn them, and nothing is stored.
#[derive(Clone, Debug)]
pub struct SyntheticDataset {
    len: usize,
    shape: [usize; 3],
    num_classes: usize,
    seed: u64,
}

impl SyntheticDataset {
    /// `len` samples of shape `[C, H, W]` in `num_classes` classes, drawn from `seed`.
    ///
    /// # Errors
    ///
    /// [`DataError::InvalidArgument`] if the shape has no pixels or there are no classes.
    pub fn new(len: usize, shape: [usize; 3], num_classes: usize, seed: u64) -> Result<Self> {
        if shape.iter().product::<usize>() == 0 || num_classes == 0 {
            return Err(DataError::InvalidArgument(format!(
                "synthetic dataset needs a non-empty shape and classes, got {shape:?} and \
                 {num_classes}"
            )));
        }
        Ok(SyntheticDataset { len, shape, num_classes, seed })
    }
}

impl Dataset for SyntheticDataset {
    fn len(&self) -> usize {
        self.len
    }

    fn sample_shape(&self) -> [usize; 3] {
        self.shape
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn get(&self, index: usize, out: &mut [f32]) -> u32 {
        assert!(index < self.len, "synthetic sample {index} of {}", self.len);
        assert_eq!(out.len(), self.sample_len(), "output buffer length for sample {index}");
        let label = index % self.num_classes;
        let mut prototype = rng::stream(Purpose::Synthetic, [self.seed, 1, 0], label as u64);
        let mut noise = rng::stream(Purpose::Synthetic, [self.seed, 0, 0], index as u64);
        for o in out.iter_mut() {
            *o = prototype.gen_range(-1.0..1.0) + noise.gen_range(-0.5..0.5);
        }
        label as u32
    }
}

/// A view of some samples of another dataset, in the given order.
#[derive(Clone)]
pub struct Subset {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
}

impl Subset {
    /// The samples `indices` of `inner`, in that order (repeats allowed).
    ///
    /// # Errors
    ///
    /// [`DataError::InvalidArgument`] if an index is not below `inner.len()`.
    pub fn new(inner: Arc<dyn Dataset>, indices: Vec<usize>) -> Result<Self> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= inner.len()) {
            return Err(DataError::InvalidArgument(format!(
                "subset index {bad} is past the end of a dataset of {} samples",
                inner.len()
            )));
        }
        Ok(Subset { inner, indices })
    }

    /// The first `n` samples of `inner` (all of them if it has fewer).
    pub fn first(inner: Arc<dyn Dataset>, n: usize) -> Self {
        let indices = (0..n.min(inner.len())).collect();
        Subset { inner, indices }
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn sample_shape(&self) -> [usize; 3] {
        self.inner.sample_shape()
    }

    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }

    fn get(&self, index: usize, out: &mut [f32]) -> u32 {
        self.inner.get(self.indices[index], out)
    }

    fn fill_value(&self) -> Vec<f32> {
        self.inner.fill_value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_per_channel() {
        // Two 1x2 channels, one sample: (p / 255 - mean) / std by hand.
        let ds = ImageDataset::new(
            vec![0, 255, 51, 102],
            vec![3],
            [2, 1, 2],
            4,
            &[0.5, 0.2],
            &[0.25, 0.5],
        )
        .unwrap();
        let mut out = [0.0; 4];
        assert_eq!(ds.get(0, &mut out), 3);
        let expected = [-2.0, 2.0, (0.2 - 0.2) / 0.5, (0.4 - 0.2) / 0.5];
        for (o, e) in out.iter().zip(expected) {
            assert!((o - e).abs() < 1e-6, "{out:?} vs {expected:?}");
        }
        // Black is (0 - mean) / std per channel: -0.5 / 0.25 and -0.2 / 0.5.
        assert_eq!(ds.fill_value(), vec![-2.0, -0.4]);
    }

    #[test]
    fn rejects_inconsistent_construction() {
        let err = ImageDataset::new(vec![0; 5], vec![0, 1], [1, 2, 2], 2, &[0.0], &[1.0]);
        assert!(matches!(err, Err(DataError::InvalidArgument(_))));
        let err = ImageDataset::new(vec![0; 4], vec![2], [1, 2, 2], 2, &[0.0], &[1.0]);
        assert!(err.unwrap_err().to_string().contains("label 2 of sample 0"));
        let err = ImageDataset::new(vec![0; 4], vec![0], [1, 2, 2], 2, &[0.0], &[0.0]);
        assert!(matches!(err, Err(DataError::InvalidArgument(_))));
    }

    #[test]
    fn synthetic_is_deterministic_and_labelled_round_robin() {
        let a = SyntheticDataset::new(10, [3, 4, 4], 4, 7).unwrap();
        let b = SyntheticDataset::new(10, [3, 4, 4], 4, 7).unwrap();
        let c = SyntheticDataset::new(10, [3, 4, 4], 4, 8).unwrap();
        let (mut x, mut y, mut z) = ([0.0; 48], [0.0; 48], [0.0; 48]);
        assert_eq!(a.get(6, &mut x), 2);
        b.get(6, &mut y);
        c.get(6, &mut z);
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert!(x.iter().all(|v| (-1.5..1.5).contains(v)));
    }

    #[test]
    fn subset_and_take_select_samples() {
        let ds = ImageDataset::new((0..6).collect(), vec![0, 1, 2], [1, 1, 2], 3, &[0.0], &[1.0])
            .unwrap();
        let sub = Subset::new(Arc::new(ds.clone()), vec![2, 0]).unwrap();
        let mut out = [0.0; 2];
        assert_eq!(sub.get(0, &mut out), 2);
        assert_eq!(out, [4.0 / 255.0, 5.0 / 255.0]);
        assert!(Subset::new(Arc::new(ds.clone()), vec![3]).is_err());
        assert_eq!(Subset::first(Arc::new(ds.clone()), 10).len(), 3);
        let two = ds.take(2);
        assert_eq!((two.len(), two.pixels().len(), two.labels()), (2, 4, &[0u8, 1][..]));
    }
}
