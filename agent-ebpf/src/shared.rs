//! What the programs of both objects share: the kernel offsets global,
//! field reads at those offsets, cgroup ids and histogram slots.

use agent_common::{us_slot_of_ns, KernelOffsets, Log2Hist, LOG2_SLOTS};

/// Kernel structure offsets, set by the agent at load time. Read-only
/// for the programs (it lives in .rodata, which aya freezes), so the
/// verifier knows each value as a constant.
#[no_mangle]
static OFFSETS: KernelOffsets = KernelOffsets::ZERO;

/// Nonzero when the agent wants per-cgroup counts (`[ebpf]
/// container_label = true`) and the kernel has the fields to find them.
#[no_mangle]
static CONTAINER_LABEL: u32 = 0;

/// Whether per-cgroup counting is on.
#[inline(always)]
pub fn container_label() -> bool {
    // SAFETY: a static; volatile only defeats constant folding.
    unsafe { core::ptr::read_volatile(&CONTAINER_LABEL) != 0 }
}

/// The id of a `struct cgroup` (its kernfs node id), 0 for none.
#[inline(always)]
pub unsafe fn cgroup_id(cgroup: *const u8) -> u64 {
    if cgroup.is_null() {
        return 0;
    }
    let kn: *const u8 = field(cgroup, offset(|o| &o.cgroup_kn));
    if kn.is_null() {
        return 0;
    }
    field(kn, offset(|o| &o.kernfs_id))
}

/// One offset, read through a volatile load so the compiler cannot
/// fold the build-time zero in: `offset(|o| &o.task_pid)`.
#[inline(always)]
pub fn offset(pick: impl Fn(&'static KernelOffsets) -> &'static u32) -> u32 {
    // SAFETY: a static; the volatile read only defeats constant folding.
    unsafe { core::ptr::read_volatile(pick(&OFFSETS)) }
}

/// Loads a `T` at `base + off` from a BTF-typed kernel pointer. The
/// verifier checks the access against the kernel's type and turns a
/// fault into a zero.
#[inline(always)]
pub unsafe fn field<T: Copy>(base: *const u8, off: u32) -> T {
    core::ptr::read_volatile(base.add(off as usize) as *const T)
}

/// The histogram slot of `v`: the smallest `i` with `v <= 2^i`, capped
/// at the last slot. A branchy binary search rather than
/// `leading_zeros`: the verifier cannot bound the popcount arithmetic
/// LLVM emits for that, and rejects the map index.
#[inline(always)]
pub fn log2_slot(v: u64) -> usize {
    if v <= 1 {
        return 0;
    }
    let mut x = v - 1;
    let mut bits = 1usize;
    if x >= 1 << 32 {
        x >>= 32;
        bits += 32;
    }
    if x >= 1 << 16 {
        x >>= 16;
        bits += 16;
    }
    if x >= 1 << 8 {
        x >>= 8;
        bits += 8;
    }
    if x >= 1 << 4 {
        x >>= 4;
        bits += 4;
    }
    if x >= 1 << 2 {
        x >>= 2;
        bits += 2;
    }
    if x >= 1 << 1 {
        bits += 1;
    }
    if bits >= LOG2_SLOTS {
        LOG2_SLOTS - 1
    } else {
        bits
    }
}

/// Adds `value` (slot from `scaled`) to a histogram only this CPU writes.
#[inline(always)]
pub fn hist_add_local(h: *mut Log2Hist, scaled: u64, value: u64) {
    hist_add_local_at(h, log2_slot(scaled), value);
}

/// Adds a duration of `ns` to a histogram of microseconds only this
/// CPU writes.
#[inline(always)]
pub fn hist_add_ns_local(h: *mut Log2Hist, ns: u64) {
    hist_add_local_at(h, us_slot_of_ns(ns), ns);
}

#[inline(always)]
fn hist_add_local_at(h: *mut Log2Hist, slot: usize, value: u64) {
    let h = unsafe { &mut *h };
    if let Some(slot) = h.slots.get_mut(slot) {
        *slot += 1;
    }
    h.sum += value;
}

/// Adds a duration of `ns` to a histogram of microseconds shared by
/// all CPUs, with atomic adds.
#[inline(always)]
pub fn hist_add_ns_atomic(h: *mut Log2Hist, ns: u64) {
    use core::intrinsics::{atomic_xadd, AtomicOrdering::Relaxed};
    let h = unsafe { &mut *h };
    if let Some(slot) = h.slots.get_mut(us_slot_of_ns(ns)) {
        // SAFETY: map values are 8-byte aligned and live while we run.
        unsafe { atomic_xadd::<u64, u64, { Relaxed }>(slot, 1) };
    }
    unsafe { atomic_xadd::<u64, u64, { Relaxed }>(&mut h.sum, ns) };
}
