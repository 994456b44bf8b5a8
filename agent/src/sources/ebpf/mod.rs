//! Kernel metrics from the programs in agent-ebpf. The programs aggregate
//! in maps; this collector reads each map once per collection.
//!
//! - `programs`: every program described once (switch, tracepoint,
//!   variants per kernel, members, maps, readers); the rest iterates it
//! - `btf`: offsets and enum names from the running kernel's BTF
//! - `sched`, `block`, `net`: each area's readers, from maps to families
//!
//! A program that fails to load or attach is reported once (log and
//! `vantage_ebpf_program_up`), and the others keep running; without BPF at
//! all the source says so in one line and reports nothing.

mod block;
pub mod btf;
pub(crate) mod containers;
mod kernel_log;
mod landlock;
mod net;
pub mod programs;
mod sched;
pub mod security;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use agent_common::{KernelOffsets, Log2Hist, LOG2_SLOTS};
use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf, EbpfLoader};
use serde::{Deserialize, Serialize};

use crate::config::common;
use crate::sample::{Family, MetricType};
use crate::status::Registry;

use btf::KernelBtf;

/// The kernel object built by build.rs from agent-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

/// `[ebpf]`: the kernel collectors.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EbpfConfig {
    /// Whether the eBPF source runs at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Collection interval; the agent's scrape_interval when unset.
    #[serde(default, with = "common::opt_duration")]
    pub interval: Option<Duration>,
    /// Per-program switches, e.g. `programs = { kfree_skb = false }`.
    #[serde(default)]
    pub programs: BTreeMap<String, bool>,
    /// Adds a `container` label (the Docker container's name) to
    /// retransmits, resets and run-queue latency, from the event's cgroup.
    #[serde(default)]
    pub container_label: bool,
    /// Kernel-side log level of the programs (aya-log): off, error, warn,
    /// info, debug or trace. Records go to the agent's log under the target
    /// `vantage::ebpf::kernel`. Off costs one load and branch per log site.
    #[serde(default = "kernel_log_off")]
    pub kernel_log: String,
}

fn kernel_log_off() -> String {
    "off".into()
}

/// aya-log's level numbers (aya_log_common::Level), 0 for off.
const KERNEL_LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

fn yes() -> bool {
    true
}

impl Default for EbpfConfig {
    fn default() -> Self {
        EbpfConfig {
            enabled: true,
            interval: None,
            programs: BTreeMap::new(),
            container_label: false,
            kernel_log: kernel_log_off(),
        }
    }
}

pub use programs::PROGRAMS;

impl EbpfConfig {
    /// Adds this section's problems to `problems`.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if !KERNEL_LOG_LEVELS.contains(&self.kernel_log.as_str()) {
            problems.push(format!(
                "ebpf.kernel_log: unknown level {:?} (one of {})",
                self.kernel_log,
                KERNEL_LOG_LEVELS.join(", ")
            ));
        }
        for name in self.programs.keys() {
            if programs::program(name).is_none() {
                let known: Vec<&str> = programs::names().collect();
                problems.push(format!("ebpf.programs: unknown program {name:?} (known: {})", known.join(", ")));
            }
        }
    }

    /// One line for `vantage check`.
    pub fn describe(&self) -> String {
        let on: Vec<&str> = programs::names().filter(|p| self.program_enabled(p)).collect();
        format!("programs {}", on.join(", "))
    }

    fn program_enabled(&self, name: &str) -> bool {
        self.programs.get(name).copied().unwrap_or(true)
    }
}

/// The environment switch that makes the scheduler programs time waits
/// with bpf_ktime_get_ns even where the run queue's clock is readable (the
/// fallback path, for tests on kernels that have the members).
pub const CLOCK_ENV: &str = "VANTAGE_EBPF_CLOCK";

