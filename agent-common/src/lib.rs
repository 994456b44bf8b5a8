//! Types shared by Vantage's kernel programs (`agent-ebpf`) and the agent.
//!
//! Every type here is `#[repr(C)]` with no padding so that the kernel side
//! and userspace agree on the byte layout of map values. Each map's comment
//! names the program that writes it and the collector that reads it.
#![cfg_attr(not(test), no_std)]

/// Index of the only slot of the `CPU_CONTEXT_SWITCHES` per-CPU array.
///
/// Written by `sched_switch` (agent-ebpf `sched.rs`), read by the agent's
/// `sources::ebpf` collector, which exports one series per CPU.
pub const CONTEXT_SWITCHES_SLOT: u32 = 0;

/// Number of slots of a [`Log2Hist`]. Slot `i` counts values `v` with
/// `2^(i-1) < v <= 2^i` (slot 0: `v <= 1`); the last slot also takes
/// everything larger.
pub const LOG2_SLOTS: usize = 32;

/// A log2 histogram as the kernel fills it: per-slot counts (not
/// cumulative) and the sum of the raw values (nanoseconds or bytes).
///
/// Used as the value of `RUNQ_LATENCY` (per-CPU array, one entry; written by
/// `sched_switch`, values in microseconds rounded up, sum in nanoseconds),
/// `BLOCK_IO` (see [`BlockHists`]) and `TCP_RTT` (per-CPU array, one entry;
/// written by `inet_sock_set_state`, values and sum in microseconds). The
/// agent's ebpf collector turns them into cumulative Prometheus buckets.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Log2Hist {
    pub slots: [u64; LOG2_SLOTS],
    pub sum: u64,
}

/// The [`Log2Hist`] slot of a duration of `ns` nanoseconds counted in
/// microseconds rounded up: the smallest `i` with `ceil(ns / 1000) <= 2^i`,
/// that is `ns <= 1000 * 2^i`, capped at the last slot. A binary search
/// over those bounds rather than a division: the kernel programs run it on
/// every context switch, and a 64-bit divide costs more than the five
/// compares.
#[inline(always)]
pub fn us_slot_of_ns(ns: u64) -> usize {
    let mut slot = 0;
    let mut step = LOG2_SLOTS / 2;
    while step > 0 {
        if ns > 1000u64 << (slot + step - 1) {
            slot += step;
        }
        step /= 2;
    }
    slot
}

impl Log2Hist {
    /// An empty histogram.
    pub const ZERO: Log2Hist = Log2Hist { slots: [0; LOG2_SLOTS], sum: 0 };
}

/// Size of the `TASK_SLOTS` array of the run-queue latency program: a power
/// of two, indexed by `pid & (TASK_SLOTS - 1)`. 32768 is Linux's default
/// pid_max on small machines; a colliding pid overwrites the older entry and
/// that one wakeup goes unmeasured, it is never misattributed (the slot
/// keeps the pid and the reader checks it).
pub const TASK_SLOTS: u32 = 32768;

/// When a task became runnable. Value of `TASK_SLOTS` (array, shared by all
/// CPUs because a task is often woken on one CPU and run on another):
/// written by `sched_wakeup`, `sched_wakeup_new` and `sched_switch` (for a
/// preempted task), read and cleared by `sched_switch` when the task runs.
/// Never read by userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WakeSlot {
    pub pid: u32,
    pub _pad: u32,
    /// When the task became runnable (ns: the run queue's clock, or
    /// `bpf_ktime_get_ns()` on kernels without it); 0 when the slot is free.
    pub ts: u64,
}

/// Key of `BLOCK_IO` (hash, bounded): one device and operation. Written by
/// `block_rq_complete`, read by the agent's ebpf collector.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockKey {
    /// Major and first minor number of the request's disk.
    pub major: u32,
    pub minor: u32,
    /// One of the `BLOCK_OP_*` values.
    pub op: u32,
    pub _pad: u32,
}

