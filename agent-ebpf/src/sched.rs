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

use crate::shared::{cgroup_id, container_label, field, hist_add_atomic, hist_add_local, offset};

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
    hist_add_atomic(h, delta.div_ceil(1000), delta);
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

/// TASK_RUNNING: a task switched out in this state was preempted and waits
/// in the run queue again.
const TASK_RUNNING: u32 = 0;

#[inline(always)]
fn mark_runnable(task: *const u8, now: u64) {
    let pid: i32 = unsafe { field(task, offset(|o| &o.task_pid)) };
    if pid <= 0 {
        return;
    }
    if let Some(slot) = TASK_SLOTS_MAP.get_ptr_mut(pid as u32 & (TASK_SLOTS - 1)) {
        unsafe {
            *slot = WakeSlot {
                pid: pid as u32,
                _pad: 0,
                ts: now,
            }
        };
    }
}

// void sched_wakeup(struct task_struct *p)
#[btf_tracepoint(function = "sched_wakeup")]
pub fn sched_wakeup(ctx: BtfTracePointContext) -> i32 {
    mark_runnable(ctx.arg(0), unsafe { bpf_ktime_get_ns() });
    0
}

// void sched_wakeup_new(struct task_struct *p)
#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn sched_wakeup_new(ctx: BtfTracePointContext) -> i32 {
    mark_runnable(ctx.arg(0), unsafe { bpf_ktime_get_ns() });
    0
}

// void sched_switch(bool preempt, struct task_struct *prev,
//                   struct task_struct *next, unsigned int prev_state)
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    // Per-CPU slot: no atomics needed, nothing else writes this CPU's copy.
    if let Some(count) = CPU_CONTEXT_SWITCHES.get_ptr_mut(CONTEXT_SWITCHES_SLOT) {
        unsafe { *count += 1 };
    }
    if unsafe { core::ptr::read_volatile(&RUNQ_ENABLED) } == 0 {
        return 0;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let prev_state: u32 = ctx.arg(3);
    if prev_state == TASK_RUNNING {
        mark_runnable(ctx.arg(1), now);
    }
    let next: *const u8 = ctx.arg(2);
    let pid: i32 = unsafe { field(next, offset(|o| &o.task_pid)) };
    if pid <= 0 {
        return 0;
    }
    let Some(slot) = TASK_SLOTS_MAP.get_ptr_mut(pid as u32 & (TASK_SLOTS - 1)) else {
        return 0;
    };
    let slot = unsafe { &mut *slot };
    if slot.pid != pid as u32 || slot.ts == 0 || slot.ts > now {
        return 0;
    }
    let delta = now - slot.ts;
    slot.ts = 0;
    if let Some(h) = RUNQ_LATENCY.get_ptr_mut(0) {
        hist_add_local(h, delta.div_ceil(1000), delta);
    }
    if container_label() {
        add_cgroup_latency(next, delta);
    }
    0
}