/// Looks up every offset the programs use; missing ones stay 0 and are
/// reported per program by [`members_needed`].
pub(crate) fn kernel_offsets(btf: &KernelBtf) -> KernelOffsets {
    let at = |s: &str, m: &str| btf.member_offset(s, m).unwrap_or(0);
    let common = at("sock", "__sk_common");
    KernelOffsets {
        task_pid: at("task_struct", "pid"),
        request_q: at("request", "q"),
        request_cmd_flags: at("request", "cmd_flags"),
        queue_disk: at("request_queue", "disk"),
        disk_major: at("gendisk", "major"),
        disk_first_minor: at("gendisk", "first_minor"),
        sock_protocol: at("sock", "sk_protocol"),
        tcp_srtt_us: at("tcp_sock", "srtt_us"),
        sock_cgroup: at("sock", "sk_cgrp_data") + at("sock_cgroup_data", "cgroup"),
        task_cgroups: at("task_struct", "cgroups"),
        css_set_dfl_cgrp: at("css_set", "dfl_cgrp"),
        cgroup_kn: at("cgroup", "kn"),
        kernfs_id: at("kernfs_node", "id"),
        task_cfs_rq: at("task_struct", "se") + at("sched_entity", "cfs_rq"),
        cfs_rq_rq: at("cfs_rq", "rq"),
        rq_clock: at("rq", "clock"),
        task_state: btf
            .member_offset("task_struct", "__state")
            .or_else(|_| btf.member_offset("task_struct", "state"))
            .unwrap_or(0),
        request_rq_disk: at("request", "rq_disk"),
        task_tgid: at("task_struct", "tgid"),
        task_real_parent: at("task_struct", "real_parent"),
        task_mm: at("task_struct", "mm"),
        task_cred: at("task_struct", "cred"),
        mm_arg_start: at("mm_struct", "arg_start"),
        mm_arg_end: at("mm_struct", "arg_end"),
        binprm_filename: at("linux_binprm", "filename"),
        cred_uid: at("cred", "uid"),
        cred_euid: at("cred", "euid"),
        cred_gid: at("cred", "gid"),
        cred_egid: at("cred", "egid"),
        cred_cap_effective: at("cred", "cap_effective"),
        sock_family: common + at("sock_common", "skc_family"),
        sock_num: common + at("sock_common", "skc_num"),
        sock_dport: common + at("sock_common", "skc_dport"),
        sock_rcv_saddr: common + at("sock_common", "skc_rcv_saddr"),
        sock_daddr: common + at("sock_common", "skc_daddr"),
        sock_v6_rcv_saddr: common + at("sock_common", "skc_v6_rcv_saddr"),
        sock_v6_daddr: common + at("sock_common", "skc_v6_daddr"),
    }
}

/// The members the scheduler programs need to read the run queue's clock
/// instead of calling bpf_ktime_get_ns.
const RQ_CLOCK_MEMBERS: &[(&str, &str)] =
    &[("task_struct", "se"), ("sched_entity", "cfs_rq"), ("cfs_rq", "rq"), ("rq", "clock")];

/// The members that finding a socket's or task's cgroup needs.
pub(crate) const CGROUP_MEMBERS: &[(&str, &str)] = &[
    ("sock", "sk_cgrp_data"),
    ("sock_cgroup_data", "cgroup"),
    ("task_struct", "cgroups"),
    ("css_set", "dfl_cgrp"),
    ("cgroup", "kn"),
    ("kernfs_node", "id"),
];

/// The programs whose switches together turn run-queue latency on:
/// `sched_switch` times the waits the wakeups start.
const RUNQ_PROGRAMS: [&str; 3] = ["sched_switch", "sched_wakeup", "sched_wakeup_new"];

/// What the maps' keys mean, for the readers.
#[derive(Default)]
pub struct Names {
    /// `enum skb_drop_reason` names by value, as label values.
    drop_reasons: Vec<String>,
    /// "major:minor" -> kernel device name, from /sys/class/block.
    devices: block::DeviceNames,
    /// Container names by cgroup id, when `container_label` is on.
    containers: Option<containers::Containers>,
}

