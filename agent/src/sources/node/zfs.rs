//! The `zfs` collector: OpenZFS kstats from /proc/spl/kstat/zfs, as
//! node_exporter 1.5 reads them: every uint64 (type 4) row of the
//! subsystem files as an untyped `node_zfs_<subsystem>_<name>` whose help is
//! the kstat key, plus per-pool io, per-dataset objset and pool state
//! series. No ZFS module (no kstat directory) is "no data".

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{NameCache, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// node_exporter's subsystem names and the kstat files they come from.
const SUBSYSTEMS: [(&str, &str); 11] = [
    ("zfs_abd", "abdstats"),
    ("zfs_arc", "arcstats"),
    ("zfs_dbuf", "dbuf_stats"),
    ("zfs_dmu_tx", "dmu_tx"),
    ("zfs_dnode", "dnodestats"),
    ("zfs_fm", "fm"),
    ("zfs_vdev_cache", "vdev_cache_stats"),
    ("zfs_vdev_mirror", "vdev_mirror_stats"),
    ("zfs_xuio", "xuio_stats"),
    ("zfs_zfetch", "zfetchstats"),
    ("zfs_zil", "zil"),
];

/// The pool states node_exporter reports, one series each.
const POOL_STATES: [&str; 6] = ["online", "degraded", "faulted", "offline", "removed", "unavail"];

/// node_exporter's metric name part for a kstat row: the key's last
/// dot-separated part, with '-' as '_'.
fn metric_part(name: &str) -> String {
    name.rsplit('.').next().unwrap_or(name).replace('-', "_")
}

pub(super) struct Zfs {
    base: PathBuf,
    buf: Vec<u8>,
    /// Names and helps of each subsystem file's rows, by row position.
    names: Vec<NameCache>,
}

impl Zfs {
    pub fn new(c: &NodeConfig) -> Self {
        Zfs {
            base: c.proc_path.join("spl/kstat/zfs"),
            buf: Vec::with_capacity(16 * 1024),
            names: SUBSYSTEMS.iter().map(|_| NameCache::default()).collect(),
        }
    }
}

/// Reads `path` into `buf`; Ok(false) when it does not exist.
fn read_into(path: &Path, buf: &mut Vec<u8>) -> Result<bool, NodeError> {
    buf.clear();
    match std::fs::File::open(path) {
        Ok(mut f) => f.read_to_end(buf).map(|_| true).map_err(|e| NodeError::read(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(NodeError::read(path, e)),
    }
}

fn text<'b>(path: &Path, buf: &'b [u8]) -> Result<&'b str, NodeError> {
    std::str::from_utf8(buf).map_err(|_| NodeError::parse(path, "not UTF-8"))
}

/// The rows after the `name type data` header of a kstat file: (name,
/// type, data). An error when the header never comes.
fn kstat_rows<'t>(path: &Path, text: &'t str) -> Result<Vec<(&'t str, &'t str, &'t str)>, NodeError> {
    let mut rows = Vec::new();
    let mut started = false;
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if !started {
            started = parts == ["name", "type", "data"];
            continue;
        }
        if parts.len() >= 3 {
            rows.push((parts[0], parts[1], parts[2]));
        }
    }
    if !started {
        return Err(NodeError::parse(path, "no \"name type data\" header"));
    }
    Ok(rows)
}

fn uint(path: &Path, key: &str, v: &str) -> Result<f64, NodeError> {
    v.parse::<u64>().map(|v| v as f64).map_err(|_| NodeError::parse(path, format!("{key}: bad integer {v:?}")))
}

impl Sub for Zfs {
    fn name(&self) -> &'static str {
        "zfs"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let pools = match std::fs::read_dir(&self.base) {
            Ok(entries) => entries,
            Err(e) => return Err(NodeError::read_or_absent(&self.base, e)),
        };
        let mut pools: Vec<String> = pools
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        pools.sort();
        for (i, (subsystem, file)) in SUBSYSTEMS.iter().enumerate() {
            let path = self.base.join(file);
            // Files come and go with ZFS features: a missing one is skipped.
            if !read_into(&path, &mut self.buf)? {
                continue;
            }
            let rows = kstat_rows(&path, text(&path, &self.buf)?)?;
            let from = out.mark();
            for (n, (name, kind, data)) in rows.into_iter().enumerate() {
                if kind != "4" {
                    continue;
                }
                let Some((metric, help)) = self.names[i].get(n, name, |name| {
                    Some((format!("node_{subsystem}_{}", metric_part(name)), format!("kstat.zfs.misc.{file}.{name}")))
                }) else {
                    continue;
                };
                let v = uint(&path, help, data)?;
                out.add_to(from, metric, MetricType::Untyped, help, &[], v);
            }
        }
        self.pools(out, &pools)
    }
}

