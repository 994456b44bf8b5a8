//! TCP and socket-buffer programs: retransmits, resets, connection outcomes,
//! smoothed RTT of closing connections and dropped packets by reason. All
//! are per-CPU counters or histograms; nothing is kept per socket.

use agent_common::{
    Log2Hist, SKB_DROP_NO_REASON_SLOT, SKB_DROP_SLOTS, TCP_CONN_ACTIVE, TCP_CONN_FAILED, TCP_CONN_PASSIVE,
    TCP_COUNTER_SLOTS, TCP_RESETS_RECEIVED, TCP_RESETS_SENT, TCP_RETRANSMITS,
};
use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{btf_tracepoint, map},
    maps::PerCpuArray,
    programs::BtfTracePointContext,
};

use agent_common::{CgroupSlot, CGROUP_EVENT_KEYS};
use aya_ebpf::maps::LruHashMap;

use crate::shared::{cgroup_id, container_label, field, hist_add_local, offset};

/// Per-cgroup copies of some `TCP_COUNTERS` slots, only when the agent
/// asked for container labels (see `agent_common::CgroupSlot`).
#[map]
static CGROUP_EVENTS: LruHashMap<CgroupSlot, u64> = LruHashMap::with_max_entries(CGROUP_EVENT_KEYS, 0);

/// Counts `slot` for the cgroup of socket `sk` (null for a reset sent
/// without a socket: nothing to attribute).
#[inline(always)]
fn bump_cgroup(sk: *const u8, slot: u32) {
    if !container_label() || sk.is_null() {
        return;
    }
    let cgroup: *const u8 = unsafe { field(sk, offset(|o| &o.sock_cgroup)) };
    let id = unsafe { cgroup_id(cgroup) };
    if id == 0 {
        return;
    }
    let key = CgroupSlot { cgroup: id, slot, _pad: 0 };
    match CGROUP_EVENTS.get_ptr_mut(&key) {
        // SAFETY: map values are 8-byte aligned; other CPUs add too.
        Some(c) => unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(c, 1);
        },
        None => {
            let _ = CGROUP_EVENTS.insert(&key, &1, 0);
        }
    }
}

/// TCP event counters (slots `agent_common::TCP_*`). Written by the tcp and
/// sock programs below; read by the collector.
#[map]
static TCP_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(TCP_COUNTER_SLOTS, 0);

/// Smoothed RTT (µs) of connections leaving ESTABLISHED. Written by
/// `inet_sock_set_state`; read as `ebpf_tcp_rtt_seconds`.
#[map]
static TCP_RTT: PerCpuArray<Log2Hist> = PerCpuArray::with_max_entries(1, 0);

/// Dropped skbs by drop reason. Written by `kfree_skb`; read as
/// `ebpf_skb_drops_total{reason}`.
#[map]
static SKB_DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SKB_DROP_SLOTS, 0);

const IPPROTO_TCP: u16 = 6;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;

#[inline(always)]
fn bump(slot: u32) {
    if let Some(c) = TCP_COUNTERS.get_ptr_mut(slot) {
        unsafe { *c += 1 };
    }
}

// void tcp_retransmit_skb(const struct sock *sk, const struct sk_buff *skb, int err)
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: BtfTracePointContext) -> i32 {
    bump(TCP_RETRANSMITS);
    bump_cgroup(ctx.arg(0), TCP_RETRANSMITS);
    0
}

// void tcp_send_reset(const struct sock *sk, const struct sk_buff *skb,
//                     enum sk_rst_reason reason)
#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: BtfTracePointContext) -> i32 {
    bump(TCP_RESETS_SENT);
    bump_cgroup(ctx.arg(0), TCP_RESETS_SENT);
    0
}

// void tcp_receive_reset(struct sock *sk)
#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: BtfTracePointContext) -> i32 {
    bump(TCP_RESETS_RECEIVED);
    bump_cgroup(ctx.arg(0), TCP_RESETS_RECEIVED);
    0
}

// void inet_sock_set_state(const struct sock *sk, const int oldstate,
//                          const int newstate)
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let protocol: u16 = unsafe { field(sk, offset(|o| &o.sock_protocol)) };
    if protocol != IPPROTO_TCP {
        return 0;
    }
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    match (old, new) {
        (TCP_SYN_SENT, TCP_ESTABLISHED) => bump(TCP_CONN_ACTIVE),
        (TCP_SYN_RECV, TCP_ESTABLISHED) => bump(TCP_CONN_PASSIVE),
        (TCP_SYN_SENT, TCP_CLOSE) => bump(TCP_CONN_FAILED),
        _ => {}
    }
    if old == TCP_ESTABLISHED {
        // srtt_us lives in tcp_sock, past the end of struct sock: the
        // verifier only allows that through a probe read.
        let at = unsafe { sk.add(offset(|o| &o.tcp_srtt_us) as usize) } as *const u32;
        if let Ok(srtt) = unsafe { bpf_probe_read_kernel(at) } {
            let us = (srtt >> 3) as u64;
            if us > 0 {
                if let Some(h) = TCP_RTT.get_ptr_mut(0) {
                    hist_add_local(h, us, us);
                }
            }
        }
    }
    0
}

// void kfree_skb(struct sk_buff *skb, void *location,
//                enum skb_drop_reason reason, struct sock *rx_sk)
// (5.17 and later; rx_sk since 6.11)
#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb(ctx: BtfTracePointContext) -> i32 {
    let reason: u32 = ctx.arg(2);
    dropped(if reason < SKB_DROP_SLOTS { reason } else { SKB_DROP_SLOTS - 1 })
}

// void kfree_skb(struct sk_buff *skb, void *location)
// (before 5.17: no reason to count by)
#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb_no_reason(_ctx: BtfTracePointContext) -> i32 {
    dropped(SKB_DROP_NO_REASON_SLOT)
}

#[inline(always)]
fn dropped(slot: u32) -> i32 {
    if let Some(c) = SKB_DROPS.get_ptr_mut(slot) {
        unsafe { *c += 1 };
    }
    0
}
