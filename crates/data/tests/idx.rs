//! The IDX reader on small files written to a temporary folder: valid raw and gzip files,
//! and each way a file can be wrong.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use strata_data::{read_idx, DataError, IdxContent};

const IMAGES: IdxContent = IdxContent::Images;
const LABELS: IdxContent = IdxContent::Labels;

/// A 2 x 2 x 3 unsigned-byte IDX file, bytes laid out by hand from the IDX format: magic
/// 00 00 08 03, dims 2, 2, 3 as big-endian u32, then 12 data bytes 0..=11.
fn idx_bytes() -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, 3];
    for d in [2u32, 2, 3] {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend(0..12u8);
    bytes
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn reads_raw_and_gzip_files_alike() {
    let dir = tempfile::tempdir().unwrap();
    let raw = read_idx(&write(dir.path(), "a-idx3-ubyte", &idx_bytes()), IMAGES).unwrap();
    assert_eq!(raw.dims, vec![2, 2, 3]);
    assert_eq!(raw.data, (0..12).collect::<Vec<u8>>());

    // Gzip is recognised by its magic bytes, whatever the name says.
    let gz = read_idx(&write(dir.path(), "b-no-extension", &gzip(&idx_bytes())), IMAGES).unwrap();
    assert_eq!(gz, raw);
    let raw_named_gz = read_idx(&write(dir.path(), "c.gz", &idx_bytes()), IMAGES).unwrap();
    assert_eq!(raw_named_gz, raw);
}

#[test]
fn rejects_a_truncated_file_naming_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = idx_bytes();
    bytes.truncate(bytes.len() - 5);
    let path = write(dir.path(), "short-idx3-ubyte.gz", &gzip(&bytes));

    let err = read_idx(&path, IMAGES).unwrap_err();
    // 16 header bytes + 12 data bytes expected; 5 were cut off, leaving 23.
    assert!(matches!(err, DataError::Truncated { expected: 28, actual: 23, .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("short-idx3-ubyte.gz"), "{message}");
    assert!(message.contains("28") && message.contains("23"), "{message}");
    assert!(message.contains("scripts/fetch-data.sh"), "{message}");
}

#[test]
fn rejects_trailing_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = idx_bytes();
    bytes.extend_from_slice(b"junk");
    let err = read_idx(&write(dir.path(), "long", &bytes), IMAGES).unwrap_err();
    // 28 bytes expected, 4 extra.
    assert!(
        matches!(err, DataError::TrailingBytes { expected: 28, actual: 32, extra: 4, .. }),
        "{err}"
    );
}

#[test]
fn rejects_a_wrong_magic_number() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = idx_bytes();
    bytes[0] = 0x12;
    let err = read_idx(&write(dir.path(), "bad-magic", &bytes), IMAGES).unwrap_err();
    assert!(matches!(&err, DataError::BadMagic { found, .. } if found == &[0x12, 0, 8, 3]));
    assert!(err.to_string().contains("bad-magic"), "{err}");

    // Zero bytes but an undefined type code (0x07) is not an IDX file either.
    let mut bytes = idx_bytes();
    bytes[2] = 0x07;
    let err = read_idx(&write(dir.path(), "bad-type", &bytes), IMAGES).unwrap_err();
    assert!(matches!(err, DataError::BadMagic { .. }), "{err}");

    // A defined type other than unsigned bytes is refused by name: 0x0c is i32.
    bytes[2] = 0x0c;
    let err = read_idx(&write(dir.path(), "i32", &bytes), IMAGES).unwrap_err();
    assert!(matches!(err, DataError::UnsupportedType { code: 0x0c, .. }), "{err}");
}

#[test]
fn missing_file_says_how_to_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let err = read_idx(&dir.path().join("absent"), IMAGES).unwrap_err();
    assert!(matches!(err, DataError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("scripts/fetch-data.sh"), "{err}");
}

#[test]
fn from_idx_rejects_mismatched_counts() {
    use strata_data::ImageDataset;
    let dir = tempfile::tempdir().unwrap();
    let images = write(dir.path(), "images", &idx_bytes());
    // Three labels for two images.
    let labels = write(dir.path(), "labels", &[0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]);
    let err = ImageDataset::from_idx(&images, &labels, &[0.5], &[0.5]).unwrap_err();
    assert!(matches!(err, DataError::CountMismatch { num_images: 2, num_labels: 3, .. }), "{err}");
}

#[test]
fn a_header_of_the_wrong_rank_is_named_not_called_truncated() {
    let dir = tempfile::tempdir().unwrap();
    // A label file (magic 00 00 08 01, 3 labels) whose rank byte says 3, as when the images'
    // header lands on a label file: the old reader read labels as dims and called it truncated.
    let labels = write(dir.path(), "labels", &[0, 0, 8, 3, 0, 0, 0, 3, 1, 2, 3]);
    let err = read_idx(&labels, LABELS).unwrap_err();
    assert!(matches!(err, DataError::WrongRank { found: 3, .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("expected a 1-D IDX file (labels), found a 3-D one (images?)"), "{msg}");
    assert!(msg.contains("scripts/fetch-data.sh") && !msg.contains("truncated"), "{msg}");

    // And an image file read where labels are expected, or labels where images are.
    let images = write(dir.path(), "images", &idx_bytes());
    let msg = read_idx(&images, LABELS).unwrap_err().to_string();
    assert!(msg.contains("found a 3-D one (images?)"), "{msg}");
    let label_file = write(dir.path(), "real-labels", &[0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]);
    let msg = read_idx(&label_file, IMAGES).unwrap_err().to_string();
    assert!(msg.contains("expected a 3-D or 4-D IDX file (images), found a 1-D one"), "{msg}");
}

#[test]
fn dims_whose_product_overflows_are_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    // Rank 4 with every dim 2^32 - 1: about 2^128 bytes, past u64 (so past usize too).
    let mut bytes = vec![0, 0, 8, 4];
    for _ in 0..4 {
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
    }
    let err = read_idx(&write(dir.path(), "huge", &bytes), IMAGES).unwrap_err();
    assert!(matches!(err, DataError::BadContent { .. }), "{err}");
    assert!(err.to_string().contains("more bytes than"), "{err}");
}

#[test]
fn a_cut_off_gzip_file_says_how_to_fetch_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut gz = gzip(&idx_bytes());
    gz.truncate(gz.len() / 2);
    let err = read_idx(&write(dir.path(), "cut.gz", &gz), IMAGES).unwrap_err();
    assert!(matches!(err, DataError::Gzip { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("cut.gz") && msg.contains("gzip decompression failed"), "{msg}");
    assert!(msg.contains("run scripts/fetch-data.sh") && msg.contains("fashion-mnist"), "{msg}");
}

#[test]
fn a_missing_dataset_says_to_fetch_from_the_repository_root_or_set_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let err = strata_data::fashion_mnist(dir.path(), strata_data::Split::Train).unwrap_err();
    assert!(matches!(err, DataError::NotFound { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("train-images-idx3-ubyte.gz"), "{msg}");
    assert!(msg.contains("scripts/fetch-data.sh fashion-mnist from the repository root"), "{msg}");
    assert!(msg.contains("--set data.dir="), "{msg}");
    // Training never reads STRATA_DATA, so the message must not send the user to it.
    assert!(!msg.contains("STRATA_DATA"), "{msg}");
}
