//! `netdev`: per-interface traffic counters from /proc/net/dev (plus
//! rx_nohandler from sysfs, which node_exporter gets over netlink).

use std::collections::HashMap;
use std::path::PathBuf;

use super::{Dir, FileBuf, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// Metric names and help texts of /proc/net/dev's 16 columns, in order.
const COLUMNS: [(&str, &str); 16] = [
    ("node_network_receive_bytes_total", "Network device statistic receive_bytes."),
    ("node_network_receive_packets_total", "Network device statistic receive_packets."),
    ("node_network_receive_errs_total", "Network device statistic receive_errs."),
    ("node_network_receive_drop_total", "Network device statistic receive_drop."),
    ("node_network_receive_fifo_total", "Network device statistic receive_fifo."),
    ("node_network_receive_frame_total", "Network device statistic receive_frame."),
    ("node_network_receive_compressed_total", "Network device statistic receive_compressed."),
    ("node_network_receive_multicast_total", "Network device statistic receive_multicast."),
    ("node_network_transmit_bytes_total", "Network device statistic transmit_bytes."),
    ("node_network_transmit_packets_total", "Network device statistic transmit_packets."),
    ("node_network_transmit_errs_total", "Network device statistic transmit_errs."),
    ("node_network_transmit_drop_total", "Network device statistic transmit_drop."),
    ("node_network_transmit_fifo_total", "Network device statistic transmit_fifo."),
    ("node_network_transmit_colls_total", "Network device statistic transmit_colls."),
    ("node_network_transmit_carrier_total", "Network device statistic transmit_carrier."),
    ("node_network_transmit_compressed_total", "Network device statistic transmit_compressed."),
];
const NOHANDLER: (&str, &str) = ("node_network_receive_nohandler_total", "Network device statistic receive_nohandler.");

/// The `netdev` collector.
pub(super) struct Netdev {
    file: FileBuf,
    exclude: regex::Regex,
    sys_net: PathBuf,
    /// Per device: excluded?, and its sysfs statistics directory path.
    devices: HashMap<String, (bool, PathBuf)>,
    buf: Vec<u8>,
}

impl Netdev {
    pub fn new(c: &NodeConfig) -> Self {
        Netdev {
            file: FileBuf::new(c.proc_path.join("net/dev")),
            exclude: super::regex_or(&c.netdev_device_exclude, super::DEFAULT_NETDEV_EXCLUDE),
            sys_net: c.sys_path.join("class/net"),
            devices: HashMap::new(),
            buf: Vec::with_capacity(64),
        }
    }
}

impl Sub for Netdev {
    fn name(&self) -> &'static str {
        "netdev"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let (path, text) = self.file.read()?;
        let from = out.mark();
        let mut count = 0;
        for line in text.lines().skip(2) {
            let Some((name, rest)) = line.split_once(':') else {
                return Err(NodeError::parse(path, format!("line without ':' {line:?}")));
            };
            let name = name.trim();
            let mut values = [0f64; 16];
            let mut n = 0;
            for (slot, f) in values.iter_mut().zip(rest.split_ascii_whitespace()) {
                *slot = f.parse::<u64>().map_err(|_| NodeError::parse(path, format!("bad number {f:?} in {line:?}")))?
                    as f64;
                n += 1;
            }
            if n != 16 {
                return Err(NodeError::parse(path, format!("{n} columns for {name}, expected 16")));
            }
            count += 1;
            if !self.devices.contains_key(name) {
                let entry = (self.exclude.is_match(name), self.sys_net.join(name).join("statistics"));
                self.devices.insert(name.to_string(), entry);
            }
            let (excluded, stats_dir) = &self.devices[name];
            if *excluded {
                continue;
            }
            for ((metric, help), v) in COLUMNS.iter().zip(values) {
                out.add_to(from, metric, MetricType::Counter, help, &[("device", name)], v);
            }
            let nohandler =
                Dir::open(stats_dir).and_then(|d| d.read(c"rx_nohandler", &mut self.buf).map(|s| s.parse::<u64>()));
            if let Ok(Ok(v)) = nohandler {
                out.add_to(from, NOHANDLER.0, MetricType::Counter, NOHANDLER.1, &[("device", name)], v as f64);
            }
        }
        if self.devices.len() > count * 2 + 16 {
            self.devices.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, value, Tree};
    use super::*;

    const TEXT: &str = "Inter-|   Receive                                                |  Transmit\n \
face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n\
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n\
  eth0: 456436633   16905    1    2    3     4          5         6   812596     9328    7    8    9    10      11         12\n";

    #[test]
    fn columns_and_lo_excluded() {
        let t = Tree::new("netdev");
        t.write("proc/net/dev", TEXT);
        t.write("sys/class/net/eth0/statistics/rx_nohandler", "13\n");
        let got = run(&mut Netdev::new(&t.config())).unwrap();
        assert_eq!(got.len(), 17, "{got:?}");
        assert_eq!(value(&got, "node_network_receive_bytes_total{device=\"eth0\"}"), 456436633.0);
        assert_eq!(value(&got, "node_network_receive_multicast_total{device=\"eth0\"}"), 6.0);
        assert_eq!(value(&got, "node_network_transmit_colls_total{device=\"eth0\"}"), 10.0);
        assert_eq!(value(&got, "node_network_transmit_compressed_total{device=\"eth0\"}"), 12.0);
        assert_eq!(value(&got, "node_network_receive_nohandler_total{device=\"eth0\"}"), 13.0);
    }

    #[test]
    fn malformed() {
        let t = Tree::new("netdev-bad");
        t.write("proc/net/dev", "h\nh\n eth0: 1 2 3\n");
        assert!(run(&mut Netdev::new(&t.config())).unwrap_err().to_string().contains("3 columns"));
        t.write("proc/net/dev", "h\nh\n eth0 1 2 3\n");
        assert!(run(&mut Netdev::new(&t.config())).is_err());
    }
}
