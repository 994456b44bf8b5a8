//! `netstat` (/proc/net/netstat, snmp, snmp6) and `sockstat`
//! (/proc/net/sockstat, sockstat6).

use super::{num, FileBuf, NameCache, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// The `netstat` collector: protocol counters whose `Proto_Field` matches
/// the configured regex, untyped as node_exporter exposes them.
pub(super) struct Netstat {
    netstat: FileBuf,
    snmp: FileBuf,
    snmp6: FileBuf,
    fields: regex::Regex,
    names: NameCache,
}

impl Netstat {
    pub fn new(c: &NodeConfig) -> Self {
        Netstat {
            netstat: FileBuf::new(c.proc_path.join("net/netstat")),
            snmp: FileBuf::new(c.proc_path.join("net/snmp")),
            snmp6: FileBuf::new(c.proc_path.join("net/snmp6")),
            fields: super::regex_or(&c.netstat_fields, super::DEFAULT_NETSTAT_FIELDS),
            names: NameCache::default(),
        }
    }
}

fn name_for(fields: &regex::Regex, key: &str) -> Option<(String, String)> {
    let (proto, field) = key.split_once('_')?;
    fields.is_match(key).then(|| (format!("node_netstat_{key}"), format!("Statistic {proto}{field}.")))
}

/// Emits the fields of a header/values line-pair file (netstat, snmp).
fn pairs(
    path: &std::path::Path,
    text: &str,
    index: &mut usize,
    names: &mut NameCache,
    fields: &regex::Regex,
    out: &mut Out<'_>,
    key: &mut String,
) -> Result<(), NodeError> {
    let mut lines = text.lines();
    while let Some(header) = lines.next() {
        let values = lines.next().ok_or_else(|| NodeError::parse(path, format!("no values line after {header:?}")))?;
        let (Some((proto, hs)), Some((proto2, vs))) = (header.split_once(": "), values.split_once(": ")) else {
            return Err(NodeError::parse(path, format!("bad line pair {header:?}")));
        };
        if proto != proto2 {
            return Err(NodeError::parse(path, format!("header {proto} followed by values of {proto2}")));
        }
        let (mut hs, mut vs) = (hs.split_ascii_whitespace(), vs.split_ascii_whitespace());
        loop {
            match (hs.next(), vs.next()) {
                (Some(h), Some(v)) => {
                    key.clear();
                    key.push_str(proto);
                    key.push('_');
                    key.push_str(h);
                    *index += 1;
                    if let Some((name, help)) = names.get(*index, key, |k| name_for(fields, k)) {
                        out.single(name, MetricType::Untyped, help, &[], num(path, v)?);
                    }
                }
                (None, None) => break,
                _ => return Err(NodeError::parse(path, format!("{proto}: header and values differ in length"))),
            }
        }
    }
    Ok(())
}

impl Sub for Netstat {
    fn name(&self) -> &'static str {
        "netstat"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let mut index = 0;
        let mut key = String::with_capacity(64);
        for file in [&mut self.netstat, &mut self.snmp] {
            let (path, text) = file.read()?;
            pairs(path, text, &mut index, &mut self.names, &self.fields, out, &mut key)?;
        }
        // snmp6 is absent when IPv6 is off, as node_exporter tolerates.
        if let Ok((path, text)) = self.snmp6.read() {
            for line in text.lines() {
                let mut parts = line.split_ascii_whitespace();
                let (Some(k), Some(v)) = (parts.next(), parts.next()) else { continue };
                // "Ip6InReceives" is Ip6_InReceives; "UdpLite6InErrors" is UdpLite6_InErrors.
                let Some(at) = k.find('6') else { continue };
                key.clear();
                key.push_str(&k[..=at]);
                key.push('_');
                key.push_str(&k[at + 1..]);
                index += 1;
                if let Some((name, help)) = self.names.get(index, &key, |k| name_for(&self.fields, k)) {
                    out.single(name, MetricType::Untyped, help, &[], num(path, v)?);
                }
            }
        }
        Ok(())
    }
}

/// The `sockstat` collector.
pub(super) struct Sockstat {
    v4: FileBuf,
    v6: FileBuf,
    names: NameCache,
    page_size: f64,
}

impl Sockstat {
    pub fn new(c: &NodeConfig) -> Self {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Sockstat {
            v4: FileBuf::new(c.proc_path.join("net/sockstat")),
            v6: FileBuf::new(c.proc_path.join("net/sockstat6")),
            names: NameCache::default(),
            page_size: if page > 0 { page as f64 } else { 4096.0 },
        }
    }
}

