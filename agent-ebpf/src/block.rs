//! Block I/O programs: latency from issue to completion and size, per disk
//! and operation. In-flight requests are keyed by the request's address in
//! an LRU hash, so a completion the program never sees cannot leak.

use agent_common::{BlockHists, BlockKey, Log2Hist, BLOCK_INFLIGHT, BLOCK_KEYS, BLOCK_OP_DISCARD};
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map},
    maps::{HashMap, LruHashMap},
    programs::BtfTracePointContext,
};

use crate::shared::{field, hist_add_atomic, offset};

/// Issue time of each request in flight. Written by `block_rq_issue`, read
/// and deleted by `block_rq_complete`; never read by userspace.
#[map]
static BLOCK_START: LruHashMap<u64, u64> = LruHashMap::with_max_entries(BLOCK_INFLIGHT, 0);

/// Histograms per (disk, operation). Written by `block_rq_complete`; read
/// by the collector as `ebpf_block_io_latency_seconds` and
/// `ebpf_block_io_size_bytes`.
#[map]
static BLOCK_IO: HashMap<BlockKey, BlockHists> = HashMap::with_max_entries(BLOCK_KEYS, 0);

/// The first value of a new `BLOCK_IO` entry. Too large for the 512-byte
/// BPF stack, so it lives in .rodata and the helper copies it from there.
static ZERO_HISTS: BlockHists = BlockHists {
    latency: Log2Hist::ZERO,
    size: Log2Hist::ZERO,
};

/// The REQ_OP bits of `request.cmd_flags`.
const REQ_OP_MASK: u32 = 0xff;

/// BPF_NOEXIST: insert only when the key is absent (two CPUs may race).
const BPF_NOEXIST: u64 = 1;

// void block_rq_issue(struct request *rq)
#[btf_tracepoint(function = "block_rq_issue")]
pub fn block_rq_issue(ctx: BtfTracePointContext) -> i32 {
    let rq: u64 = ctx.arg(0);
    let now = unsafe { bpf_ktime_get_ns() };
    let _ = BLOCK_START.insert(&rq, &now, 0);
    0
}

// void block_rq_complete(struct request *rq, blk_status_t error,
//                        unsigned int nr_bytes)
#[btf_tracepoint(function = "block_rq_complete")]
pub fn block_rq_complete(ctx: BtfTracePointContext) -> i32 {
    let _ = try_block_rq_complete(&ctx);
    0
}

fn try_block_rq_complete(ctx: &BtfTracePointContext) -> Option<()> {
    let rq: *const u8 = ctx.arg(0);
    let key = rq as u64;
    let start = unsafe { *BLOCK_START.get(&key)? };
    let _ = BLOCK_START.remove(&key);
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
    let queue: *const u8 = unsafe { field(rq, offset(|o| &o.request_q)) };
    if queue.is_null() {
        return None;
    }
    let disk: *const u8 = unsafe { field(queue, offset(|o| &o.queue_disk)) };
    if disk.is_null() {
        return None;
    }
    let major: i32 = unsafe { field(disk, offset(|o| &o.disk_major)) };
    let minor: i32 = unsafe { field(disk, offset(|o| &o.disk_first_minor)) };
    let key = BlockKey {
        major: major as u32,
        minor: minor as u32,
        op,
        _pad: 0,
    };
    let hists = match BLOCK_IO.get_ptr_mut(&key) {
        Some(h) => h,
        None => {
            let _ = BLOCK_IO.insert(&key, &ZERO_HISTS, BPF_NOEXIST);
            BLOCK_IO.get_ptr_mut(&key)?
        }
    };
    let hists = unsafe { &mut *hists };
    hist_add_atomic(&mut hists.latency, delta.div_ceil(1000), delta);
    hist_add_atomic(&mut hists.size, bytes as u64, bytes as u64);
    Some(())
}