/// Value of `BLOCK_IO_FIRST` (per-CPU array, one entry per `BLOCK_OP_*`):
/// the first disk that completed that operation on the CPU, and its
/// histograms. Written by `block_rq_complete`, which adds there without a
/// hash lookup (60-80 ns of its ~210) whenever the disk matches: on most
/// hosts one disk does nearly all the I/O. Other disks go to `BLOCK_IO`.
/// Unclaimed while `key.major` is 0 (no block device has major 0). The
/// collector adds each CPU's entries to the `BLOCK_IO` totals of their key.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockFirst {
    pub key: BlockKey,
    pub hists: BlockHists,
}

/// Entries of `BLOCK_IO_FIRST`: one per operation.
pub const BLOCK_OPS: u32 = 4;

/// Operation read in `BlockKey::op` (the kernel's REQ_OP_READ).
pub const BLOCK_OP_READ: u32 = 0;
/// REQ_OP_WRITE.
pub const BLOCK_OP_WRITE: u32 = 1;
/// REQ_OP_FLUSH.
pub const BLOCK_OP_FLUSH: u32 = 2;
/// REQ_OP_DISCARD.
pub const BLOCK_OP_DISCARD: u32 = 3;

/// Latency (microseconds, sum in nanoseconds) and size (bytes) histograms of
/// one [`BlockKey`]. Value of `BLOCK_IO` (per-CPU hash: each CPU adds to
/// its own copy without atomics; the collector sums them) and part of
/// [`BlockFirst`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockHists {
    pub latency: Log2Hist,
    pub size: Log2Hist,
}

/// Most distinct (device, operation) pairs `BLOCK_IO` holds; requests of
/// further pairs are not counted.
pub const BLOCK_KEYS: u32 = 1024;

/// Slots of `BLOCK_START` (array indexed by a hash of the request's
/// address: address and issue time; written by `block_rq_issue`, read and
/// cleared by `block_rq_complete`). A power of two. A fixed array cannot
/// leak: a lost completion's slot is simply overwritten later. Two requests
/// in flight on one slot lose one sample (the address check sees it); with
/// hundreds in flight against 16384 slots that is rare.
pub const BLOCK_INFLIGHT: u32 = 16384;

/// Slots of `TCP_COUNTERS` (per-CPU array of u64), written by the tcp and
/// sock tracepoint programs, read by the agent's ebpf collector.
pub const TCP_RETRANSMITS: u32 = 0;
/// Resets sent (`tcp_send_reset`).
pub const TCP_RESETS_SENT: u32 = 1;
/// Resets received (`tcp_receive_reset`).
pub const TCP_RESETS_RECEIVED: u32 = 2;
/// SYN_SENT -> ESTABLISHED (`inet_sock_set_state`).
pub const TCP_CONN_ACTIVE: u32 = 3;
/// SYN_RECV -> ESTABLISHED.
pub const TCP_CONN_PASSIVE: u32 = 4;
/// SYN_SENT -> CLOSE: a connect that failed (refused or timed out).
pub const TCP_CONN_FAILED: u32 = 5;
/// Number of slots of `TCP_COUNTERS`.
pub const TCP_COUNTER_SLOTS: u32 = 6;

/// Slots of `SKB_DROPS` (per-CPU array of u64 indexed by the kernel's
/// `enum skb_drop_reason`; written by `kfree_skb`, read by the collector).
/// Reasons at or above it (subsystem-specific ones carry high bits) count
/// in the last slot.
pub const SKB_DROP_SLOTS: u32 = 512;

