//! The `schedstat` collector: per-CPU scheduler run and wait times.

use super::{num, FileBuf, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// The `schedstat` collector (/proc/schedstat, absent on kernels built
/// without CONFIG_SCHEDSTATS: then it fails, as node_exporter's does).
pub(super) struct Schedstat {
    file: FileBuf,
}

impl Schedstat {
    pub fn new(c: &NodeConfig) -> Self {
        Schedstat { file: FileBuf::new(c.proc_path.join("schedstat")) }
    }
}

impl Sub for Schedstat {
    fn name(&self) -> &'static str {
        "schedstat"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let (path, text) = self.file.read()?;
        let from = out.mark();
        for line in text.lines() {
            let mut parts = line.split_ascii_whitespace();
            let Some(cpu) = parts.next().and_then(|p| p.strip_prefix("cpu")) else { continue };
            let f: Vec<&str> = parts.collect();
            if f.len() < 9 {
                return Err(NodeError::parse(path, format!("short cpu line {line:?}")));
            }
            let running = num(path, f[6])? / 1e9;
            let waiting = num(path, f[7])? / 1e9;
            let slices = num(path, f[8])?;
            out.add_to(
                from,
                "node_schedstat_running_seconds_total",
                MetricType::Counter,
                "Number of seconds CPU spent running a process.",
                &[("cpu", cpu)],
                running,
            );
            out.add_to(
                from,
                "node_schedstat_waiting_seconds_total",
                MetricType::Counter,
                "Number of seconds spent by processing waiting for this CPU.",
                &[("cpu", cpu)],
                waiting,
            );
            out.add_to(
                from,
                "node_schedstat_timeslices_total",
                MetricType::Counter,
                "Number of timeslices executed by CPU.",
                &[("cpu", cpu)],
                slices,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, value, Tree};
    use super::*;

    #[test]
    fn schedstat() {
        let t = Tree::new("sched");
        t.write(
            "proc/schedstat",
            "version 15\ntimestamp 4294\ncpu0 0 0 0 0 0 0 2000000000 500000000 42\ndomain0 3 1 2\n",
        );
        let got = run(&mut Schedstat::new(&t.config())).unwrap();
        assert_eq!(value(&got, "node_schedstat_running_seconds_total{cpu=\"0\"}"), 2.0);
        assert_eq!(value(&got, "node_schedstat_waiting_seconds_total{cpu=\"0\"}"), 0.5);
        assert_eq!(value(&got, "node_schedstat_timeslices_total{cpu=\"0\"}"), 42.0);
        assert!(run(&mut Schedstat::new(&Tree::new("sched-none").config())).is_err());
    }
}
