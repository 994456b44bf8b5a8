//! `nfs` and `nfsd`: NFS client and server RPC statistics from
//! /proc/net/rpc/nfs and /proc/net/rpc/nfsd, parsed with the rules of
//! procfs 0.8 (which node_exporter 1.5 uses): a line of an unknown kind or
//! of the wrong length fails the collector, a missing line counts zeros.

use std::path::Path;

use super::{FileBuf, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

const V2: [&str; 18] = [
    "Null", "GetAttr", "SetAttr", "Root", "Lookup", "ReadLink", "Read", "WrCache", "Write", "Create", "Remove",
    "Rename", "Link", "SymLink", "MkDir", "RmDir", "ReadDir", "FsStat",
];
const V3: [&str; 22] = [
    "Null",
    "GetAttr",
    "SetAttr",
    "Lookup",
    "Access",
    "ReadLink",
    "Read",
    "Write",
    "Create",
    "MkDir",
    "SymLink",
    "MkNod",
    "Remove",
    "RmDir",
    "Rename",
    "Link",
    "ReadDir",
    "ReadDirPlus",
    "FsStat",
    "FsInfo",
    "PathConf",
    "Commit",
];
const CLIENT_V4: [&str; 59] = [
    "Null",
    "Read",
    "Write",
    "Commit",
    "Open",
    "OpenConfirm",
    "OpenNoattr",
    "OpenDowngrade",
    "Close",
    "Setattr",
    "FsInfo",
    "Renew",
    "SetClientID",
    "SetClientIDConfirm",
    "Lock",
    "Lockt",
    "Locku",
    "Access",
    "Getattr",
    "Lookup",
    "LookupRoot",
    "Remove",
    "Rename",
    "Link",
    "Symlink",
    "Create",
    "Pathconf",
    "StatFs",
    "ReadLink",
    "ReadDir",
    "ServerCaps",
    "DelegReturn",
    "GetACL",
    "SetACL",
    "FsLocations",
    "ReleaseLockowner",
    "Secinfo",
    "FsidPresent",
    "ExchangeID",
    "CreateSession",
    "DestroySession",
    "Sequence",
    "GetLeaseTime",
    "ReclaimComplete",
    "LayoutGet",
    "GetDeviceInfo",
    "LayoutCommit",
    "LayoutReturn",
    "SecinfoNoName",
    "TestStateID",
    "FreeStateID",
    "GetDeviceList",
    "BindConnToSession",
    "DestroyClientID",
    "Seek",
    "Allocate",
    "DeAllocate",
    "LayoutStats",
    "Clone",
];
/// Server NFSv4 operations in /proc/net/rpc/nfsd's `proc4ops` order; the
/// ones node_exporter leaves out are marked None.
const V4_OPS: [Option<&str>; 38] = [
    None,
    None,
    None,
    Some("Access"),
    Some("Close"),
    Some("Commit"),
    Some("Create"),
    Some("DelegPurge"),
    Some("DelegReturn"),
    Some("GetAttr"),
    Some("GetFH"),
    Some("Link"),
    Some("Lock"),
    Some("Lockt"),
    Some("Locku"),
    Some("Lookup"),
    Some("LookupRoot"),
    Some("Nverify"),
    Some("Open"),
    Some("OpenAttr"),
    Some("OpenConfirm"),
    Some("OpenDgrd"),
    Some("PutFH"),
    None,
    None,
    Some("Read"),
    Some("ReadDir"),
    Some("ReadLink"),
    Some("Remove"),
    Some("Rename"),
    Some("Renew"),
    Some("RestoreFH"),
    Some("SaveFH"),
    Some("SecInfo"),
    Some("SetAttr"),
    Some("Verify"),
    Some("Write"),
    Some("RelLockOwner"),
];

/// The lines of one rpc file: kind -> values (zeros when the line is absent).
#[derive(Default)]
struct Lines {
    lines: Vec<(String, Vec<u64>)>,
}

impl Lines {
    fn get(&self, key: &str, len: usize) -> Vec<u64> {
        let mut v = self.lines.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default();
        v.resize(len.max(v.len()), 0);
        v
    }
}

/// Parses an rpc file; `check(kind, values)` says whether a line is
/// valid (None for an unknown kind).
fn parse(path: &Path, text: &str, check: fn(&str, &[u64]) -> Option<bool>) -> Result<Lines, NodeError> {
    let mut out = Lines::default();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_ascii_whitespace().collect();
        if parts.len() < 2 {
            return Err(NodeError::parse(path, format!("invalid metric line {line:?}")));
        }
        let kind = parts[0];
        // Only the first two values of the thread line are numbers of fixed meaning.
        let fields = if kind == "th" { parts.get(1..3).unwrap_or(&parts[1..]) } else { &parts[1..] };
        if kind == "th" && parts.len() < 3 {
            return Err(NodeError::parse(path, format!("invalid th line {line:?}")));
        }
        let mut values = Vec::with_capacity(fields.len());
        for f in fields {
            values.push(f.parse::<u64>().map_err(|_| NodeError::parse(path, format!("bad number {f:?} in {line:?}")))?);
        }
        match check(kind, &values) {
            None => return Err(NodeError::parse(path, format!("unknown line kind {kind:?}"))),
            Some(false) => return Err(NodeError::parse(path, format!("invalid {kind} line {line:?}"))),
            Some(true) => {}
        }
        // The procedure lines start with their count: keep the values after it.
        if kind.starts_with("proc") {
            values.remove(0);
        }
        out.lines.push((kind.to_string(), values));
    }
    Ok(out)
}

