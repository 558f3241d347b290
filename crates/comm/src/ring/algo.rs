//! The ring algorithms over a rank's [`Links`]: all-reduce (reduce-scatter then all-gather),
//! pipelined broadcast along the ring, and all-gather of byte blocks.
//!
//! The buffer is cut into `world_size` contiguous chunks, and those into sub-chunks of
//! [`SUB_CHUNK_BYTES`]. A received sub-chunk is reduced (or copied) and then forwarded, with a
//! few sub-chunks queued ahead of the receives, so the ring streams without waiting for whole
//! chunks and send buffers stay small. Each chunk is summed in a fixed order around the ring
//! (starting at the rank that owns it) and the all-gather then copies the finished bits to
//! every rank, so results are bit-identical on every rank and every run.

use std::ops::Range;

use super::element::{Reduce, Wire};
use super::link::{Header, LinkResult, Links, SUB_CHUNK_BYTES};
use crate::communicator::ReduceOp;

/// Where this rank sits in the ring.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Place {
    pub rank: usize,
    pub world_size: usize,
}

impl Place {
    fn next(&self) -> usize {
        (self.rank + 1) % self.world_size
    }
}

/// Chunk `index` of `world_size` near-equal contiguous chunks of `len` elements; the first
/// `len % world_size` chunks hold one element more. Chunks are empty when `len < world_size`.
pub(crate) fn chunk_range(len: usize, world_size: usize, index: usize) -> Range<usize> {
    let base = len / world_size;
    let extra = len % world_size;
    let start = index * base + index.min(extra);
    start..start + base + usize::from(index < extra)
}

/// Reduces `buf` over the ring with `op`; `header` has been filled in by the caller.
pub(crate) fn all_reduce<T: Reduce>(
    links: &mut Links,
    place: Place,
    header: &Header,
    buf: &mut [T],
    op: ReduceOp,
) -> LinkResult<()> {
    links.send_header(header)?;
    links.expect_header(header, true)?;

    let plan = ReducePlan::new::<T>(place, buf.len());
    let mut sent = 0;
    for (received, incoming) in plan.recvs.iter().enumerate() {
        // Queue what is ready (the own chunk, then whatever arrived), at most LOOKAHEAD
        // messages beyond what has been received, so sends overlap this receive.
        while sent < plan.sends.len()
            && sent < received + LOOKAHEAD
            && sent < plan.own_pieces + received
        {
            links.send_values(&buf[plan.sends[sent].clone()])?;
            sent += 1;
        }

        let bytes = links.recv_exact(incoming.range.len() * T::SIZE)?;
        let values = &mut buf[incoming.range.clone()];
        if incoming.reduce {
            T::reduce(op, values, bytes);
        } else {
            T::decode(values, bytes);
        }
        if incoming.reduce && incoming.last_reduce && op == ReduceOp::Mean {
            T::divide(values, place.world_size);
        }
    }
    for piece in &plan.sends[sent..] {
        links.send_values(&buf[piece.clone()])?;
    }
    links.flush()
}

/// Messages a rank may queue ahead of what it has received. In an all-reduce any bound of at
/// least 1 is deadlock-free: a rank blocked on a receive has queued all it could, and going
/// round the ring, some rank owns a non-empty chunk it could send with nothing received. The
/// bound keeps send buffers to a few sub-chunks however large the buffer.
const LOOKAHEAD: usize = 2;

/// One received sub-chunk of an all-reduce and what to do with it.
struct Incoming {
    range: Range<usize>,
    /// Reduce-scatter (combine with the local values) rather than all-gather (overwrite).
    reduce: bool,
    /// The last reduce-scatter step: the values are final once combined.
    last_reduce: bool,
}

/// The sub-chunks an all-reduce receives, and those it sends, in wire order.
///
/// Global step g (of 2 (n - 1)) receives chunk (rank - g - 1) mod n: reduce-scatter for
/// g < n - 1, then all-gather. A rank first sends its own chunk, then forwards every chunk it
/// received except the last one's, so send k (past the own chunk) is ready once receive
/// k - own_pieces has arrived.
struct ReducePlan {
    recvs: Vec<Incoming>,
    sends: Vec<Range<usize>>,
    own_pieces: usize,
}

impl ReducePlan {
    fn new<T: Wire>(place: Place, len: usize) -> ReducePlan {
        let Place { rank, world_size: n } = place;
        let steps = 2 * (n - 1);
        let mut sends: Vec<_> = sub_chunks::<T>(chunk_range(len, n, rank)).collect();
        let own_pieces = sends.len();
        let mut recvs = Vec::new();
        for step in 0..steps {
            let chunk = chunk_range(len, n, (rank + 2 * n - step - 1) % n);
            for range in sub_chunks::<T>(chunk) {
                if step + 1 < steps {
                    sends.push(range.clone());
                }
                let last_reduce = step == n - 2;
                recvs.push(Incoming { range, reduce: step < n - 1, last_reduce });
            }
        }
        ReducePlan { recvs, sends, own_pieces }
    }
}

