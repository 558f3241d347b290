//! Element types the ring moves: conversion to and from little-endian bytes, and reduction.

use crate::communicator::ReduceOp;

/// A value that travels as fixed-size little-endian bytes.
pub(crate) trait Wire: Copy + Send + 'static {
    /// Bytes per element.
    const SIZE: usize;

    /// Replaces `out` with the little-endian bytes of `values`.
    fn encode(values: &[Self], out: &mut Vec<u8>);

    /// Overwrites `dst` with the elements in `src` (`src.len() == dst.len() * SIZE`).
    fn decode(dst: &mut [Self], src: &[u8]);
}

/// A [`Wire`] type that can be reduced.
pub(crate) trait Reduce: Wire {
    /// Combines the elements in `src` into `dst` with `op` (`Mean` adds; see [`Reduce::divide`]).
    fn reduce(op: ReduceOp, dst: &mut [Self], src: &[u8]);

    /// Divides every element of `dst` by `world_size`, finishing a mean.
    fn divide(dst: &mut [Self], world_size: usize);
}

impl Wire for u8 {
    const SIZE: usize = 1;

    fn encode(values: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(values);
    }

    fn decode(dst: &mut [u8], src: &[u8]) {
        dst.copy_from_slice(src);
    }
}

/// Implements [`Wire`] and [`Reduce`] for a float type of `$size` bytes.
macro_rules! float_element {
    ($t:ty, $size:literal) => {
        impl Wire for $t {
            const SIZE: usize = $size;

            fn encode(values: &[$t], out: &mut Vec<u8>) {
                out.clear();
                out.resize(values.len() * $size, 0);
                for (bytes, value) in out.chunks_exact_mut($size).zip(values) {
                    bytes.copy_from_slice(&value.to_le_bytes());
                }
            }

            fn decode(dst: &mut [$t], src: &[u8]) {
                for (value, bytes) in dst.iter_mut().zip(src.chunks_exact($size)) {
                    *value = <$t>::from_le_bytes(bytes.try_into().unwrap_or_default());
                }
            }
        }

        impl Reduce for $t {
            fn reduce(op: ReduceOp, dst: &mut [$t], src: &[u8]) {
                let pairs = dst.iter_mut().zip(src.chunks_exact($size));
                let incoming =
                    |bytes: &[u8]| <$t>::from_le_bytes(bytes.try_into().unwrap_or_default());
                match op {
                    ReduceOp::Sum | ReduceOp::Mean => {
                        for (value, bytes) in pairs {
                            *value += incoming(bytes);
                        }
                    }
                    ReduceOp::Max => {
                        for (value, bytes) in pairs {
                            let other = incoming(bytes);
                            // NaN wins either way round; otherwise the larger value.
                            if other > *value || other.is_nan() {
                                *value = other;
                            }
                        }
                    }
                }
            }

            fn divide(dst: &mut [$t], world_size: usize) {
                let divisor = world_size as $t;
                for value in dst {
                    *value /= divisor;
                }
            }
        }
    };
}

float_element!(f32, 4);
float_element!(f64, 8);
