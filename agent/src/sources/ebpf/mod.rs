//! Kernel metrics from the programs in agent-ebpf. The programs aggregate
//! in maps; this collector reads each map once per collection.
//!
//! A program that fails to load or attach is reported once (log and
//! `vantage_ebpf_program_up`), and the others keep running; without BPF at
//! all the source says so in one line and reports nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use aya::maps::PerCpuArray;
use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf};
use serde::{Deserialize, Serialize};

use crate::config::common;
use crate::sample::{Family, MetricType};
use crate::status::Registry;

/// The kernel object built by build.rs from agent-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

/// `[ebpf]`: the kernel collectors.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EbpfConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Collection interval; the agent's scrape_interval when unset.
    #[serde(default, with = "common::opt_duration")]
    pub interval: Option<Duration>,
    /// Per-program switches, e.g. `programs = { sched_switch = false }`.
    #[serde(default)]
    pub programs: BTreeMap<String, bool>,
}

fn yes() -> bool {
    true
}

impl Default for EbpfConfig {
    fn default() -> Self {
        EbpfConfig { enabled: true, interval: None, programs: BTreeMap::new() }
    }
}

/// Every program in agent-ebpf, by the name of its function.
pub const PROGRAMS: &[&str] = &["sched_switch"];

impl EbpfConfig {
    /// Adds this section's problems to `problems`.
    pub fn validate(&self, problems: &mut Vec<String>) {
        for name in self.programs.keys() {
            if !PROGRAMS.contains(&name.as_str()) {
                problems.push(format!("ebpf.programs: unknown program {name:?} (known: {})", PROGRAMS.join(", ")));
            }
        }
    }

    /// One line for `vantage check`.
    pub fn describe(&self) -> String {
        let on: Vec<&str> = PROGRAMS.iter().copied().filter(|p| self.program_enabled(p)).collect();
        format!("programs {}", on.join(", "))
    }

    fn program_enabled(&self, name: &str) -> bool {
        self.programs.get(name).copied().unwrap_or(true)
    }
}

/// The eBPF source: the loaded object and the programs that attached.
pub struct EbpfCollector {
    ebpf: Option<Ebpf>,
}

impl EbpfCollector {
    /// Loads the object and attaches every enabled program, recording each
    /// program's state in `registry`.
    pub fn start(config: &EbpfConfig, registry: &Registry) -> Self {
        raise_memlock_limit();
        let mut ebpf = match Ebpf::load(OBJECT) {
            Ok(ebpf) => ebpf,
            Err(e) => {
                let reason = format!("{e:#}");
                tracing::warn!(error = %reason, "eBPF is unavailable (needs CAP_BPF and CAP_PERFMON, or root, and a kernel with BTF); running without kernel metrics");
                for p in PROGRAMS {
                    registry.set_program(p, false, reason.clone());
                }
                return EbpfCollector { ebpf: None };
            }
        };
        let btf = Btf::from_sys_fs();
        for &name in PROGRAMS {
            if !config.program_enabled(name) {
                registry.set_program(name, false, "disabled in the configuration".into());
                continue;
            }
            let result = match &btf {
                Ok(btf) => attach_btf_tracepoint(&mut ebpf, name, btf),
                Err(e) => Err(format!("kernel BTF unavailable (/sys/kernel/btf/vmlinux): {e}")),
            };
            match result {
                Ok(()) => {
                    tracing::debug!(program = name, "eBPF program attached");
                    registry.set_program(name, true, String::new());
                }
                Err(reason) => {
                    tracing::warn!(program = name, error = %reason, "eBPF program not attached");
                    registry.set_program(name, false, reason);
                }
            }
        }
        EbpfCollector { ebpf: Some(ebpf) }
    }
}

fn attach_btf_tracepoint(ebpf: &mut Ebpf, name: &str, btf: &Btf) -> Result<(), String> {
    let program = ebpf.program_mut(name).ok_or_else(|| format!("program {name} missing from the object"))?;
    let program: &mut BtfTracePoint = program.try_into().map_err(|e| format!("{e:#}"))?;
    program.load(name, btf).map_err(|e| format!("load: {e:#}"))?;
    program.attach().map_err(|e| format!("attach: {e:#}"))?;
    Ok(())
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lifting it is
/// harmless on newer ones (this is what CAP_SYS_RESOURCE is for).
fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit only reads the struct we pass.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

impl super::Collector for EbpfCollector {
    fn name(&self) -> &str {
        "ebpf"
    }

    fn collect(&mut self, now_ms: i64) -> Result<Vec<Family>, String> {
        let Some(ebpf) = &self.ebpf else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        if let Some(map) = ebpf.map("CPU_CONTEXT_SWITCHES") {
            let array: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(|e| format!("CPU_CONTEXT_SWITCHES: {e}"))?;
            let values =
                array.get(&agent_common::CONTEXT_SWITCHES_SLOT, 0).map_err(|e| format!("CPU_CONTEXT_SWITCHES: {e}"))?;
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
        Ok(out)
    }
}
