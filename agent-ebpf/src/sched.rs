//! Scheduler programs: context switches per CPU and run-queue latency (the
//! time from a task becoming runnable to it running), as runqlat measures
//! it, but with a fixed array of (pid, timestamp) slots instead of a hash
//! map: hash updates are what makes runqlat cost ~500 ns per event.

use agent_common::{Log2Hist, WakeSlot, CONTEXT_SWITCHES_SLOT, TASK_SLOTS};
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map},
    maps::{Array, PerCpuArray},
    programs::BtfTracePointContext,
};

use agent_common::CGROUP_RUNQ_KEYS;
use aya_ebpf::maps::LruHashMap;

use crate::shared::{cgroup_id, container_label, field, hist_add_ns_atomic, hist_add_ns_local, offset};

/// Run-queue latency per cgroup, only with container labels on. Written by
/// `sched_switch`; read by the collector for containers' cgroups.
#[map]
static CGROUP_RUNQ: LruHashMap<u64, Log2Hist> = LruHashMap::with_max_entries(CGROUP_RUNQ_KEYS, 0);

/// First value of a `CGROUP_RUNQ` entry (too big for the BPF stack).
static ZERO_HIST: Log2Hist = Log2Hist::ZERO;

/// Adds a run-queue latency to the histogram of `task`'s cgroup.
#[inline(always)]
fn add_cgroup_latency(task: *const u8, delta: u64) {
    let id = unsafe {
        let css_set: *const u8 = field(task, offset(|o| &o.task_cgroups));
        if css_set.is_null() {
            return;
        }
        cgroup_id(field(css_set, offset(|o| &o.css_set_dfl_cgrp)))
    };
    if id == 0 {
        return;
    }
    let h = match CGROUP_RUNQ.get_ptr_mut(&id) {
        Some(h) => h,
        None => {
            let _ = CGROUP_RUNQ.insert(&id, &ZERO_HIST, 1);
            let Some(h) = CGROUP_RUNQ.get_ptr_mut(&id) else {
                return;
            };
            h
        }
    };
    hist_add_ns_atomic(h, delta);
}

/// Context switches on each CPU. Written by `sched_switch`; read by the
/// agent's ebpf collector as `ebpf_cpu_context_switches_total{cpu}`.
#[map]
static CPU_CONTEXT_SWITCHES: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// When each task became runnable, indexed by pid bits (see
/// `agent_common::WakeSlot`).
#[map]
static TASK_SLOTS_MAP: Array<WakeSlot> = Array::with_max_entries(TASK_SLOTS, 0);

/// Run-queue latency per CPU. Written by `sched_switch`; read by the
/// collector as `ebpf_runqueue_latency_seconds`.
#[map]
static RUNQ_LATENCY: PerCpuArray<Log2Hist> = PerCpuArray::with_max_entries(1, 0);

/// Nonzero when the agent attached the wakeup programs: only then does
/// `sched_switch` measure run-queue latency.
#[no_mangle]
static RUNQ_ENABLED: u32 = 0;

/// Nonzero when the agent found the members that lead from a task to its
/// run queue's clock (`task->se.cfs_rq->rq->clock`).
#[no_mangle]
static RQ_CLOCK: u32 = 0;

/// The time on `task`'s CPU in ns, 0 if unknown. The run queue's clock
/// where the kernel has the members: the scheduler updated it just before
/// each of these tracepoints (it is the clock of the kernel's own run_delay
/// accounting), and three loads cost a few ns where bpf_ktime_get_ns, a
/// helper call, was a third of each program. Otherwise the helper. Which
/// one is fixed at load time, so a wait's start and end always come from
/// the same clock.
#[inline(always)]
fn now(task: *const u8) -> u64 {
    // SAFETY: a static; volatile only defeats constant folding.
    if unsafe { core::ptr::read_volatile(&RQ_CLOCK) } == 0 {
        return unsafe { bpf_ktime_get_ns() };
    }
    unsafe {
        let cfs_rq: *const u8 = field(task, offset(|o| &o.task_cfs_rq));
        if cfs_rq.is_null() {
            return 0;
        }
        let rq: *const u8 = field(cfs_rq, offset(|o| &o.cfs_rq_rq));
        if rq.is_null() {
            return 0;
        }
        field(rq, offset(|o| &o.rq_clock))
    }
}

