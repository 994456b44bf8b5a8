//! Block I/O programs: latency from issue to completion and size, per disk
//! and operation. In-flight requests sit in a fixed array slot chosen by
//! the request's address, so a completion the program never sees cannot
//! leak anything.

use agent_common::{
    BlockFirst, BlockHists, BlockKey, Log2Hist, BLOCK_INFLIGHT, BLOCK_KEYS, BLOCK_OPS, BLOCK_OP_DISCARD,
};
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map},
    maps::{Array, PerCpuArray, PerCpuHashMap},
    programs::BtfTracePointContext,
};

use crate::shared::{field, hist_add_local, hist_add_ns_local, offset};

/// One request in flight: its id (`request_id`) and issue time (0: free).
#[repr(C)]
struct InFlight {
    rq: u64,
    ts: u64,
}

/// Requests in flight, by a hash of the request's address (see
/// `agent_common::BLOCK_INFLIGHT`). An array slot costs a few loads and
/// stores where an LRU hash update costs a lock and list moves: this is
/// what makes the block programs cheaper than biolatency's hash map.
/// Never read by userspace.
#[map]
static BLOCK_START: Array<InFlight> = Array::with_max_entries(BLOCK_INFLIGHT, 0);

/// The slot array's first entry: its address is fixed for the map's life.
#[inline(always)]
fn slots_base() -> Option<*mut InFlight> {
    BLOCK_START.get_ptr_mut(0)
}

/// Request `rq` as a plain number, for the slot hash and the identity
/// check: its distance from the slot array. The verifier forbids shifting
/// a pointer, but a privileged program (tracing needs CAP_PERFMON anyway)
/// may subtract one pointer from another and gets a scalar. The base is
/// constant, so the distance identifies the request as its address would.
/// Reading the address as a number through bpf_probe_read_kernel instead
/// cost 65 ns per call on the benchmark host, a third of the program.
#[inline(always)]
fn request_id(rq: *const u8, base: *mut InFlight) -> u64 {
    (rq as u64).wrapping_sub(base as u64)
}

/// The slot of request `rq`. Requests are allocated in arrays of a few
/// hundred bytes each, so the bits above the low six spread them; the
/// higher bits fold in the allocation's page.
#[inline(always)]
fn slot(rq: u64) -> u32 {
    ((rq >> 6) ^ (rq >> 20)) as u32 & (BLOCK_INFLIGHT - 1)
}

/// Histograms per (disk, operation), one copy per CPU so that a completion
/// adds without atomic instructions; the collector sums the copies for
/// `ebpf_block_io_latency_seconds` and `ebpf_block_io_size_bytes`. Not
/// preallocated: only the (disk, operation) pairs seen take memory, which
/// matters per CPU on a 64-core host.
#[map]
static BLOCK_IO: PerCpuHashMap<BlockKey, BlockHists> = PerCpuHashMap::with_max_entries(BLOCK_KEYS, BPF_F_NO_PREALLOC);

/// Per CPU and operation, the first disk seen and its histograms (see
/// `agent_common::BlockFirst`): the common case skips the hash lookup.
#[map]
static BLOCK_IO_FIRST: PerCpuArray<BlockFirst> = PerCpuArray::with_max_entries(BLOCK_OPS, 0);

/// Map flag (linux/bpf.h): allocate entries when first used.
const BPF_F_NO_PREALLOC: u32 = 1;

/// The first value of a new `BLOCK_IO` entry. Too large for the 512-byte
/// BPF stack, so it lives in .rodata and the helper copies it from there.
static ZERO_HISTS: BlockHists = BlockHists { latency: Log2Hist::ZERO, size: Log2Hist::ZERO };

/// The REQ_OP bits of `request.cmd_flags`.
const REQ_OP_MASK: u32 = 0xff;

/// BPF_NOEXIST: insert only when the key is absent (a per-CPU entry is
/// still one key for every CPU, and two CPUs may race to create it).
const BPF_NOEXIST: u64 = 1;

// void block_rq_issue(struct request *rq)
// (5.11 and later)
#[btf_tracepoint(function = "block_rq_issue")]
pub fn block_rq_issue(ctx: BtfTracePointContext) -> i32 {
    issued(ctx.arg(0))
}

// void block_rq_issue(struct request_queue *q, struct request *rq)
// (before 5.11)
#[btf_tracepoint(function = "block_rq_issue")]
pub fn block_rq_issue_queue_first(ctx: BtfTracePointContext) -> i32 {
    issued(ctx.arg(1))
}

