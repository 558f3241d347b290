//! The store's wire format: postcard-encoded requests and responses in length-prefixed frames.
//!
//! A frame is a little-endian `u32` byte count followed by that many bytes of postcard. The client
//! sends one [`Request`] and reads one [`Response`]; a connection carries any number of these
//! round trips, one at a time.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// The largest frame either side accepts, so a corrupt length cannot exhaust memory.
pub(crate) const MAX_FRAME_BYTES: usize = 64 << 20;

/// One request from a client.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Store `value` under `key`, replacing any previous value, and wake waiters on `key`.
    Set { key: String, value: Vec<u8> },
    /// Return the value of `key`, waiting up to `wait_ms` for it to be set.
    Get { key: String, wait_ms: u64 },
    /// Add `delta` to the counter `key` (absent counts as 0) and return the new value.
    Add { key: String, delta: i64 },
    /// Remove `key`; answers whether it existed.
    Delete { key: String },
    /// Answer whether every key exists, without waiting.
    Check { keys: Vec<String> },
}

/// The server's answer to one [`Request`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    /// `Set` succeeded.
    Done,
    /// The value of a `Get`.
    Value(Vec<u8>),
    /// The new value of an `Add`.
    Counter(i64),
    /// Whether a `Delete` removed a key.
    Deleted(bool),
    /// Whether every key of a `Check` exists.
    Present(bool),
    /// The key of a `Get` was not set within its wait.
    NotYet,
    /// The request was refused, with the reason.
    Refused(String),
}

/// Encodes `message` as one frame: length prefix and postcard bytes.
pub(crate) fn encode_frame<M: Serialize>(message: &M) -> Result<Vec<u8>, String> {
    let body = postcard::to_allocvec(message).map_err(|e| format!("cannot encode: {e}"))?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(format!("{} bytes exceed the {MAX_FRAME_BYTES}-byte frame limit", body.len()));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Checks a received frame length against [`MAX_FRAME_BYTES`].
pub(crate) fn check_frame_len(len: u32) -> Result<usize, String> {
    let len = len as usize;
    if len > MAX_FRAME_BYTES {
        return Err(format!("frame of {len} bytes exceeds the {MAX_FRAME_BYTES}-byte limit"));
    }
    Ok(len)
}

/// Writes an already encoded frame to a blocking stream.
pub(crate) fn write_frame(stream: &mut impl Write, frame: &[u8]) -> io::Result<()> {
    stream.write_all(frame)?;
    stream.flush()
}

/// Reads one frame's body from a blocking stream.
pub(crate) fn read_frame(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = check_frame_len(u32::from_le_bytes(len))
        .map_err(|detail| io::Error::new(io::ErrorKind::InvalidData, detail))?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok(body)
}
