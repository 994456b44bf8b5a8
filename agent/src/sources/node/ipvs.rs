//! `ipvs`: IP Virtual Server totals from /proc/net/ip_vs_stats and backend
//! states from /proc/net/ip_vs, as node_exporter 1.5 reads them (through
//! procfs, not netlink), summed by the configured backend labels.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use super::{FileBuf, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// Backend labels in node_exporter's order (`ipvs.backend-labels` default: all).
pub const BACKEND_LABELS: [&str; 6] =
    ["local_address", "local_port", "remote_address", "remote_port", "proto", "local_mark"];

/// The labels named in `text` (comma separated), in [`BACKEND_LABELS`]'
/// order, or the unknown names.
pub fn backend_labels(text: &str) -> Result<Vec<usize>, Vec<String>> {
    let named: Vec<&str> = text.split(',').filter(|l| !l.is_empty()).collect();
    let mut unknown: Vec<String> =
        named.iter().filter(|l| !BACKEND_LABELS.contains(l)).map(|l| l.to_string()).collect();
    if !unknown.is_empty() {
        unknown.sort();
        unknown.dedup();
        return Err(unknown);
    }
    Ok((0..BACKEND_LABELS.len()).filter(|i| named.contains(&BACKEND_LABELS[*i])).collect())
}

/// The `ipvs` collector.
pub(super) struct Ipvs {
    stats: FileBuf,
    backends: FileBuf,
    labels: Vec<usize>,
}

impl Ipvs {
    pub fn new(c: &NodeConfig) -> Self {
        let labels = c
            .ipvs_backend_labels
            .as_deref()
            .map_or_else(|| Ok((0..BACKEND_LABELS.len()).collect()), backend_labels)
            .unwrap_or_else(|_| (0..BACKEND_LABELS.len()).collect());
        let p = &c.proc_path;
        Ipvs { stats: FileBuf::new(p.join("net/ip_vs_stats")), backends: FileBuf::new(p.join("net/ip_vs")), labels }
    }
}

/// The five hex totals of ip_vs_stats' third line.
fn totals(path: &Path, text: &str) -> Result<[f64; 5], NodeError> {
    let lines: Vec<&str> = text.splitn(4, '\n').collect();
    if lines.len() != 4 {
        return Err(NodeError::parse(path, "too short"));
    }
    let fields: Vec<&str> = lines[2].split_ascii_whitespace().collect();
    if fields.len() != 5 {
        return Err(NodeError::parse(path, format!("{} fields in {:?}, expected 5", fields.len(), lines[2])));
    }
    let mut v = [0f64; 5];
    for (slot, f) in v.iter_mut().zip(&fields) {
        *slot = u64::from_str_radix(f, 16).map_err(|_| NodeError::parse(path, format!("bad hex {f:?}")))? as f64;
    }
    Ok(v)
}

/// `C0A80016:0CEA` or `[2620:0000:...]:0050` to (address text, port).
fn ip_port(path: &Path, s: &str) -> Result<(String, u16), NodeError> {
    let bad = || NodeError::parse(path, format!("unexpected IP:Port {s:?}"));
    let ip = match s.len() {
        13 => Ipv4Addr::from(u32::from_str_radix(&s[..8], 16).map_err(|_| bad())?).to_string(),
        46 => {
            let v6: Ipv6Addr = s[1..40].parse().map_err(|_| bad())?;
            // Go prints IPv4-mapped addresses as plain IPv4.
            v6.to_ipv4_mapped().map_or_else(|| v6.to_string(), |v4| v4.to_string())
        }
        _ => return Err(bad()),
    };
    let port = u16::from_str_radix(&s[s.len() - 4..], 16).map_err(|_| bad())?;
    Ok((ip, port))
}

/// One backend: label values in [`BACKEND_LABELS`]' order and (active, inactive, weight).
type Backend = ([String; 6], [u64; 3]);

fn backends(path: &Path, text: &str) -> Result<Vec<Backend>, NodeError> {
    let mut out = Vec::new();
    let (mut proto, mut mark, mut local, mut local_port) = (String::new(), String::new(), String::new(), 0u16);
    for line in text.lines() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() < 2 || f[0] == "IP" || f[0] == "Prot" || f[1] == "RemoteAddress:Port" {
            continue;
        }
        match f[0] {
            "TCP" | "UDP" => {
                proto = f[0].to_string();
                mark.clear();
                (local, local_port) = ip_port(path, f[1])?;
            }
            "FWM" => {
                proto = f[0].to_string();
                mark = f[1].to_string();
                local.clear();
                local_port = 0;
            }
            "->" if f.len() >= 6 => {
                let (remote, remote_port) = ip_port(path, f[1])?;
                let mut n = [0u64; 3];
                for (slot, field) in n.iter_mut().zip([f[4], f[5], f[3]]) {
                    *slot = field.parse().map_err(|_| NodeError::parse(path, format!("bad number {field:?}")))?;
                }
                let labels = [
                    local.clone(),
                    local_port.to_string(),
                    remote,
                    remote_port.to_string(),
                    proto.clone(),
                    mark.clone(),
                ];
                out.push((labels, n));
            }
            _ => {}
        }
    }
    Ok(out)
}

