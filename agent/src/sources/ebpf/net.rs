//! Reads the TCP counters, the RTT histogram and skb drops by reason.

use std::collections::BTreeMap;

use agent_common::{
    CgroupSlot, Log2Hist, SKB_DROP_NO_REASON_SLOT, SKB_DROP_SLOTS, TCP_CONN_ACTIVE, TCP_CONN_FAILED, TCP_CONN_PASSIVE,
    TCP_COUNTER_SLOTS, TCP_RESETS_RECEIVED, TCP_RESETS_SENT, TCP_RETRANSMITS,
};
use aya::maps::{HashMap, PerCpuArray};
use aya::Ebpf;

use super::btf::KernelBtf;
use super::containers::Containers;
use super::programs::Reader;
use super::{histogram, merge, push_histogram, Buckets, Names};
use crate::sample::{Family, MetricType};

/// Microsecond slots from 1 µs to about 16.8 s; the kernel sums in µs.
const RTT_US: Buckets = Buckets { unit: 1e-6, first: 0, last: 24, sum_unit: 1e-6 };

/// Label values for `enum skb_drop_reason`, indexed by value: the names
/// lowercased without the `SKB_DROP_REASON_` prefix. Values without a name
/// (and the catch-all last slot) read as "other".
pub(super) fn drop_reason_names(btf: &KernelBtf) -> Vec<String> {
    let mut names = vec![String::new(); SKB_DROP_SLOTS as usize];
    for (name, value) in btf.enum_values("skb_drop_reason") {
        let Some(short) = name.strip_prefix("SKB_DROP_REASON_") else {
            continue;
        };
        if (0..SKB_DROP_SLOTS as i64 - 1).contains(&value) {
            names[value as usize] = short.to_ascii_lowercase();
        }
    }
    for n in names.iter_mut().filter(|n| n.is_empty()) {
        *n = "other".into();
    }
    names
}

/// Sums a per-CPU u64 array slot by slot.
fn per_cpu_sums(ebpf: &Ebpf, name: &str, slots: u32) -> Result<Option<Vec<u64>>, String> {
    let Some(map) = ebpf.map(name) else {
        return Ok(None);
    };
    let array: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(|e| format!("{name}: {e}"))?;
    let mut sums = Vec::with_capacity(slots as usize);
    for slot in 0..slots {
        let values = array.get(&slot, 0).map_err(|e| format!("{name}[{slot}]: {e}"))?;
        sums.push(values.iter().sum());
    }
    Ok(Some(sums))
}

/// Per-container counts of the `TCP_*` slots: (container, slot) -> count.
fn container_counts(ebpf: &Ebpf, containers: &Containers) -> Result<BTreeMap<(String, u32), u64>, String> {
    let mut counts = BTreeMap::new();
    let Some(map) = ebpf.map("CGROUP_EVENTS") else {
        return Ok(counts);
    };
    let map: HashMap<_, CgroupSlot, u64> = HashMap::try_from(map).map_err(|e| format!("CGROUP_EVENTS: {e}"))?;
    for (key, count) in map.iter().filter_map(Result::ok) {
        if let Some(name) = containers.get(key.cgroup) {
            *counts.entry((name.to_string(), key.slot)).or_default() += count;
        }
    }
    Ok(counts)
}

/// Pushes `total` for `slot`, split into containers when labels are on:
/// each container's count with `container`, the rest without.
fn push_split(
    f: &mut Family,
    labels: &[(&str, &str)],
    slot: u32,
    total: u64,
    split: &BTreeMap<(String, u32), u64>,
    now_ms: i64,
) {
    let mut rest = total;
    for ((name, _), count) in split.iter().filter(|((_, s), _)| *s == slot) {
        rest = rest.saturating_sub(*count);
        let mut l = labels.to_vec();
        l.push(("container", name));
        f.push(&l, *count as f64, now_ms);
    }
    f.push(labels, rest as f64, now_ms);
}

/// `ebpf_tcp_retransmits_total`, `ebpf_tcp_resets_total`,
/// `ebpf_tcp_connections_total` and `ebpf_tcp_connection_failures_total`;
/// retransmits and resets split by container when labels are on.
pub(super) static TCP_COUNTERS: Reader = Reader { maps: &["TCP_COUNTERS", "CGROUP_EVENTS"], read: tcp_counters };

/// `ebpf_tcp_rtt_seconds`.
pub(super) static TCP_RTT: Reader = Reader { maps: &["TCP_RTT"], read: tcp_rtt };