/// Whether a `procN` line's leading count matches and reaches `min`.
fn counted(v: &[u64], min: usize) -> bool {
    v[0] as usize == v.len() - 1 && v.len() > min
}

fn check_client(kind: &str, v: &[u64]) -> Option<bool> {
    Some(match kind {
        "net" => v.len() == 4,
        "rpc" => v.len() == 3,
        "proc2" => counted(v, 18),
        "proc3" => counted(v, 22),
        "proc4" => counted(v, 0),
        _ => return None,
    })
}

fn check_server(kind: &str, v: &[u64]) -> Option<bool> {
    Some(match kind {
        "rc" => v.len() == 3,
        "fh" => v.len() == 5,
        "io" | "th" => v.len() == 2,
        "ra" => v.len() == 12,
        "net" => v.len() == 4,
        "rpc" => v.len() == 5,
        "proc2" => counted(v, 18),
        "proc3" => counted(v, 22),
        "proc4" => counted(v, 2) && v.len() == 3,
        "proc4ops" => counted(v, 38),
        _ => return None,
    })
}

/// Reads an rpc file; an absent one is "no data" (no NFS module loaded).
fn read(file: &mut FileBuf) -> Result<(&Path, &str), NodeError> {
    let path = file.path.clone();
    file.read().map_err(|e| match e {
        NodeError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => NodeError::no_data(&path),
        e => e,
    })
}

/// The `nfs` collector (client side).
pub(super) struct Nfs {
    file: FileBuf,
}

impl Nfs {
    pub fn new(c: &NodeConfig) -> Self {
        Nfs { file: FileBuf::new(c.proc_path.join("net/rpc/nfs")) }
    }
}

impl Sub for Nfs {
    fn name(&self) -> &'static str {
        "nfs"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let (path, text) = read(&mut self.file)?;
        let l = parse(path, text, check_client)?;
        let c = MetricType::Counter;
        let net = l.get("net", 4);
        out.family("node_nfs_packets_total", c, "Total NFSd network packets (sent+received) by protocol type.");
        out.add(&[("protocol", "udp")], net[1] as f64);
        out.add(&[("protocol", "tcp")], net[2] as f64);
        out.single("node_nfs_connections_total", c, "Total number of NFSd TCP connections.", &[], net[3] as f64);
        let rpc = l.get("rpc", 3);
        out.single("node_nfs_rpcs_total", c, "Total number of RPCs performed.", &[], rpc[0] as f64);
        out.single(
            "node_nfs_rpc_retransmissions_total",
            c,
            "Number of RPC transmissions performed.",
            &[],
            rpc[1] as f64,
        );
        out.single(
            "node_nfs_rpc_authentication_refreshes_total",
            c,
            "Number of RPC authentication refreshes performed.",
            &[],
            rpc[2] as f64,
        );
        out.family("node_nfs_requests_total", c, "Number of NFS procedures invoked.");
        let methods: [(&str, &[&str], Vec<u64>); 3] = [
            ("2", &V2, l.get("proc2", V2.len())),
            ("3", &V3, l.get("proc3", V3.len())),
            ("4", &CLIENT_V4, l.get("proc4", CLIENT_V4.len())),
        ];
        for (proto, names, values) in &methods {
            for (method, v) in names.iter().zip(values) {
                out.add(&[("proto", proto), ("method", method)], *v as f64);
            }
        }
        Ok(())
    }
}

