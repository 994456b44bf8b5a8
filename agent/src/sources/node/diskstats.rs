//! `diskstats`: block device counters from /proc/diskstats, and
//! `node_disk_info` with the udev properties node_exporter reads.

use std::collections::HashMap;
use std::path::PathBuf;

use super::{FileBuf, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// Sector unit of /proc/diskstats, whatever the device's real sector size.
const SECTOR: f64 = 512.0;

/// Marks a field in milliseconds, divided into seconds.
const MS: f64 = -1.0;

/// (name, help, type, scale or [`MS`]) per /proc/diskstats field after the name.
const FIELDS: [(&str, &str, MetricType, f64); 17] = [
    ("node_disk_reads_completed_total", "The total number of reads completed successfully.", MetricType::Counter, 1.0),
    ("node_disk_reads_merged_total", "The total number of reads merged.", MetricType::Counter, 1.0),
    ("node_disk_read_bytes_total", "The total number of bytes read successfully.", MetricType::Counter, SECTOR),
    ("node_disk_read_time_seconds_total", "The total number of seconds spent by all reads.", MetricType::Counter, MS),
    (
        "node_disk_writes_completed_total",
        "The total number of writes completed successfully.",
        MetricType::Counter,
        1.0,
    ),
    ("node_disk_writes_merged_total", "The number of writes merged.", MetricType::Counter, 1.0),
    ("node_disk_written_bytes_total", "The total number of bytes written successfully.", MetricType::Counter, SECTOR),
    (
        "node_disk_write_time_seconds_total",
        "This is the total number of seconds spent by all writes.",
        MetricType::Counter,
        MS,
    ),
    ("node_disk_io_now", "The number of I/Os currently in progress.", MetricType::Gauge, 1.0),
    ("node_disk_io_time_seconds_total", "Total seconds spent doing I/Os.", MetricType::Counter, MS),
    (
        "node_disk_io_time_weighted_seconds_total",
        "The weighted # of seconds spent doing I/Os.",
        MetricType::Counter,
        MS,
    ),
    (
        "node_disk_discards_completed_total",
        "The total number of discards completed successfully.",
        MetricType::Counter,
        1.0,
    ),
    ("node_disk_discards_merged_total", "The total number of discards merged.", MetricType::Counter, 1.0),
    (
        "node_disk_discarded_sectors_total",
        "The total number of sectors discarded successfully.",
        MetricType::Counter,
        1.0,
    ),
    (
        "node_disk_discard_time_seconds_total",
        "This is the total number of seconds spent by all discards.",
        MetricType::Counter,
        MS,
    ),
    (
        "node_disk_flush_requests_total",
        "The total number of flush requests completed successfully",
        MetricType::Counter,
        1.0,
    ),
    (
        "node_disk_flush_requests_time_seconds_total",
        "This is the total number of seconds spent by all flush requests.",
        MetricType::Counter,
        MS,
    ),
];

const INFO: &str = "node_disk_info";

/// What is known of one device between collections.
struct Disk {
    excluded: bool,
    /// udev's properties, in [`UDEV_KEYS`] order ("" when absent).
    udev: [String; UDEV_KEYS.len()],
    seen: u64,
}

/// The `diskstats` collector.
pub(super) struct Diskstats {
    file: FileBuf,
    exclude: regex::Regex,
    udev_dir: PathBuf,
    disks: HashMap<String, Disk>,
    generation: u64,
}

impl Diskstats {
    pub fn new(c: &NodeConfig) -> Self {
        Diskstats {
            file: FileBuf::new(c.proc_path.join("diskstats")),
            exclude: super::regex_or(&c.diskstats_device_exclude, super::DEFAULT_DISK_EXCLUDE),
            udev_dir: c.root_path.join("run/udev/data"),
            disks: HashMap::new(),
            generation: 0,
        }
    }
}

/// The udev properties node_exporter reads: node_disk_info's (0-4),
/// node_disk_filesystem_info's (5-8), node_disk_device_mapper_info's
/// (9-13), ID_ATA (14) and the ATA values (15-17).
const UDEV_KEYS: [&str; 18] = [
    "ID_PATH",
    "ID_WWN",
    "ID_MODEL",
    "ID_SERIAL_SHORT",
    "ID_REVISION",
    "ID_FS_TYPE",
    "ID_FS_USAGE",
    "ID_FS_UUID",
    "ID_FS_VERSION",
    "DM_NAME",
    "DM_UUID",
    "DM_VG_NAME",
    "DM_LV_NAME",
    "DM_LV_LAYER",
    "ID_ATA",
    "ID_ATA_WRITE_CACHE",
    "ID_ATA_WRITE_CACHE_ENABLED",
    "ID_ATA_ROTATION_RATE_RPM",
];

/// The ATA gauges: (udev slot, metric, help).
const ATA: [(usize, &str, &str); 3] = [
    (15, "node_disk_ata_write_cache", "ATA disk has a write cache."),
    (16, "node_disk_ata_write_cache_enabled", "ATA disk has its write cache enabled."),
    (17, "node_disk_ata_rotation_rate_rpm", "ATA disk rotation rate in RPMs (0 for SSDs)."),
];

/// Reads udev's database entry `b<major>:<minor>` (E:KEY=value lines).
fn udev_props(dir: &std::path::Path, major: &str, minor: &str) -> [String; UDEV_KEYS.len()] {
    let mut props: [String; UDEV_KEYS.len()] = Default::default();
    let Ok(text) = std::fs::read_to_string(dir.join(format!("b{major}:{minor}"))) else { return props };
    for line in text.lines() {
        let Some((k, v)) = line.strip_prefix("E:").and_then(|kv| kv.split_once('=')) else { continue };
        let Some(slot) = UDEV_KEYS.iter().position(|key| *key == k) else { continue };
        props[slot] = v.to_string();
    }
    props
}

impl Sub for Diskstats {
    fn name(&self) -> &'static str {
        "diskstats"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        self.generation += 1;
        let generation = self.generation;
        let (path, text) = self.file.read()?;
        let from = out.mark();
        for line in text.lines() {
            let mut parts = line.split_ascii_whitespace();
            let (Some(major), Some(minor), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(NodeError::parse(path, format!("short line {line:?}")));
            };
            let mut values = [0f64; 17];
            let mut n = 0;
            for (slot, f) in values.iter_mut().zip(parts) {
                *slot = f.parse::<u64>().map_err(|_| NodeError::parse(path, format!("bad number {f:?} in {line:?}")))?
                    as f64;
                n += 1;
            }
            if n < 11 {
                return Err(NodeError::parse(path, format!("{n} fields for {name}, expected at least 11")));
            }
            if !self.disks.contains_key(name) {
                let disk = Disk {
                    excluded: self.exclude.is_match(name),
                    udev: udev_props(&self.udev_dir, major, minor),
                    seen: generation,
                };
                self.disks.insert(name.to_string(), disk);
            }
            let disk = self.disks.get_mut(name).expect("inserted above");
            disk.seen = generation;
            if disk.excluded {
                continue;
            }
            let u = &disk.udev;
            out.add_to(
                from,
                INFO,
                MetricType::Gauge,
                "Info of /sys/block/<block_device>.",
                &[
                    ("device", name),
                    ("major", major),
                    ("minor", minor),
                    ("model", &u[2]),
                    ("path", &u[0]),
                    ("revision", &u[4]),
                    ("serial", &u[3]),
                    ("wwn", &u[1]),
                ],
                1.0,
            );
            // Kernels before 4.18 have 11 fields, before 5.5 have 15.
            let count = if n >= 17 {
                17
            } else if n >= 15 {
                15
            } else {
                11
            };
            for ((metric, help, kind, scale), v) in FIELDS.iter().zip(values).take(count) {
                let v = if *scale == MS { v / 1000.0 } else { v * scale };
                out.add_to(from, metric, *kind, help, &[("device", name)], v);
            }
            if !u[5].is_empty() {
                let labels = [("device", name), ("type", &u[5]), ("usage", &u[6]), ("uuid", &u[7]), ("version", &u[8])];
                out.add_to(
                    from,
                    "node_disk_filesystem_info",
                    MetricType::Gauge,
                    "Info about disk filesystem.",
                    &labels,
                    1.0,
                );
            }
            if !u[9].is_empty() {
                let labels = [
                    ("device", name),
                    ("name", &u[9]),
                    ("uuid", &u[10]),
                    ("vg_name", &u[11]),
                    ("lv_name", &u[12]),
                    ("lv_layer", &u[13]),
                ];
                let help = "Info about disk device mapper.";
                out.add_to(from, "node_disk_device_mapper_info", MetricType::Gauge, help, &labels, 1.0);
            }
            if !u[14].is_empty() {
                // node_exporter logs and skips a value that is not a number.
                for (slot, metric, help) in ATA {
                    if let Ok(v) = u[slot].parse::<f64>() {
                        out.add_to(from, metric, MetricType::Gauge, help, &[("device", name)], v);
                    }
                }
            }
        }
        if self.disks.len() > 64 {
            self.disks.retain(|_, d| d.seen == generation);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, value, Tree};
    use super::*;

    const TEXT: &str = "   7       0 loop0 10 0 20 5 0 0 0 0 0 8 5 0 0 0 0 0 0\n \
 254       0 vda 252767 41518 32336 264854 46529 114778 53478 314161 2 43952 584063 17359 20 5404304 4813 3788 234\n \
 254       1 vda1 1 2 3 4 5 6 7 8 0 9 10 0 0 0 0 0 0\n \
   8      16 sdb 1 2 3 4 5 6 7 8 0 9 10\n";

    #[test]
    fn counters_units_and_exclusions() {
        let t = Tree::new("disk");
        t.write("proc/diskstats", TEXT);
        t.write(
            "run/udev/data/b254:0",
            "S:disk/by-path/x\nE:ID_PATH=pci-0000:00:05.0\nE:ID_MODEL=QEMU_DISK\nE:ID_SERIAL_SHORT=abc\n",
        );
        let mut d = Diskstats::new(&t.config());
        let got = run(&mut d).unwrap();
        assert!(!got.iter().any(|(s, _)| s.contains("loop0") || s.contains("vda1")), "{got:?}");
        assert_eq!(value(&got, "node_disk_reads_completed_total{device=\"vda\"}"), 252767.0);
        assert_eq!(value(&got, "node_disk_read_bytes_total{device=\"vda\"}"), 32336.0 * 512.0);
        assert_eq!(value(&got, "node_disk_write_time_seconds_total{device=\"vda\"}"), 314.161);
        assert_eq!(value(&got, "node_disk_io_now{device=\"vda\"}"), 2.0);
        assert_eq!(value(&got, "node_disk_io_time_weighted_seconds_total{device=\"vda\"}"), 584.063);
        assert_eq!(value(&got, "node_disk_discarded_sectors_total{device=\"vda\"}"), 5404304.0);
        assert_eq!(value(&got, "node_disk_flush_requests_time_seconds_total{device=\"vda\"}"), 0.234);
        assert_eq!(
            value(&got, "node_disk_info{device=\"vda\", major=\"254\", minor=\"0\", model=\"QEMU_DISK\", path=\"pci-0000:00:05.0\", serial=\"abc\"}"),
            1.0
        );
        // An old kernel's 11 fields: no discard or flush series.
        assert_eq!(value(&got, "node_disk_io_time_seconds_total{device=\"sdb\"}"), 0.009);
        assert!(!got.iter().any(|(s, _)| s.starts_with("node_disk_discard") && s.contains("sdb")));
        assert_eq!(got.len(), 18 + 12);
    }

    #[test]
    fn udev_filesystem_device_mapper_and_ata_families() {
        let t = Tree::new("disk-udev");
        t.write(
            "proc/diskstats",
            " 8 0 sda 1 2 3 4 5 6 7 8 0 9 10
 252 0 dm-0 1 2 3 4 5 6 7 8 0 9 10
",
        );
        t.write(
            "run/udev/data/b8:0",
            "E:ID_ATA=1\nE:ID_ATA_WRITE_CACHE=1\nE:ID_ATA_WRITE_CACHE_ENABLED=0\nE:ID_ATA_ROTATION_RATE_RPM=\n\
             E:ID_FS_TYPE=LVM2_member\nE:ID_FS_USAGE=raid\nE:ID_FS_UUID=cVVv6j\nE:ID_FS_VERSION=LVM2 001\n",
        );
        t.write("run/udev/data/b252:0", "E:DM_NAME=vg-root\nE:DM_UUID=LVM-x\nE:DM_VG_NAME=vg\nE:DM_LV_NAME=root\n");
        let got = run(&mut Diskstats::new(&t.config())).unwrap();
        assert_eq!(value(&got, "node_disk_ata_write_cache{device=\"sda\"}"), 1.0);
        assert_eq!(value(&got, "node_disk_ata_write_cache_enabled{device=\"sda\"}"), 0.0);
        assert!(!got.iter().any(|(s, _)| s.starts_with("node_disk_ata_rotation")), "an empty value is skipped");
        assert_eq!(
            value(&got, "node_disk_filesystem_info{device=\"sda\", type=\"LVM2_member\", usage=\"raid\", uuid=\"cVVv6j\", version=\"LVM2 001\"}"),
            1.0
        );
        assert_eq!(
            value(&got, "node_disk_device_mapper_info{device=\"dm-0\", lv_name=\"root\", name=\"vg-root\", uuid=\"LVM-x\", vg_name=\"vg\"}"),
            1.0
        );
        assert!(
            !got.iter().any(|(s, _)| s.starts_with("node_disk_ata") && s.contains("dm-0")),
            "no ID_ATA, no ATA series"
        );
    }

    #[test]
    fn malformed_lines() {
        let t = Tree::new("disk-bad");
        t.write("proc/diskstats", "254 0 vda 1 2 3\n");
        assert!(run(&mut Diskstats::new(&t.config())).unwrap_err().to_string().contains("3 fields"));
        t.write("proc/diskstats", "254 0 vda 1 2 3 4 5 6 7 8 9 10 -1\n");
        assert!(run(&mut Diskstats::new(&t.config())).is_err());
    }
}
