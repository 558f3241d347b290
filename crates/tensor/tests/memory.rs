//! Allocation accounting of CPU tensors: live bytes rise by a tensor's size when it is created
//! and fall back when it is dropped; the peak tracks the highest live count since the last
//! reset. Its own test binary, since the counters are process-wide.

use strata_tensor::memory::{live_bytes, peak_bytes, reset_peak};
use strata_tensor::{Backend, DType, Device, Tensor};

#[test]
fn live_and_peak_bytes_follow_tensors() {
    let cpu = Device::Cpu;
    let base = live_bytes(cpu);
    reset_peak(cpu);
    assert_eq!(peak_bytes(cpu), base);

    // 1000 f32 = 4000 bytes; 500 f64 = 4000 bytes.
    let a = Tensor::zeros([10, 100], DType::F32, cpu).unwrap();
    assert_eq!(live_bytes(cpu), base + 4000);
    let b = Tensor::zeros([500], DType::F64, cpu).unwrap();
    assert_eq!(live_bytes(cpu), base + 8000);

    // Views and clones share storage: no new bytes.
    let view = a.reshape([1000]).unwrap();
    let clone = b.clone();
    assert_eq!(live_bytes(cpu), base + 8000);

    // A kernel's output is a new tensor of its size (relu of 1000 f32).
    let y = strata_tensor::cpu::CpuBackend.relu_forward(&a).unwrap();
    assert_eq!(live_bytes(cpu), base + 12000);

    drop((a, view, y));
    assert_eq!(live_bytes(cpu), base + 4000);
    drop((b, clone));
    assert_eq!(live_bytes(cpu), base);
    assert_eq!(peak_bytes(cpu), base + 12000);

    reset_peak(cpu);
    assert_eq!(peak_bytes(cpu), base);
}
