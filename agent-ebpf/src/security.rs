//! Vantage's security programs: a second object beside `agent-ebpf`,
//! loaded only when `[security]` is on, so that hosts without it create
//! none of its maps. Unlike the metric programs these send one record per
//! event, through a ring buffer the agent's `[security]` source reads:
//!
//! - `security_exec` (`sched_process_exec`): what ran, with its arguments;
//! - `security_sock` (`inet_sock_set_state`): connects, accepted
//!   connections, sockets starting and stopping to listen;
//! - `security_creds` (fentry `commit_creds`): credentials gained;
//! - `security_exec_creds` (`sched_process_exec`): credentials gained by
//!   executing a set-user-ID, set-group-ID or file-capability program, for
//!   kernels where fentry cannot load (the agent attaches it only then).
//!
//! Every event passes two filters in the kernel first: a per-kind switch
//! (`SECURITY_SWITCHES`) and a per-cgroup rate limit (`SECURITY_RATE_LIMIT`
//! events per second). What either filter or a full ring buffer stops is
//! counted in `SECURITY_DROPS`, by kind and reason: a fork storm costs a
//! bounded amount and is never silently lost.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

// The metric programs' histogram helpers are unused here.
#[cfg(target_arch = "bpf")]
#[allow(dead_code)]
mod shared;

