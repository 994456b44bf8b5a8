//! The `xfs` collector: per-filesystem XFS counters from
//! /sys/fs/xfs/<device>/stats/stats, under node_exporter 1.5's names. The
//! file's format is /proc/fs/xfs/stat's; like node_exporter (procfs 0.8),
//! every counter but `xpc` must be a u32 and the known lines must have their
//! known widths. No XFS filesystem is no series and no failure.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// (line label, column, metric, help) for every series node_exporter exposes.
const METRICS: [(&str, usize, &str, &str); 39] = [
    ("extent_alloc", 0, "node_xfs_extent_allocation_extents_allocated_total", "Number of extents allocated for a filesystem."),
    ("extent_alloc", 1, "node_xfs_extent_allocation_blocks_allocated_total", "Number of blocks allocated for a filesystem."),
    ("extent_alloc", 2, "node_xfs_extent_allocation_extents_freed_total", "Number of extents freed for a filesystem."),
    ("extent_alloc", 3, "node_xfs_extent_allocation_blocks_freed_total", "Number of blocks freed for a filesystem."),
    ("abt", 0, "node_xfs_allocation_btree_lookups_total", "Number of allocation B-tree lookups for a filesystem."),
    ("abt", 1, "node_xfs_allocation_btree_compares_total", "Number of allocation B-tree compares for a filesystem."),
    ("abt", 2, "node_xfs_allocation_btree_records_inserted_total", "Number of allocation B-tree records inserted for a filesystem."),
    ("abt", 3, "node_xfs_allocation_btree_records_deleted_total", "Number of allocation B-tree records deleted for a filesystem."),
    ("blk_map", 0, "node_xfs_block_mapping_reads_total", "Number of block map for read operations for a filesystem."),
    ("blk_map", 1, "node_xfs_block_mapping_writes_total", "Number of block map for write operations for a filesystem."),
    ("blk_map", 2, "node_xfs_block_mapping_unmaps_total", "Number of block unmaps (deletes) for a filesystem."),
    ("blk_map", 3, "node_xfs_block_mapping_extent_list_insertions_total", "Number of extent list insertions for a filesystem."),
    ("blk_map", 4, "node_xfs_block_mapping_extent_list_deletions_total", "Number of extent list deletions for a filesystem."),
    ("blk_map", 5, "node_xfs_block_mapping_extent_list_lookups_total", "Number of extent list lookups for a filesystem."),
    ("blk_map", 6, "node_xfs_block_mapping_extent_list_compares_total", "Number of extent list compares for a filesystem."),
    ("bmbt", 0, "node_xfs_block_map_btree_lookups_total", "Number of block map B-tree lookups for a filesystem."),
    ("bmbt", 1, "node_xfs_block_map_btree_compares_total", "Number of block map B-tree compares for a filesystem."),
    ("bmbt", 2, "node_xfs_block_map_btree_records_inserted_total", "Number of block map B-tree records inserted for a filesystem."),
    ("bmbt", 3, "node_xfs_block_map_btree_records_deleted_total", "Number of block map B-tree records deleted for a filesystem."),
    ("dir", 0, "node_xfs_directory_operation_lookup_total", "Number of file name directory lookups which miss the operating systems directory name lookup cache."),
    ("dir", 1, "node_xfs_directory_operation_create_total", "Number of times a new directory entry was created for a filesystem."),
    ("dir", 2, "node_xfs_directory_operation_remove_total", "Number of times an existing directory entry was created for a filesystem."),
    ("dir", 3, "node_xfs_directory_operation_getdents_total", "Number of times the directory getdents operation was performed for a filesystem."),
    ("ig", 0, "node_xfs_inode_operation_attempts_total", "Number of times the OS looked for an XFS inode in the inode cache."),
    ("ig", 1, "node_xfs_inode_operation_found_total", "Number of times the OS looked for and found an XFS inode in the inode cache."),
    ("ig", 2, "node_xfs_inode_operation_recycled_total", "Number of times the OS found an XFS inode in the cache, but could not use it as it was being recycled."),
    ("ig", 3, "node_xfs_inode_operation_missed_total", "Number of times the OS looked for an XFS inode in the cache, but did not find it."),
    ("ig", 4, "node_xfs_inode_operation_duplicates_total", "Number of times the OS tried to add a missing XFS inode to the inode cache, but found it had already been added by another process."),
    ("ig", 5, "node_xfs_inode_operation_reclaims_total", "Number of times the OS reclaimed an XFS inode from the inode cache to free memory for another purpose."),
    ("ig", 6, "node_xfs_inode_operation_attribute_changes_total", "Number of times the OS explicitly changed the attributes of an XFS inode."),
    ("rw", 1, "node_xfs_read_calls_total", "Number of read(2) system calls made to files in a filesystem."),
    ("rw", 0, "node_xfs_write_calls_total", "Number of write(2) system calls made to files in a filesystem."),
    ("vnodes", 0, "node_xfs_vnode_active_total", "Number of vnodes not on free lists for a filesystem."),
    ("vnodes", 1, "node_xfs_vnode_allocate_total", "Number of times vn_alloc called for a filesystem."),
    ("vnodes", 2, "node_xfs_vnode_get_total", "Number of times vn_get called for a filesystem."),
    ("vnodes", 3, "node_xfs_vnode_hold_total", "Number of times vn_hold called for a filesystem."),
    ("vnodes", 4, "node_xfs_vnode_release_total", "Number of times vn_rele called for a filesystem."),
    ("vnodes", 5, "node_xfs_vnode_reclaim_total", "Number of times vn_reclaim called for a filesystem."),
    ("vnodes", 6, "node_xfs_vnode_remove_total", "Number of times vn_remove called for a filesystem."),
];

