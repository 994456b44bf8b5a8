//! Reads the scheduler maps: context switches per CPU and the run-queue
//! latency histogram (merged over CPUs).

use agent_common::{Log2Hist, CONTEXT_SWITCHES_SLOT};
use aya::maps::PerCpuArray;
use aya::Ebpf;

use super::{histogram, merge, push_histogram, LATENCY_NS};
use crate::sample::{Family, MetricType};

/// Adds `ebpf_cpu_context_switches_total` and `ebpf_runqueue_latency_seconds`.
pub(super) fn collect(ebpf: &Ebpf, now_ms: i64, out: &mut Vec<Family>) -> Result<(), String> {
    if let Some(map) = ebpf.map("CPU_CONTEXT_SWITCHES") {
        let array: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(|e| format!("CPU_CONTEXT_SWITCHES: {e}"))?;
        let values =
            array.get(&CONTEXT_SWITCHES_SLOT, 0).map_err(|e| format!("CPU_CONTEXT_SWITCHES: {e}"))?;
        let mut f = Family::new(
            "ebpf_cpu_context_switches_total",
            MetricType::Counter,
            "Context switches per CPU, counted by the sched_switch tracepoint.",
        );
        let cpus = aya::util::online_cpus().map_err(|(_, e)| format!("online cpus: {e}"))?;
        for cpu in cpus {
            if let Some(v) = values.get(cpu as usize) {
                f.push(&[("cpu", &cpu.to_string())], *v as f64, now_ms);
            }
        }
        out.push(f);
    }
    if let Some(map) = ebpf.map("RUNQ_LATENCY") {
        let array: PerCpuArray<_, Log2Hist> = PerCpuArray::try_from(map).map_err(|e| format!("RUNQ_LATENCY: {e}"))?;
        let values = array.get(&0, 0).map_err(|e| format!("RUNQ_LATENCY: {e}"))?;
        let mut total = Log2Hist::ZERO;
        for v in values.iter() {
            merge(&mut total, v);
        }
        let mut f = histogram(
            "ebpf_runqueue_latency_seconds",
            "Time tasks waited in a run queue, from wakeup (or preemption) to running.",
        );
        push_histogram(&mut f, &[], &total, &LATENCY_NS, now_ms);
        out.push(f);
    }
    Ok(())
}
