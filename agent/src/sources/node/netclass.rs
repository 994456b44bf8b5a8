//! `netclass`: interface properties from /sys/class/net/<iface>.

use std::ffi::CStr;
use std::path::PathBuf;

use super::{Dir, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// (sysfs attribute, metric name, type, scale).
const PROPS: [(&CStr, &str, MetricType, f64); 17] = [
    (c"addr_assign_type", "address_assign_type", MetricType::Gauge, 1.0),
    (c"carrier", "carrier", MetricType::Gauge, 1.0),
    (c"carrier_changes", "carrier_changes_total", MetricType::Counter, 1.0),
    (c"carrier_up_count", "carrier_up_changes_total", MetricType::Counter, 1.0),
    (c"carrier_down_count", "carrier_down_changes_total", MetricType::Counter, 1.0),
    (c"dev_id", "device_id", MetricType::Gauge, 1.0),
    (c"dormant", "dormant", MetricType::Gauge, 1.0),
    (c"flags", "flags", MetricType::Gauge, 1.0),
    (c"ifindex", "iface_id", MetricType::Gauge, 1.0),
    (c"iflink", "iface_link", MetricType::Gauge, 1.0),
    (c"link_mode", "iface_link_mode", MetricType::Gauge, 1.0),
    (c"mtu", "mtu_bytes", MetricType::Gauge, 1.0),
    (c"name_assign_type", "name_assign_type", MetricType::Gauge, 1.0),
    (c"netdev_group", "net_dev_group", MetricType::Gauge, 1.0),
    // Mbit/s to bytes/s.
    (c"speed", "speed_bytes", MetricType::Gauge, 125_000.0),
    (c"tx_queue_len", "transmit_queue_length", MetricType::Gauge, 1.0),
    (c"type", "protocol_type", MetricType::Gauge, 1.0),
];

/// Full metric names and help texts of [`PROPS`], built once.
struct Names {
    props: Vec<(String, String)>,
}

/// The `netclass` collector.
pub(super) struct Netclass {
    dir: PathBuf,
    ignored: regex::Regex,
    names: Names,
    bufs: [Vec<u8>; 6],
}

impl Netclass {
    pub fn new(c: &NodeConfig) -> Self {
        let props = PROPS
            .iter()
            .map(|(_, n, _, _)| (format!("node_network_{n}"), format!("Network device property: {n}")))
            .collect();
        Netclass {
            dir: c.sys_path.join("class/net"),
            ignored: super::regex_or(&c.netclass_ignored_devices, "^$"),
            names: Names { props },
            bufs: Default::default(),
        }
    }
}

/// Parses a sysfs number: decimal, or hex with 0x (flags).
fn parse_int(text: &str) -> Option<f64> {
    let t = text.trim();
    match t.strip_prefix("0x") {
        Some(hex) => i64::from_str_radix(hex, 16).ok().map(|v| v as f64),
        None => t.parse::<i64>().ok().map(|v| v as f64),
    }
}

impl Sub for Netclass {
    fn name(&self) -> &'static str {
        "netclass"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| NodeError::read(&self.dir, e))?;
        let mut devices: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !self.ignored.is_match(n))
            .collect();
        devices.sort_unstable();
        let from = out.mark();
        for device in &devices {
            let Ok(dir) = Dir::open(&self.dir.join(device)) else { continue };
            let [b0, b1, b2, b3, b4, b5] = &mut self.bufs;
            // Not a device directory (bonding_masters is a file).
            if dir.read(c"ifindex", b0).is_err() {
                continue;
            }
            let address = dir.read(c"address", b1).unwrap_or("");
            let broadcast = dir.read(c"broadcast", b2).unwrap_or("");
            let duplex = dir.read(c"duplex", b3).unwrap_or("");
            let ifalias = dir.read(c"ifalias", b4).unwrap_or("");
            let operstate = dir.read(c"operstate", b5).unwrap_or("");
            out.add_to(
                from,
                "node_network_info",
                MetricType::Gauge,
                "Non-numeric data from /sys/class/net/<iface>, value is always 1.",
                &[
                    ("address", address),
                    ("broadcast", broadcast),
                    ("device", device),
                    ("duplex", duplex),
                    ("ifalias", ifalias),
                    ("operstate", operstate),
                ],
                1.0,
            );
            let up = if operstate == "up" { 1.0 } else { 0.0 };
            out.add_to(
                from,
                "node_network_up",
                MetricType::Gauge,
                "Value is 1 if operstate is 'up', 0 otherwise.",
                &[("device", device)],
                up,
            );
            for ((attr, _, kind, scale), (name, help)) in PROPS.iter().zip(&self.names.props) {
                // Unreadable attributes (carrier of a down link: EINVAL) are left out.
                let Some(v) = dir.read(attr, b0).ok().and_then(parse_int) else { continue };
                out.add_to(from, name, *kind, help, &[("device", device)], v * scale);
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
    fn properties_info_and_up() {
        let t = Tree::new("netclass");
        for (k, v) in [
            ("ifindex", "4"),
            ("iflink", "4"),
            ("mtu", "1400"),
            ("speed", "-1"),
            ("flags", "0x1003"),
            ("carrier_changes", "2"),
            ("address", "02:fc:00:00:00:01"),
            ("broadcast", "ff:ff:ff:ff:ff:ff"),
            ("duplex", "full"),
            ("operstate", "up"),
            ("ifalias", ""),
            ("type", "1"),
        ] {
            t.write(&format!("sys/class/net/eth0/{k}"), &format!("{v}\n"));
        }
        t.write("sys/class/net/eth0/dormant", "garbage\n");
        t.write("sys/class/net/bonding_masters", "\n");
        let got = run(&mut Netclass::new(&t.config())).unwrap();
        assert_eq!(value(&got, "node_network_mtu_bytes{device=\"eth0\"}"), 1400.0);
        assert_eq!(value(&got, "node_network_speed_bytes{device=\"eth0\"}"), -125000.0);
        assert_eq!(value(&got, "node_network_flags{device=\"eth0\"}"), 4099.0);
        assert_eq!(value(&got, "node_network_carrier_changes_total{device=\"eth0\"}"), 2.0);
        assert_eq!(value(&got, "node_network_up{device=\"eth0\"}"), 1.0);
        assert_eq!(
            value(
                &got,
                "node_network_info{address=\"02:fc:00:00:00:01\", broadcast=\"ff:ff:ff:ff:ff:ff\", device=\"eth0\", duplex=\"full\", operstate=\"up\"}"
            ),
            1.0
        );
        assert!(!got.iter().any(|(s, _)| s.contains("dormant") || s.contains("carrier{")), "{got:?}");
        assert_eq!(got.len(), 9, "{got:#?}");
    }
}