/// The eBPF source: the loaded object and what the maps' keys mean.
pub struct EbpfCollector {
    ebpf: Option<Ebpf>,
    names: Names,
    interval: Option<Duration>,
}

impl EbpfCollector {
    /// Loads the object and attaches every enabled program, recording each
    /// program's state in `registry`.
    pub fn start(config: &EbpfConfig, registry: &Registry) -> Self {
        let collector = Self::load(config, registry);
        // Loading parsed the kernel's BTF (several MiB) twice, here for
        // offsets and in aya.
        crate::memory::release_freed();
        collector
    }

    fn load(config: &EbpfConfig, registry: &Registry) -> Self {
        let mut collector = EbpfCollector { ebpf: None, names: Names::default(), interval: config.interval };
        let unavailable = |reason: String| {
            tracing::warn!(error = %reason, "eBPF is unavailable (needs CAP_BPF and CAP_PERFMON, or root, and a kernel with BTF); running without kernel metrics");
            for p in PROGRAMS {
                registry.set_program(p.name, false, reason.clone());
            }
        };
        raise_memlock_limit();
        let kernel_btf = match KernelBtf::from_sys() {
            Ok(b) => b,
            Err(e) => {
                unavailable(e.to_string());
                return collector;
            }
        };
        let offsets = kernel_offsets(&kernel_btf);
        collector.names.drop_reasons = net::drop_reason_names(&kernel_btf);
        let runq = RUNQ_PROGRAMS.iter().all(|p| config.program_enabled(p))
            && kernel_btf.member_offset("task_struct", "pid").is_ok();
        let runq_enabled: u32 = runq.into();
        let forced_ktime = std::env::var(CLOCK_ENV).is_ok_and(|v| v == "ktime");
        let rq_clock = !forced_ktime && RQ_CLOCK_MEMBERS.iter().all(|(s, m)| kernel_btf.member_offset(s, m).is_ok());
        if runq && forced_ktime {
            tracing::info!("ebpf: {CLOCK_ENV}=ktime: run-queue latency uses bpf_ktime_get_ns");
        } else if runq && !rq_clock {
            tracing::info!("ebpf: the kernel has no task_struct.se.cfs_rq->rq->clock (CONFIG_FAIR_GROUP_SCHED); run-queue latency uses bpf_ktime_get_ns");
        }
        let disk_in_request: u32 = programs::disk_in_request(&kernel_btf).into();
        let rq_clock: u32 = rq_clock.into();
        let mut label = config.container_label;
        if label {
            let missing: Vec<String> = CGROUP_MEMBERS
                .iter()
                .filter_map(|(s, m)| kernel_btf.member_offset(s, m).err().map(|e| e.to_string()))
                .collect();
            if !missing.is_empty() {
                tracing::warn!(error = %missing.join("; "), "ebpf.container_label is on but the kernel's cgroup fields were not found; no container label");
                label = false;
            }
        }
        let container_label: u32 = label.into();
        if label {
            collector.names.containers = Some(containers::Containers::default());
        }
        let log_level = KERNEL_LOG_LEVELS.iter().position(|l| *l == config.kernel_log).unwrap_or(0) as u8;
        // Everything the kernel's BTF decides is decided now, so that the
        // parsed BTF (several MiB) is gone before aya allocates its own.
        let choices: Vec<_> = PROGRAMS.iter().map(|p| (p, programs::choose(p, &kernel_btf))).collect();
        let attach_points: Vec<(&str, u32)> = PROGRAMS
            .iter()
            .filter_map(|p| Some((p.tracepoint, kernel_btf.tracepoint_type_id(p.tracepoint)?)))
            .collect();
        drop(kernel_btf);
        // The programs need no CO-RE relocations (offsets come in as
        // globals), so the loader gets no BTF; and it runs where it cannot
        // read the kernel's, which aya would otherwise parse (landlock.rs).
        let (loaded, confined) = landlock::without_reading(Path::new(btf::BTF_DIR), || {
            EbpfLoader::new()
                .btf(None)
                // aya-log's records are on unless this says otherwise.
                .override_global("AYA_LOG_LEVEL", &log_level, true)
                .override_global("OFFSETS", &offsets, true)
                .override_global("RUNQ_ENABLED", &runq_enabled, true)
                .override_global("RQ_CLOCK", &rq_clock, true)
                .override_global("CONTAINER_LABEL", &container_label, true)
                .override_global("DISK_IN_REQUEST", &disk_in_request, true)
                .load(OBJECT)
        });
        if let Err(why) = confined {
            tracing::info!(reason = %why, "ebpf: no Landlock; aya parses the kernel BTF once more while loading (a higher start-up peak)");
        }
        let mut ebpf = match loaded {
            Ok(ebpf) => ebpf,
            Err(e) => {
                unavailable(crate::errors::chain(&e));
                return collector;
            }
        };
        // tp_btf attach points, by the kernel's type ids, without a second
        // parse of the kernel's BTF.
        let btf = match Btf::parse(&btf::attach_blob(&attach_points), aya::Endianness::default()) {
            Ok(b) => b,
            Err(e) => {
                unavailable(format!("building the tracepoints' BTF: {}", crate::errors::chain(&e)));
                return collector;
            }
        };
        let mut attached = 0;
        for (program, choice) in choices {
            let name = program.name;
            if !config.program_enabled(name) {
                registry.set_program(name, false, "disabled in the configuration".into());
                continue;
            }
            let result = choice.and_then(|v| {
                if let Some(chosen) = v.chosen {
                    chosen(&mut collector.names);
                }
                attach_btf_tracepoint(&mut ebpf, v.function, program.tracepoint, &btf)
            });
            match result {
                Ok(()) => {
                    attached += 1;
                    registry.set_program(name, true, String::new());
                }
                Err(reason) => {
                    tracing::warn!(program = name, error = %reason, "eBPF program not attached; the others keep running");
                    registry.set_program(name, false, reason);
                }
            }
        }
        tracing::info!(attached, runqueue_latency = runq, "eBPF programs attached");
        if log_level > 0 {
            kernel_log::start(&mut ebpf);
        }
        collector.ebpf = Some(ebpf);
        collector
    }
}