impl Sub for Ipvs {
    fn name(&self) -> &'static str {
        "ipvs"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let stats_path = self.stats.path.clone();
        let (path, text) = self.stats.read().map_err(|e| match e {
            NodeError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                NodeError::no_data(&stats_path)
            }
            e => e,
        })?;
        let t = totals(path, text)?;
        let c = MetricType::Counter;
        out.single("node_ipvs_connections_total", c, "The total number of connections made.", &[], t[0]);
        out.single("node_ipvs_incoming_packets_total", c, "The total number of incoming packets.", &[], t[1]);
        out.single("node_ipvs_outgoing_packets_total", c, "The total number of outgoing packets.", &[], t[2]);
        out.single("node_ipvs_incoming_bytes_total", c, "The total amount of incoming data.", &[], t[3]);
        out.single("node_ipvs_outgoing_bytes_total", c, "The total amount of outgoing data.", &[], t[4]);
        let (path, text) = self.backends.read()?;
        let list = backends(path, text)?;
        // Backends that share the chosen label values are summed.
        let mut sums: Vec<(Vec<&str>, [u64; 3])> = Vec::new();
        for (labels, n) in &list {
            let key: Vec<&str> = self.labels.iter().map(|&i| labels[i].as_str()).collect();
            match sums.iter_mut().find(|(k, _)| *k == key) {
                Some((_, s)) => {
                    for (a, b) in s.iter_mut().zip(n) {
                        *a += b;
                    }
                }
                None => sums.push((key, *n)),
            }
        }
        let from = out.mark();
        let families = [
            ("node_ipvs_backend_connections_active", "The current active connections by local and remote address."),
            ("node_ipvs_backend_connections_inactive", "The current inactive connections by local and remote address."),
            ("node_ipvs_backend_weight", "The current backend weight by local and remote address."),
        ];
        for (key, n) in &sums {
            let pairs: Vec<(&str, &str)> =
                self.labels.iter().map(|&i| BACKEND_LABELS[i]).zip(key.iter().copied()).collect();
            for ((name, help), v) in families.iter().zip(n) {
                out.add_to(from, name, MetricType::Gauge, help, &pairs, *v as f64);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, value, Tree};
    use super::*;

    const IP_VS: &str = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n\
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n\
TCP  C0A80016:0CEA wlc\n\
  -> C0A85216:0CEA      Tunnel  100    248        2\n\
  -> C0A85318:0CEA      Tunnel  100    248        2\n\
TCP  [2620:0000:0000:0000:0000:0000:0000:0001]:0050 rr\n\
  -> [0000:0000:0000:0000:0000:ffff:c0a8:0001]:0050 Masq 1 3 4\n\
FWM  10001000 wlc\n\
  -> C0A8321A:0CEA      Tunnel  20     64         1\n";

    #[test]
    fn totals_and_backends() {
        let t = Tree::new("ipvs");
        t.write(
            "proc/net/ip_vs_stats",
            "   Total Incoming Outgoing         Incoming         Outgoing\n   Conns  Packets  Packets            Bytes            Bytes\n 16AA370 E33656E5        0     51D8C8883AB3                0\n\n Conns/s\n",
        );
        t.write("proc/net/ip_vs", IP_VS);
        let got = run(&mut Ipvs::new(&t.config())).unwrap();
        assert_eq!(got.len(), 5 + 3 * 4, "{got:#?}");
        assert_eq!(value(&got, "node_ipvs_connections_total{}"), 23765872.0);
        assert_eq!(value(&got, "node_ipvs_incoming_bytes_total{}"), 89991519156915.0);
        let b = "local_address=\"192.168.0.22\", local_port=\"3306\", proto=\"TCP\", remote_address=\"192.168.82.22\", remote_port=\"3306\"";
        assert_eq!(value(&got, &format!("node_ipvs_backend_connections_active{{{b}}}")), 248.0);
        assert_eq!(value(&got, &format!("node_ipvs_backend_weight{{{b}}}")), 100.0);
        let v6 = "local_address=\"2620::1\", local_port=\"80\", proto=\"TCP\", remote_address=\"192.168.0.1\", remote_port=\"80\"";
        assert_eq!(value(&got, &format!("node_ipvs_backend_connections_inactive{{{v6}}}")), 4.0);
        let fwm = "local_mark=\"10001000\", local_port=\"0\", proto=\"FWM\", remote_address=\"192.168.50.26\", remote_port=\"3306\"";
        assert_eq!(value(&got, &format!("node_ipvs_backend_connections_active{{{fwm}}}")), 64.0);
        // Fewer labels: backends sharing them are summed.
        let c = NodeConfig { ipvs_backend_labels: Some("local_port,proto".into()), ..t.config() };
        let got = run(&mut Ipvs::new(&c)).unwrap();
        assert_eq!(value(&got, "node_ipvs_backend_connections_active{local_port=\"3306\", proto=\"TCP\"}"), 496.0);
        assert_eq!(backend_labels("proto,nope,x"), Err(vec!["nope".to_string(), "x".to_string()]));
        assert!(matches!(run(&mut Ipvs::new(&Tree::new("ipvs-none").config())), Err(NodeError::NoData(_))));
    }
}
