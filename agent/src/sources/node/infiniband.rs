//! The `infiniband` collector: HCAs and their ports from
//! /sys/class/infiniband, as node_exporter 1.5 reports them: data counters
//! in 4-byte words scaled to bytes, the rate parsed as procfs does
//! ("40 Gb/sec" read as a float32, times 125000000), a counter only when its
//! file holds a number. As in node_exporter, a file found missing anywhere
//! (no class directory included) is "no data".

use std::path::{Path, PathBuf};

use super::tapestats::parse_uint;
use super::{NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// (directory, file, metric suffix, help, scale), in node_exporter's order.
const COUNTERS: [(&str, &str, &str, &str, u64); 30] = [
    ("counters_ext", "port_multicast_rcv_packets", "legacy_multicast_packets_received_total", "Number of multicast packets received", 1),
    ("counters_ext", "port_multicast_xmit_packets", "legacy_multicast_packets_transmitted_total", "Number of multicast packets transmitted", 1),
    ("counters_ext", "port_rcv_data_64", "legacy_data_received_bytes_total", "Number of data octets received on all links", 4),
    ("counters_ext", "port_rcv_packets_64", "legacy_packets_received_total", "Number of data packets received on all links", 1),
    ("counters_ext", "port_unicast_rcv_packets", "legacy_unicast_packets_received_total", "Number of unicast packets received", 1),
    ("counters_ext", "port_unicast_xmit_packets", "legacy_unicast_packets_transmitted_total", "Number of unicast packets transmitted", 1),
    ("counters_ext", "port_xmit_data_64", "legacy_data_transmitted_bytes_total", "Number of data octets transmitted on all links", 4),
    ("counters_ext", "port_xmit_packets_64", "legacy_packets_transmitted_total", "Number of data packets received on all links", 1),
    ("counters", "excessive_buffer_overrun_errors", "excessive_buffer_overrun_errors_total", "Number of times that OverrunErrors consecutive flow control update periods occurred, each having at least one overrun error.", 1),
    ("counters", "link_downed", "link_downed_total", "Number of times the link failed to recover from an error state and went down", 1),
    ("counters", "link_error_recovery", "link_error_recovery_total", "Number of times the link successfully recovered from an error state", 1),
    ("counters", "local_link_integrity_errors", "local_link_integrity_errors_total", "Number of times that the count of local physical errors exceeded the threshold specified by LocalPhyErrors.", 1),
    ("counters", "multicast_rcv_packets", "multicast_packets_received_total", "Number of multicast packets received (including errors)", 1),
    ("counters", "multicast_xmit_packets", "multicast_packets_transmitted_total", "Number of multicast packets transmitted (including errors)", 1),
    ("counters", "port_rcv_constraint_errors", "port_constraint_errors_received_total", "Number of packets received on the switch physical port that are discarded", 1),
    ("counters", "port_xmit_constraint_errors", "port_constraint_errors_transmitted_total", "Number of packets not transmitted from the switch physical port", 1),
    ("counters", "port_rcv_data", "port_data_received_bytes_total", "Number of data octets received on all links", 4),
    ("counters", "port_xmit_data", "port_data_transmitted_bytes_total", "Number of data octets transmitted on all links", 4),
    ("counters", "port_rcv_discards", "port_discards_received_total", "Number of inbound packets discarded by the port because the port is down or congested", 1),
    ("counters", "port_xmit_discards", "port_discards_transmitted_total", "Number of outbound packets discarded by the port because the port is down or congested", 1),
    ("counters", "port_rcv_errors", "port_errors_received_total", "Number of packets containing an error that were received on this port", 1),
    ("counters", "port_rcv_packets", "port_packets_received_total", "Number of packets received on all VLs by this port (including errors)", 1),
    ("counters", "port_xmit_packets", "port_packets_transmitted_total", "Number of packets transmitted on all VLs from this port (including errors)", 1),
    ("counters", "port_xmit_wait", "port_transmit_wait_total", "Number of ticks during which the port had data to transmit but no data was sent during the entire tick", 1),
    ("counters", "unicast_rcv_packets", "unicast_packets_received_total", "Number of unicast packets received (including errors)", 1),
    ("counters", "unicast_xmit_packets", "unicast_packets_transmitted_total", "Number of unicast packets transmitted (including errors)", 1),
    ("counters", "port_rcv_remote_physical_errors", "port_receive_remote_physical_errors_total", "Number of packets marked with the EBP (End of Bad Packet) delimiter received on the port.", 1),
    ("counters", "port_rcv_switch_relay_errors", "port_receive_switch_relay_errors_total", "Number of packets that could not be forwarded by the switch.", 1),
    ("counters", "symbol_error", "symbol_error_total", "Number of minor link errors detected on one or more physical lanes.", 1),
    ("counters", "VL15_dropped", "vl15_dropped_total", "Number of incoming VL15 packets dropped due to resource limitations.", 1),
];

fn not_found(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

/// Reads a file, with a missing one as "no data" (node_exporter's errors.Is(ErrNotExist)).
fn read(path: &Path) -> Result<String, NodeError> {
    std::fs::read_to_string(path).map_err(|e| NodeError::read_or_absent(path, e))
}

/// "4: ACTIVE" to 4.
fn state_id(path: &Path, text: &str) -> Result<f64, NodeError> {
    let bad = || NodeError::parse(path, format!("not 'ID: NAME': {:?}", text.trim()));
    let (id, _) = text.split_once(':').filter(|(_, rest)| !rest.contains(':')).ok_or_else(bad)?;
    id.trim().parse::<u32>().map(f64::from).map_err(|_| bad())
}

/// "40 Gb/sec (4X QDR)" to bytes per second, as procfs computes it.
fn rate(path: &Path, text: &str) -> Result<f64, NodeError> {
    let bad = || NodeError::parse(path, format!("bad rate {:?}", text.trim()));
    let (num, _) = text.split_once(' ').ok_or_else(bad)?;
    let v: f32 = num.trim().parse().map_err(|_| bad())?;
    Ok((f64::from(v) * 125000000.0).trunc())
}

pub(super) struct Infiniband {
    dir: PathBuf,
}

impl Infiniband {
    pub fn new(c: &NodeConfig) -> Self {
        Infiniband { dir: c.sys_path.join("class/infiniband") }
    }
}

fn sorted_names(dir: &Path) -> Result<Vec<String>, NodeError> {
    let entries = std::fs::read_dir(dir).map_err(|e| NodeError::read_or_absent(dir, e))?;
    let mut names: Vec<String> =
        entries.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect();
    names.sort();
    Ok(names)
}

/// The counters of one port directory (None for a file without a number).
fn counters(port: &Path) -> Result<[Option<u64>; COUNTERS.len()], NodeError> {
    let mut values = [None; COUNTERS.len()];
    for sub in ["counters", "counters_ext"] {
        let dir = port.join(sub);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if sub == "counters_ext" && not_found(&e) => continue,
            Err(e) => return Err(NodeError::read_or_absent(&dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| NodeError::read(&dir, e))?;
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let path = entry.path();
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if not_found(&e) || e.kind() == std::io::ErrorKind::PermissionDenied => continue,
                Err(e) => return Err(NodeError::read(&path, e)),
            };
            let name = entry.file_name();
            let Some(i) = COUNTERS.iter().position(|(d, f, ..)| *d == sub && name.to_str() == Some(*f)) else {
                continue;
            };
            match parse_uint(text.trim()) {
                Some(v) => values[i] = Some(v.wrapping_mul(COUNTERS[i].4)),
                None if text.contains("N/A (no PMA)") => {}
                None => return Err(NodeError::parse(&path, format!("bad counter {:?}", text.trim()))),
            }
        }
    }
    Ok(values)
}

impl Sub for Infiniband {
    fn name(&self) -> &'static str {
        "infiniband"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let from = out.mark();
        for device in sorted_names(&self.dir)? {
            let dir = self.dir.join(&device);
            let board = read(&dir.join("board_id"))?;
            let fw = read(&dir.join("fw_ver"))?;
            let hca = match std::fs::read_to_string(dir.join("hca_type")) {
                Ok(t) => t,
                Err(e) if not_found(&e) => String::new(),
                Err(e) => return Err(NodeError::read(&dir.join("hca_type"), e)),
            };
            let mut ports = Vec::new();
            for port in sorted_names(&dir.join("ports"))? {
                let path = dir.join("ports").join(&port);
                let number: u32 = port.parse().map_err(|_| NodeError::parse(&path, "port is not a number"))?;
                let state = state_id(&path.join("state"), &read(&path.join("state"))?)?;
                let phys = state_id(&path.join("phys_state"), &read(&path.join("phys_state"))?)?;
                let rate = rate(&path.join("rate"), &read(&path.join("rate"))?)?;
                ports.push((number.to_string(), state, phys, rate, counters(&path)?));
            }
            out.add_to(
                from,
                "node_infiniband_info",
                MetricType::Gauge,
                "Non-numeric data from /sys/class/infiniband/<device>, value is always 1.",
                &[
                    ("device", &device),
                    ("board_id", board.trim()),
                    ("firmware_version", fw.trim()),
                    ("hca_type", hca.trim()),
                ],
                1.0,
            );
            for (port, state, phys, rate, values) in &ports {
                let labels = [("device", device.as_str()), ("port", port.as_str())];
                let g = MetricType::Gauge;
                out.add_to(
                    from,
                    "node_infiniband_state_id",
                    g,
                    "State of the InfiniBand port (0: no change, 1: down, 2: init, 3: armed, 4: active, 5: act defer)",
                    &labels,
                    *state,
                );
                out.add_to(from, "node_infiniband_physical_state_id", g, "Physical state of the InfiniBand port (0: no change, 1: sleep, 2: polling, 3: disable, 4: shift, 5: link up, 6: link error recover, 7: phytest)", &labels, *phys);
                out.add_to(
                    from,
                    "node_infiniband_rate_bytes_per_second",
                    g,
                    "Maximum signal transfer rate",
                    &labels,
                    *rate,
                );
                for ((_, _, metric, help, _), v) in COUNTERS.iter().zip(values) {
                    if let Some(v) = v {
                        let name = format!("node_infiniband_{metric}");
                        out.add_to(from, &name, MetricType::Counter, help, &labels, *v as f64);
                    }
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
    fn device_ports_and_counters() {
        let t = Tree::new("ib");
        let d = "sys/class/infiniband/mlx4_0";
        for (f, v) in [
            ("board_id", "SM_1141000001000\n"),
            ("fw_ver", "2.31.5050\n"),
            ("hca_type", "MT4099\n"),
            ("ports/1/state", "4: ACTIVE\n"),
            ("ports/1/phys_state", "5: LinkUp\n"),
            ("ports/1/rate", "40 Gb/sec (4X QDR)\n"),
            ("ports/1/counters/port_rcv_data", "2221223609\n"),
            ("ports/1/counters/link_downed", "0\n"),
            ("ports/1/counters/VL15_dropped", "N/A (no PMA)\n"),
            ("ports/1/counters_ext/port_xmit_packets_64", "7\n"),
            ("ports/2/state", "1: DOWN\n"),
            ("ports/2/phys_state", "3: Disabled\n"),
            ("ports/2/rate", "2.5 Gb/sec (1X SDR)\n"),
            ("ports/2/counters/symbol_error", "3\n"),
        ] {
            t.write(&format!("{d}/{f}"), v);
        }
        let got = run(&mut Infiniband::new(&t.config())).unwrap();
        let p1 = r#"device="mlx4_0", port="1""#;
        assert_eq!(value(&got, &format!("node_infiniband_state_id{{{p1}}}")), 4.0);
        assert_eq!(value(&got, &format!("node_infiniband_physical_state_id{{{p1}}}")), 5.0);
        assert_eq!(value(&got, &format!("node_infiniband_rate_bytes_per_second{{{p1}}}")), 5e9);
        assert_eq!(value(&got, &format!("node_infiniband_port_data_received_bytes_total{{{p1}}}")), 8884894436.0);
        assert_eq!(value(&got, &format!("node_infiniband_legacy_packets_transmitted_total{{{p1}}}")), 7.0);
        assert!(!got.iter().any(|(s, _)| s.contains("vl15")), "no PMA is no series");
        let p2 = r#"device="mlx4_0", port="2""#;
        assert_eq!(value(&got, &format!("node_infiniband_rate_bytes_per_second{{{p2}}}")), 312500000.0);
        assert_eq!(value(&got, &format!("node_infiniband_symbol_error_total{{{p2}}}")), 3.0);
        assert_eq!(
            value(
                &got,
                r#"node_infiniband_info{board_id="SM_1141000001000", device="mlx4_0", firmware_version="2.31.5050", hca_type="MT4099"}"#
            ),
            1.0
        );
    }

    #[test]
    fn no_infiniband_is_no_data() {
        let t = Tree::new("ib-none");
        let (_, r) = run_families(&mut Infiniband::new(&t.config()));
        assert!(matches!(r, Err(NodeError::NoData { .. })), "{r:?}");
    }
}