/// TASK_RUNNING: a task switched out in this state was preempted and waits
/// in the run queue again.
const TASK_RUNNING: u32 = 0;

/// The pid of `task` (0 for the idle tasks, which never wait).
#[inline(always)]
fn pid_of(task: *const u8) -> u32 {
    let pid: i32 = unsafe { field(task, offset(|o| &o.task_pid)) };
    if pid > 0 {
        pid as u32
    } else {
        0
    }
}

/// Records that `pid` (nonzero) became runnable at `now`.
#[inline(always)]
fn mark_runnable(pid: u32, now: u64) {
    if let Some(slot) = TASK_SLOTS_MAP.get_ptr_mut(pid & (TASK_SLOTS - 1)) {
        unsafe { *slot = WakeSlot { pid, _pad: 0, ts: now } };
    }
}

/// A wakeup of `task`: it waits in the run queue from now.
#[inline(always)]
fn woken(task: *const u8) {
    let pid = pid_of(task);
    if pid != 0 {
        mark_runnable(pid, now(task));
    }
}

// void sched_wakeup(struct task_struct *p)
#[btf_tracepoint(function = "sched_wakeup")]
pub fn sched_wakeup(ctx: BtfTracePointContext) -> i32 {
    woken(ctx.arg(0));
    0
}

// void sched_wakeup_new(struct task_struct *p)
#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn sched_wakeup_new(ctx: BtfTracePointContext) -> i32 {
    woken(ctx.arg(0));
    0
}

// void sched_switch(bool preempt, struct task_struct *prev,
//                   struct task_struct *next, unsigned int prev_state)
// (5.18 and later)
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    switched(ctx.arg(1), ctx.arg(2), || ctx.arg(3))
}

// void sched_switch(bool preempt, struct task_struct *prev,
//                   struct task_struct *next)
// (before 5.18): prev's state is read from the task, where the newer
// kernels read it for the tracepoint.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_no_state(ctx: BtfTracePointContext) -> i32 {
    let prev: *const u8 = ctx.arg(1);
    switched(prev, ctx.arg(2), || unsafe { field::<u32>(prev, offset(|o| &o.task_state)) })
}

/// A switch from `prev` to `next`; `prev_state` is only read when the run
/// queue latency is on.
#[inline(always)]
fn switched(prev: *const u8, next: *const u8, prev_state: impl Fn() -> u32) -> i32 {
    // Per-CPU slot: no atomics needed, nothing else writes this CPU's copy.
    if let Some(count) = CPU_CONTEXT_SWITCHES.get_ptr_mut(CONTEXT_SWITCHES_SLOT) {
        unsafe { *count += 1 };
    }
    if unsafe { core::ptr::read_volatile(&RUNQ_ENABLED) } == 0 {
        return 0;
    }
    // A preempted task waits in the run queue again from now.
    let requeued = if prev_state() == TASK_RUNNING { pid_of(prev) } else { 0 };
    // The task switched in, if its wakeup was seen: its wait ends now.
    let pid = pid_of(next);
    let waited = if pid == 0 {
        None
    } else {
        TASK_SLOTS_MAP
            .get_ptr_mut(pid & (TASK_SLOTS - 1))
            .filter(|&slot| unsafe { (*slot).pid == pid && (*slot).ts != 0 })
    };
    // Nothing to time on switches between the idle task and a task going
    // to sleep: the clock is not read then.
    if requeued == 0 && waited.is_none() {
        return 0;
    }
    // prev and next are both on this CPU: one clock for both.
    let now = now(next);
    let start = match waited {
        Some(slot) => unsafe {
            let start = (*slot).ts;
            (*slot).ts = 0;
            start
        },
        None => 0,
    };
    // After the read: prev's and next's pids may share a slot.
    if requeued != 0 {
        mark_runnable(requeued, now);
    }
    if start == 0 || start > now {
        return 0;
    }
    let delta = now - start;
    if let Some(h) = RUNQ_LATENCY.get_ptr_mut(0) {
        hist_add_ns_local(h, delta);
    }
    if container_label() {
        add_cgroup_latency(next, delta);
    }
    0
}
