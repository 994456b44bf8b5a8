//! `cpu`: per-CPU time by mode from /proc/stat.

use super::{FileBuf, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

const MODES: [&str; 8] = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];
const SECONDS: &str = "node_cpu_seconds_total";
const GUEST: &str = "node_cpu_guest_seconds_total";

/// The `cpu` collector.
pub(super) struct Cpu {
    file: FileBuf,
    /// Seconds per clock tick (USER_HZ).
    tick: f64,
}

impl Cpu {
    pub fn new(c: &NodeConfig) -> Self {
        Cpu { file: FileBuf::new(c.proc_path.join("stat")), tick: 1.0 / clock_ticks() }
    }
}

/// USER_HZ, the unit of /proc/stat's times (100 on every Linux we know).
pub(super) fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

impl Sub for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let tick = self.tick;
        let (path, text) = self.file.read()?;
        let from = out.mark();
        out.family(SECONDS, MetricType::Counter, "Seconds the CPUs spent in each mode.");
        out.family(GUEST, MetricType::Counter, "Seconds the CPUs spent in guests (VMs) for each mode.");
        let mut any = false;
        for line in text.lines() {
            let mut fields = line.split_ascii_whitespace();
            let Some(cpu) = fields.next().and_then(|f| f.strip_prefix("cpu")) else { continue };
            if cpu.is_empty() {
                continue; // the all-CPU total line
            }
            if !cpu.bytes().all(|b| b.is_ascii_digit()) {
                return Err(NodeError::parse(path, format!("bad cpu line {line:?}")));
            }
            let mut values = [0f64; 10];
            let mut n = 0;
            for (slot, f) in values.iter_mut().zip(fields) {
                *slot = f.parse::<u64>().map_err(|_| NodeError::parse(path, format!("bad number {f:?} in {line:?}")))?
                    as f64
                    * tick;
                n += 1;
            }
            if n < 8 {
                return Err(NodeError::parse(path, format!("too few fields in {line:?}")));
            }
            any = true;
            for (mode, v) in MODES.iter().zip(values) {
                out.add_to(from, SECONDS, MetricType::Counter, "", &[("cpu", cpu), ("mode", mode)], v);
            }
            if n >= 10 {
                out.add_to(from, GUEST, MetricType::Counter, "", &[("cpu", cpu), ("mode", "user")], values[8]);
                out.add_to(from, GUEST, MetricType::Counter, "", &[("cpu", cpu), ("mode", "nice")], values[9]);
            }
        }
        if !any {
            return Err(NodeError::parse(path, "no per-CPU lines"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, value, Tree};
    use super::*;

    #[test]
    fn per_cpu_modes_and_guest() {
        let t = Tree::new("cpu");
        t.write(
            "proc/stat",
            "cpu  10 20 30 40 50 60 70 80 90 100\ncpu0 100 200 300 400 500 600 700 800 900 1000\ncpu1 1 2 3 4 5 6 7 8 9 10\nintr 5 1 2\n",
        );
        let mut c = Cpu::new(&t.config());
        c.tick = 0.01;
        let got = run(&mut c).unwrap();
        assert_eq!(got.len(), 20);
        assert_eq!(value(&got, "node_cpu_seconds_total{cpu=\"0\", mode=\"user\"}"), 1.0);
        assert_eq!(value(&got, "node_cpu_seconds_total{cpu=\"0\", mode=\"steal\"}"), 8.0);
        assert_eq!(value(&got, "node_cpu_seconds_total{cpu=\"1\", mode=\"iowait\"}"), 0.05);
        assert_eq!(value(&got, "node_cpu_guest_seconds_total{cpu=\"0\", mode=\"nice\"}"), 10.0);
    }

    #[test]
    fn malformed_lines_fail_with_the_file() {
        let t = Tree::new("cpu-bad");
        t.write("proc/stat", "cpu0 1 2 x 4 5 6 7 8\n");
        let err = run(&mut Cpu::new(&t.config())).unwrap_err().to_string();
        assert!(err.contains("proc/stat") && err.contains("\"x\""), "{err}");
        t.write("proc/stat", "cpu0 1 2 3\n");
        assert!(run(&mut Cpu::new(&t.config())).is_err());
        t.write("proc/stat", "intr 1\n");
        assert!(run(&mut Cpu::new(&t.config())).is_err());
    }
}
