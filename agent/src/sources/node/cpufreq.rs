//! `cpufreq`: CPU frequencies from /sys/devices/system/cpu/cpuN/cpufreq,
//! kHz exported in hertz, as node_exporter 1.5 reads them.

use std::path::PathBuf;

use super::thermal::{numbered, read_trimmed};
use super::{NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// (attribute, metric, help), in node_exporter's order.
const FREQS: [(&str, &str, &str); 6] = [
    ("cpuinfo_cur_freq", "node_cpu_frequency_hertz", "Current cpu thread frequency in hertz."),
    ("cpuinfo_min_freq", "node_cpu_frequency_min_hertz", "Minimum cpu thread frequency in hertz."),
    ("cpuinfo_max_freq", "node_cpu_frequency_max_hertz", "Maximum cpu thread frequency in hertz."),
    ("scaling_cur_freq", "node_cpu_scaling_frequency_hertz", "Current scaled CPU thread frequency in hertz."),
    ("scaling_min_freq", "node_cpu_scaling_frequency_min_hertz", "Minimum scaled CPU thread frequency in hertz."),
    ("scaling_max_freq", "node_cpu_scaling_frequency_max_hertz", "Maximum scaled CPU thread frequency in hertz."),
];

/// Text attributes procfs's parser requires: a policy missing one fails
/// the collector in node_exporter, so it does here.
const REQUIRED: [&str; 5] =
    ["scaling_available_governors", "scaling_driver", "scaling_governor", "related_cpus", "scaling_setspeed"];

/// The `cpufreq` collector.
pub(super) struct Cpufreq {
    cpus: PathBuf,
}

impl Cpufreq {
    pub fn new(c: &NodeConfig) -> Self {
        Cpufreq { cpus: c.sys_path.join("devices/system/cpu") }
    }
}

impl Sub for Cpufreq {
    fn name(&self) -> &'static str {
        "cpufreq"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let mut rows: Vec<(String, [Option<f64>; 6])> = Vec::new();
        for (cpu, dir) in numbered(&self.cpus, "cpu") {
            let dir = dir.join("cpufreq");
            if !dir.exists() {
                continue;
            }
            let mut values = [None; 6];
            for (slot, (attr, _, _)) in values.iter_mut().zip(FREQS) {
                let p = dir.join(attr);
                match read_trimmed(&p) {
                    Ok(text) => {
                        let v =
                            text.parse::<u64>().map_err(|_| NodeError::parse(&p, format!("bad number {text:?}")))?;
                        *slot = Some(v as f64 * 1000.0);
                    }
                    Err(e)
                        if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied) => {}
                    Err(e) => return Err(NodeError::read(&p, e)),
                }
            }
            for attr in REQUIRED {
                let p = dir.join(attr);
                read_trimmed(&p).map_err(|e| NodeError::read(&p, e))?;
            }
            rows.push((cpu, values));
        }
        let from = out.mark();
        for (cpu, values) in &rows {
            for ((_, name, help), v) in FREQS.iter().zip(values) {
                if let Some(v) = v {
                    out.add_to(from, name, MetricType::Gauge, help, &[("cpu", cpu)], *v);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, value, Tree};
    use super::*;

    #[test]
    fn frequencies_in_hertz() {
        let t = Tree::new("cpufreq");
        let d = "sys/devices/system/cpu/cpu0/cpufreq";
        for (k, v) in [
            ("cpuinfo_max_freq", "3700000"),
            ("cpuinfo_min_freq", "800000"),
            ("scaling_cur_freq", "1219917"),
            ("scaling_max_freq", "3700000"),
            ("scaling_min_freq", "800000"),
            ("scaling_available_governors", "performance powersave"),
            ("scaling_driver", "intel_pstate"),
            ("scaling_governor", "powersave"),
            ("related_cpus", "0"),
            ("scaling_setspeed", "<unsupported>"),
        ] {
            t.write(&format!("{d}/{k}"), &format!("{v}\n"));
        }
        // A CPU without cpufreq is skipped.
        t.write("sys/devices/system/cpu/cpu1/online", "1\n");
        let got = run(&mut Cpufreq::new(&t.config())).unwrap();
        assert_eq!(got.len(), 5, "{got:#?}");
        assert_eq!(value(&got, "node_cpu_scaling_frequency_hertz{cpu=\"0\"}"), 1219917000.0);
        assert_eq!(value(&got, "node_cpu_frequency_min_hertz{cpu=\"0\"}"), 800000000.0);
        std::fs::remove_file(t.0.join(d).join("scaling_setspeed")).unwrap();
        assert!(run(&mut Cpufreq::new(&t.config())).unwrap_err().to_string().contains("scaling_setspeed"));
        assert!(run(&mut Cpufreq::new(&Tree::new("cpufreq-none").config())).unwrap().is_empty());
    }
}