#[cfg(target_arch = "bpf")]
mod programs {
    use agent_common::{
        CredEvent, ExecEvent, RateWindow, SecurityHeader, SockEvent, SECURITY_ACCEPT, SECURITY_ARGS_LEN,
        SECURITY_CONNECT, SECURITY_CREDENTIALS, SECURITY_DROP_RATE_LIMIT, SECURITY_DROP_REASONS,
        SECURITY_DROP_RING_FULL, SECURITY_EXEC, SECURITY_KINDS, SECURITY_LISTEN, SECURITY_RATE_KEYS,
        SECURITY_VIA_COMMIT_CREDS, SECURITY_VIA_EXEC,
    };
    use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
    use aya_ebpf::helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_current_uid_gid, bpf_ktime_get_boot_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
        bpf_probe_read_user_buf,
    };
    use aya_ebpf::macros::{btf_tracepoint, fentry, map};
    use aya_ebpf::maps::{ring_buf::RingBufEntry, LruHashMap, PerCpuArray, RingBuf};
    use aya_ebpf::programs::{BtfTracePointContext, FEntryContext};
    use core::intrinsics::{atomic_xadd, AtomicOrdering::Relaxed};

    use crate::shared::{cgroup_id, field, offset};

    /// Bit `1 << kind` set for every kind the agent wants.
    #[no_mangle]
    static SECURITY_SWITCHES: u32 = 0;

    /// Events per second one cgroup may send; 0 for no limit.
    #[no_mangle]
    static SECURITY_RATE_LIMIT: u32 = 0;

    /// Bytes waiting in the ring buffer at which a submit wakes the agent.
    /// Below it nothing wakes it: the agent drains on a short timer too. A
    /// wakeup per event cost a self-interrupt each (about 5 us an exec on
    /// this project's virtual CI host, twenty times the program's own work).
    #[no_mangle]
    static SECURITY_WAKE_BYTES: u32 = 0;

    /// Nonzero when `sock.sk_cgrp_data.cgroup` exists (5.15 and later):
    /// an accepted connection is then attributed to its socket's cgroup.
    #[no_mangle]
    static SOCK_CGROUP: u32 = 0;

    /// The events, read by the agent's `[security]` source. The agent
    /// sets the size (`[security] ring_buffer_size`) at load time.
    #[map]
    static SECURITY_EVENTS: RingBuf = RingBuf::with_byte_size(512 * 1024, 0);

    /// The current one-second window of each cgroup.
    #[map]
    static SECURITY_RATE: LruHashMap<u64, RateWindow> = LruHashMap::with_max_entries(SECURITY_RATE_KEYS, 0);

    /// Events not sent, by kind and reason (`agent_common::SECURITY_DROP_*`).
    #[map]
    static SECURITY_DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SECURITY_KINDS * SECURITY_DROP_REASONS, 0);

    const IPPROTO_TCP: u16 = 6;
    const AF_INET: u16 = 2;
    const AF_INET6: u16 = 10;
    const TCP_ESTABLISHED: i32 = 1;
    const TCP_SYN_SENT: i32 = 2;
    const TCP_SYN_RECV: i32 = 3;
    const TCP_CLOSE: i32 = 7;
    const TCP_LISTEN: i32 = 10;
    const SECOND_NS: u64 = 1_000_000_000;

    #[inline(always)]
    fn global(g: &'static u32) -> u32 {
        // SAFETY: a static; volatile only defeats constant folding.
        unsafe { core::ptr::read_volatile(g) }
    }

    #[inline(always)]
    fn wanted(kind: u32) -> bool {
        global(&SECURITY_SWITCHES) & (1 << kind) != 0
    }

    #[inline(always)]
    fn dropped(kind: u32, reason: u32) {
        if let Some(c) = SECURITY_DROPS.get_ptr_mut(kind * SECURITY_DROP_REASONS + reason) {
            unsafe { *c += 1 };
        }
    }

    /// Whether `cgroup` may send one more event at `now`; counts it as
    /// dropped when not. Two CPUs may both open a new window at once and
    /// let a few more through: the limit bounds the cost, every event is
    /// either sent or counted.
    #[inline(always)]
    fn admit(kind: u32, cgroup: u64, now: u64) -> bool {
        let limit = global(&SECURITY_RATE_LIMIT) as u64;
        if limit == 0 {
            return true;
        }
        match SECURITY_RATE.get_ptr_mut(&cgroup) {
            Some(w) => unsafe {
                if now.wrapping_sub((*w).start_ns) >= SECOND_NS {
                    (*w).start_ns = now;
                    (*w).count = 1;
                    return true;
                }
                if (*w).count >= limit {
                    dropped(kind, SECURITY_DROP_RATE_LIMIT);
                    return false;
                }
                atomic_xadd::<u64, u64, { Relaxed }>(&mut (*w).count, 1);
                true
            },
            None => {
                let _ = SECURITY_RATE.insert(&cgroup, &RateWindow { start_ns: now, count: 1 }, 0);
                true
            }
        }
    }

    /// Commits a reserved record, waking the agent only once enough
    /// waits.
    #[inline(always)]
    fn submit<T>(entry: RingBufEntry<T>) {
        let waiting = SECURITY_EVENTS.query(BPF_RB_AVAIL_DATA as u64);
        let flags = if waiting >= global(&SECURITY_WAKE_BYTES) as u64 { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
        entry.submit(flags as u64);
    }

    /// Fills what every event carries from the current task.
    #[inline(always)]
    fn header(h: &mut SecurityHeader, kind: u32, cgroup: u64, now: u64) {
        let ids = bpf_get_current_uid_gid();
        h.kind = kind;
        h.pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        h.ppid = 0;
        h.uid = ids as u32;
        h.gid = (ids >> 32) as u32;
        h._pad = 0;
        h.cgroup = cgroup;
        h.boot_ns = now;
        h.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }

    // void sched_process_exec(struct task_struct *p, pid_t old_pid,
    //                         struct linux_binprm *bprm)
    #[btf_tracepoint(function = "sched_process_exec")]
    pub fn security_exec(ctx: BtfTracePointContext) -> i32 {
        if !wanted(SECURITY_EXEC) {
            return 0;
        }
        let cgroup = unsafe { bpf_get_current_cgroup_id() };
        let now = unsafe { bpf_ktime_get_boot_ns() };
        if !admit(SECURITY_EXEC, cgroup, now) {
            return 0;
        }
        let Some(mut entry) = SECURITY_EVENTS.reserve::<ExecEvent>(0) else {
            dropped(SECURITY_EXEC, SECURITY_DROP_RING_FULL);
            return 0;
        };
        // SAFETY: the reserved record is ours until submitted; every field
        // the agent reads is written below.
        let e = unsafe { &mut *entry.as_mut_ptr() };
        header(&mut e.header, SECURITY_EXEC, cgroup, now);
        let task: *const u8 = ctx.arg(0);
        let bprm: *const u8 = ctx.arg(2);
        unsafe {
            e.header.ppid = parent_tgid(task);
            let filename: *const u8 = field(bprm, offset(|o| &o.binprm_filename));
            if bpf_probe_read_kernel_str_bytes(filename, &mut e.filename).is_err() {
                e.filename[0] = 0;
            }
            e.args_len = 0;
            e.args_total = 0;
            let mm: *const u8 = field(task, offset(|o| &o.task_mm));
            if !mm.is_null() {
                let start: u64 = field(mm, offset(|o| &o.mm_arg_start));
                let end: u64 = field(mm, offset(|o| &o.mm_arg_end));
                let total = end.wrapping_sub(start);
                if end > start && total < u32::MAX as u64 {
                    e.args_total = total as u32;
                    // A constant size for the full buffer, a masked one
                    // below it: the verifier must see the length bounded.
                    let read = if total >= SECURITY_ARGS_LEN as u64 {
                        bpf_probe_read_user_buf(start as *const u8, &mut e.args).map(|_| SECURITY_ARGS_LEN)
                    } else {
                        let n = (total as usize) & (SECURITY_ARGS_LEN - 1);
                        bpf_probe_read_user_buf(start as *const u8, &mut e.args[..n]).map(|_| n)
                    };
                    e.args_len = read.unwrap_or(0) as u32;
                }
            }
        }
        submit(entry);
        0
    }

    // void inet_sock_set_state(const struct sock *sk, const int oldstate,
    //                          const int newstate)
    #[btf_tracepoint(function = "inet_sock_set_state")]
    pub fn security_sock(ctx: BtfTracePointContext) -> i32 {
        let sk: *const u8 = ctx.arg(0);
        let protocol: u16 = unsafe { field(sk, offset(|o| &o.sock_protocol)) };
        if protocol != IPPROTO_TCP {
            return 0;
        }
        let old: i32 = ctx.arg(1);
        let new: i32 = ctx.arg(2);
        let (kind, closed) = match (old, new) {
            (TCP_CLOSE, TCP_SYN_SENT) => (SECURITY_CONNECT, 0),
            (TCP_SYN_RECV, TCP_ESTABLISHED) => (SECURITY_ACCEPT, 0),
            (_, TCP_LISTEN) => (SECURITY_LISTEN, 0),
            (TCP_LISTEN, TCP_CLOSE) => (SECURITY_LISTEN, 1),
            _ => return 0,
        };
        if !wanted(kind) {
            return 0;
        }
        // A connect and a listen run in the calling task; an accepted
        // connection completes in softirq, on whatever task ran: only its
        // socket's cgroup (where the kernel has it) says whose it is.
        let accepted = kind == SECURITY_ACCEPT;
        let cgroup = if !accepted {
            unsafe { bpf_get_current_cgroup_id() }
        } else if global(&SOCK_CGROUP) != 0 {
            unsafe { cgroup_id(field(sk, offset(|o| &o.sock_cgroup))) }
        } else {
            0
        };
        let now = unsafe { bpf_ktime_get_boot_ns() };
        if !admit(kind, cgroup, now) {
            return 0;
        }
        let Some(mut entry) = SECURITY_EVENTS.reserve::<SockEvent>(0) else {
            dropped(kind, SECURITY_DROP_RING_FULL);
            return 0;
        };
        // SAFETY: as in security_exec.
        let e = unsafe { &mut *entry.as_mut_ptr() };
        header(&mut e.header, kind, cgroup, now);
        if accepted {
            e.header.pid = 0;
            e.header.uid = 0;
            e.header.gid = 0;
            e.header.comm = [0; 16];
        }
        unsafe {
            let family: u16 = field(sk, offset(|o| &o.sock_family));
            e.family = family;
            e.sport = field(sk, offset(|o| &o.sock_num));
            e.dport = u16::from_be(field(sk, offset(|o| &o.sock_dport)));
            e.closed = closed;
            e.saddr = [0; 16];
            e.daddr = [0; 16];
            if family == AF_INET {
                let s: [u8; 4] = field(sk, offset(|o| &o.sock_rcv_saddr));
                let d: [u8; 4] = field(sk, offset(|o| &o.sock_daddr));
                e.saddr[..4].copy_from_slice(&s);
                e.daddr[..4].copy_from_slice(&d);
            } else if family == AF_INET6 {
                let s = sk.add(offset(|o| &o.sock_v6_rcv_saddr) as usize) as *const [u8; 16];
                let d = sk.add(offset(|o| &o.sock_v6_daddr) as usize) as *const [u8; 16];
                e.saddr = bpf_probe_read_kernel(s).unwrap_or([0; 16]);
                e.daddr = bpf_probe_read_kernel(d).unwrap_or([0; 16]);
            }
        }
        submit(entry);
        0
    }

    /// The credential words the event compares, read from a `struct cred`
    /// the program reaches by address only (the current task's).
    #[inline(always)]
    unsafe fn read_u32(base: *const u8, off: u32) -> u32 {
        bpf_probe_read_kernel(base.add(off as usize) as *const u32).unwrap_or(u32::MAX)
    }

    /// The ids and effective capabilities of a `struct cred`.
    #[derive(Clone, Copy)]
    struct Creds {
        uid: u32,
        euid: u32,
        gid: u32,
        egid: u32,
        caps: u64,
    }

    /// Reads `cred` by probe reads: it is reached through the current task,
    /// not always through a BTF-typed pointer. `missing_caps` stands for
    /// capabilities that cannot be read (so that none count as gained).
    #[inline(always)]
    unsafe fn read_creds(cred: *const u8, missing_caps: u64) -> Creds {
        // kernel_cap_t was two u32 before 6.3: one 64-bit probe read
        // rather than a BTF-checked load across its array.
        let caps = bpf_probe_read_kernel(cred.add(offset(|o| &o.cred_cap_effective) as usize) as *const u64)
            .unwrap_or(missing_caps);
        Creds {
            uid: read_u32(cred, offset(|o| &o.cred_uid)),
            euid: read_u32(cred, offset(|o| &o.cred_euid)),
            gid: read_u32(cred, offset(|o| &o.cred_gid)),
            egid: read_u32(cred, offset(|o| &o.cred_egid)),
            caps,
        }
    }

    /// The parent's process id of a BTF-typed task, 0 without one.
    #[inline(always)]
    unsafe fn parent_tgid(task: *const u8) -> u32 {
        let parent: *const u8 = field(task, offset(|o| &o.task_real_parent));
        if parent.is_null() {
            return 0;
        }
        field::<i32>(parent, offset(|o| &o.task_tgid)) as u32
    }

    /// Sends a credentials event past the rate limit: `old` as far as
    /// `via` knows it, the header's uid and gid being old ones.
    #[inline(always)]
    unsafe fn send_creds(old: Creds, new: Creds, via: u32, ppid: u32) {
        let cgroup = bpf_get_current_cgroup_id();
        let now = bpf_ktime_get_boot_ns();
        if !admit(SECURITY_CREDENTIALS, cgroup, now) {
            return;
        }
        let Some(mut entry) = SECURITY_EVENTS.reserve::<CredEvent>(0) else {
            dropped(SECURITY_CREDENTIALS, SECURITY_DROP_RING_FULL);
            return;
        };
        let e = &mut *entry.as_mut_ptr();
        header(&mut e.header, SECURITY_CREDENTIALS, cgroup, now);
        e.header.ppid = ppid;
        e.header.uid = old.uid;
        e.header.gid = old.gid;
        e.old_euid = old.euid;
        e.old_egid = old.egid;
        e.new_uid = new.uid;
        e.new_euid = new.euid;
        e.new_gid = new.gid;
        e.new_egid = new.egid;
        e.via = via;
        e._pad = 0;
        e.old_caps = old.caps;
        e.new_caps = new.caps;
        submit(entry);
    }

    // int commit_creds(struct cred *new)
    #[fentry(function = "commit_creds")]
    pub fn security_creds(ctx: FEntryContext) -> u32 {
        if !wanted(SECURITY_CREDENTIALS) {
            return 0;
        }
        let new: *const u8 = ctx.arg(0);
        unsafe {
            let new = read_creds(new, 0);
            // The old credentials are the task's, not yet replaced. Through
            // bpf_get_current_task (5.10 has no _btf variant), so by probe
            // reads.
            let task = bpf_get_current_task() as *const u8;
            let old: *const u8 = bpf_probe_read_kernel(task.add(offset(|o| &o.task_cred) as usize) as *const *const u8)
                .unwrap_or(core::ptr::null());
            if old.is_null() {
                return 0;
            }
            let old = read_creds(old, u64::MAX);
            let to_root = |new: u32, old: u32| new == 0 && old != 0;
            let gained = to_root(new.uid, old.uid)
                || to_root(new.euid, old.euid)
                || to_root(new.gid, old.gid)
                || to_root(new.egid, old.egid)
                || new.caps & !old.caps != 0;
            if gained {
                send_creds(old, new, SECURITY_VIA_COMMIT_CREDS, 0);
            }
        }
        0
    }

    // void sched_process_exec(struct task_struct *p, pid_t old_pid,
    //                         struct linux_binprm *bprm)
    //
    // After exec the old credentials are gone, but exec keeps the real ids:
    // an effective id of 0 beside a real one that is not, or effective
    // capabilities for a task whose real uid is not root, came from the
    // executable's set-ID bits or file capabilities.
    #[btf_tracepoint(function = "sched_process_exec")]
    pub fn security_exec_creds(ctx: BtfTracePointContext) -> i32 {
        if !wanted(SECURITY_CREDENTIALS) {
            return 0;
        }
        let task: *const u8 = ctx.arg(0);
        unsafe {
            let cred: *const u8 = field(task, offset(|o| &o.task_cred));
            if cred.is_null() {
                return 0;
            }
            let new = read_creds(cred, 0);
            let gained =
                (new.euid == 0 && new.uid != 0) || (new.egid == 0 && new.gid != 0) || (new.uid != 0 && new.caps != 0);
            if gained {
                // Unknown old effective ids and capabilities: zeros.
                let old = Creds { uid: new.uid, euid: 0, gid: new.gid, egid: 0, caps: 0 };
                send_creds(old, new, SECURITY_VIA_EXEC, parent_tgid(task));
            }
        }
        0
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a real panic.
    loop {}
}

/// BTF tracepoints, fentry and the helpers they use are GPL-only.
#[cfg(target_arch = "bpf")]
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("agent-security only runs in the kernel: build it with `cargo xtask build-ebpf`");
}
