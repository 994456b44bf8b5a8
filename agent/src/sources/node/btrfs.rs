//! The `btrfs` collector: filesystems in /sys/fs/btrfs/<uuid>, with
//! node_exporter 1.5's names and procfs 0.8's reading of sysfs (a missing
//! value is 0; the RAID ratio comes from the device count). node_exporter
//! also asks mounted filesystems for per-device statistics over ioctl
//! (`device_unused_bytes`, `device_errors_total`, a `btrfs_dev_uuid` label);
//! Vantage reports the sysfs `device_size_bytes` in every case. No btrfs is
//! no series and no failure.

use std::path::{Path, PathBuf};

use super::{NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

const G: MetricType = MetricType::Gauge;

/// Reads sysfs the way procfs's btrfs reader does: the first error sticks
/// and makes later values 0 until a sub-reader replaces it.
struct Reader {
    dir: PathBuf,
    err: Option<NodeError>,
}

impl Reader {
    fn new(dir: PathBuf) -> Self {
        Reader { dir, err: None }
    }

    fn file(&mut self, name: &str) -> String {
        let path = self.dir.join(name);
        match std::fs::read(&path) {
            Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                self.err = Some(NodeError::read(&path, e));
                String::new()
            }
        }
    }

    fn value(&mut self, name: &str) -> f64 {
        let s = self.file(name);
        if self.err.is_some() {
            return 0.0;
        }
        s.parse::<u64>().map_or(0.0, |v| v as f64)
    }

    /// Entry names of a subdirectory (an error when it is missing).
    fn list(&mut self, sub: &str, dirs_only: bool) -> Vec<String> {
        let path = self.dir.join(sub);
        match std::fs::read_dir(&path) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .filter(|e| !dirs_only || e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect();
                names.sort();
                names
            }
            Err(e) => {
                self.err = Some(NodeError::read(&path, e));
                Vec::new()
            }
        }
    }
}

/// One block group type's reserved bytes and its layouts (mode, used, size).
struct Allocation {
    reserved: f64,
    layouts: Vec<(String, f64, f64)>,
}

fn ratio(mode: &str, devices: usize) -> f64 {
    let n = devices as f64;
    match mode {
        "single" | "raid0" => 1.0,
        "dup" | "raid1" | "raid10" => 2.0,
        "raid5" => n / (n - 1.0),
        "raid6" => n / (n - 2.0),
        _ => 0.0,
    }
}

/// A block group type's directory, read by a fresh reader whose error
/// replaces the parent's (as in procfs).
fn allocation(parent: &mut Reader, kind: &str) -> Allocation {
    let mut r = Reader::new(parent.dir.join("allocation").join(kind));
    for f in ["bytes_may_use", "bytes_pinned", "bytes_readonly"] {
        r.value(f);
    }
    let reserved = r.value("bytes_reserved");
    for f in ["bytes_used", "disk_used", "disk_total", "flags", "total_bytes", "total_bytes_pinned"] {
        r.value(f);
    }
    let mut layouts = Vec::new();
    for mode in r.list("", true) {
        let size = r.value(&format!("{mode}/total_bytes"));
        let used = r.value(&format!("{mode}/used_bytes"));
        layouts.push((mode, used, size));
    }
    parent.err = r.err;
    Allocation { reserved, layouts }
}

pub(super) struct Btrfs {
    dir: PathBuf,
}

impl Btrfs {
    pub fn new(c: &NodeConfig) -> Self {
        Btrfs { dir: c.sys_path.join("fs/btrfs") }
    }
}

fn emit(out: &mut Out<'_>, from: usize, dir: &Path) -> Result<(), NodeError> {
    let mut r = Reader::new(dir.to_path_buf());
    let devices = r.list("devices", false);
    let sizes: Vec<f64> = devices.iter().map(|d| 512.0 * r.value(&format!("devices/{d}/size"))).collect();
    let label = r.file("label");
    let mut uuid = r.file("metadata_uuid");
    r.list("features", false);
    for f in ["clone_alignment", "nodesize", "quota_override", "sectorsize", "allocation/global_rsv_reserved"] {
        r.value(f);
    }
    let global_rsv = r.value("allocation/global_rsv_size");
    let groups = ["data", "metadata", "system"].map(|k| (k, allocation(&mut r, k)));
    if let Some(e) = r.err {
        return Err(e);
    }
    if uuid.is_empty() {
        uuid = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    }
    let u = uuid.as_str();
    out.add_to(from, "node_btrfs_info", G, "Filesystem information", &[("uuid", u), ("label", &label)], 1.0);
    out.add_to(from, "node_btrfs_global_rsv_size_bytes", G, "Size of global reserve.", &[("uuid", u)], global_rsv);
    for (kind, a) in &groups {
        out.add_to(
            from,
            "node_btrfs_reserved_bytes",
            G,
            "Amount of space reserved for a data type",
            &[("uuid", u), ("block_group_type", kind)],
            a.reserved,
        );
        for (mode, used, size) in &a.layouts {
            let labels = [("uuid", u), ("block_group_type", kind), ("mode", mode.as_str())];
            out.add_to(from, "node_btrfs_used_bytes", G, "Amount of used space by a layout/data type", &labels, *used);
            out.add_to(
                from,
                "node_btrfs_size_bytes",
                G,
                "Amount of space allocated for a layout/data type",
                &labels,
                *size,
            );
            out.add_to(
                from,
                "node_btrfs_allocation_ratio",
                G,
                "Data allocation ratio for a layout/data type",
                &labels,
                ratio(mode, devices.len()),
            );
        }
    }
    for (device, size) in devices.iter().zip(sizes) {
        out.add_to(
            from,
            "node_btrfs_device_size_bytes",
            G,
            "Size of a device that is part of the filesystem.",
            &[("uuid", u), ("device", device)],
            size,
        );
    }
    Ok(())
}

