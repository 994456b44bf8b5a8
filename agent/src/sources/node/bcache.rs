//! The `bcache` collector: /sys/fs/bcache/<uuid> with its backing and
//! cache devices, under node_exporter 1.5's names. Sizes are read the way
//! node_exporter (procfs 0.8) reads bcache's human-readable values, quirks
//! included: "1.5k" is 1 + 5/10.24 KiB, and `btree_read_average_duration_us`
//! is scaled by 1e-9 into `..._seconds`. A missing attribute reads as 0;
//! no bcache set is no series and no failure. `bcache_priority_stats`
//! (node_exporter's `--collector.bcache.priorityStats`, off by default)
//! adds the per-cache priority_stats percentages.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::edac::numbered;
use super::{NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

const G: MetricType = MetricType::Gauge;
const C: MetricType = MetricType::Counter;

/// The set's own values: (file under the set, metric, type, help, scale).
const SET: [(&str, &str, MetricType, &str, f64); 10] = [
    ("average_key_size", "average_key_size_sectors", G, "Average data per key in the btree (sectors).", 1.0),
    ("btree_cache_size", "btree_cache_size_bytes", G, "Amount of memory currently used by the btree cache.", 1.0),
    (
        "cache_available_percent",
        "cache_available_percent",
        G,
        "Percentage of cache device without dirty data, usable for writeback (may contain clean cached data).",
        1.0,
    ),
    ("congested", "congested", G, "Congestion.", 1.0),
    (
        "root_usage_percent",
        "root_usage_percent",
        G,
        "Percentage of the root btree node in use (tree depth increases if too high).",
        1.0,
    ),
    ("tree_depth", "tree_depth", G, "Depth of the btree.", 1.0),
    (
        "internal/active_journal_entries",
        "active_journal_entries",
        G,
        "Number of journal entries that are newer than the index.",
        1.0,
    ),
    ("internal/btree_nodes", "btree_nodes", G, "Total nodes in the btree.", 1.0),
    (
        "internal/btree_read_average_duration_us",
        "btree_read_average_duration_seconds",
        G,
        "Average btree read duration.",
        1e-9,
    ),
    (
        "internal/cache_read_races",
        "cache_read_races_total",
        C,
        "Counts instances where while data was being read from the cache, the bucket was reused and invalidated - i.e. where the pointer was stale after the read completed.",
        1.0,
    ),
];

/// Files of a `stats_*` directory node_exporter reads (the set's own are
/// read and checked but not exposed).
const PERIOD_FILES: [&str; 7] = [
    "bypassed",
    "cache_bypass_hits",
    "cache_bypass_misses",
    "cache_hits",
    "cache_miss_collisions",
    "cache_misses",
    "cache_readaheads",
];

/// A backing device's stats_total, in [`PERIOD_FILES`] order.
const PERIOD: [(&str, &str); 7] = [
    ("bypassed_bytes_total", "Amount of IO (both reads and writes) that has bypassed the cache."),
    ("cache_bypass_hits_total", "Hits for IO intended to skip the cache."),
    ("cache_bypass_misses_total", "Misses for IO intended to skip the cache."),
    ("cache_hits_total", "Hits counted per individual IO as bcache sees them."),
    (
        "cache_miss_collisions_total",
        "Instances where data insertion from cache miss raced with write (data already present).",
    ),
    ("cache_misses_total", "Misses counted per individual IO as bcache sees them."),
    ("cache_readaheads_total", "Count of times readahead occurred."),
];

/// bcache's "12.3k" notation, as procfs reads it.
fn dehumanize(s: &str) -> Option<f64> {
    let last = *s.as_bytes().last()?;
    if last > b'9' {
        let mul = match last {
            b'k' => 1u64 << 10,
            b'M' => 1 << 20,
            b'G' => 1 << 30,
            b'T' => 1 << 40,
            b'P' => 1 << 50,
            b'E' => 1 << 60,
            // procfs looks the suffix up in a map: an unknown one is 0.
            _ => 0,
        } as f64;
        let mant = &s[..s.len() - 1];
        let (int, frac) = match mant.split_once('.') {
            Some((i, f)) => (i.parse::<f64>().ok()?, f.parse::<f64>().ok()? / 10.24),
            None => (mant.parse::<f64>().ok()?, 0.0),
        };
        Some(((int + frac) * mul).trunc())
    } else {
        Some(s.parse::<f64>().ok()?.trunc())
    }
}

fn dehumanize_signed(s: &str) -> Option<f64> {
    match s.strip_prefix('-') {
        Some(rest) => dehumanize(rest).map(|v| -v),
        None => dehumanize(s),
    }
}

pub(super) struct Bcache {
    dir: PathBuf,
    priority_stats: bool,
    buf: Vec<u8>,
}

impl Bcache {
    pub fn new(c: &NodeConfig) -> Self {
        Bcache { dir: c.sys_path.join("fs/bcache"), priority_stats: c.bcache_priority_stats, buf: Vec::new() }
    }
}

/// Reads `path` whole; None when it does not exist.
fn read<'b>(path: &Path, buf: &'b mut Vec<u8>) -> Result<Option<&'b str>, NodeError> {
    buf.clear();
    match std::fs::File::open(path) {
        Ok(mut f) => f.read_to_end(buf).map_err(|e| NodeError::read(path, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(NodeError::read(path, e)),
    };
    std::str::from_utf8(buf).map(Some).map_err(|_| NodeError::parse(path, "not UTF-8"))
}

/// One attribute value: 0 when the file is missing, as in procfs.
fn value(path: &Path, buf: &mut Vec<u8>) -> Result<f64, NodeError> {
    let Some(text) = read(path, buf)? else { return Ok(0.0) };
    // procfs drops the last byte (the newline) before parsing.
    let text = text.strip_suffix('\n').unwrap_or(text);
    dehumanize(text).ok_or_else(|| NodeError::parse(path, format!("bad value {text:?}")))
}

/// The last field of the line of `text` starting with `key`, without `suffix`.
fn field<'t>(text: &'t str, key: &str, suffix: &str) -> Option<&'t str> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let last = line.split_whitespace().last()?;
    Some(last.strip_suffix(suffix).unwrap_or(last))
}

