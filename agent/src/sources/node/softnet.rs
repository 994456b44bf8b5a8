//! The `softnet` collector: per-CPU network softirq packet counts.

use super::{FileBuf, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// "0", "1", ... kept so per-CPU labels need no formatting.
#[derive(Default)]
struct CpuIds(Vec<String>);

impl CpuIds {
    fn get(&mut self, i: usize) -> &str {
        while self.0.len() <= i {
            self.0.push(self.0.len().to_string());
        }
        &self.0[i]
    }
}

/// The `softnet` collector (/proc/net/softnet_stat, one hex row per CPU).
pub(super) struct Softnet {
    file: FileBuf,
    ids: CpuIds,
}

impl Softnet {
    pub fn new(c: &NodeConfig) -> Self {
        Softnet { file: FileBuf::new(c.proc_path.join("net/softnet_stat")), ids: CpuIds::default() }
    }
}

impl Sub for Softnet {
    fn name(&self) -> &'static str {
        "softnet"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let (path, text) = self.file.read()?;
        let from = out.mark();
        for (i, line) in text.lines().enumerate() {
            let mut v = [0f64; 3];
            let mut parts = line.split_ascii_whitespace();
            for slot in &mut v {
                let p = parts.next().ok_or_else(|| NodeError::parse(path, format!("short row {line:?}")))?;
                *slot =
                    u64::from_str_radix(p, 16).map_err(|_| NodeError::parse(path, format!("bad hex {p:?}")))? as f64;
            }
            let cpu = self.ids.get(i);
            out.add_to(
                from,
                "node_softnet_processed_total",
                MetricType::Counter,
                "Number of processed packets",
                &[("cpu", cpu)],
                v[0],
            );
            out.add_to(
                from,
                "node_softnet_dropped_total",
                MetricType::Counter,
                "Number of dropped packets",
                &[("cpu", cpu)],
                v[1],
            );
            out.add_to(
                from,
                "node_softnet_times_squeezed_total",
                MetricType::Counter,
                "Number of times processing packets ran out of quota",
                &[("cpu", cpu)],
                v[2],
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
    fn softnet() {
        let t = Tree::new("softnet");
        t.write("proc/net/softnet_stat", "0000007d 00000001 00000002 00000000\n000042c1 00000000 0000000a 00000000\n");
        let got = run(&mut Softnet::new(&t.config())).unwrap();
        assert_eq!(got.len(), 6);
        assert_eq!(value(&got, "node_softnet_processed_total{cpu=\"1\"}"), 17089.0);
        assert_eq!(value(&got, "node_softnet_times_squeezed_total{cpu=\"1\"}"), 10.0);
        assert_eq!(value(&got, "node_softnet_dropped_total{cpu=\"0\"}"), 1.0);
        t.write("proc/net/softnet_stat", "0000007d\n");
        assert!(run(&mut Softnet::new(&t.config())).is_err());
    }
}