impl Sub for Btrfs {
    fn name(&self) -> &'static str {
        "btrfs"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let mut filesystems: Vec<String> = match std::fs::read_dir(&self.dir) {
            Ok(e) => e.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(NodeError::read(&self.dir, e)),
        };
        // node_exporter globs <uuid>-shaped names: `features` is not a filesystem.
        filesystems.retain(|n| n.contains('-'));
        filesystems.sort();
        let from = out.mark();
        for fs in &filesystems {
            emit(out, from, &self.dir.join(fs))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, value, Tree};
    use super::*;

    #[test]
    fn allocation_layouts_and_devices() {
        let t = Tree::new("btrfs");
        let fs = "sys/fs/btrfs/7f07c59f-6136-449c-ab87-e1cf2328731b";
        for (f, v) in [
            ("label", "\n"),
            ("metadata_uuid", "7f07c59f-6136-449c-ab87-e1cf2328731b\n"),
            ("features/mixed_backref", "0\n"),
            ("devices/loop22/size", "20971520\n"),
            ("devices/loop23/size", "20971520\n"),
            ("devices/loop24/size", "20971520\n"),
            ("devices/loop25/size", "20971520\n"),
            ("allocation/global_rsv_size", "16777216\n"),
            ("allocation/data/bytes_reserved", "5\n"),
            ("allocation/data/raid5/total_bytes", "644087808\n"),
            ("allocation/data/raid5/used_bytes", "0\n"),
            ("allocation/metadata/raid6/total_bytes", "429391872\n"),
            ("allocation/system/raid6/used_bytes", "16384\n"),
        ] {
            t.write(&format!("{fs}/{f}"), v);
        }
        t.write("sys/fs/btrfs/features/raid56", "1\n");
        let got = run(&mut Btrfs::new(&t.config())).unwrap();
        let u = r#"uuid="7f07c59f-6136-449c-ab87-e1cf2328731b""#;
        assert_eq!(value(&got, &format!("node_btrfs_info{{{u}}}")), 1.0);
        assert_eq!(value(&got, &format!("node_btrfs_global_rsv_size_bytes{{{u}}}")), 16777216.0);
        assert_eq!(value(&got, &format!(r#"node_btrfs_reserved_bytes{{block_group_type="data", {u}}}"#)), 5.0);
        let raid5 = format!(r#"block_group_type="data", mode="raid5", {u}"#);
        assert_eq!(value(&got, &format!("node_btrfs_size_bytes{{{raid5}}}")), 644087808.0);
        assert_eq!(value(&got, &format!("node_btrfs_allocation_ratio{{{raid5}}}")), 4.0 / 3.0);
        let raid6 = format!(r#"block_group_type="system", mode="raid6", {u}"#);
        assert_eq!(value(&got, &format!("node_btrfs_allocation_ratio{{{raid6}}}")), 2.0);
        assert_eq!(value(&got, &format!(r#"node_btrfs_device_size_bytes{{device="loop22", {u}}}"#)), 10737418240.0);
    }

    #[test]
    fn no_btrfs_is_success_and_a_missing_allocation_fails() {
        let t = Tree::new("btrfs-none");
        t.write("sys/fs/btrfs/features/raid56", "1\n");
        assert_eq!(run(&mut Btrfs::new(&t.config())).unwrap(), vec![]);
        t.write("sys/fs/btrfs/abc-def/devices/x", "");
        let e = run(&mut Btrfs::new(&t.config())).unwrap_err().to_string();
        assert!(e.contains("abc-def/allocation/system"), "{e}");
    }
}