/// The widths procfs accepts for the lines it knows; another width fails
/// the collection, as it does in node_exporter.
fn width_ok(label: &str, n: usize) -> bool {
    match label {
        "extent_alloc" | "abt" | "bmbt" | "dir" | "attr" => n == 4,
        "blk_map" | "ig" => n == 7,
        "trans" | "icluster" => n == 3,
        "log" => n == 5,
        "push_ail" => n == 10,
        "xstrat" | "rw" => n == 2,
        "vnodes" => n == 7 || n == 8,
        "buf" => n == 9,
        "qm" => n == 8 || n == 9,
        "debug" => n == 1,
        "abtb2" | "abtc2" | "bmbt2" | "ibt2" => n == 15,
        _ => true,
    }
}

/// The exposed counters of one stats file, in [`METRICS`] order (0 for a
/// line the file lacks, as node_exporter reports it).
fn parse(path: &Path, text: &str) -> Result<[f64; METRICS.len()], NodeError> {
    let mut values = [0.0; METRICS.len()];
    let mut row: Vec<u64> = Vec::with_capacity(16);
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(label) = fields.next() else { continue };
        row.clear();
        for f in fields {
            let v: Option<u64> = if label == "xpc" { f.parse().ok() } else { f.parse::<u32>().ok().map(u64::from) };
            row.push(v.ok_or_else(|| NodeError::parse(path, format!("{label}: bad counter {f:?}")))?);
        }
        if row.is_empty() {
            continue;
        }
        if label == "xpc" && row.len() != 3 || !width_ok(label, row.len()) {
            return Err(NodeError::parse(path, format!("{label}: {} values", row.len())));
        }
        for (v, (l, col, _, _)) in values.iter_mut().zip(METRICS.iter()) {
            if *l == label {
                *v = row[*col] as f64;
            }
        }
    }
    Ok(values)
}

pub(super) struct Xfs {
    dir: PathBuf,
    buf: Vec<u8>,
}

impl Xfs {
    pub fn new(c: &NodeConfig) -> Self {
        Xfs { dir: c.sys_path.join("fs/xfs"), buf: Vec::with_capacity(2048) }
    }
}

