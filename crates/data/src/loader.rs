//! The loader: one rank's epoch as a stream of batches, decoded and augmented on background
//! threads and delivered in order.
//!
//! Thread `t` of `T` builds batches `t, t + T, t + 2T, ...` and sends each into its own bounded
//! channel; the iterator receives from the channels in turn, so batches arrive in order with no
//! reordering buffer, and at most `prefetch` (rounded up to a multiple of `T`) wait built.
//! Dropping the loader drops the receivers, which wakes and ends every thread, then joins them.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::transform::{Augment, AugmentSeed};

/// One batch of samples, stacked.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// The normalised (and augmented) samples, `N * C * H * W` values, NCHW order.
    pub images: Vec<f32>,
    /// `[N, C, H, W]`; N is the batch size except possibly for the last batch.
    pub shape: [usize; 4],
    /// The label of each sample.
    pub labels: Vec<u32>,
    /// The dataset index of each sample.
    pub indices: Vec<usize>,
}

/// How a [`Loader`] batches and augments one epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Samples per batch (per rank).
    pub batch_size: usize,
    /// Drop the last batch if it is smaller than `batch_size` (default: keep it).
    pub drop_last: bool,
    /// Augmentation for training; `None` (the default) for evaluation.
    pub augment: Option<Augment>,
    /// The key of the augmentation streams: seed, rank and epoch.
    pub augment_seed: AugmentSeed,
    /// Background threads that build batches (default 1).
    pub num_threads: usize,
    /// Batches built ahead of the consumer (default 2).
    pub prefetch: usize,
    /// Start the epoch at this batch, to resume mid-epoch: the batches and their augmentation
    /// are those an uninterrupted epoch would have produced from here (default 0).
    pub start_batch: usize,
}

impl LoaderConfig {
    /// Batches of `batch_size`, keeping the last partial batch, no augmentation, one thread,
    /// two batches of prefetch.
    pub fn new(batch_size: usize) -> Self {
        LoaderConfig {
            batch_size,
            drop_last: false,
            augment: None,
            augment_seed: AugmentSeed::default(),
            num_threads: 1,
            prefetch: 2,
            start_batch: 0,
        }
    }
}

/// An iterator over the batches of one rank's epoch; see the module documentation.
pub struct Loader {
    receivers: Vec<Receiver<Batch>>,
    threads: Vec<Option<JoinHandle<()>>>,
    start: usize,
    next: usize,
    end: usize,
}

/// What every loader thread shares.
struct Job {
    dataset: Arc<dyn Dataset>,
    indices: Vec<usize>,
    config: LoaderConfig,
    fill: Vec<f32>,
}

impl Loader {
    /// Starts loading `indices` (the rank's order for this epoch, usually
    /// [`crate::DistributedSampler::indices`]) of `dataset` in batches.
    ///
    /// # Errors
    ///
    /// [`DataError::InvalidArgument`] if the batch size, thread count or prefetch is 0, an
    /// index is past the end of the dataset, the dataset's samples are empty, or `start_batch`
    /// is past the last batch; [`DataError::Spawn`] if a thread cannot be started.
    pub fn new(
        dataset: Arc<dyn Dataset>,
        indices: Vec<usize>,
        config: LoaderConfig,
    ) -> Result<Loader> {
        validate(dataset.as_ref(), &indices, &config)?;
        let end = Self::num_batches(indices.len(), config.batch_size, config.drop_last);
        let start = config.start_batch;
        let num_threads = config.num_threads.min(end - start).max(1);
        let capacity = config.prefetch.div_ceil(num_threads);
        let fill = dataset.fill_value();
        let job = Arc::new(Job { dataset, indices, config, fill });

        let mut loader =
            Loader { receivers: Vec::new(), threads: Vec::new(), start, next: start, end };
        for t in 0..num_threads {
            let (sender, receiver) = sync_channel(capacity);
            let job = Arc::clone(&job);
            let batches = (start + t..end).step_by(num_threads);
            let thread = std::thread::Builder::new()
                .name(format!("strata-loader-{t}"))
                .spawn(move || produce(&job, batches, &sender))
                .map_err(DataError::Spawn)?;
            loader.receivers.push(receiver);
            loader.threads.push(Some(thread));
        }
        Ok(loader)
    }