impl Sub for Sockstat {
    fn name(&self) -> &'static str {
        "sockstat"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let mut index = 0;
        let mut key = String::with_capacity(32);
        let page = self.page_size;
        for (file, required) in [(&mut self.v4, true), (&mut self.v6, false)] {
            let (path, text) = match file.read() {
                Ok(r) => r,
                Err(_) if !required => continue,
                Err(e) => return Err(e),
            };
            for line in text.lines() {
                let Some((proto, rest)) = line.split_once(": ") else {
                    return Err(NodeError::parse(path, format!("bad line {line:?}")));
                };
                let mut parts = rest.split_ascii_whitespace();
                while let Some(field) = parts.next() {
                    let v = num(
                        path,
                        parts.next().ok_or_else(|| NodeError::parse(path, format!("{proto}: {field} has no value")))?,
                    )?;
                    let mut emit = |key: &str, value: f64, out: &mut Out<'_>, index: &mut usize| {
                        *index += 1;
                        let made = self.names.get(*index, key, |k| {
                            let name = format!("node_sockstat_{k}");
                            if k == "sockets_used" {
                                return Some((name, "Number of IPv4 sockets in use.".to_string()));
                            }
                            let (p, f) = k.split_once('_')?;
                            Some((name, format!("Number of {p} sockets in state {f}.")))
                        });
                        if let Some((name, help)) = made {
                            out.single(name, MetricType::Gauge, help, &[], value);
                        }
                    };
                    key.clear();
                    key.push_str(if proto == "sockets" { "sockets" } else { proto });
                    key.push('_');
                    key.push_str(field);
                    emit(&key, v, out, &mut index);
                    if field == "mem" {
                        key.push_str("_bytes");
                        emit(&key, v * page, out, &mut index);
                    }
                }
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
    fn netstat_default_fields_from_three_files() {
        let t = Tree::new("netstat");
        t.write("proc/net/netstat", "TcpExt: SyncookiesSent ListenDrops TCPPureAcks\nTcpExt: 1 2 3\nIpExt: InOctets OutOctets\nIpExt: 456 726\n");
        t.write(
            "proc/net/snmp",
            "Ip: Forwarding DefaultTTL\nIp: 1 64\nTcp: ActiveOpens MaxConn InErrs\nTcp: 71 -1 4\n",
        );
        t.write("proc/net/snmp6", "Ip6InOctets                     \t128\nIp6InReceives 5\nUdpLite6InErrors 7\n");
        let mut n = Netstat::new(&t.config());
        for _ in 0..2 {
            let got = run(&mut n).unwrap();
            assert_eq!(got.len(), 9, "{got:#?}");
            assert_eq!(value(&got, "node_netstat_TcpExt_ListenDrops{}"), 2.0);
            assert_eq!(value(&got, "node_netstat_IpExt_OutOctets{}"), 726.0);
            assert_eq!(value(&got, "node_netstat_Ip_Forwarding{}"), 1.0);
            assert_eq!(value(&got, "node_netstat_Tcp_InErrs{}"), 4.0);
            assert_eq!(value(&got, "node_netstat_Ip6_InOctets{}"), 128.0);
            assert_eq!(value(&got, "node_netstat_UdpLite6_InErrors{}"), 7.0);
        }
        let (families, _) = super::super::testing::run_families(&mut n);
        assert!(families.iter().any(|f| f.help == "Statistic TcpExtListenDrops."));
        t.write("proc/net/snmp", "Ip: Forwarding DefaultTTL\nIp: 1\n");
        assert!(run(&mut n).unwrap_err().to_string().contains("differ"));
        t.write("proc/net/snmp", "Ip: Forwarding\n");
        assert!(run(&mut n).is_err());
    }

    #[test]
    fn sockstat_with_mem_bytes() {
        let t = Tree::new("sockstat");
        t.write(
            "proc/net/sockstat",
            "sockets: used 46\nTCP: inuse 5 orphan 0 tw 12 alloc 5 mem 143\nUDP: inuse 0 mem 2\nFRAG: inuse 0 memory 0\n",
        );
        t.write("proc/net/sockstat6", "TCP6: inuse 3\n");
        let mut s = Sockstat::new(&t.config());
        s.page_size = 4096.0;
        let got = run(&mut s).unwrap();
        assert_eq!(value(&got, "node_sockstat_sockets_used{}"), 46.0);
        assert_eq!(value(&got, "node_sockstat_TCP_tw{}"), 12.0);
        assert_eq!(value(&got, "node_sockstat_TCP_mem_bytes{}"), 143.0 * 4096.0);
        assert_eq!(value(&got, "node_sockstat_UDP_mem_bytes{}"), 8192.0);
        assert_eq!(value(&got, "node_sockstat_FRAG_memory{}"), 0.0);
        assert_eq!(value(&got, "node_sockstat_TCP6_inuse{}"), 3.0);
        assert_eq!(got.len(), 13);
        t.write("proc/net/sockstat", "TCP: inuse\n");
        assert!(run(&mut s).is_err());
    }
}