/// Offsets into kernel structures, found by the agent in the running
/// kernel's BTF at start and handed to the programs as the global `OFFSETS`
/// (aya's `EbpfLoader::override_global`). The programs never use an offset
/// known at build time, so they stay correct on other kernels. A field the
/// kernel lacks leaves the programs that need it unloaded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOffsets {
    /// `task_struct.pid`.
    pub task_pid: u32,
    /// `request.q`.
    pub request_q: u32,
    /// `request.cmd_flags`.
    pub request_cmd_flags: u32,
    /// `request_queue.disk`.
    pub queue_disk: u32,
    /// `gendisk.major`.
    pub disk_major: u32,
    /// `gendisk.first_minor`.
    pub disk_first_minor: u32,
    /// `sock.sk_protocol` (a u16 since Linux 5.6).
    pub sock_protocol: u32,
    /// `tcp_sock.srtt_us` (smoothed RTT in microseconds << 3).
    pub tcp_srtt_us: u32,
    /// `sock.sk_cgrp_data` + `sock_cgroup_data.cgroup`: the socket's cgroup.
    pub sock_cgroup: u32,
    /// `task_struct.cgroups`.
    pub task_cgroups: u32,
    /// `css_set.dfl_cgrp`: the task's cgroup in the unified hierarchy.
    pub css_set_dfl_cgrp: u32,
    /// `cgroup.kn`.
    pub cgroup_kn: u32,
    /// `kernfs_node.id`: the cgroup id (the inode number of its directory).
    pub kernfs_id: u32,
    /// `task_struct.se` + `sched_entity.cfs_rq`: the task's CFS run queue
    /// (a member only with CONFIG_FAIR_GROUP_SCHED).
    pub task_cfs_rq: u32,
    /// `cfs_rq.rq`: the CPU's run queue.
    pub cfs_rq_rq: u32,
    /// `rq.clock`: the run queue's clock (ns), which the scheduler updates
    /// before every wakeup and switch.
    pub rq_clock: u32,
    /// `task_struct.__state` (`state` before 5.14): read by the
    /// `sched_switch` variant for kernels whose tracepoint has no
    /// prev_state argument (before 5.18).
    pub task_state: u32,
    /// `request.rq_disk`: the request's disk on kernels whose
    /// `request_queue` has no `disk` member (before 5.11).
    pub request_rq_disk: u32,
    // The security object's (`SECURITY_*` events):
    /// `task_struct.tgid`.
    pub task_tgid: u32,
    /// `task_struct.real_parent`.
    pub task_real_parent: u32,
    /// `task_struct.mm`.
    pub task_mm: u32,
    /// `task_struct.cred`: the task's current (objective) credentials.
    pub task_cred: u32,
    /// `mm_struct.arg_start` and `arg_end`: the process's arguments.
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    /// `linux_binprm.filename`.
    pub binprm_filename: u32,
    /// `cred.uid`, `euid`, `gid`, `egid` (kuid_t / kgid_t: one u32).
    pub cred_uid: u32,
    pub cred_euid: u32,
    pub cred_gid: u32,
    pub cred_egid: u32,
    /// `cred.cap_effective` (kernel_cap_t: 64 bits).
    pub cred_cap_effective: u32,
    /// `sock.__sk_common` + `sock_common.skc_family` (u16).
    pub sock_family: u32,
    /// ... + `skc_num`: the local port, host order.
    pub sock_num: u32,
    /// ... + `skc_dport`: the remote port, network order.
    pub sock_dport: u32,
    /// ... + `skc_rcv_saddr` / `skc_daddr`: IPv4 addresses.
    pub sock_rcv_saddr: u32,
    pub sock_daddr: u32,
    /// ... + `skc_v6_rcv_saddr` / `skc_v6_daddr`: IPv6 addresses.
    pub sock_v6_rcv_saddr: u32,
    pub sock_v6_daddr: u32,
}

impl KernelOffsets {
    /// Every offset 0: the build-time value of the programs' `OFFSETS`
    /// global, which the agent overrides at load time. A new field needs
    /// no edit in agent-ebpf.
    pub const ZERO: KernelOffsets = KernelOffsets {
        task_pid: 0,
        request_q: 0,
        request_cmd_flags: 0,
        queue_disk: 0,
        disk_major: 0,
        disk_first_minor: 0,
        sock_protocol: 0,
        tcp_srtt_us: 0,
        sock_cgroup: 0,
        task_cgroups: 0,
        css_set_dfl_cgrp: 0,
        cgroup_kn: 0,
        kernfs_id: 0,
        task_cfs_rq: 0,
        cfs_rq_rq: 0,
        rq_clock: 0,
        task_state: 0,
        request_rq_disk: 0,
        task_tgid: 0,
        task_real_parent: 0,
        task_mm: 0,
        task_cred: 0,
        mm_arg_start: 0,
        mm_arg_end: 0,
        binprm_filename: 0,
        cred_uid: 0,
        cred_euid: 0,
        cred_gid: 0,
        cred_egid: 0,
        cred_cap_effective: 0,
        sock_family: 0,
        sock_num: 0,
        sock_dport: 0,
        sock_rcv_saddr: 0,
        sock_daddr: 0,
        sock_v6_rcv_saddr: 0,
        sock_v6_daddr: 0,
    };
}