/// `ebpf_skb_drops_total{reason}`.
pub(super) static SKB_DROPS: Reader = Reader { maps: &["SKB_DROPS"], read: skb_drops };

/// `kfree_skb_no_reason` was chosen: its one slot reads as `not_specified`.
pub(super) fn no_drop_reason(names: &mut Names) {
    tracing::info!("ebpf: this kernel's kfree_skb tracepoint has no drop reason (before 5.17): drops are counted with reason=\"not_specified\"");
    if let Some(n) = names.drop_reasons.get_mut(SKB_DROP_NO_REASON_SLOT as usize) {
        *n = "not_specified".into();
    }
}

fn tcp_counters(ebpf: &Ebpf, names: &mut Names, now_ms: i64, out: &mut Vec<Family>) -> Result<(), String> {
    // Containers' counts first: every event they hold is already in the
    // totals read after, so the unlabeled rest never goes below zero.
    let split = match &names.containers {
        Some(containers) => container_counts(ebpf, containers)?,
        None => BTreeMap::new(),
    };
    if let Some(c) = per_cpu_sums(ebpf, "TCP_COUNTERS", TCP_COUNTER_SLOTS)? {
        let at = |slot: u32| c[slot as usize] as f64;
        let mut f = Family::new("ebpf_tcp_retransmits_total", MetricType::Counter, "TCP segments retransmitted.");
        push_split(&mut f, &[], TCP_RETRANSMITS, c[TCP_RETRANSMITS as usize], &split, now_ms);
        out.push(f);
        let mut f = Family::new("ebpf_tcp_resets_total", MetricType::Counter, "TCP resets sent and received.");
        push_split(&mut f, &[("direction", "sent")], TCP_RESETS_SENT, c[TCP_RESETS_SENT as usize], &split, now_ms);
        push_split(
            &mut f,
            &[("direction", "received")],
            TCP_RESETS_RECEIVED,
            c[TCP_RESETS_RECEIVED as usize],
            &split,
            now_ms,
        );
        out.push(f);
        let mut f = Family::new(
            "ebpf_tcp_connections_total",
            MetricType::Counter,
            "TCP connections established: active (connect) or passive (accept).",
        );
        f.push(&[("direction", "active")], at(TCP_CONN_ACTIVE), now_ms);
        f.push(&[("direction", "passive")], at(TCP_CONN_PASSIVE), now_ms);
        out.push(f);
        let mut f = Family::new(
            "ebpf_tcp_connection_failures_total",
            MetricType::Counter,
            "TCP connects that failed (SYN_SENT to CLOSE: refused or timed out).",
        );
        f.push(&[], at(TCP_CONN_FAILED), now_ms);
        out.push(f);
    }
    Ok(())
}

fn tcp_rtt(ebpf: &Ebpf, _: &mut Names, now_ms: i64, out: &mut Vec<Family>) -> Result<(), String> {
    if let Some(map) = ebpf.map("TCP_RTT") {
        let array: PerCpuArray<_, Log2Hist> = PerCpuArray::try_from(map).map_err(|e| format!("TCP_RTT: {e}"))?;
        let mut total = Log2Hist::ZERO;
        for v in array.get(&0, 0).map_err(|e| format!("TCP_RTT: {e}"))?.iter() {
            merge(&mut total, v);
        }
        let mut f = histogram("ebpf_tcp_rtt_seconds", "Smoothed RTT of TCP connections when they leave ESTABLISHED.");
        push_histogram(&mut f, &[], &total, &RTT_US, now_ms);
        out.push(f);
    }
    Ok(())
}

/// Only reasons that occurred: a series per possible reason would be a
/// hundred zeros. Unnamed values share "other".
fn skb_drops(ebpf: &Ebpf, names: &mut Names, now_ms: i64, out: &mut Vec<Family>) -> Result<(), String> {
    if let Some(drops) = per_cpu_sums(ebpf, "SKB_DROPS", SKB_DROP_SLOTS)? {
        let mut f = Family::new(
            "ebpf_skb_drops_total",
            MetricType::Counter,
            "Packets freed as dropped, by kernel drop reason.",
        );
        let mut by_name: BTreeMap<&str, u64> = BTreeMap::new();
        for (slot, count) in drops.iter().enumerate().filter(|(_, c)| **c > 0) {
            *by_name.entry(names.drop_reasons.get(slot).map_or("other", String::as_str)).or_default() += count;
        }
        for (reason, count) in by_name {
            f.push(&[("reason", reason)], count as f64, now_ms);
        }
        out.push(f);
    }
    Ok(())
}