    /// The number of batches an epoch of `num_samples` samples yields.
    pub fn num_batches(num_samples: usize, batch_size: usize, drop_last: bool) -> usize {
        match (batch_size, drop_last) {
            (0, _) => 0,
            (b, true) => num_samples / b,
            (b, false) => num_samples.div_ceil(b),
        }
    }

    /// Joins the thread that owns batch `batch` after its channel closed early, and returns
    /// the error that reports it.
    fn worker_failed(&mut self, batch: usize) -> DataError {
        let t = (batch - self.start) % self.receivers.len();
        let message = match self.threads[t].take().map(JoinHandle::join) {
            Some(Err(payload)) => payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panicked".to_string()),
            _ => "it ended without sending the batch".to_string(),
        };
        DataError::LoaderWorker { batch, message }
    }
}

fn validate(dataset: &dyn Dataset, indices: &[usize], config: &LoaderConfig) -> Result<()> {
    let invalid = |what: String| Err(DataError::InvalidArgument(what));
    if config.batch_size == 0 || config.num_threads == 0 || config.prefetch == 0 {
        return invalid(format!(
            "loader batch_size {}, num_threads {} and prefetch {} must all be at least 1",
            config.batch_size, config.num_threads, config.prefetch
        ));
    }
    if dataset.sample_len() == 0 {
        return invalid(format!("dataset samples of shape {:?} are empty", dataset.sample_shape()));
    }
    if let Some(&bad) = indices.iter().find(|&&i| i >= dataset.len()) {
        return invalid(format!(
            "loader index {bad} is past the end of a dataset of {} samples",
            dataset.len()
        ));
    }
    let batches = Loader::num_batches(indices.len(), config.batch_size, config.drop_last);
    if config.start_batch > batches {
        return invalid(format!(
            "start_batch {} is past the {batches} batches of this epoch",
            config.start_batch
        ));
    }
    Ok(())
}

/// A loader thread's body: build each of `batches` in turn and send it, until done or until
/// the loader is dropped.
fn produce(job: &Job, batches: impl Iterator<Item = usize>, sender: &SyncSender<Batch>) {
    for k in batches {
        if sender.send(build_batch(job, k)).is_err() {
            return;
        }
    }
}

/// Builds batch `k` of the epoch.
fn build_batch(job: &Job, k: usize) -> Batch {
    let [c, h, w] = job.dataset.sample_shape();
    let sample_len = c * h * w;
    let first = k * job.config.batch_size;
    let last = (first + job.config.batch_size).min(job.indices.len());
    let indices = job.indices[first..last].to_vec();

    let mut images = vec![0.0; indices.len() * sample_len];
    let mut labels = Vec::with_capacity(indices.len());
    for (j, (&i, out)) in indices.iter().zip(images.chunks_exact_mut(sample_len)).enumerate() {
        labels.push(job.dataset.get(i, out));
        if let Some(augment) = &job.config.augment {
            augment.apply(out, [c, h, w], &job.fill, job.config.augment_seed, first + j);
        }
    }
    Batch { images, shape: [indices.len(), c, h, w], labels, indices }
}

impl Iterator for Loader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.next >= self.end {
            return None;
        }
        let batch = self.next;
        let t = (batch - self.start) % self.receivers.len();
        match self.receivers[t].recv() {
            Ok(b) => {
                self.next += 1;
                Some(Ok(b))
            }
            Err(_) => {
                self.next = self.end;
                Some(Err(self.worker_failed(batch)))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.end - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Loader {}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channels makes every blocked or later `send` fail, so each thread ends
        // after at most the batch it is building.
        self.receivers.clear();
        for thread in self.threads.iter_mut().filter_map(Option::take) {
            let _ = thread.join();
        }
    }
}
