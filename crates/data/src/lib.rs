//! strata-data: datasets (IDX, CIFAR binary, synthetic), augmentation, the distributed sampler
//! and the background loader; it produces plain `Vec<f32>` batches and depends on no other
//! Strata crate.
//!
//! One rank's epoch, end to end:
//!
//! ```
//! use std::sync::Arc;
//! use strata_data::{Augment, AugmentSeed, DistributedSampler, Loader, LoaderConfig};
//! use strata_data::{Dataset, SyntheticDataset};
//!
//! # fn main() -> strata_data::Result<()> {
//! let dataset: Arc<dyn Dataset> = Arc::new(SyntheticDataset::new(100, [1, 8, 8], 10, 42)?);
//! let (world_size, rank, epoch) = (2, 1, 0);
//! let sampler = DistributedSampler::new(dataset.len(), world_size, rank)?.seed(42);
//! let config = LoaderConfig {
//!     augment: Some(Augment::crop_flip(2)),
//!     augment_seed: AugmentSeed { seed: 42, rank, epoch },
//!     ..LoaderConfig::new(16)
//! };
//! let mut batches = 0;
//! for batch in Loader::new(Arc::clone(&dataset), sampler.indices(epoch), config)? {
//!     let batch = batch?;
//!     assert_eq!(batch.images.len(), batch.shape.iter().product::<usize>());
//!     batches += 1;
//! }
//! assert_eq!(batches, 4); // 50 samples per rank in batches of 16: 16, 16, 16, 2
//! # Ok(())
//! # }
//! ```

pub mod dataset;
pub mod error;
pub mod idx;
pub mod loader;
mod rng;
pub mod sampler;
pub mod transform;

pub use dataset::{
    cifar10_binary, fashion_mnist, mnist, Dataset, ImageDataset, Split, Subset, SyntheticDataset,
};
pub use error::{DataError, Result};
pub use idx::{read_idx, IdxArray, IdxContent};
pub use loader::{Batch, Loader, LoaderConfig};
pub use sampler::DistributedSampler;
pub use transform::{Augment, AugmentSeed};

/// The folder `scripts/fetch-data.sh` writes datasets into when run from the repository root:
/// `$STRATA_DATA` if set, else `data`. Training does not read it: `data.dir` names the folder,
/// relative to the working directory.
pub fn data_root() -> std::path::PathBuf {
    std::env::var_os("STRATA_DATA").map_or_else(|| "data".into(), Into::into)
}
