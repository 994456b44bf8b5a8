//! Reads the scheduler maps: context switches per CPU and the run-queue
//! latency histogram (merged over CPUs).

use std::collections::BTreeMap;

use agent_common::{Log2Hist, CONTEXT_SWITCHES_SLOT};
use aya::maps::{HashMap, PerCpuArray};
use aya::Ebpf;

use super::programs::Reader;
use super::{histogram, merge, push_histogram, subtract, Names, LATENCY_NS};
use crate::sample::{Family, MetricType};

/// `ebpf_cpu_context_switches_total{cpu}`.
pub(super) static CONTEXT_SWITCHES: Reader = Reader { maps: &["CPU_CONTEXT_SWITCHES"], read: context_switches };

/// `ebpf_runqueue_latency_seconds`, split by container when labels are on.
pub(super) static RUNQ_LATENCY: Reader = Reader { maps: &["RUNQ_LATENCY", "CGROUP_RUNQ"], read: runq_latency };

fn context_switches(ebpf: &Ebpf, _: &mut Names, now_ms: i64, out: &mut Vec<Family>) -> Result<(), String> {
    if let Some(map) = ebpf.map("CPU_CONTEXT_SWITCHES") {
        let array: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|e| format!("CPU_CONTEXT_SWITCHES: {e}"))?;
        let values = array.get(&CONTEXT_SWITCHES_SLOT, 0).map_err(|e| format!("CPU_CONTEXT_SWITCHES: {e}"))?;
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
    Ok(())
}

/// With container labels, run-queue latency splits into one histogram per
/// container plus the rest (no `container` label), which sum to the total.
fn runq_latency(ebpf: &Ebpf, names: &mut Names, now_ms: i64, out: &mut Vec<Family>) -> Result<(), String> {
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
        if let (Some(containers), Some(map)) = (&names.containers, ebpf.map("CGROUP_RUNQ")) {
            let map: HashMap<_, u64, Log2Hist> = HashMap::try_from(map).map_err(|e| format!("CGROUP_RUNQ: {e}"))?;
            let mut by_name: BTreeMap<&str, Log2Hist> = BTreeMap::new();
            for (cgroup, h) in map.iter().filter_map(Result::ok) {
                if let Some(name) = containers.get(cgroup) {
                    merge(by_name.entry(name).or_insert(Log2Hist::ZERO), &h);
                }
            }
            for (name, h) in &by_name {
                // A container's entry is updated after the total, so it can
                // be a hair ahead at read time; never let the rest go below 0.
                subtract(&mut total, h);
                push_histogram(&mut f, &[("container", name)], h, &LATENCY_NS, now_ms);
            }
        }
        push_histogram(&mut f, &[], &total, &LATENCY_NS, now_ms);
        out.push(f);
    }
    Ok(())
}