/// Loads the object's `function` and attaches it to `tracepoint`.
fn attach_btf_tracepoint(ebpf: &mut Ebpf, function: &str, tracepoint: &str, btf: &Btf) -> Result<(), String> {
    let program = ebpf.program_mut(function).ok_or_else(|| format!("program {function} missing from the object"))?;
    let program: &mut BtfTracePoint = program.try_into().map_err(|e| format!("{e:#}"))?;
    program.load(tracepoint, btf).map_err(|e| load_error(&e))?;
    program.attach().map_err(|e| format!("attach: {}", crate::errors::chain(&e)))?;
    Ok(())
}

/// Why a program did not load, in one line.
pub(crate) fn load_error(e: &aya::programs::ProgramError) -> String {
    match e {
        // The verifier's last lines say why; the whole log is hundreds.
        aya::programs::ProgramError::LoadError { io_error, verifier_log } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with("verification time")
                        && !l.starts_with("processed ")
                        && !l.starts_with("stack depth")
                })
                .take(3)
                .collect();
            format!("load: {io_error}: {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | "))
        }
        _ => format!("load: {}", crate::errors::chain(e)),
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lifting it is
/// harmless on newer ones (this is what CAP_SYS_RESOURCE is for).
pub(crate) fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit only reads the struct we pass.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

impl super::Collector for EbpfCollector {
    fn name(&self) -> &str {
        "ebpf"
    }

    fn interval(&self) -> Option<Duration> {
        self.interval
    }

    fn collect(&mut self, now_ms: i64) -> Result<Vec<Family>, String> {
        let Some(ebpf) = &self.ebpf else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        if let Some(c) = &mut self.names.containers {
            c.refresh();
        }
        for reader in programs::readers() {
            (reader.read)(ebpf, &mut self.names, now_ms, &mut out)?;
        }
        Ok(out)
    }
}

