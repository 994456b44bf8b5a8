//! `arp`: neighbour-table entries per device from /proc/net/arp.

use super::{FileBuf, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// node_exporter's device filter: an exclude or an include pattern.
pub(super) struct DeviceFilter {
    exclude: Option<regex::Regex>,
    include: Option<regex::Regex>,
}

impl DeviceFilter {
    pub fn new(exclude: &Option<String>, include: &Option<String>) -> Self {
        let compile =
            |p: &Option<String>| p.as_deref().filter(|p| !p.is_empty()).and_then(|p| regex::Regex::new(p).ok());
        DeviceFilter { exclude: compile(exclude), include: compile(include) }
    }

    pub fn ignored(&self, device: &str) -> bool {
        self.exclude.as_ref().is_some_and(|r| r.is_match(device))
            || self.include.as_ref().is_some_and(|r| !r.is_match(device))
    }
}

/// The `arp` collector.
pub(super) struct Arp {
    file: FileBuf,
    filter: DeviceFilter,
    counts: Vec<(String, u32)>,
}

impl Arp {
    pub fn new(c: &NodeConfig) -> Self {
        Arp {
            file: FileBuf::new(c.proc_path.join("net/arp")),
            filter: DeviceFilter::new(&c.arp_device_exclude, &c.arp_device_include),
            counts: Vec::new(),
        }
    }
}

impl Sub for Arp {
    fn name(&self) -> &'static str {
        "arp"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let (path, text) = self.file.read()?;
        for (_, n) in &mut self.counts {
            *n = 0;
        }
        for line in text.lines() {
            let columns: Vec<&str> = line.split_ascii_whitespace().collect();
            if columns.len() < 6 {
                return Err(NodeError::parse(path, format!("unexpected ARP table line {line:?}")));
            }
            if columns[0] == "IP" {
                continue; // the header
            }
            let device = columns[columns.len() - 1];
            match self.counts.iter_mut().find(|(d, _)| d == device) {
                Some((_, n)) => *n += 1,
                None => self.counts.push((device.to_string(), 1)),
            }
        }
        self.counts.retain(|(_, n)| *n > 0);
        self.counts.sort_unstable();
        out.family("node_arp_entries", MetricType::Gauge, "ARP entries by device");
        for (device, n) in &self.counts {
            if !self.filter.ignored(device) {
                out.add(&[("device", device)], f64::from(*n));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, Tree};
    use super::*;

    #[test]
    fn entries_per_device() {
        let t = Tree::new("arp");
        t.write(
            "proc/net/arp",
            "IP address       HW type     Flags       HW address            Mask     Device\n\
             192.168.1.1      0x1         0x2         cc:aa:dd:ee:aa:bb     *        eth0\n\
             192.168.1.2      0x1         0x2         bb:cc:dd:ee:ff:aa     *        eth0\n\
             10.0.0.1         0x1         0x2         aa:bb:cc:dd:ee:ff     *        nope\n",
        );
        let got = run(&mut Arp::new(&t.config())).unwrap();
        assert_eq!(
            got,
            [("node_arp_entries{device=\"eth0\"}".into(), 2.0), ("node_arp_entries{device=\"nope\"}".into(), 1.0)]
        );
        let c = NodeConfig { arp_device_exclude: Some("nope".into()), ..t.config() };
        assert_eq!(run(&mut Arp::new(&c)).unwrap().len(), 1);
        let c = NodeConfig { arp_device_include: Some("^nope$".into()), ..t.config() };
        assert_eq!(run(&mut Arp::new(&c)).unwrap(), [("node_arp_entries{device=\"nope\"}".into(), 1.0)]);
        t.write("proc/net/arp", "IP address HW type\n");
        assert!(run(&mut Arp::new(&t.config())).is_err());
    }
}
