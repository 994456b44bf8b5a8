//! The `conntrack` collector: netfilter connection tracking table size and
//! per-CPU statistics.

use super::{one_number, FileBuf, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// The `conntrack` collector.
pub(super) struct Conntrack {
    count: FileBuf,
    max: FileBuf,
    stat: FileBuf,
}

impl Conntrack {
    pub fn new(c: &NodeConfig) -> Self {
        let p = &c.proc_path;
        Conntrack {
            count: FileBuf::new(p.join("sys/net/netfilter/nf_conntrack_count")),
            max: FileBuf::new(p.join("sys/net/netfilter/nf_conntrack_max")),
            stat: FileBuf::new(p.join("net/stat/nf_conntrack")),
        }
    }
}

/// /proc/net/stat/nf_conntrack columns node_exporter sums over CPUs.
const CONNTRACK_STATS: [(&str, &str, &str); 8] = [
    ("found", "node_nf_conntrack_stat_found", "Number of searched entries which were successful."),
    ("invalid", "node_nf_conntrack_stat_invalid", "Number of packets seen which can not be tracked."),
    (
        "ignore",
        "node_nf_conntrack_stat_ignore",
        "Number of packets seen which are already connected to a conntrack entry.",
    ),
    ("insert", "node_nf_conntrack_stat_insert", "Number of entries inserted into the list."),
    (
        "insert_failed",
        "node_nf_conntrack_stat_insert_failed",
        "Number of entries for which list insertion was attempted but failed.",
    ),
    ("drop", "node_nf_conntrack_stat_drop", "Number of packets dropped due to conntrack failure."),
    (
        "early_drop",
        "node_nf_conntrack_stat_early_drop",
        "Number of dropped conntrack entries to make room for new ones, if maximum table size was reached.",
    ),
    (
        "search_restart",
        "node_nf_conntrack_stat_search_restart",
        "Number of conntrack table lookups which had to be restarted due to hashtable resizes.",
    ),
];

/// Sums the per-CPU hex rows of /proc/net/stat/nf_conntrack by column.
fn conntrack_stats(path: &std::path::Path, text: &str) -> Result<[f64; 8], NodeError> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_ascii_whitespace().collect();
    let columns: Vec<Option<usize>> =
        CONNTRACK_STATS.iter().map(|(col, _, _)| header.iter().position(|h| h == col)).collect();
    let mut sums = [0f64; 8];
    for line in lines {
        let row: Vec<&str> = line.split_ascii_whitespace().collect();
        if row.len() != header.len() {
            return Err(NodeError::parse(path, format!("row of {} columns, header has {}", row.len(), header.len())));
        }
        for (sum, col) in sums.iter_mut().zip(&columns) {
            if let Some(i) = col {
                let v = u64::from_str_radix(row[*i], 16)
                    .map_err(|_| NodeError::parse(path, format!("bad hex {:?}", row[*i])))?;
                *sum += v as f64;
            }
        }
    }
    Ok(sums)
}

impl Sub for Conntrack {
    fn name(&self) -> &'static str {
        "conntrack"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let count = one_number(&mut self.count)?;
        out.single(
            "node_nf_conntrack_entries",
            MetricType::Gauge,
            "Number of currently allocated flow entries for connection tracking.",
            &[],
            count,
        );
        let max = one_number(&mut self.max)?;
        out.single(
            "node_nf_conntrack_entries_limit",
            MetricType::Gauge,
            "Maximum size of connection tracking table.",
            &[],
            max,
        );
        let (path, text) = self.stat.read()?;
        let sums = conntrack_stats(path, text)?;
        for ((_, name, help), v) in CONNTRACK_STATS.iter().zip(sums) {
            out.single(name, MetricType::Gauge, help, &[], v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, value, Tree};
    use super::*;

    #[test]
    fn conntrack_sums_cpus() {
        let t = Tree::new("ct");
        t.write("proc/sys/net/netfilter/nf_conntrack_count", "21\n");
        t.write("proc/sys/net/netfilter/nf_conntrack_max", "262144\n");
        t.write(
            "proc/net/stat/nf_conntrack",
            "entries  clashres found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
             00000015  00000000 00000001 00000000 0000000a 00000002 00000000 00000000 00000003 00000000 00000001 00000000 00000000  00000000 00000000 00000000 00000010\n\
             00000015  00000000 00000001 00000000 00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000001\n",
        );
        let got = run(&mut Conntrack::new(&t.config())).unwrap();
        assert_eq!(got.len(), 10);
        assert_eq!(value(&got, "node_nf_conntrack_entries{}"), 21.0);
        assert_eq!(value(&got, "node_nf_conntrack_entries_limit{}"), 262144.0);
        assert_eq!(value(&got, "node_nf_conntrack_stat_found{}"), 2.0);
        assert_eq!(value(&got, "node_nf_conntrack_stat_invalid{}"), 11.0);
        assert_eq!(value(&got, "node_nf_conntrack_stat_search_restart{}"), 17.0);
        t.write("proc/net/stat/nf_conntrack", "entries found\n1 zz\n");
        assert!(run(&mut Conntrack::new(&t.config())).unwrap_err().to_string().contains("zz"));
    }
}