impl Zfs {
    /// Per-pool io, per-dataset objset and pool state series.
    fn pools(&mut self, out: &mut Out<'_>, pools: &[String]) -> Result<(), NodeError> {
        let from = out.mark();
        for pool in pools {
            let path = self.base.join(pool).join("io");
            if !read_into(&path, &mut self.buf)? {
                continue;
            }
            let mut header: Option<Vec<&str>> = None;
            for line in text(&path, &self.buf)?.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                match &header {
                    None if fields.len() >= 12 && fields[0] == "nread" => header = Some(fields),
                    None => {}
                    Some(names) if !fields.is_empty() => {
                        for (name, v) in names.iter().zip(&fields) {
                            let help = format!("kstat.zfs.misc.io.{name}");
                            let v = uint(&path, &help, v)?;
                            let metric = format!("node_zfs_zpool_{}", metric_part(name));
                            out.add_to(from, &metric, MetricType::Untyped, &help, &[("zpool", pool)], v);
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        for pool in pools {
            let dir = self.base.join(pool);
            let mut objsets: Vec<String> = std::fs::read_dir(&dir)
                .map_err(|e| NodeError::read(&dir, e))?
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with("objset-"))
                .collect();
            objsets.sort();
            for objset in objsets {
                let path = dir.join(&objset);
                if !read_into(&path, &mut self.buf)? {
                    continue;
                }
                let rows = kstat_rows(&path, text(&path, &self.buf)?)?;
                let mut dataset = "";
                for (name, kind, data) in rows {
                    if name == "dataset_name" {
                        dataset = data;
                        continue;
                    }
                    if kind != "4" {
                        continue;
                    }
                    let help = format!("kstat.zfs.misc.objset.{name}");
                    let v = uint(&path, &help, data)?;
                    let metric = format!("node_zfs_zpool_dataset_{}", metric_part(name));
                    let labels = [("zpool", pool.as_str()), ("dataset", dataset)];
                    out.add_to(from, &metric, MetricType::Untyped, &help, &labels, v);
                }
            }
        }
        for pool in pools {
            let path = self.base.join(pool).join("state");
            if !read_into(&path, &mut self.buf)? {
                continue;
            }
            let state = text(&path, &self.buf)?.lines().next().unwrap_or("").to_lowercase();
            for s in POOL_STATES {
                let v = if state == s { 1.0 } else { 0.0 };
                let labels = [("zpool", pool.as_str()), ("state", s)];
                out.add_to(from, "node_zfs_zpool_state", MetricType::Gauge, "kstat.zfs.misc.state", &labels, v);
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
    fn subsystems_pools_datasets_and_states() {
        let t = Tree::new("zfs");
        let z = "proc/spl/kstat/zfs";
        t.write(
            &format!("{z}/arcstats"),
            "6 1 0x01 91 4368 5266997922 97951858082072\nname                            type data\n\
             hits                            4    8772612\nmisses                          4    604635\n\
             c-min                           4    33554432\nstring_thing                    7    abc\n",
        );
        t.write(&format!("{z}/fm"), "0 1 0x01 4 192 1 2\nname type data\nerpt-dropped 4 18\n");
        t.write(
            &format!("{z}/pool1/io"),
            "12 3 0x00 1 80 79205351707403 395818011156865\n\
             nread    nwritten reads    writes   wtime    wlentime wupdate  rtime    rlentime rupdate  wcnt     rcnt\n\
             1884160  3206144  22       132      7155162  104112268 79210489694949 24168078 104112268 79210489849220 0 0\n",
        );
        t.write(
            &format!("{z}/pool1/objset-1"),
            "23 1 0x01 7 2160 1 2\nname type data\ndataset_name 7 pool1/ds\nnread 4 28\n",
        );
        t.write(&format!("{z}/pool1/state"), "DEGRADED\n");
        let got = run(&mut Zfs::new(&t.config())).unwrap();
        assert_eq!(value(&got, "node_zfs_arc_hits{}"), 8772612.0);
        assert_eq!(value(&got, "node_zfs_arc_c_min{}"), 33554432.0);
        assert_eq!(value(&got, "node_zfs_fm_erpt_dropped{}"), 18.0);
        assert_eq!(value(&got, r#"node_zfs_zpool_nread{zpool="pool1"}"#), 1884160.0);
        assert_eq!(value(&got, r#"node_zfs_zpool_rupdate{zpool="pool1"}"#), 79210489849220.0);
        assert_eq!(value(&got, r#"node_zfs_zpool_dataset_nread{dataset="pool1/ds", zpool="pool1"}"#), 28.0);
        assert_eq!(value(&got, r#"node_zfs_zpool_state{state="degraded", zpool="pool1"}"#), 1.0);
        assert_eq!(value(&got, r#"node_zfs_zpool_state{state="online", zpool="pool1"}"#), 0.0);
        assert!(!got.iter().any(|(s, _)| s.contains("string_thing")), "type 7 rows are not metrics");
        let (families, _) = run_families(&mut Zfs::new(&t.config()));
        let hits = families.iter().find(|f| f.name == "node_zfs_arc_hits").unwrap();
        assert_eq!(hits.help, "kstat.zfs.misc.arcstats.hits");
        assert_eq!(hits.kind, MetricType::Untyped);
    }

    #[test]
    fn no_module_is_no_data_and_a_headerless_file_fails() {
        let t = Tree::new("zfs-none");
        let (_, r) = run_families(&mut Zfs::new(&t.config()));
        assert!(matches!(r, Err(NodeError::NoData(_))), "{r:?}");
        t.write("proc/spl/kstat/zfs/zil", "zil_commit_count 4 1\n");
        let e = run(&mut Zfs::new(&t.config())).unwrap_err().to_string();
        assert!(e.contains("zfs/zil") && e.contains("header"), "{e}");
    }
}
