//! The `fibrechannel` collector: Fibre Channel HBAs from /sys/class/fc_host,
//! `node_fibrechannel_info` plus the statistics counters, as node_exporter
//! 1.5 reports them (a counter reading 2^64-1 is one the firmware does not
//! implement, and is left out). No fc_host class is "no data".

use std::path::PathBuf;

use super::tapestats::parse_uint;
use super::{NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// (statistics file, metric suffix, help), in node_exporter's order.
const COUNTERS: [(&str, &str, &str); 14] = [
    ("dumped_frames", "dumped_frames_total", "Number of dumped frames"),
    ("error_frames", "error_frames_total", "Number of errors in frames"),
    ("invalid_crc_count", "invalid_crc_total", "Invalid Cyclic Redundancy Check count"),
    ("rx_frames", "rx_frames_total", "Number of frames received"),
    ("rx_words", "rx_words_total", "Number of words received by host port"),
    ("tx_frames", "tx_frames_total", "Number of frames transmitted by host port"),
    ("tx_words", "tx_words_total", "Number of words transmitted by host port"),
    ("seconds_since_last_reset", "seconds_since_last_reset_total", "Number of seconds since last host port reset"),
    ("invalid_tx_word_count", "invalid_tx_words_total", "Number of invalid words transmitted by host port"),
    ("link_failure_count", "link_failure_total", "Number of times the host port link has failed"),
    ("loss_of_sync_count", "loss_of_sync_total", "Number of failures on either bit or transmission word boundaries"),
    ("loss_of_signal_count", "loss_of_signal_total", "Number of times signal has been lost"),
    ("nos_count", "nos_total", "Number Not_Operational Primitive Sequence received by host port"),
    ("fcp_packet_aborts", "fcp_packet_aborts_total", "Number of aborted packets"),
];

/// Host attributes procfs requires, and whether it drops a "0x" prefix.
const ATTRS: [(&str, bool); 11] = [
    ("speed", false),
    ("port_state", false),
    ("port_type", false),
    ("node_name", true),
    ("port_id", true),
    ("port_name", true),
    ("fabric_name", true),
    ("dev_loss_tmo", false),
    ("symbolic_name", false),
    ("supported_classes", false),
    ("supported_speeds", false),
];

pub(super) struct Fibrechannel {
    dir: PathBuf,
}

impl Fibrechannel {
    pub fn new(c: &NodeConfig) -> Self {
        Fibrechannel { dir: c.sys_path.join("class/fc_host") }
    }
}

impl Sub for Fibrechannel {
    fn name(&self) -> &'static str {
        "fibrechannel"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| NodeError::read_or_absent(&self.dir, e))?;
        let mut hosts: Vec<String> =
            entries.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect();
        hosts.sort();
        let from = out.mark();
        for host in &hosts {
            let dir = self.dir.join(host);
            let mut attrs: Vec<String> = Vec::with_capacity(ATTRS.len());
            for (attr, strip) in ATTRS {
                let path = dir.join(attr);
                let text = std::fs::read_to_string(&path).map_err(|e| NodeError::read(&path, e))?;
                let mut v = text.trim();
                if strip && v.len() > 2 {
                    v = &v[2..];
                }
                attrs.push(v.to_string());
            }
            let a = |name: &str| attrs[ATTRS.iter().position(|(n, _)| *n == name).unwrap_or(0)].as_str();
            out.add_to(
                from,
                "node_fibrechannel_info",
                MetricType::Gauge,
                "Non-numeric data from /sys/class/fc_host/<host>, value is always 1.",
                &[
                    ("fc_host", host),
                    ("speed", a("speed")),
                    ("port_state", a("port_state")),
                    ("port_type", a("port_type")),
                    ("port_id", a("port_id")),
                    ("port_name", a("port_name")),
                    ("fabric_name", a("fabric_name")),
                    ("symbolic_name", a("symbolic_name")),
                    ("supported_classes", a("supported_classes")),
                    ("supported_speeds", a("supported_speeds")),
                    ("dev_loss_tmo", a("dev_loss_tmo")),
                ],
                1.0,
            );
            let stats = dir.join("statistics");
            let mut values = [0u64; COUNTERS.len()];
            for entry in std::fs::read_dir(&stats).map_err(|e| NodeError::read_or_absent(&stats, e))? {
                let entry = entry.map_err(|e| NodeError::read(&stats, e))?;
                let name = entry.file_name();
                let name = name.to_str().unwrap_or_default();
                if !entry.file_type().is_ok_and(|t| t.is_file()) || name == "reset_statistics" {
                    continue;
                }
                let path = entry.path();
                let text = match std::fs::read_to_string(&path) {
                    Ok(t) => t,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(NodeError::read(&path, e)),
                };
                if let Some(i) = COUNTERS.iter().position(|(f, ..)| *f == name) {
                    values[i] = parse_uint(text.trim())
                        .ok_or_else(|| NodeError::parse(&path, format!("bad count {:?}", text.trim())))?;
                }
            }
            for ((_, metric, help), v) in COUNTERS.iter().zip(values) {
                if v != u64::MAX {
                    let name = format!("node_fibrechannel_{metric}");
                    out.add_to(from, &name, MetricType::Counter, help, &[("fc_host", host)], v as f64);
                }
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
    fn host_info_and_counters() {
        let t = Tree::new("fc");
        let h = "sys/class/fc_host/host0";
        for (f, v) in [
            ("speed", "16 Gbit\n"),
            ("port_state", "Online\n"),
            ("port_type", "Point-To-Point (direct nport connection)\n"),
            ("node_name", "0x2000e0071bce95f2\n"),
            ("port_id", "0x000002\n"),
            ("port_name", "0x1000e0071bce95f2\n"),
            ("fabric_name", "0x0\n"),
            ("dev_loss_tmo", "30\n"),
            ("symbolic_name", "Emulex SN1100E2P\n"),
            ("supported_classes", "Class 3\n"),
            ("supported_speeds", "4 Gbit, 8 Gbit, 16 Gbit\n"),
            ("statistics/rx_frames", "0x3\n"),
            ("statistics/dumped_frames", "0xffffffffffffffff\n"),
            ("statistics/reset_statistics", "x\n"),
        ] {
            t.write(&format!("{h}/{f}"), v);
        }
        let got = run(&mut Fibrechannel::new(&t.config())).unwrap();
        assert_eq!(value(&got, r#"node_fibrechannel_rx_frames_total{fc_host="host0"}"#), 3.0);
        assert_eq!(value(&got, r#"node_fibrechannel_nos_total{fc_host="host0"}"#), 0.0);
        assert!(!got.iter().any(|(s, _)| s.contains("dumped")), "2^64-1 is unimplemented: {got:?}");
        let info = got.iter().find(|(s, _)| s.starts_with("node_fibrechannel_info")).unwrap();
        assert!(info.0.contains(r#"fabric_name="0""#) && info.0.contains(r#"port_id="000002""#), "{info:?}");
        assert_eq!(got.len(), 1 + 13);
    }

    #[test]
    fn no_fc_host_is_no_data_and_a_missing_attribute_fails() {
        let t = Tree::new("fc-none");
        let (_, r) = run_families(&mut Fibrechannel::new(&t.config()));
        assert!(matches!(r, Err(NodeError::NoData { .. })), "{r:?}");
        t.write("sys/class/fc_host/host0/speed", "16 Gbit\n");
        let e = run(&mut Fibrechannel::new(&t.config())).unwrap_err().to_string();
        assert!(e.contains("host0/port_state"), "{e}");
    }
}