/// The `SKB_DROPS` slot where `kfree_skb_no_reason` (kernels whose
/// tracepoint has no drop reason, before 5.17, and no `enum
/// skb_drop_reason` either) counts every drop; the collector names it
/// `not_specified`.
pub const SKB_DROP_NO_REASON_SLOT: u32 = 0;

/// Key of `CGROUP_EVENTS` (LRU hash, atomic u64 counts): a cgroup and one of
/// the `TCP_*` counter slots. Written by the tcp programs when the agent
/// enabled container labels; read by the collector, which keeps the
/// cgroups that belong to Docker containers.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CgroupSlot {
    pub cgroup: u64,
    pub slot: u32,
    pub _pad: u32,
}

/// Most (cgroup, counter) pairs `CGROUP_EVENTS` keeps; the least recently
/// updated go first.
pub const CGROUP_EVENT_KEYS: u32 = 8192;

/// Most cgroups `CGROUP_RUNQ` (LRU hash: cgroup id -> [`Log2Hist`] of
/// run-queue latency; written by `sched_switch` when container labels are
/// on, read by the collector) keeps.
pub const CGROUP_RUNQ_KEYS: u32 = 2048;

/// Kinds of security event (`SecurityHeader::kind`), also the slots of
/// the security object's `SECURITY_SWITCHES` bitmask (bit `1 << kind`) and
/// the rows of its `SECURITY_DROPS` counters. Written by the programs of
/// agent-ebpf's `security` object, read by the agent's `[security]` source.
pub const SECURITY_EXEC: u32 = 0;
/// An outbound TCP connect (CLOSE -> SYN_SENT), with its destination.
pub const SECURITY_CONNECT: u32 = 1;
/// An accepted TCP connection (SYN_RECV -> ESTABLISHED).
pub const SECURITY_ACCEPT: u32 = 2;
/// A socket that began listening (-> LISTEN) or stopped (LISTEN -> CLOSE).
pub const SECURITY_LISTEN: u32 = 3;
/// Credentials gained: a uid, euid, gid or egid of 0 the task did not
/// have, or effective capabilities it did not have.
pub const SECURITY_CREDENTIALS: u32 = 4;
/// Number of kinds.
pub const SECURITY_KINDS: u32 = 5;

/// Rows of `SECURITY_DROPS` per kind (per-CPU array of u64, index
/// `kind * SECURITY_DROP_REASONS + reason`).
pub const SECURITY_DROP_REASONS: u32 = 2;
/// Over the per-cgroup rate limit.
pub const SECURITY_DROP_RATE_LIMIT: u32 = 0;
/// The ring buffer was full (the agent fell behind).
pub const SECURITY_DROP_RING_FULL: u32 = 1;

/// Bytes of an exec event's file name (NUL-terminated, cut to fit).
pub const SECURITY_FILENAME_LEN: usize = 256;
/// Bytes of an exec event's arguments (NUL-separated as in
/// /proc/<pid>/cmdline, cut to fit). A power of two: the programs bound
/// the read with a mask.
pub const SECURITY_ARGS_LEN: usize = 512;

/// What every security event starts with.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SecurityHeader {
    /// One of the `SECURITY_*` kinds.
    pub kind: u32,
    /// Thread group id (the process) and its parent's.
    pub pid: u32,
    pub ppid: u32,
    /// Real uid and gid of the task (for `credentials`: the old ones).
    pub uid: u32,
    pub gid: u32,
    pub _pad: u32,
    /// The cgroup (v2 id) of the task or socket.
    pub cgroup: u64,
    /// bpf_ktime_get_boot_ns(): nanoseconds since boot, suspend included.
    pub boot_ns: u64,
    /// The task's command name (NUL-padded).
    pub comm: [u8; 16],
}

