//! The IDX reader on small files written to a temporary folder: valid raw and gzip files,
//! and each way a file can be wrong.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use strata_data::{read_idx, DataError};

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
    let raw = read_idx(&write(dir.path(), "a-idx3-ubyte", &idx_bytes())).unwrap();
    assert_eq!(raw.dims, vec![2, 2, 3]);
    assert_eq!(raw.data, (0..12).collect::<Vec<u8>>());

    // Gzip is recognised by its magic bytes, whatever the name says.
    let gz = read_idx(&write(dir.path(), "b-no-extension", &gzip(&idx_bytes()))).unwrap();
    assert_eq!(gz, raw);
    let raw_named_gz = read_idx(&write(dir.path(), "c.gz", &idx_bytes())).unwrap();
    assert_eq!(raw_named_gz, raw);
}

#[test]
fn rejects_a_truncated_file_naming_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = idx_bytes();
    bytes.truncate(bytes.len() - 5);
    let path = write(dir.path(), "short-idx3-ubyte.gz", &gzip(&bytes));

    let err = read_idx(&path).unwrap_err();
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
    let err = read_idx(&write(dir.path(), "long", &bytes)).unwrap_err();
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
    let err = read_idx(&write(dir.path(), "bad-magic", &bytes)).unwrap_err();
    assert!(matches!(&err, DataError::BadMagic { found, .. } if found == &[0x12, 0, 8, 3]));
    assert!(err.to_string().contains("bad-magic"), "{err}");

    // Zero bytes but an undefined type code (0x07) is not an IDX file either.
    let mut bytes = idx_bytes();
    bytes[2] = 0x07;
    let err = read_idx(&write(dir.path(), "bad-type", &bytes)).unwrap_err();
    assert!(matches!(err, DataError::BadMagic { .. }), "{err}");

    // A defined type other than unsigned bytes is refused by name: 0x0c is i32.
    bytes[2] = 0x0c;
    let err = read_idx(&write(dir.path(), "i32", &bytes)).unwrap_err();
    assert!(matches!(err, DataError::UnsupportedType { code: 0x0c, .. }), "{err}");
}

#[test]
fn missing_file_says_how_to_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let err = read_idx(&dir.path().join("absent")).unwrap_err();
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