/// Copies `root`'s `buf` to every rank along the ring `root -> root + 1 -> ...`. With
/// `adopt_len`, non-roots resize `buf` to the root's length (byte broadcasts).
pub(crate) fn broadcast<T: Wire + Default>(
    links: &mut Links,
    place: Place,
    header: &Header,
    buf: &mut Vec<T>,
    root: usize,
) -> LinkResult<()> {
    broadcast_with(links, place, header, root, |len| {
        if let Some(len) = len {
            buf.resize(len, T::default());
        }
        buf.as_mut_slice()
    })
}

/// [`broadcast`] into a slice of fixed length.
pub(crate) fn broadcast_slice<T: Wire>(
    links: &mut Links,
    place: Place,
    header: &Header,
    buf: &mut [T],
    root: usize,
) -> LinkResult<()> {
    broadcast_with(links, place, header, root, |_| buf)
}

/// The broadcast itself; `target` yields the buffer, given the root's length when the header
/// does not check lengths (`None` on the root and when lengths must already agree).
fn broadcast_with<'b, T: Wire>(
    links: &mut Links,
    place: Place,
    header: &Header,
    root: usize,
    target: impl FnOnce(Option<usize>) -> &'b mut [T],
) -> LinkResult<()> {
    let adopt_len = header.kind == super::link::Kind::BroadcastBytes;
    let forwarding = place.next() != root;

    if place.rank == root {
        links.send_header(header)?;
        for piece in target(None).chunks(SUB_CHUNK_BYTES / T::SIZE) {
            // A broadcast is a chain, not a cycle: waiting on the next rank is safe.
            links.drain_to(LOOKAHEAD)?;
            links.send_values(piece)?;
        }
        return links.flush();
    }

    let got = links.expect_header(header, !adopt_len)?;
    if forwarding {
        links.send_header(&got)?;
    }
    let len = usize::try_from(got.len).unwrap_or(usize::MAX);
    let buf = target(adopt_len.then_some(len));
    for piece in sub_chunks::<T>(0..buf.len()) {
        let bytes = links.recv_exact(piece.len() * T::SIZE)?;
        let values = &mut buf[piece];
        T::decode(values, bytes);
        if forwarding {
            links.drain_to(LOOKAHEAD)?;
            links.send_values(values)?;
        }
    }
    links.flush()
}

/// Gathers every rank's `local` bytes, indexed by rank, by passing blocks around the ring.
pub(crate) fn all_gather_bytes(
    links: &mut Links,
    place: Place,
    header: &Header,
    local: &[u8],
) -> LinkResult<Vec<Vec<u8>>> {
    let Place { rank, world_size: n } = place;
    links.send_header(header)?;
    links.expect_header(header, false)?;

    let mut blocks = vec![Vec::new(); n];
    blocks[rank] = local.to_vec();
    links.send_u64(local.len() as u64)?;
    links.send_values(local)?;

    // Step t receives block (rank - t - 1) mod n and forwards it at step t + 1.
    for step in 0..n - 1 {
        let index = (rank + 2 * n - step - 1) % n;
        let len = links.recv_u64()?;
        let block = recv_block(links, len)?;
        if step + 1 < n - 1 {
            links.send_u64(len)?;
            links.send_values(&block)?;
        }
        blocks[index] = block;
    }
    links.flush()?;
    Ok(blocks)
}

/// Reads a block of `len` bytes, growing the vector as data arrives so that a corrupt length
/// fails on the stream instead of exhausting memory.
fn recv_block(links: &mut Links, len: u64) -> LinkResult<Vec<u8>> {
    let mut block = Vec::new();
    let mut left = len;
    while left > 0 {
        let piece = left.min(SUB_CHUNK_BYTES as u64) as usize;
        block.extend_from_slice(links.recv_exact(piece)?);
        left -= piece as u64;
    }
    Ok(block)
}

/// Splits `range` into pieces of at most [`SUB_CHUNK_BYTES`] bytes of `T`.
fn sub_chunks<T: Wire>(range: Range<usize>) -> impl Iterator<Item = Range<usize>> {
    let step = SUB_CHUNK_BYTES / T::SIZE;
    range.clone().step_by(step).map(move |start| start..(start + step).min(range.end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_partition_the_buffer_in_order() {
        for world_size in 1..=5 {
            for len in 0..=23 {
                let ranges: Vec<_> =
                    (0..world_size).map(|c| chunk_range(len, world_size, c)).collect();
                // Contiguous from 0 to len, sizes differing by at most one, larger ones first.
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[world_size - 1].end, len);
                for pair in ranges.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start);
                    assert!(pair[0].len() >= pair[1].len() && pair[0].len() <= pair[1].len() + 1);
                }
            }
        }
    }

    #[test]
    fn every_rank_sends_what_the_next_rank_receives() {
        // 3 sub-chunks of f32 per rank plus a remainder, so chunks span several pieces.
        let len = 3 * 4 * (SUB_CHUNK_BYTES / 4) + 5;
        for world_size in 2..=4 {
            let plans: Vec<_> = (0..world_size)
                .map(|rank| ReducePlan::new::<f32>(Place { rank, world_size }, len))
                .collect();
            for rank in 0..world_size {
                let next = &plans[(rank + 1) % world_size];
                let received: Vec<_> = next.recvs.iter().map(|r| r.range.clone()).collect();
                // Own chunk plus 2 n - 3 forwarded chunks: the next rank's 2 n - 2 receives.
                assert_eq!(plans[rank].sends, received, "world {world_size}, rank {rank}");
            }
        }
    }
}
