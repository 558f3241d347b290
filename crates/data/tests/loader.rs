//! The background loader: order, partial batches, determinism across thread counts, resuming
//! mid-epoch, clean shutdown, and errors instead of hangs.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use strata_data::{Augment, AugmentSeed, DataError, Dataset, Loader, LoaderConfig};

/// Sample `i` is `C * H * W` copies of `i` with label `i % 7`, so every batch shows exactly
/// which samples it holds.
struct Indexed {
    len: usize,
    panic_at: Option<usize>,
}

impl Dataset for Indexed {
    fn len(&self) -> usize {
        self.len
    }
    fn sample_shape(&self) -> [usize; 3] {
        [1, 2, 3]
    }
    fn num_classes(&self) -> usize {
        7
    }
    fn get(&self, index: usize, out: &mut [f32]) -> u32 {
        assert_ne!(Some(index), self.panic_at, "sample {index} is poisoned");
        out.fill(index as f32);
        (index % 7) as u32
    }
}

fn dataset(len: usize) -> Arc<dyn Dataset> {
    Arc::new(Indexed { len, panic_at: None })
}

/// A scrambled order of `0..len`: 37 is coprime to the lengths used here.
fn order(len: usize) -> Vec<usize> {
    (0..len).map(|i| (i * 37) % len).collect()
}

fn collect(loader: Loader) -> Vec<strata_data::Batch> {
    loader.map(|b| b.unwrap()).collect()
}

#[test]
fn delivers_every_batch_in_order_with_a_partial_last_batch() {
    let indices = order(103);
    let config = LoaderConfig { num_threads: 3, prefetch: 4, ..LoaderConfig::new(10) };
    let loader = Loader::new(dataset(103), indices.clone(), config).unwrap();
    assert_eq!(loader.len(), 11); // ceil(103 / 10)
    let batches = collect(loader);

    assert_eq!(batches.len(), 11);
    assert_eq!(batches[10].shape, [3, 1, 2, 3]); // 103 = 10 * 10 + 3
    let seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(seen, indices);
    for batch in &batches {
        assert_eq!(batch.images.len(), batch.shape.iter().product::<usize>());
        for (j, &i) in batch.indices.iter().enumerate() {
            assert!(batch.images[j * 6..(j + 1) * 6].iter().all(|&v| v == i as f32));
            assert_eq!(batch.labels[j], (i % 7) as u32);
        }
    }
}

#[test]
fn drop_last_drops_the_partial_batch() {
    let config = LoaderConfig { drop_last: true, ..LoaderConfig::new(10) };
    let batches = collect(Loader::new(dataset(103), order(103), config).unwrap());
    // floor(103 / 10) = 10 full batches; samples at positions 100..103 are not delivered.
    assert_eq!(batches.len(), 10);
    assert!(batches.iter().all(|b| b.shape[0] == 10));
    assert_eq!(batches[9].indices, order(103)[90..100].to_vec());
}

#[test]
fn output_does_not_depend_on_thread_count_and_resumes_exactly() {
    let config = LoaderConfig {
        augment: Some(Augment::crop_flip(1)),
        augment_seed: AugmentSeed { seed: 3, rank: 1, epoch: 2 },
        ..LoaderConfig::new(8)
    };
    let run = |config: LoaderConfig| collect(Loader::new(dataset(50), order(50), config).unwrap());
    let one = run(config);
    assert_eq!(one, run(LoaderConfig { num_threads: 4, prefetch: 1, ..config }));
    // Starting at batch 4 gives the tail of the same epoch, augmentation included.
    assert_eq!(one[4..].to_vec(), run(LoaderConfig { start_batch: 4, ..config }));
    // The augmentation did something (1-pixel shifts fill some positions with 0.0).
    let plain = run(LoaderConfig { augment: None, ..config });
    assert_ne!(one, plain);
}

/// Runs `f` on another thread and fails the test if it has not finished within a minute,
/// instead of letting a hang stall the suite.
fn finishes(what: &str, f: impl FnOnce() + Send + 'static) {
    let (done, wait) = mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = done.send(());
    });
    assert!(wait.recv_timeout(Duration::from_secs(60)).is_ok(), "{what} hung");
}

#[test]
fn dropping_mid_epoch_stops_the_threads() {
    finishes("dropping a loader mid-epoch", || {
        let config = LoaderConfig { num_threads: 2, prefetch: 2, ..LoaderConfig::new(4) };
        let mut loader = Loader::new(dataset(100_000), order(100_000), config).unwrap();
        let first = loader.next().unwrap().unwrap();
        assert_eq!(first.indices, order(100_000)[..4].to_vec());
        drop(loader); // threads are blocked on full channels; drop must wake and join them
    });
    finishes("dropping an unread loader", || {
        let loader = Loader::new(dataset(1000), order(1000), LoaderConfig::new(1)).unwrap();
        drop(loader);
    });
}

#[test]
fn a_panicking_dataset_is_an_error_not_a_hang() {
    finishes("a loader whose dataset panics", || {
        let poisoned: Arc<dyn Dataset> = Arc::new(Indexed { len: 40, panic_at: Some(25) });
        let config = LoaderConfig { num_threads: 2, ..LoaderConfig::new(10) };
        let results: Vec<_> = Loader::new(poisoned, (0..40).collect(), config).unwrap().collect();
        // Batches 0 and 1 arrive; batch 2 (samples 20..30) holds sample 25; then it ends.
        assert_eq!(results.len(), 3);
        assert!(results[..2].iter().all(Result::is_ok));
        let err = results[2].as_ref().unwrap_err();
        assert!(matches!(err, DataError::LoaderWorker { batch: 2, .. }), "{err}");
        assert!(err.to_string().contains("sample 25 is poisoned"), "{err}");
    });
}

#[test]
fn rejects_bad_arguments_up_front() {
    let err = Loader::new(dataset(10), vec![3, 10], LoaderConfig::new(2)).err().unwrap();
    assert!(err.to_string().contains("index 10 is past the end"), "{err}");
    assert!(Loader::new(dataset(10), order(10), LoaderConfig::new(0)).is_err());
    let config = LoaderConfig { start_batch: 6, ..LoaderConfig::new(2) };
    assert!(Loader::new(dataset(10), order(10), config).is_err());
    // An empty epoch is fine and yields nothing.
    assert_eq!(Loader::new(dataset(10), vec![], LoaderConfig::new(2)).unwrap().count(), 0);
}
