//! Scheduler programs: context switches per CPU.

use agent_common::CONTEXT_SWITCHES_SLOT;
use aya_ebpf::{macros::btf_tracepoint, macros::map, maps::PerCpuArray, programs::BtfTracePointContext};

/// Context switches on each CPU. Written by `sched_switch`; read by the
/// agent's ebpf collector as `ebpf_cpu_context_switches_total{cpu}`.
#[map]
static CPU_CONTEXT_SWITCHES: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

// void sched_switch(bool preempt, struct task_struct *prev,
//                   struct task_struct *next, unsigned int prev_state)
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(_ctx: BtfTracePointContext) -> i32 {
    // Per-CPU slot: no atomics needed, nothing else writes this CPU's copy.
    if let Some(count) = CPU_CONTEXT_SWITCHES.get_ptr_mut(CONTEXT_SWITCHES_SLOT) {
        unsafe { *count += 1 };
    }
    0
}
