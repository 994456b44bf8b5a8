//! The `pressure` collector: pressure stall information (PSI) totals.

use super::{num, FileBuf, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// The `pressure` collector (pressure stall information).
pub(super) struct Pressure {
    files: [FileBuf; 3],
}

impl Pressure {
    pub fn new(c: &NodeConfig) -> Self {
        let p = c.proc_path.join("pressure");
        Pressure { files: [FileBuf::new(p.join("cpu")), FileBuf::new(p.join("io")), FileBuf::new(p.join("memory"))] }
    }
}

/// The `total=` microseconds of the `some` and `full` lines.
fn psi_totals(path: &std::path::Path, text: &str) -> Result<(Option<f64>, Option<f64>), NodeError> {
    let (mut some, mut full) = (None, None);
    for line in text.lines() {
        let mut parts = line.split_ascii_whitespace();
        let slot = match parts.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => return Err(NodeError::parse(path, format!("bad line {line:?}"))),
        };
        let total = parts
            .find_map(|p| p.strip_prefix("total="))
            .ok_or_else(|| NodeError::parse(path, format!("no total= in {line:?}")))?;
        *slot = Some(num(path, total)? / 1e6);
    }
    Ok((some, full))
}

impl Sub for Pressure {
    fn name(&self) -> &'static str {
        "pressure"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let [cpu, io, memory] = &mut self.files;
        let (path, text) = cpu.read()?;
        let (some, _) = psi_totals(path, text)?;
        if let Some(v) = some {
            out.single(
                "node_pressure_cpu_waiting_seconds_total",
                MetricType::Counter,
                "Total time in seconds that processes have waited for CPU time",
                &[],
                v,
            );
        }
        let (path, text) = io.read()?;
        let (some, full) = psi_totals(path, text)?;
        if let Some(v) = some {
            out.single(
                "node_pressure_io_waiting_seconds_total",
                MetricType::Counter,
                "Total time in seconds that processes have waited due to IO congestion",
                &[],
                v,
            );
        }
        if let Some(v) = full {
            out.single(
                "node_pressure_io_stalled_seconds_total",
                MetricType::Counter,
                "Total time in seconds no process could make progress due to IO congestion",
                &[],
                v,
            );
        }
        let (path, text) = memory.read()?;
        let (some, full) = psi_totals(path, text)?;
        if let Some(v) = some {
            out.single(
                "node_pressure_memory_waiting_seconds_total",
                MetricType::Counter,
                "Total time in seconds that processes have waited for memory",
                &[],
                v,
            );
        }
        if let Some(v) = full {
            out.single(
                "node_pressure_memory_stalled_seconds_total",
                MetricType::Counter,
                "Total time in seconds no process could make progress due to memory congestion",
                &[],
                v,
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
    fn pressure_totals() {
        let t = Tree::new("psi");
        t.write("proc/pressure/cpu", "some avg10=66.89 avg60=67.90 avg300=34.38 total=252060917\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
        t.write("proc/pressure/io", "some avg10=0.00 avg60=0.00 avg300=0.00 total=22914510\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=13189634\n");
        t.write(
            "proc/pressure/memory",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=5\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        );
        let got = run(&mut Pressure::new(&t.config())).unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!(value(&got, "node_pressure_cpu_waiting_seconds_total{}"), 252.060917);
        assert_eq!(value(&got, "node_pressure_io_stalled_seconds_total{}"), 13.189634);
        assert_eq!(value(&got, "node_pressure_memory_waiting_seconds_total{}"), 0.000005);
        t.write("proc/pressure/io", "some avg10=0.00\n");
        assert!(run(&mut Pressure::new(&t.config())).unwrap_err().to_string().contains("total="));
    }
}
