//! `stat` (/proc/stat totals) and `loadavg` (/proc/loadavg).

use super::{num, FileBuf, NodeConfig, NodeError, Out, Sub};

use crate::sample::MetricType;

/// The `stat` collector.
pub(super) struct Stat {
    file: FileBuf,
    /// `node_softirqs_total` per vector (`stat.softirq`, off by default).
    softirq: bool,
}

impl Stat {
    pub fn new(c: &NodeConfig) -> Self {
        Stat { file: FileBuf::new(c.proc_path.join("stat")), softirq: c.stat_softirq }
    }
}

/// The vectors of /proc/stat's `softirq` line after its total, in order.
const SOFTIRQS: [&str; 10] =
    ["hi", "timer", "net_tx", "net_rx", "block", "block_iopoll", "tasklet", "sched", "hrtimer", "rcu"];

impl Sub for Stat {
    fn name(&self) -> &'static str {
        "stat"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let (path, text) = self.file.read()?;
        let mut found = 0;
        let mut softirqs = None;
        for line in text.lines() {
            let mut fields = line.split_ascii_whitespace();
            let (Some(key), Some(first)) = (fields.next(), fields.next()) else { continue };
            if key == "softirq" && self.softirq {
                let mut v = [0u64; 10];
                for (slot, f) in v.iter_mut().zip(fields.by_ref()) {
                    *slot = f.parse().map_err(|_| NodeError::parse(path, format!("bad number {f:?} in {line:?}")))?;
                }
                softirqs = Some(v);
                continue;
            }
            let (name, kind, help) = match key {
                "intr" => ("node_intr_total", MetricType::Counter, "Total number of interrupts serviced."),
                "ctxt" => ("node_context_switches_total", MetricType::Counter, "Total number of context switches."),
                "btime" => ("node_boot_time_seconds", MetricType::Gauge, "Node boot time, in unixtime."),
                "processes" => ("node_forks_total", MetricType::Counter, "Total number of forks."),
                "procs_running" => ("node_procs_running", MetricType::Gauge, "Number of processes in runnable state."),
                "procs_blocked" => (
                    "node_procs_blocked",
                    MetricType::Gauge,
                    "Number of processes blocked waiting for I/O to complete.",
                ),
                _ => continue,
            };
            let value = num(path, first)?;
            out.single(name, kind, help, &[], value);
            found += 1;
        }
        if found == 0 {
            return Err(super::NodeError::parse(
                path,
                "none of intr, ctxt, btime, processes, procs_running, procs_blocked",
            ));
        }
        if self.softirq {
            let v = softirqs.ok_or_else(|| NodeError::parse(path, "no softirq line"))?;
            out.family("node_softirqs_total", MetricType::Counter, "Number of softirq calls.");
            for (vector, n) in SOFTIRQS.iter().zip(v) {
                out.add(&[("vector", vector)], n as f64);
            }
        }
        Ok(())
    }
}

/// The `loadavg` collector.
pub(super) struct Loadavg {
    file: FileBuf,
}

impl Loadavg {
    pub fn new(c: &NodeConfig) -> Self {
        Loadavg { file: FileBuf::new(c.proc_path.join("loadavg")) }
    }
}

impl Sub for Loadavg {
    fn name(&self) -> &'static str {
        "loadavg"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let (path, text) = self.file.read()?;
        let mut fields = text.split_ascii_whitespace();
        let mut values = [0f64; 3];
        for v in &mut values {
            let f = fields.next().ok_or_else(|| NodeError::parse(path, "fewer than 3 fields"))?;
            *v = num(path, f)?;
        }
        out.single("node_load1", MetricType::Gauge, "1m load average.", &[], values[0]);
        out.single("node_load5", MetricType::Gauge, "5m load average.", &[], values[1]);
        out.single("node_load15", MetricType::Gauge, "15m load average.", &[], values[2]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, value, Tree};
    use super::*;

    #[test]
    fn stat_totals() {
        let t = Tree::new("stat");
        t.write(
            "proc/stat",
            "cpu  1 2 3 4 5 6 7 8 0 0\nintr 1066407 9 0\nctxt 1481238\nbtime 1795472588\nprocesses 49242\nprocs_running 5\nprocs_blocked 1\nsoftirq 9 1\n",
        );
        let got = run(&mut Stat::new(&t.config())).unwrap();
        assert_eq!(got.len(), 6);
        assert_eq!(value(&got, "node_intr_total{}"), 1066407.0);
        assert_eq!(value(&got, "node_context_switches_total{}"), 1481238.0);
        assert_eq!(value(&got, "node_boot_time_seconds{}"), 1795472588.0);
        assert_eq!(value(&got, "node_forks_total{}"), 49242.0);
        assert_eq!(value(&got, "node_procs_running{}"), 5.0);
        assert_eq!(value(&got, "node_procs_blocked{}"), 1.0);
        let c = NodeConfig { stat_softirq: true, ..t.config() };
        let got = run(&mut Stat::new(&c)).unwrap();
        assert_eq!(got.len(), 16);
        assert_eq!(value(&got, "node_softirqs_total{vector=\"hi\"}"), 1.0);
        assert_eq!(value(&got, "node_softirqs_total{vector=\"rcu\"}"), 0.0);
        t.write("proc/stat", "ctxt abc\n");
        assert!(run(&mut Stat::new(&t.config())).unwrap_err().to_string().contains("\"abc\""));
    }

    #[test]
    fn loadavg_fields() {
        let t = Tree::new("load");
        t.write("proc/loadavg", "4.58 2.51 1.43 3/512 4242\n");
        let got = run(&mut Loadavg::new(&t.config())).unwrap();
        assert_eq!(got, [("node_load15{}".into(), 1.43), ("node_load1{}".into(), 4.58), ("node_load5{}".into(), 2.51)]);
        t.write("proc/loadavg", "4.58 2.51\n");
        assert!(run(&mut Loadavg::new(&t.config())).is_err());
        t.write("proc/loadavg", "4.58 x 1\n");
        assert!(run(&mut Loadavg::new(&t.config())).is_err());
    }
}
