//! The `tapestats` collector: SCSI tape drive statistics from
//! /sys/class/scsi_tape/st<N>/stats, as node_exporter 1.5 reports them. No
//! scsi_tape class is "no data".

use std::path::PathBuf;

use super::{NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

const C: MetricType = MetricType::Counter;

/// (stats file, metric, type, help, scale).
const STATS: [(&str, &str, MetricType, &str, f64); 10] = [
    ("in_flight", "node_tape_io_now", MetricType::Gauge, "The number of I/Os currently outstanding to this device.", 1.0),
    (
        "io_ns",
        "node_tape_io_time_seconds_total",
        C,
        "The amount of time spent waiting for all I/O to complete (including read and write). This includes tape movement commands such as seeking between file or set marks and implicit tape movement such as when rewind on close tape devices are used.",
        0.000000001,
    ),
    (
        "other_cnt",
        "node_tape_io_others_total",
        C,
        "The number of I/Os issued to the tape drive other than read or write commands. The time taken to complete these commands uses the following calculation io_time_seconds_total-read_time_seconds_total-write_time_seconds_total",
        1.0,
    ),
    ("read_byte_cnt", "node_tape_read_bytes_total", C, "The number of bytes read from the tape drive.", 1.0),
    ("read_cnt", "node_tape_reads_completed_total", C, "The number of read requests issued to the tape drive.", 1.0),
    (
        "read_ns",
        "node_tape_read_time_seconds_total",
        C,
        "The amount of time spent waiting for read requests to complete.",
        0.000000001,
    ),
    (
        "resid_cnt",
        "node_tape_residual_total",
        C,
        "The number of times during a read or write we found the residual amount to be non-zero. This should mean that a program is issuing a read larger thean the block size on tape. For write not all data made it to tape.",
        1.0,
    ),
    ("write_byte_cnt", "node_tape_written_bytes_total", C, "The number of bytes written to the tape drive.", 1.0),
    ("write_cnt", "node_tape_writes_completed_total", C, "The number of write requests issued to the tape drive.", 1.0),
    (
        "write_ns",
        "node_tape_write_time_seconds_total",
        C,
        "The amount of time spent waiting for write requests to complete.",
        0.000000001,
    ),
];

/// An unsigned integer as Go's strconv.ParseUint(s, 0, 64) reads it.
pub(super) fn parse_uint(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else if let Some(oct) = s.strip_prefix("0o").or_else(|| s.strip_prefix('0').filter(|r| !r.is_empty())) {
        u64::from_str_radix(oct, 8).ok()
    } else {
        s.parse().ok()
    }
}

pub(super) struct Tapestats {
    dir: PathBuf,
}

impl Tapestats {
    pub fn new(c: &NodeConfig) -> Self {
        Tapestats { dir: c.sys_path.join("class/scsi_tape") }
    }
}

/// `st` followed by digits only (node_exporter skips st0a, nst0 ...).
fn is_tape(name: &str) -> bool {
    name.strip_prefix("st").is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

impl Sub for Tapestats {
    fn name(&self) -> &'static str {
        "tapestats"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| NodeError::read_or_absent(&self.dir, e))?;
        let mut tapes: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| is_tape(n))
            .collect();
        tapes.sort();
        let from = out.mark();
        for tape in &tapes {
            let stats = self.dir.join(tape).join("stats");
            let mut values = [0.0; STATS.len()];
            for entry in std::fs::read_dir(&stats).map_err(|e| NodeError::read_or_absent(&stats, e))? {
                let path = entry.map_err(|e| NodeError::read(&stats, e))?.path();
                let text = std::fs::read_to_string(&path).map_err(|e| NodeError::read(&path, e))?;
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                if let Some(i) = STATS.iter().position(|(f, ..)| *f == name) {
                    let v = parse_uint(text.trim())
                        .ok_or_else(|| NodeError::parse(&path, format!("bad count {:?}", text.trim())))?;
                    values[i] = v as f64 * STATS[i].4;
                }
            }
            for ((_, metric, kind, help, _), v) in STATS.iter().zip(values) {
                out.add_to(from, metric, *kind, help, &[("device", tape)], v);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, run_families, value, Tree};
    use super::*;

    #[test]
    fn tape_counters() {
        let t = Tree::new("tape");
        for (f, v) in
            [("in_flight", "1\n"), ("io_ns", "9247011087720\n"), ("read_cnt", "3741\n"), ("write_ns", "0x10\n")]
        {
            t.write(&format!("sys/class/scsi_tape/st0/stats/{f}"), v);
        }
        t.write("sys/class/scsi_tape/nst0/stats/in_flight", "5\n");
        let got = run(&mut Tapestats::new(&t.config())).unwrap();
        assert_eq!(got.len(), STATS.len(), "nst0 is not a tape name node_exporter reads: {got:?}");
        assert_eq!(value(&got, r#"node_tape_io_now{device="st0"}"#), 1.0);
        assert_eq!(value(&got, r#"node_tape_io_time_seconds_total{device="st0"}"#), 9247011087720.0 * 0.000000001);
        assert_eq!(value(&got, r#"node_tape_reads_completed_total{device="st0"}"#), 3741.0);
        assert_eq!(value(&got, r#"node_tape_write_time_seconds_total{device="st0"}"#), 16.0 * 0.000000001);
        assert_eq!(value(&got, r#"node_tape_residual_total{device="st0"}"#), 0.0);
    }

    #[test]
    fn no_tapes_is_no_data() {
        let t = Tree::new("tape-none");
        let (_, r) = run_families(&mut Tapestats::new(&t.config()));
        assert!(matches!(r, Err(NodeError::NoData { .. })), "{r:?}");
    }
}