impl Sub for Bcache {
    fn name(&self) -> &'static str {
        "bcache"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let mut sets: Vec<String> = match std::fs::read_dir(&self.dir) {
            Ok(e) => e.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(NodeError::read(&self.dir, e)),
        };
        sets.retain(|s| s.contains('-'));
        sets.sort();
        let from = out.mark();
        let buf = &mut self.buf;
        let name = |m: &str| format!("node_bcache_{m}");
        for uuid in &sets {
            let set = self.dir.join(uuid);
            let mut values = [0.0; SET.len()];
            for (v, (file, ..)) in values.iter_mut().zip(SET.iter()) {
                *v = value(&set.join(file), buf)?;
            }
            for period in ["stats_five_minute", "stats_total"] {
                for file in PERIOD_FILES {
                    value(&set.join(period).join(file), buf)?;
                }
            }
            for (v, (_, metric, kind, help, scale)) in values.iter().zip(SET.iter()) {
                out.add_to(from, &name(metric), *kind, help, &[("uuid", uuid)], v * scale);
            }
            let list = |prefix: &str| numbered(&set, prefix).map_err(|e| NodeError::read(&set, e));
            for (bdev, _) in list("bdev")? {
                let dir = set.join(&bdev);
                let labels = [("uuid", uuid.as_str()), ("backing_device", bdev.as_str())];
                let dirty = value(&dir.join("dirty_data"), buf)?;
                let debug_path = dir.join("writeback_rate_debug");
                let debug = read(&debug_path, buf)?
                    .ok_or_else(|| NodeError::read(&debug_path, std::io::Error::from(std::io::ErrorKind::NotFound)))?;
                let bad = |what: &str| NodeError::parse(&debug_path, format!("bad {what} line"));
                let get = |key: &str, suffix: &str, signed: bool| -> Result<f64, NodeError> {
                    match field(debug, key, suffix) {
                        None => Ok(0.0),
                        Some(v) if signed => dehumanize_signed(v).ok_or_else(|| bad(key)),
                        Some(v) => dehumanize(v).ok_or_else(|| bad(key)),
                    }
                };
                let debug_values = [
                    (
                        "dirty_target_bytes",
                        "Current dirty data target threshold for this backing device in bytes.",
                        get("target:", "", false)?,
                    ),
                    (
                        "writeback_rate",
                        "Current writeback rate for this backing device in bytes.",
                        get("rate:", "/sec", false)?,
                    ),
                    (
                        "writeback_rate_proportional_term",
                        "Current result of proportional controller, part of writeback rate",
                        get("proportional:", "", true)?,
                    ),
                    (
                        "writeback_rate_integral_term",
                        "Current result of integral controller, part of writeback rate",
                        get("integral:", "", true)?,
                    ),
                    (
                        "writeback_change",
                        "Last writeback rate change step for this backing device.",
                        get("change:", "/sec", true)?,
                    ),
                ];
                out.add_to(
                    from,
                    &name("dirty_data_bytes"),
                    G,
                    "Amount of dirty data for this backing device in the cache.",
                    &labels,
                    dirty,
                );
                for (metric, help, v) in debug_values {
                    out.add_to(from, &name(metric), G, help, &labels, v);
                }
                let mut five = [0.0; 7];
                for (v, file) in five.iter_mut().zip(PERIOD_FILES) {
                    *v = value(&dir.join("stats_five_minute").join(file), buf)?;
                }
                for ((metric, help), file) in PERIOD.iter().zip(PERIOD_FILES) {
                    let v = value(&dir.join("stats_total").join(file), buf)?;
                    out.add_to(from, &name(metric), C, help, &labels, v);
                }
            }
            for (cache, _) in list("cache")? {
                let dir = set.join(&cache);
                let labels = [("uuid", uuid.as_str()), ("cache_device", cache.as_str())];
                let io_errors = value(&dir.join("io_errors"), buf)?;
                let metadata = value(&dir.join("metadata_written"), buf)?;
                let written = value(&dir.join("written"), buf)?;
                out.add_to(
                    from,
                    &name("io_errors"),
                    G,
                    "Number of errors that have occurred, decayed by io_error_halflife.",
                    &labels,
                    io_errors,
                );
                out.add_to(
                    from,
                    &name("metadata_written_bytes_total"),
                    C,
                    "Sum of all non data writes (btree writes and all other metadata).",
                    &labels,
                    metadata,
                );
                out.add_to(
                    from,
                    &name("written_bytes_total"),
                    C,
                    "Sum of all data that has been written to the cache.",
                    &labels,
                    written,
                );
                if self.priority_stats {
                    let path = dir.join("priority_stats");
                    let text = read(&path, buf)?
                        .ok_or_else(|| NodeError::read(&path, std::io::Error::from(std::io::ErrorKind::NotFound)))?;
                    let pct = |key: &str| -> Result<f64, NodeError> {
                        field(text, key, "%").map_or(Ok(0.0), |v| {
                            v.parse::<u64>()
                                .map(|v| v as f64)
                                .map_err(|_| NodeError::parse(&path, format!("bad {key}")))
                        })
                    };
                    let (unused, metadata) = (pct("Unused:")?, pct("Metadata:")?);
                    out.add_to(
                        from,
                        &name("priority_stats_unused_percent"),
                        G,
                        "The percentage of the cache that doesn't contain any data.",
                        &labels,
                        unused,
                    );
                    out.add_to(
                        from,
                        &name("priority_stats_metadata_percent"),
                        G,
                        "Bcache's metadata overhead.",
                        &labels,
                        metadata,
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, value as series, Tree};
    use super::*;

    #[test]
    fn human_sizes_as_procfs_reads_them() {
        assert_eq!(dehumanize("512"), Some(512.0));
        assert_eq!(dehumanize("1.1M"), Some(((1.0 + 1.0 / 10.24) * 1048576.0f64).trunc()));
        assert_eq!(dehumanize("20.4G"), Some(21894266880.0));
        assert_eq!(dehumanize_signed("-427.5k"), Some(-437748.0));
        assert_eq!(dehumanize("x"), None);
    }

    #[test]
    fn set_backing_and_cache_devices() {
        let t = Tree::new("bcache");
        let set = "sys/fs/bcache/deaddd54-c735-46d5-868e-f331c5fd7c74";
        t.write(&format!("{set}/cache_available_percent"), "100\n");
        t.write(&format!("{set}/internal/btree_read_average_duration_us"), "1305\n");
        t.write(&format!("{set}/bdev0/dirty_data"), "1.5k\n");
        t.write(
            &format!("{set}/bdev0/writeback_rate_debug"),
            "rate:           1.1M/sec\ndirty:          20.4G\ntarget:         20.4G\n\
             proportional:   427.5k\nintegral:       790.0k\nchange:         -321.5k/sec\nnext io:        17ms\n",
        );
        t.write(&format!("{set}/bdev0/stats_total/cache_hits"), "546\n");
        t.write(&format!("{set}/cache0/metadata_written"), "512\n");
        t.write(&format!("{set}/cache0/priority_stats"), "Unused:\t\t99%\nMetadata:\t0%\n");
        t.write("sys/fs/bcache/register", "");
        let mut c = t.config();
        let got = run(&mut Bcache::new(&c)).unwrap();
        let u = r#"uuid="deaddd54-c735-46d5-868e-f331c5fd7c74""#;
        assert_eq!(series(&got, &format!("node_bcache_cache_available_percent{{{u}}}")), 100.0);
        assert_eq!(series(&got, &format!("node_bcache_btree_read_average_duration_seconds{{{u}}}")), 1305.0 * 1e-9);
        let b = format!(r#"backing_device="bdev0", {u}"#);
        assert_eq!(series(&got, &format!("node_bcache_dirty_data_bytes{{{b}}}")), 1524.0);
        assert_eq!(series(&got, &format!("node_bcache_dirty_target_bytes{{{b}}}")), 21894266880.0);
        assert_eq!(series(&got, &format!("node_bcache_writeback_change{{{b}}}")), -329204.0);
        assert_eq!(series(&got, &format!("node_bcache_cache_hits_total{{{b}}}")), 546.0);
        let k = format!(r#"cache_device="cache0", {u}"#);
        assert_eq!(series(&got, &format!("node_bcache_metadata_written_bytes_total{{{k}}}")), 512.0);
        assert!(!got.iter().any(|(s, _)| s.contains("priority")), "priority stats are off by default");
        c.bcache_priority_stats = true;
        let got = run(&mut Bcache::new(&c)).unwrap();
        assert_eq!(series(&got, &format!("node_bcache_priority_stats_unused_percent{{{k}}}")), 99.0);
    }

    #[test]
    fn no_bcache_is_success() {
        let t = Tree::new("bcache-none");
        assert_eq!(run(&mut Bcache::new(&t.config())).unwrap(), vec![]);
    }
}
