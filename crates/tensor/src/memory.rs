//! Allocation accounting: bytes live and peak bytes per device, so memory claims can be tested.
//!
//! Every tensor buffer registers its size here when created and unregisters it when dropped.
//! The counters are process-wide atomics; `reset_peak` starts a new measurement window.

use crate::Device;
use std::sync::atomic::{AtomicUsize, Ordering};

const SLOTS: usize = 9; // the CPU and up to eight CUDA ordinals

static LIVE: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static PEAK: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];

fn slot(device: Device) -> usize {
    match device {
        Device::Cpu => 0,
        Device::Cuda(i) => 1 + i.min(SLOTS - 2),
    }
}

/// Record an allocation of `bytes` on `device`.
pub(crate) fn track_alloc(device: Device, bytes: usize) {
    let s = slot(device);
    let live = LIVE[s].fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK[s].fetch_max(live, Ordering::Relaxed);
}

/// Record that `bytes` on `device` were freed.
pub(crate) fn track_free(device: Device, bytes: usize) {
    LIVE[slot(device)].fetch_sub(bytes, Ordering::Relaxed);
}

/// Bytes held by live tensors on `device`.
pub fn live_bytes(device: Device) -> usize {
    LIVE[slot(device)].load(Ordering::Relaxed)
}

/// Highest `live_bytes` seen on `device` since the process started or the last `reset_peak`.
pub fn peak_bytes(device: Device) -> usize {
    PEAK[slot(device)].load(Ordering::Relaxed)
}

/// Start a new peak window: the peak becomes the current live bytes.
pub fn reset_peak(device: Device) {
    let s = slot(device);
    PEAK[s].store(LIVE[s].load(Ordering::Relaxed), Ordering::Relaxed);
}
