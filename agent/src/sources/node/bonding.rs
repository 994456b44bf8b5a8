//! `bonding`: configured and active slaves of each bonding master, from
//! /sys/class/net/bonding_masters and the masters' slave directories.

use std::path::{Path, PathBuf};

use super::{NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// The `bonding` collector.
pub(super) struct Bonding {
    net: PathBuf,
}

impl Bonding {
    pub fn new(c: &NodeConfig) -> Self {
        Bonding { net: c.sys_path.join("class/net") }
    }
}

/// Reads a file; an absent one (anywhere on the way) is "no data", as in node_exporter.
fn read(path: &Path) -> Result<String, NodeError> {
    std::fs::read_to_string(path).map_err(|e| NodeError::read_or_absent(path, e))
}

impl Bonding {
    fn stats(&self) -> Result<Vec<(String, u32, u32)>, NodeError> {
        let masters = read(&self.net.join("bonding_masters"))?;
        let mut stats = Vec::new();
        for master in masters.split_ascii_whitespace() {
            let dir = self.net.join(master);
            let slaves = read(&dir.join("bonding/slaves"))?;
            let (mut all, mut up) = (0, 0);
            for slave in slaves.split_ascii_whitespace() {
                let lower = dir.join(format!("lower_{slave}/bonding_slave/mii_status"));
                let state = match std::fs::read_to_string(&lower) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        // Older kernels name the link slave_<name>.
                        read(&dir.join(format!("slave_{slave}/bonding_slave/mii_status")))?
                    }
                    r => r.map_err(|e| NodeError::read(&lower, e))?,
                };
                all += 1;
                if state.trim() == "up" {
                    up += 1;
                }
            }
            stats.push((master.to_string(), all, up));
        }
        Ok(stats)
    }
}

impl Sub for Bonding {
    fn name(&self) -> &'static str {
        "bonding"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let stats = self.stats()?;
        let from = out.mark();
        for (master, all, up) in &stats {
            out.add_to(
                from,
                "node_bonding_slaves",
                MetricType::Gauge,
                "Number of configured slaves per bonding interface.",
                &[("master", master)],
                f64::from(*all),
            );
            out.add_to(
                from,
                "node_bonding_active",
                MetricType::Gauge,
                "Number of active slaves per bonding interface.",
                &[("master", master)],
                f64::from(*up),
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
    fn slaves_and_active() {
        let t = Tree::new("bond");
        t.write("sys/class/net/bonding_masters", "bond0 dmz\n");
        t.write("sys/class/net/bond0/bonding/slaves", "eth0 eth1\n");
        t.write("sys/class/net/bond0/lower_eth0/bonding_slave/mii_status", "up\n");
        t.write("sys/class/net/bond0/slave_eth1/bonding_slave/mii_status", "down\n");
        t.write("sys/class/net/dmz/bonding/slaves", "\n");
        let got = run(&mut Bonding::new(&t.config())).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(value(&got, "node_bonding_slaves{master=\"bond0\"}"), 2.0);
        assert_eq!(value(&got, "node_bonding_active{master=\"bond0\"}"), 1.0);
        assert_eq!(value(&got, "node_bonding_slaves{master=\"dmz\"}"), 0.0);
        std::fs::remove_file(t.0.join("sys/class/net/bond0/slave_eth1/bonding_slave/mii_status")).unwrap();
        assert!(matches!(run(&mut Bonding::new(&t.config())), Err(NodeError::NoData(_))));
    }
}