impl Sub for Xfs {
    fn name(&self) -> &'static str {
        "xfs"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            // node_exporter globs fs/xfs/*/stats/stats: nothing there is no filesystem.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(NodeError::read(&self.dir, e)),
        };
        let mut devices: Vec<String> =
            entries.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect();
        devices.sort();
        let from = out.mark();
        for device in &devices {
            let path = self.dir.join(device).join("stats/stats");
            self.buf.clear();
            match std::fs::File::open(&path) {
                Ok(mut f) => f.read_to_end(&mut self.buf).map_err(|e| NodeError::read(&path, e))?,
                // `features` and other entries without stats are not filesystems.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.kind() == std::io::ErrorKind::NotADirectory => {
                    continue
                }
                Err(e) => return Err(NodeError::read(&path, e)),
            };
            let text = std::str::from_utf8(&self.buf).map_err(|_| NodeError::parse(&path, "not UTF-8"))?;
            let values = parse(&path, text)?;
            for ((_, _, name, help), v) in METRICS.iter().zip(values) {
                out.add_to(from, name, MetricType::Counter, help, &[("device", device)], v);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, value, Tree};
    use super::*;

    const STATS: &str = "extent_alloc 1 872 0 0\nabt 0 0 0 0\nblk_map 61 29 1 1 1 91 0\nbmbt 0 0 0 0\n\
dir 3 2 1 52\ntrans 4 40 0\nig 5 1 0 4 0 0 1\nlog 8 21 0 5821 4\npush_ail 44 0 1102 15 0 2 0 2 0 2\n\
xstrat 1 0\nrw 28 7\nattr 0 0 0 0\nicluster 2 2 2\nvnodes 4 0 0 0 1 1 1 0\nbuf 22 25 14 0 0 8 0 8 8\n\
fibt2 3 3 0 0 0 0 0 0 0 0 0 0 0 0 0\nqm 0 0 0 0 0 0 0 0\nxpc 3571712 3568056 0\ndebug 0\n";

    #[test]
    fn counters_per_filesystem() {
        let t = Tree::new("xfs");
        t.write("sys/fs/xfs/sda1/stats/stats", STATS);
        t.write("sys/fs/xfs/features/lazytime", "1\n");
        let got = run(&mut Xfs::new(&t.config())).unwrap();
        assert_eq!(got.len(), METRICS.len());
        assert_eq!(value(&got, r#"node_xfs_extent_allocation_blocks_allocated_total{device="sda1"}"#), 872.0);
        assert_eq!(value(&got, r#"node_xfs_block_mapping_extent_list_lookups_total{device="sda1"}"#), 91.0);
        assert_eq!(value(&got, r#"node_xfs_directory_operation_getdents_total{device="sda1"}"#), 52.0);
        // rw is "write read".
        assert_eq!(value(&got, r#"node_xfs_write_calls_total{device="sda1"}"#), 28.0);
        assert_eq!(value(&got, r#"node_xfs_read_calls_total{device="sda1"}"#), 7.0);
        assert_eq!(value(&got, r#"node_xfs_inode_operation_attribute_changes_total{device="sda1"}"#), 1.0);
        assert_eq!(value(&got, r#"node_xfs_vnode_remove_total{device="sda1"}"#), 1.0);
    }

    #[test]
    fn no_xfs_is_success_and_a_bad_line_names_the_file() {
        let t = Tree::new("xfs-none");
        assert_eq!(run(&mut Xfs::new(&t.config())).unwrap(), vec![]);
        t.write("sys/fs/xfs/sdb/stats/stats", "rw 1 2 3\n");
        let e = run(&mut Xfs::new(&t.config())).unwrap_err().to_string();
        assert!(e.contains("sdb/stats/stats") && e.contains("rw"), "{e}");
        t.write("sys/fs/xfs/sdb/stats/stats", "abt 1 2 3 4294967296\n");
        assert!(run(&mut Xfs::new(&t.config())).is_err(), "u32 overflow");
    }
}