/// The `nfsd` collector (server side).
pub(super) struct Nfsd {
    file: FileBuf,
}

impl Nfsd {
    pub fn new(c: &NodeConfig) -> Self {
        Nfsd { file: FileBuf::new(c.proc_path.join("net/rpc/nfsd")) }
    }
}

impl Sub for Nfsd {
    fn name(&self) -> &'static str {
        "nfsd"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let (path, text) = read(&mut self.file)?;
        let l = parse(path, text, check_server)?;
        let (c, g) = (MetricType::Counter, MetricType::Gauge);
        let rc = l.get("rc", 3);
        out.single(
            "node_nfsd_reply_cache_hits_total",
            c,
            "Total number of NFSd Reply Cache hits (client lost server response).",
            &[],
            rc[0] as f64,
        );
        out.single(
            "node_nfsd_reply_cache_misses_total",
            c,
            "Total number of NFSd Reply Cache an operation that requires caching (idempotent).",
            &[],
            rc[1] as f64,
        );
        out.single(
            "node_nfsd_reply_cache_nocache_total",
            c,
            "Total number of NFSd Reply Cache non-idempotent operations (rename/delete/…).",
            &[],
            rc[2] as f64,
        );
        let fh = l.get("fh", 5);
        out.single(
            "node_nfsd_file_handles_stale_total",
            c,
            "Total number of NFSd stale file handles",
            &[],
            fh[0] as f64,
        );
        let io = l.get("io", 2);
        out.single("node_nfsd_disk_bytes_read_total", c, "Total NFSd bytes read.", &[], io[0] as f64);
        out.single("node_nfsd_disk_bytes_written_total", c, "Total NFSd bytes written.", &[], io[1] as f64);
        let th = l.get("th", 2);
        out.single(
            "node_nfsd_server_threads",
            g,
            "Total number of NFSd kernel threads that are running.",
            &[],
            th[0] as f64,
        );
        let ra = l.get("ra", 12);
        out.single(
            "node_nfsd_read_ahead_cache_size_blocks",
            g,
            "How large the read ahead cache is in blocks.",
            &[],
            ra[0] as f64,
        );
        out.single(
            "node_nfsd_read_ahead_cache_not_found_total",
            c,
            "Total number of NFSd read ahead cache not found.",
            &[],
            ra[11] as f64,
        );
        let net = l.get("net", 4);
        out.family("node_nfsd_packets_total", c, "Total NFSd network packets (sent+received) by protocol type.");
        out.add(&[("proto", "udp")], net[1] as f64);
        out.add(&[("proto", "tcp")], net[2] as f64);
        out.single("node_nfsd_connections_total", c, "Total number of NFSd TCP connections.", &[], net[3] as f64);
        let rpc = l.get("rpc", 5);
        out.family("node_nfsd_rpc_errors_total", c, "Total number of NFSd RPC errors by error type.");
        out.add(&[("error", "fmt")], rpc[2] as f64);
        out.add(&[("error", "auth")], rpc[3] as f64);
        out.add(&[("error", "cInt")], rpc[4] as f64);
        out.single("node_nfsd_server_rpcs_total", c, "Total number of NFSd RPCs.", &[], rpc[0] as f64);
        out.family("node_nfsd_requests_total", c, "Total number NFSd Requests by method and protocol.");
        // The server side leaves out each version's Null procedure.
        for (proto, names, values) in
            [("2", &V2[..], l.get("proc2", V2.len())), ("3", &V3[..], l.get("proc3", V3.len()))]
        {
            for (method, v) in names.iter().zip(&values).skip(1) {
                out.add(&[("proto", proto), ("method", method)], *v as f64);
            }
        }
        let ops = l.get("proc4ops", V4_OPS.len());
        for (method, v) in V4_OPS.iter().zip(&ops) {
            if let Some(method) = method {
                out.add(&[("proto", "4"), ("method", method)], *v as f64);
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
    fn client_stats() {
        let t = Tree::new("nfs");
        t.write(
            "proc/net/rpc/nfs",
            "net 70 70 69 45\nrpc 1218785755 374636 1218815394\n\
             proc2 18 16 57 74 52 71 73 45 86 0 52 83 61 17 53 50 23 70 82\n\
             proc3 22 0 1061909262 48906 4077635 117661341 5 29391916 2570425 2993289 590 0 0 7815 15 1130 0 3983 92385 13332 2 1 23729\n\
             proc4 48 98 51 54 83 85 23 24 1 28 73 68 83 12 84 39 68 59 58 88 29 74 69 96 21 84 15 53 86 54 66 56 97 36 49 32 85 81 11 58 32 67 13 28 35 90 1 26 1\n",
        );
        let got = run(&mut Nfs::new(&t.config())).unwrap();
        assert_eq!(got.len(), 3 + 3 + 18 + 22 + 59, "{got:#?}");
        assert_eq!(value(&got, "node_nfs_packets_total{protocol=\"tcp\"}"), 69.0);
        assert_eq!(value(&got, "node_nfs_connections_total{}"), 45.0);
        assert_eq!(value(&got, "node_nfs_rpc_retransmissions_total{}"), 374636.0);
        assert_eq!(value(&got, "node_nfs_requests_total{method=\"FsStat\", proto=\"2\"}"), 82.0);
        assert_eq!(value(&got, "node_nfs_requests_total{method=\"GetAttr\", proto=\"3\"}"), 1061909262.0);
        // 48 NFSv4 values: the rest of the 59 count zero.
        assert_eq!(value(&got, "node_nfs_requests_total{method=\"ReclaimComplete\", proto=\"4\"}"), 35.0);
        assert_eq!(value(&got, "node_nfs_requests_total{method=\"Clone\", proto=\"4\"}"), 0.0);
        t.write("proc/net/rpc/nfs", "net 1 2 3\n");
        assert!(run(&mut Nfs::new(&t.config())).unwrap_err().to_string().contains("invalid net line"));
        t.write("proc/net/rpc/nfs", "bogus 1 2 3\n");
        assert!(run(&mut Nfs::new(&t.config())).is_err());
        assert!(matches!(run(&mut Nfs::new(&Tree::new("nfs-none").config())), Err(NodeError::NoData(_))));
    }

    #[test]
    fn server_stats() {
        let t = Tree::new("nfsd");
        let ops: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        t.write(
            "proc/net/rpc/nfsd",
            &format!(
                "rc 0 6 18622\nfh 0 0 0 0 0\nio 157286400 72864\nth 8 0 0.000 0.000 0.000\n\
                 ra 32 0 0 0 0 0 0 0 0 0 0 0\nnet 18628 0 18628 6\nrpc 18628 0 0 0 0\n\
                 proc2 18 2 69 0 0 4410 0 0 0 0 0 0 0 0 0 0 0 99 2\n\
                 proc3 22 2 112 0 2719 111 0 0 0 0 0 0 0 0 0 0 0 27 216 0 2 1 0\n\
                 proc4 2 2 10853\nproc4ops 40 {}\n",
                ops[..40].join(" ")
            ),
        );
        let got = run(&mut Nfsd::new(&t.config())).unwrap();
        assert_eq!(got.len(), 3 + 1 + 2 + 1 + 2 + 3 + 4 + 17 + 21 + 33, "{got:#?}");
        assert_eq!(value(&got, "node_nfsd_reply_cache_nocache_total{}"), 18622.0);
        assert_eq!(value(&got, "node_nfsd_disk_bytes_read_total{}"), 157286400.0);
        assert_eq!(value(&got, "node_nfsd_server_threads{}"), 8.0);
        assert_eq!(value(&got, "node_nfsd_read_ahead_cache_size_blocks{}"), 32.0);
        assert_eq!(value(&got, "node_nfsd_packets_total{proto=\"tcp\"}"), 18628.0);
        assert_eq!(value(&got, "node_nfsd_requests_total{method=\"Lookup\", proto=\"2\"}"), 4410.0);
        assert_eq!(value(&got, "node_nfsd_requests_total{method=\"Access\", proto=\"4\"}"), 3.0);
        assert_eq!(value(&got, "node_nfsd_requests_total{method=\"RelLockOwner\", proto=\"4\"}"), 37.0);
        assert!(!got.iter().any(|(s, _)| s.contains("Null")), "server procedures leave Null out");
    }
}
