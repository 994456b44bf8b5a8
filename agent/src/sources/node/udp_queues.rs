//! `udp_queues`: bytes queued in UDP sockets, summed from /proc/net/udp
//! and /proc/net/udp6.

use std::path::Path;

use super::{FileBuf, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// The `udp_queues` collector.
pub(super) struct UdpQueues {
    files: [(FileBuf, &'static str); 2],
}

impl UdpQueues {
    pub fn new(c: &NodeConfig) -> Self {
        let p = &c.proc_path;
        UdpQueues { files: [(FileBuf::new(p.join("net/udp")), "v4"), (FileBuf::new(p.join("net/udp6")), "v6")] }
    }
}

/// (tx, rx) queue bytes summed over the socket lines.
fn sums(path: &Path, text: &str) -> Result<(f64, f64), NodeError> {
    let (mut tx, mut rx) = (0u64, 0u64);
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        if fields.len() < 10 {
            return Err(NodeError::parse(path, format!("socket line of fewer than 10 columns {line:?}")));
        }
        let queues = fields[4].split_once(':');
        let parsed =
            queues.and_then(|(t, r)| Some((u64::from_str_radix(t, 16).ok()?, u64::from_str_radix(r, 16).ok()?)));
        let Some((t, r)) = parsed else {
            return Err(NodeError::parse(path, format!("bad tx/rx queues {:?}", fields[4])));
        };
        tx += t;
        rx += r;
    }
    Ok((tx as f64, rx as f64))
}

impl Sub for UdpQueues {
    fn name(&self) -> &'static str {
        "udp_queues"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let from = out.mark();
        let mut absent = 0;
        for (file, ip) in &mut self.files {
            let (path, text) = match file.read() {
                Ok(r) => r,
                Err(NodeError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    absent += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (tx, rx) = sums(path, text)?;
            let help = "Number of allocated memory in the kernel for UDP datagrams in bytes.";
            out.add_to(from, "node_udp_queues", MetricType::Gauge, help, &[("queue", "tx"), ("ip", ip)], tx);
            out.add_to(from, "node_udp_queues", MetricType::Gauge, help, &[("queue", "rx"), ("ip", ip)], rx);
        }
        if absent == 2 {
            return Err(NodeError::no_data(&self.files[0].0.path));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, value, Tree};
    use super::*;

    #[test]
    fn queues_summed_per_family() {
        let t = Tree::new("udpq");
        t.write(
            "proc/net/udp",
            "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: 00000000:0044 00000000:0000 07 00000000:00000001 00:00000000 00000000     0        0 2179 2 0000 0\n\
             1: 00000000:0045 00000000:0000 07 00000010:00000002 00:00000000 00000000     0        0 2180 2 0000 0\n",
        );
        let got = run(&mut UdpQueues::new(&t.config())).unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(value(&got, "node_udp_queues{ip=\"v4\", queue=\"tx\"}"), 16.0);
        assert_eq!(value(&got, "node_udp_queues{ip=\"v4\", queue=\"rx\"}"), 3.0);
        t.write("proc/net/udp6", "header\n 0: x y z 0000000g:0 a b c d e\n");
        assert!(run(&mut UdpQueues::new(&t.config())).unwrap_err().to_string().contains("0000000g"));
        let none = Tree::new("udpq-none");
        assert!(matches!(run(&mut UdpQueues::new(&none.config())), Err(NodeError::NoData(_))));
    }
}
