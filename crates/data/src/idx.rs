//! Reader for IDX files (the MNIST format), raw or gzip-compressed.
//!
//! An IDX file is a 4-byte magic number (two zero bytes, an element type code, the rank), one
//! big-endian `u32` per dimension, then the elements in row-major order. Only unsigned bytes
//! (type 0x08) are read; that is what MNIST and Fashion-MNIST use.

use std::io::Read;
use std::path::Path;

use crate::error::{DataError, Result};

/// The gzip magic bytes; a file starting with them is decompressed, whatever its name.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// IDX element type code of unsigned bytes, the only one read.
const TYPE_U8: u8 = 0x08;

/// What an IDX file is read as, which fixes the ranks it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdxContent {
    /// A label file: rank 1, `[N]`.
    Labels,
    /// An image file: rank 3, `[N, H, W]`, or rank 4, `[N, C, H, W]`.
    Images,
}

impl IdxContent {
    /// The ranks a file of this content may have.
    pub fn ranks(self) -> &'static [usize] {
        match self {
            IdxContent::Labels => &[1],
            IdxContent::Images => &[3, 4],
        }
    }

    /// `labels` or `images`.
    pub fn name(self) -> &'static str {
        match self {
            IdxContent::Labels => "labels",
            IdxContent::Images => "images",
        }
    }

    /// The content a file of `rank` most likely holds, if any.
    fn guess(rank: usize) -> Option<IdxContent> {
        [IdxContent::Labels, IdxContent::Images].into_iter().find(|c| c.ranks().contains(&rank))
    }
}

/// An n-dimensional array of bytes read from an IDX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions, outermost first (`[N, H, W]` for an image file, `[N]` for labels).
    pub dims: Vec<usize>,
    /// The elements, row-major; `data.len()` is the product of `dims`.
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes holding `content`, decompressing it first if it is gzip
/// (detected by its magic bytes, not by its name).
///
/// # Errors
///
/// [`DataError::NotFound`] or [`DataError::Io`] if the file cannot be read, [`DataError::Gzip`]
/// if it does not decompress; [`DataError::BadMagic`] if it is not an IDX file;
/// [`DataError::UnsupportedType`] for element types other than unsigned bytes;
/// [`DataError::WrongRank`] if its rank does not fit `content`; [`DataError::BadContent`] if its
/// dims describe more bytes than a `usize` holds; [`DataError::Truncated`] or
/// [`DataError::TrailingBytes`] if its size disagrees with its dimensions.
pub fn read_idx(path: &Path, content: IdxContent) -> Result<IdxArray> {
    let bytes = read_maybe_gzip(path)?;
    parse_idx(path, bytes, content)
}

/// Reads a whole file, decompressing it if it starts with the gzip magic bytes.
pub(crate) fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }

    // MNIST-sized files inflate about 2x to 10x; the hint only saves reallocations.
    let mut inflated = Vec::with_capacity(raw.len().saturating_mul(4));
    flate2::read::MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut inflated)
        .map_err(|source| DataError::Gzip { path: path.to_path_buf(), source })?;
    Ok(inflated)
}

/// Parses the (decompressed) bytes of an IDX file; `path` only names the file in errors.
fn parse_idx(path: &Path, mut bytes: Vec<u8>, content: IdxContent) -> Result<IdxArray> {
    let bad_magic = |bytes: &[u8]| DataError::BadMagic {
        path: path.to_path_buf(),
        found: bytes[..bytes.len().min(4)].to_vec(),
    };
    if bytes.len() < 4 {
        return Err(if bytes.iter().any(|&b| b != 0) {
            bad_magic(&bytes)
        } else {
            truncated(path, "the 4-byte IDX magic number".into(), 4, bytes.len())
        });
    }

    let (code, rank) = (bytes[2], bytes[3] as usize);
    if bytes[0] != 0 || bytes[1] != 0 || rank == 0 {
        return Err(bad_magic(&bytes));
    }
    match type_name(code) {
        None => return Err(bad_magic(&bytes)),
        Some(_) if code == TYPE_U8 => {}
        Some(name) => {
            return Err(DataError::UnsupportedType { path: path.to_path_buf(), code, name });
        }
    }

    if !content.ranks().contains(&rank) {
        return Err(DataError::WrongRank {
            path: path.to_path_buf(),
            expected: content
                .ranks()
                .iter()
                .map(|r| format!("{r}-D"))
                .collect::<Vec<_>>()
                .join(" or "),
            content: content.name(),
            found: rank,
            guess: IdxContent::guess(rank).map_or(String::new(), |c| format!(" ({}?)", c.name())),
        });
    }

    let header_len = 4 + 4 * rank;
    if bytes.len() < header_len {
        let what = format!("the header of a rank-{rank} IDX file");
        return Err(truncated(path, what, header_len, bytes.len()));
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();

    // Checked: four u32 dims can describe up to 2^128 bytes.
    let payload = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let expected =
        payload.and_then(|p| p.checked_add(header_len)).ok_or_else(|| DataError::BadContent {
            path: path.to_path_buf(),
            what: format!("IDX dims {dims:?} describe more bytes than this machine can address"),
        })?;
    let what = format!("a {dims:?} array of unsigned bytes plus the {header_len}-byte header");
    if bytes.len() < expected {
        return Err(truncated(path, what, expected, bytes.len()));
    }
    if bytes.len() > expected {
        return Err(DataError::TrailingBytes {
            path: path.to_path_buf(),
            what,
            expected: expected as u64,
            actual: bytes.len() as u64,
            extra: (bytes.len() - expected) as u64,
        });
    }

    bytes.drain(..header_len);
    Ok(IdxArray { dims, data: bytes })
}

fn truncated(path: &Path, what: String, expected: usize, actual: usize) -> DataError {
    DataError::Truncated {
        path: path.to_path_buf(),
        what,
        expected: expected as u64,
        actual: actual as u64,
    }
}

/// The name of an IDX element type code, or `None` for a code the format does not define.
fn type_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0b => "i16",
        0x0c => "i32",
        0x0d => "f32",
        0x0e => "f64",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<IdxArray> {
        let content =
            if bytes.get(3) == Some(&1) { IdxContent::Labels } else { IdxContent::Images };
        parse_idx(Path::new("mem.idx"), bytes.to_vec(), content)
    }

    #[test]
    fn parses_a_rank_3_array() {
        // Header 00 00 08 03, dims 1 x 2 x 3, then six bytes: the layout the IDX spec describes.
        let bytes = [0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6];
        let a = parse(&bytes).unwrap();
        assert_eq!(a.dims, vec![1, 2, 3]);
        assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn rejects_other_element_types_by_name() {
        // 0x0d is the IDX code for f32.
        let err = parse(&[0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0]).unwrap_err();
        assert!(matches!(err, DataError::UnsupportedType { code: 0x0d, .. }), "{err}");
        assert!(err.to_string().contains("f32"), "{err}");
    }

    #[test]
    fn rejects_a_truncated_header_and_rank_zero() {
        // Rank 3 needs a 16-byte header; 8 bytes are there.
        let err = parse(&[0, 0, 8, 3, 0, 0, 0, 1]).unwrap_err();
        assert!(matches!(err, DataError::Truncated { expected: 16, actual: 8, .. }), "{err}");
        let err = parse(&[0, 0, 8, 0]).unwrap_err();
        assert!(matches!(err, DataError::BadMagic { .. }), "{err}");
    }
}