#[inline(always)]
fn issued(rq: *const u8) -> i32 {
    let Some(base) = slots_base() else { return 0 };
    let rq = request_id(rq, base);
    if let Some(slot) = BLOCK_START.get_ptr_mut(slot(rq)) {
        let now = unsafe { bpf_ktime_get_ns() };
        unsafe { *slot = InFlight { rq, ts: now } };
    }
    0
}

/// Nonzero when a request's disk is `request.rq_disk` (kernels before
/// 5.11, whose `request_queue` has no `disk`); set by the agent from BTF.
#[no_mangle]
static DISK_IN_REQUEST: u32 = 0;

/// The disk of request `rq`, null if none.
#[inline(always)]
unsafe fn disk_of(rq: *const u8) -> *const u8 {
    // SAFETY: a static; volatile only defeats constant folding.
    if core::ptr::read_volatile(&DISK_IN_REQUEST) != 0 {
        return field(rq, offset(|o| &o.request_rq_disk));
    }
    let queue: *const u8 = field(rq, offset(|o| &o.request_q));
    if queue.is_null() {
        return core::ptr::null();
    }
    field(queue, offset(|o| &o.queue_disk))
}

// void block_rq_complete(struct request *rq, blk_status_t error,
//                        unsigned int nr_bytes)
// (the same before 5.11, with `int error`)
#[btf_tracepoint(function = "block_rq_complete")]
pub fn block_rq_complete(ctx: BtfTracePointContext) -> i32 {
    let _ = try_block_rq_complete(&ctx);
    0
}

fn try_block_rq_complete(ctx: &BtfTracePointContext) -> Option<()> {
    let rq: *const u8 = ctx.arg(0);
    let addr = request_id(rq, slots_base()?);
    let slot = unsafe { &mut *BLOCK_START.get_ptr_mut(slot(addr))? };
    // Another request took the slot since (or it was never issued here).
    if slot.rq != addr {
        aya_log_ebpf::debug!(ctx, "block_rq_complete: request id {:x} lost its in-flight slot", addr);
        return None;
    }
    let start = slot.ts;
    slot.rq = 0;
    let now = unsafe { bpf_ktime_get_ns() };
    if start == 0 || start > now {
        return None;
    }
    let delta = now - start;
    let bytes: u32 = ctx.arg(2);
    let op = unsafe { field::<u32>(rq, offset(|o| &o.request_cmd_flags)) } & REQ_OP_MASK;
    if op > BLOCK_OP_DISCARD {
        return None;
    }
    let disk = unsafe { disk_of(rq) };
    if disk.is_null() {
        return None;
    }
    let major: i32 = unsafe { field(disk, offset(|o| &o.disk_major)) };
    let minor: i32 = unsafe { field(disk, offset(|o| &o.disk_first_minor)) };
    let key = BlockKey { major: major as u32, minor: minor as u32, op, _pad: 0 };
    let first = unsafe { &mut *BLOCK_IO_FIRST.get_ptr_mut(op)? };
    // Only this CPU writes its entries and a program never runs nested
    // on one CPU, so claiming needs no atomics.
    if first.key.major == 0 {
        first.key = key;
    }
    let hists: *mut BlockHists = if key.major != 0 && first.key.major == key.major && first.key.minor == key.minor {
        &mut first.hists
    } else {
        match BLOCK_IO.get_ptr_mut(&key) {
            Some(h) => h,
            None => {
                let _ = BLOCK_IO.insert(&key, &ZERO_HISTS, BPF_NOEXIST);
                let Some(h) = BLOCK_IO.get_ptr_mut(&key) else {
                    aya_log_ebpf::warn!(
                        ctx,
                        "BLOCK_IO is full ({} disk/op pairs): {}:{} not counted",
                        BLOCK_KEYS,
                        key.major,
                        key.minor
                    );
                    return None;
                };
                h
            }
        }
    };
    aya_log_ebpf::trace!(
        ctx,
        "block_rq_complete: {}:{} op {} {} bytes in {} ns",
        key.major,
        key.minor,
        op,
        bytes,
        delta
    );
    let hists = unsafe { &mut *hists };
    hist_add_ns_local(&mut hists.latency, delta);
    hist_add_local(&mut hists.size, bytes as u64, bytes as u64);
    Some(())
}