/// Adds `other` into `into` (merging per-CPU copies or map entries).
fn merge(into: &mut Log2Hist, other: &Log2Hist) {
    for (a, b) in into.slots.iter_mut().zip(other.slots.iter()) {
        *a += b;
    }
    into.sum += other.sum;
}

/// Subtracts `other` from `from` (the host's share once containers' are
/// taken out of a total).
fn subtract(from: &mut Log2Hist, other: &Log2Hist) {
    for (a, b) in from.slots.iter_mut().zip(other.slots.iter()) {
        *a = a.saturating_sub(*b);
    }
    from.sum = from.sum.saturating_sub(other.sum);
}

/// How a [`Log2Hist`] maps to Prometheus buckets: slot `i` holds values up
/// to `2^i` units of `unit` (in the exported base unit); buckets are
/// exported for slots `first..=last`, then `+Inf`.
struct Buckets {
    unit: f64,
    first: usize,
    last: usize,
    /// Factor from the kernel's raw sum to the exported unit.
    sum_unit: f64,
}

/// Microsecond slots from 1 µs to 2^24 µs (about 16.8 s), sum in ns.
const LATENCY_NS: Buckets = Buckets { unit: 1e-6, first: 0, last: 24, sum_unit: 1e-9 };

/// Pushes one histogram series set (`_bucket` cumulative, `_sum`, `_count`)
/// with `labels` into `f`.
fn push_histogram(f: &mut Family, labels: &[(&str, &str)], h: &Log2Hist, b: &Buckets, now_ms: i64) {
    let name = f.name.clone();
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0u64;
    let with_le = |le: &str, value: f64, f: &mut Family| {
        let mut l: Vec<(&str, &str)> = labels.to_vec();
        l.push(("le", le));
        f.push_named(&bucket, &l, value, now_ms);
    };
    let mut le = String::new();
    for (i, count) in h.slots.iter().enumerate().take(b.last + 1) {
        cumulative += count;
        if i < b.first {
            continue;
        }
        le.clear();
        crate::exposition::write_value(&mut le, b.unit * (1u64 << i) as f64);
        with_le(&le, cumulative as f64, f);
    }
    let total: u64 = h.slots.iter().sum();
    with_le("+Inf", total as f64, f);
    f.push_named(&format!("{name}_sum"), labels, h.sum as f64 * b.sum_unit, now_ms);
    f.push_named(&format!("{name}_count"), labels, total as f64, now_ms);
}

/// An empty histogram family.
fn histogram(name: &str, help: &str) -> Family {
    Family::new(name, MetricType::Histogram, help)
}

const _: () = assert!(LOG2_SLOTS > 24);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_count() {
        let mut h = Log2Hist::ZERO;
        h.slots[0] = 2; // <= 1 µs
        h.slots[3] = 5; // (4, 8] µs
        h.slots[30] = 1; // far beyond the last bucket
        h.sum = 2_000 + 5 * 7_000 + 3_000_000_000_000;
        let mut f = histogram("x_seconds", "test");
        push_histogram(&mut f, &[("op", "read")], &h, &LATENCY_NS, 1);
        let get = |name: &str, le: Option<&str>| {
            f.samples
                .iter()
                .find(|s| {
                    s.labels.metric_name() == name && s.labels.get("le") == le && s.labels.get("op") == Some("read")
                })
                .map(|s| s.value)
        };
        assert_eq!(get("x_seconds_bucket", Some("0.000001")), Some(2.0));
        assert_eq!(get("x_seconds_bucket", Some("0.000004")), Some(2.0));
        assert_eq!(get("x_seconds_bucket", Some("0.000008")), Some(7.0));
        assert_eq!(get("x_seconds_bucket", Some("16.777216")), Some(7.0));
        assert_eq!(get("x_seconds_bucket", Some("+Inf")), Some(8.0));
        assert_eq!(get("x_seconds_count", None), Some(8.0));
        assert_eq!(f.samples.len(), 25 + 1 + 2);
    }
}