/// `SECURITY_EXEC`: `sched_process_exec`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    pub header: SecurityHeader,
    /// Bytes of `args` that hold arguments; the process may have more.
    pub args_len: u32,
    /// The argument bytes the process really has (its arg_end - arg_start).
    pub args_total: u32,
    pub filename: [u8; SECURITY_FILENAME_LEN],
    pub args: [u8; SECURITY_ARGS_LEN],
}

/// `SECURITY_CONNECT`, `SECURITY_ACCEPT`, `SECURITY_LISTEN`:
/// `inet_sock_set_state`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockEvent {
    pub header: SecurityHeader,
    /// AF_INET (2) or AF_INET6 (10).
    pub family: u16,
    /// Local and remote port, host order.
    pub sport: u16,
    pub dport: u16,
    /// 1 when a listening socket closed (`SECURITY_LISTEN` only).
    pub closed: u16,
    /// Addresses in network order: IPv4 in the first 4 bytes.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// `SECURITY_CREDENTIALS`: the new credentials beside the header's old
/// uid and gid. `via` says which program saw them (`SECURITY_VIA_*`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CredEvent {
    pub header: SecurityHeader,
    /// Unknown (0) with `SECURITY_VIA_EXEC`: the old credentials are gone
    /// by the time the exec tracepoint fires.
    pub old_euid: u32,
    pub old_egid: u32,
    pub new_uid: u32,
    pub new_euid: u32,
    pub new_gid: u32,
    pub new_egid: u32,
    pub via: u32,
    pub _pad: u32,
    pub old_caps: u64,
    pub new_caps: u64,
}

/// `CredEvent::via`: fentry on `commit_creds`, every change of credentials.
pub const SECURITY_VIA_COMMIT_CREDS: u32 = 0;
/// `CredEvent::via`: `sched_process_exec`, a set-user-ID, set-group-ID or
/// file-capability executable, where fentry cannot load.
pub const SECURITY_VIA_EXEC: u32 = 1;

/// Value of the security object's `SECURITY_RATE` (LRU hash keyed by
/// cgroup id): the current one-second window of one cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RateWindow {
    /// Start of the window (ns since boot).
    pub start_ns: u64,
    /// Events let through in it.
    pub count: u64,
}

/// Most cgroups `SECURITY_RATE` tracks at once; the least recently active
/// are forgotten (and start a fresh window when they come back).
pub const SECURITY_RATE_KEYS: u32 = 4096;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain old data, repr(C), no padding, every bit pattern valid.
    unsafe impl aya::Pod for super::Log2Hist {}
    unsafe impl aya::Pod for super::WakeSlot {}
    unsafe impl aya::Pod for super::BlockKey {}
    unsafe impl aya::Pod for super::BlockHists {}
    unsafe impl aya::Pod for super::BlockFirst {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::CgroupSlot {}
    unsafe impl aya::Pod for super::RateWindow {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slot as the definition says: microseconds rounded up, then the
    /// smallest power of two at or above them.
    fn reference(ns: u64) -> usize {
        let us = ns.div_ceil(1000);
        (0..LOG2_SLOTS).find(|&i| us <= 1u64 << i).unwrap_or(LOG2_SLOTS - 1)
    }

    #[test]
    fn us_slot_of_ns_matches_the_definition_at_every_bound() {
        assert_eq!(us_slot_of_ns(0), 0);
        assert_eq!(us_slot_of_ns(1000), 0);
        assert_eq!(us_slot_of_ns(1001), 1);
        assert_eq!(us_slot_of_ns(2000), 1);
        assert_eq!(us_slot_of_ns(2001), 2);
        assert_eq!(us_slot_of_ns(u64::MAX), LOG2_SLOTS - 1);
        for i in 0..40u32 {
            let bound = 1000u64 << i;
            for ns in [bound - 1, bound, bound + 1, bound + 999] {
                assert_eq!(us_slot_of_ns(ns), reference(ns), "{ns} ns");
            }
        }
        // And a spread of values in between.
        let mut x = 1u64;
        for _ in 0..100_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let ns = x >> (x % 40);
            assert_eq!(us_slot_of_ns(ns), reference(ns), "{ns} ns");
        }
    }
}
