//! The readers on the real datasets, fetched by `scripts/fetch-data.sh` (cached after the first
//! run). The expected values are the published facts listed in data.md; a failed fetch fails
//! the test with the script's message.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use strata_data::{
    cifar10_binary, fashion_mnist, mnist, DataError, Dataset, DistributedSampler, ImageDataset,
    Loader, LoaderConfig, Split,
};

/// Runs `scripts/fetch-data.sh DATASET` (once per test process) and returns the folder it
/// fills: `$STRATA_DATA/DATASET`, default `<repo>/data/DATASET`, as the script decides.
fn fetch(dataset: &str) -> PathBuf {
    static FETCHED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = std::env::var_os("STRATA_DATA").map_or_else(|| repo.join("data"), PathBuf::from);

    let mut fetched = FETCHED.lock().unwrap_or_else(|e| e.into_inner());
    if fetched.get_or_insert_with(HashSet::new).insert(dataset.to_string()) {
        let script = repo.join("scripts/fetch-data.sh");
        let out = Command::new("bash").arg(&script).arg(dataset).output().unwrap();
        if !out.status.success() {
            fetched.as_mut().unwrap().remove(dataset);
            panic!(
                "{} {dataset} failed ({}):\n{}{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    root.join(dataset)
}

fn label_counts(ds: &ImageDataset) -> Vec<usize> {
    let mut counts = vec![0; ds.num_classes()];
    for &l in ds.labels() {
        counts[l as usize] += 1;
    }
    counts
}

/// Mean and population standard deviation of the raw pixels, on the 0..255 scale.
fn pixel_mean_std(ds: &ImageDataset) -> (f64, f64) {
    let n = ds.pixels().len() as f64;
    let (sum, sum_sq) = ds
        .pixels()
        .iter()
        .fold((0u64, 0u64), |(s, q), &p| (s + p as u64, q + (p as u64) * (p as u64)));
    let mean = sum as f64 / n;
    (mean, (sum_sq as f64 / n - mean * mean).sqrt())
}

#[test]
fn fashion_mnist_train_matches_the_published_facts() {
    let train = fashion_mnist(&fetch("fashion-mnist"), Split::Train).unwrap();
    assert_eq!((train.len(), train.sample_shape(), train.num_classes()), (60_000, [1, 28, 28], 10));
    assert_eq!(label_counts(&train), vec![6000; 10]);
    assert_eq!(&train.labels()[..10], &[9, 0, 0, 3, 0, 2, 7, 2, 5, 5]);

    // data.md: train pixel mean 72.94, std 90.02 (two decimals).
    let (mean, std) = pixel_mean_std(&train);
    assert!((mean - 72.94).abs() < 0.005, "mean {mean}");
    assert!((std - 90.02).abs() < 0.005, "std {std}");

    // get() normalises with the published constants: (p / 255 - 0.2860) / 0.3530.
    let mut out = vec![0.0; 784];
    assert_eq!(train.get(0, &mut out), 9);
    for (o, &p) in out.iter().zip(&train.pixels()[..784]) {
        let expected = (p as f32 / 255.0 - 0.2860) / 0.3530;
        assert!((o - expected).abs() < 1e-6, "{o} vs {expected} for pixel {p}");
    }
}

#[test]
fn fashion_mnist_test_matches_the_published_facts() {
    let test = fashion_mnist(&fetch("fashion-mnist"), Split::Test).unwrap();
    assert_eq!(test.len(), 10_000);
    assert_eq!(label_counts(&test), vec![1000; 10]);
    assert_eq!(&test.labels()[..10], &[9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
}

#[test]
fn mnist_matches_the_published_facts() {
    let dir = fetch("mnist");
    let train = mnist(&dir, Split::Train).unwrap();
    assert_eq!(train.len(), 60_000);
    assert_eq!(
        label_counts(&train),
        vec![5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(&train.labels()[..10], &[5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    // data.md: pixel mean 33.32, std 78.57.
    let (mean, std) = pixel_mean_std(&train);
    assert!((mean - 33.32).abs() < 0.005 && (std - 78.57).abs() < 0.005, "{mean} {std}");
    assert_eq!(mnist(&dir, Split::Test).unwrap().len(), 10_000);
}

#[test]
fn cifar10_binary_reads_the_real_samples() {
    let dir = fetch("cifar10-samples");
    let test = cifar10_binary(&dir, Split::Test).unwrap();
    assert_eq!((test.len(), test.sample_shape()), (20, [3, 32, 32]));
    // data.md: the labels of the first 20 official CIFAR-10 test images.
    let labels = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6];
    assert_eq!(test.labels(), &labels);

    // Pixel values as Pillow decodes the foolbox PNGs (Image.open(..).convert("RGB")), checked
    // once by hand: image 0 starts R 158 159 165 166, G 112 111 116 118, B 49 47 51 53, and the
    // channel sums over all 20 images are R 2557598, G 2477306, B 2352554.
    let px = test.pixels();
    assert_eq!(&px[..4], &[158, 159, 165, 166]);
    assert_eq!(&px[1024..1028], &[112, 111, 116, 118]);
    assert_eq!(&px[2048..2052], &[49, 47, 51, 53]);
    let mut sums = [0u64; 3];
    for (i, &p) in px.iter().enumerate() {
        sums[(i / 1024) % 3] += p as u64;
    }
    assert_eq!(sums, [2557598, 2477306, 2352554]);

    // Normalised with the CIFAR-10 constants: (158 / 255 - 0.4914) / 0.2470.
    let mut out = vec![0.0; 3072];
    assert_eq!(test.get(0, &mut out), 3);
    assert!((out[0] - (158.0 / 255.0 - 0.4914) / 0.2470).abs() < 1e-6, "{}", out[0]);

    // The train split needs data_batch_1..5.bin, which the samples do not include.
    let err = cifar10_binary(&dir, Split::Train).unwrap_err();
    assert!(matches!(err, DataError::NotFound { .. }), "{err}");
}

#[test]
fn cifar10_binary_rejects_a_truncated_file() {
    let src = fetch("cifar10-samples").join("test_batch.bin");
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(src).unwrap();
    std::fs::write(dir.path().join("test_batch.bin"), &bytes[..bytes.len() - 100]).unwrap();

    let err = cifar10_binary(dir.path(), Split::Test).unwrap_err();
    // 20 * 3073 - 100 = 61360 bytes = 19 whole records + 2973 bytes.
    assert!(matches!(err, DataError::CifarSize { len: 61360, whole: 19, rest: 2973, .. }), "{err}");
    assert!(err.to_string().contains("test_batch.bin"), "{err}");
}

#[test]
fn two_ranks_load_a_slice_of_fashion_mnist() {
    // The trainer's path on a small slice: take(1000), shard over 2 ranks, batches of 64.
    let slice: Arc<dyn Dataset> =
        Arc::new(fashion_mnist(&fetch("fashion-mnist"), Split::Train).unwrap().take(1000));
    let mut seen = Vec::new();
    for rank in 0..2 {
        let sampler = DistributedSampler::new(slice.len(), 2, rank).unwrap().seed(1);
        let loader = Loader::new(Arc::clone(&slice), sampler.indices(0), LoaderConfig::new(64));
        let batches: Vec<_> = loader.unwrap().map(Result::unwrap).collect();
        assert_eq!(batches.len(), 8); // 500 samples per rank: 7 x 64 + 52
        assert_eq!(batches[7].shape, [52, 1, 28, 28]);
        seen.extend(batches.into_iter().flat_map(|b| b.indices));
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..1000).collect::<Vec<_>>());
}
