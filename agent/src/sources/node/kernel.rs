//! Small kernel counters: `conntrack`, `entropy`, `filefd`, `pressure`
//! (PSI), `schedstat` and `softnet`.

use super::{num, FileBuf, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// Reads a file holding one number.
fn one_number(file: &mut FileBuf) -> Result<f64, NodeError> {
    let (path, text) = file.read()?;
    num(path, text.trim())
}

/// "0", "1", ... kept so per-CPU labels need no formatting.
#[derive(Default)]
struct CpuIds(Vec<String>);

impl CpuIds {
    fn get(&mut self, i: usize) -> &str {
        while self.0.len() <= i {
            self.0.push(self.0.len().to_string());
        }
        &self.0[i]
    }
}

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

/// The `entropy` collector.
pub(super) struct Entropy {
    avail: FileBuf,
    pool: FileBuf,
}

impl Entropy {
    pub fn new(c: &NodeConfig) -> Self {
        let p = c.proc_path.join("sys/kernel/random");
        Entropy { avail: FileBuf::new(p.join("entropy_avail")), pool: FileBuf::new(p.join("poolsize")) }
    }
}

impl Sub for Entropy {
    fn name(&self) -> &'static str {
        "entropy"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let avail = one_number(&mut self.avail)?;
        out.single("node_entropy_available_bits", MetricType::Gauge, "Bits of available entropy.", &[], avail);
        let pool = one_number(&mut self.pool)?;
        out.single("node_entropy_pool_size_bits", MetricType::Gauge, "Bits of entropy pool.", &[], pool);
        Ok(())
    }
}

/// The `filefd` collector.
pub(super) struct Filefd {
    file: FileBuf,
}

impl Filefd {
    pub fn new(c: &NodeConfig) -> Self {
        Filefd { file: FileBuf::new(c.proc_path.join("sys/fs/file-nr")) }
    }
}

impl Sub for Filefd {
    fn name(&self) -> &'static str {
        "filefd"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let (path, text) = self.file.read()?;
        let f: Vec<&str> = text.split_ascii_whitespace().collect();
        if f.len() != 3 {
            return Err(NodeError::parse(path, format!("{} fields, expected 3", f.len())));
        }
        out.single(
            "node_filefd_allocated",
            MetricType::Gauge,
            "File descriptor statistics: allocated.",
            &[],
            num(path, f[0])?,
        );
        out.single(
            "node_filefd_maximum",
            MetricType::Gauge,
            "File descriptor statistics: maximum.",
            &[],
            num(path, f[2])?,
        );
        Ok(())
    }
}

/// The `pressure` collector (pressure stall information).
pub(super) struct Pressure {
    files: [FileBuf; 3],
}

impl Pressure {
    pub fn new(c: &NodeConfig) -> Self {
        let p = c.proc_path.join("pressure");
        Pressure { files: [FileBuf::new(p.join("cpu")), FileBuf::new(p.join("io")), FileBuf::new(p.join("memory"))] }
    }
}

/// The `total=` microseconds of the `some` and `full` lines.
fn psi_totals(path: &std::path::Path, text: &str) -> Result<(Option<f64>, Option<f64>), NodeError> {
    let (mut some, mut full) = (None, None);
    for line in text.lines() {
        let mut parts = line.split_ascii_whitespace();
        let slot = match parts.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => return Err(NodeError::parse(path, format!("bad line {line:?}"))),
        };
        let total = parts
            .find_map(|p| p.strip_prefix("total="))
            .ok_or_else(|| NodeError::parse(path, format!("no total= in {line:?}")))?;
        *slot = Some(num(path, total)? / 1e6);
    }
    Ok((some, full))
}

impl Sub for Pressure {
    fn name(&self) -> &'static str {
        "pressure"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let [cpu, io, memory] = &mut self.files;
        let (path, text) = cpu.read()?;
        let (some, _) = psi_totals(path, text)?;
        if let Some(v) = some {
            out.single(
                "node_pressure_cpu_waiting_seconds_total",
                MetricType::Counter,
                "Total time in seconds that processes have waited for CPU time",
                &[],
                v,
            );
        }
        let (path, text) = io.read()?;
        let (some, full) = psi_totals(path, text)?;
        if let Some(v) = some {
            out.single(
                "node_pressure_io_waiting_seconds_total",
                MetricType::Counter,
                "Total time in seconds that processes have waited due to IO congestion",
                &[],
                v,
            );
        }
        if let Some(v) = full {
            out.single(
                "node_pressure_io_stalled_seconds_total",
                MetricType::Counter,
                "Total time in seconds no process could make progress due to IO congestion",
                &[],
                v,
            );
        }
        let (path, text) = memory.read()?;
        let (some, full) = psi_totals(path, text)?;
        if let Some(v) = some {
            out.single(
                "node_pressure_memory_waiting_seconds_total",
                MetricType::Counter,
                "Total time in seconds that processes have waited for memory",
                &[],
                v,
            );
        }
        if let Some(v) = full {
            out.single(
                "node_pressure_memory_stalled_seconds_total",
                MetricType::Counter,
                "Total time in seconds no process could make progress due to memory congestion",
                &[],
                v,
            );
        }
        Ok(())
    }
}

/// The `schedstat` collector (/proc/schedstat, absent on kernels built
/// without CONFIG_SCHEDSTATS: then it fails, as node_exporter's does).
pub(super) struct Schedstat {
    file: FileBuf,
}

impl Schedstat {
    pub fn new(c: &NodeConfig) -> Self {
        Schedstat { file: FileBuf::new(c.proc_path.join("schedstat")) }
    }
}

impl Sub for Schedstat {
    fn name(&self) -> &'static str {
        "schedstat"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let (path, text) = self.file.read()?;
        let from = out.mark();
        for line in text.lines() {
            let mut parts = line.split_ascii_whitespace();
            let Some(cpu) = parts.next().and_then(|p| p.strip_prefix("cpu")) else { continue };
            let f: Vec<&str> = parts.collect();
            if f.len() < 9 {
                return Err(NodeError::parse(path, format!("short cpu line {line:?}")));
            }
            let running = num(path, f[6])? / 1e9;
            let waiting = num(path, f[7])? / 1e9;
            let slices = num(path, f[8])?;
            out.add_to(
                from,
                "node_schedstat_running_seconds_total",
                MetricType::Counter,
                "Number of seconds CPU spent running a process.",
                &[("cpu", cpu)],
                running,
            );
            out.add_to(
                from,
                "node_schedstat_waiting_seconds_total",
                MetricType::Counter,
                "Number of seconds spent by processing waiting for this CPU.",
                &[("cpu", cpu)],
                waiting,
            );
            out.add_to(
                from,
                "node_schedstat_timeslices_total",
                MetricType::Counter,
                "Number of timeslices executed by CPU.",
                &[("cpu", cpu)],
                slices,
            );
        }
        Ok(())
    }
}

/// The `softnet` collector (/proc/net/softnet_stat, one hex row per CPU).
pub(super) struct Softnet {
    file: FileBuf,
    ids: CpuIds,
}

impl Softnet {
    pub fn new(c: &NodeConfig) -> Self {
        Softnet { file: FileBuf::new(c.proc_path.join("net/softnet_stat")), ids: CpuIds::default() }
    }
}

impl Sub for Softnet {
    fn name(&self) -> &'static str {
        "softnet"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let (path, text) = self.file.read()?;
        let from = out.mark();
        for (i, line) in text.lines().enumerate() {
            let mut v = [0f64; 3];
            let mut parts = line.split_ascii_whitespace();
            for slot in &mut v {
                let p = parts.next().ok_or_else(|| NodeError::parse(path, format!("short row {line:?}")))?;
                *slot =
                    u64::from_str_radix(p, 16).map_err(|_| NodeError::parse(path, format!("bad hex {p:?}")))? as f64;
            }
            let cpu = self.ids.get(i);
            out.add_to(
                from,
                "node_softnet_processed_total",
                MetricType::Counter,
                "Number of processed packets",
                &[("cpu", cpu)],
                v[0],
            );
            out.add_to(
                from,
                "node_softnet_dropped_total",
                MetricType::Counter,
                "Number of dropped packets",
                &[("cpu", cpu)],
                v[1],
            );
            out.add_to(
                from,
                "node_softnet_times_squeezed_total",
                MetricType::Counter,
                "Number of times processing packets ran out of quota",
                &[("cpu", cpu)],
                v[2],
            );
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

    #[test]
    fn entropy_filefd() {
        let t = Tree::new("misc");
        t.write("proc/sys/kernel/random/entropy_avail", "256\n");
        t.write("proc/sys/kernel/random/poolsize", "256\n");
        t.write("proc/sys/fs/file-nr", "864\t0\t2466170\n");
        let got = run(&mut Entropy::new(&t.config())).unwrap();
        assert_eq!(
            got,
            [("node_entropy_available_bits{}".into(), 256.0), ("node_entropy_pool_size_bits{}".into(), 256.0)]
        );
        let got = run(&mut Filefd::new(&t.config())).unwrap();
        assert_eq!(got, [("node_filefd_allocated{}".into(), 864.0), ("node_filefd_maximum{}".into(), 2466170.0)]);
        t.write("proc/sys/fs/file-nr", "864 0\n");
        assert!(run(&mut Filefd::new(&t.config())).is_err());
    }

    #[test]
    fn pressure_totals() {
        let t = Tree::new("psi");
        t.write("proc/pressure/cpu", "some avg10=66.89 avg60=67.90 avg300=34.38 total=252060917\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n");
        t.write("proc/pressure/io", "some avg10=0.00 avg60=0.00 avg300=0.00 total=22914510\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=13189634\n");
        t.write(
            "proc/pressure/memory",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=5\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        );
        let got = run(&mut Pressure::new(&t.config())).unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!(value(&got, "node_pressure_cpu_waiting_seconds_total{}"), 252.060917);
        assert_eq!(value(&got, "node_pressure_io_stalled_seconds_total{}"), 13.189634);
        assert_eq!(value(&got, "node_pressure_memory_waiting_seconds_total{}"), 0.000005);
        t.write("proc/pressure/io", "some avg10=0.00\n");
        assert!(run(&mut Pressure::new(&t.config())).unwrap_err().to_string().contains("total="));
    }

    #[test]
    fn schedstat_and_softnet() {
        let t = Tree::new("sched");
        t.write(
            "proc/schedstat",
            "version 15\ntimestamp 4294\ncpu0 0 0 0 0 0 0 2000000000 500000000 42\ndomain0 3 1 2\n",
        );
        let got = run(&mut Schedstat::new(&t.config())).unwrap();
        assert_eq!(value(&got, "node_schedstat_running_seconds_total{cpu=\"0\"}"), 2.0);
        assert_eq!(value(&got, "node_schedstat_waiting_seconds_total{cpu=\"0\"}"), 0.5);
        assert_eq!(value(&got, "node_schedstat_timeslices_total{cpu=\"0\"}"), 42.0);
        assert!(run(&mut Schedstat::new(&Tree::new("sched-none").config())).is_err());
        t.write("proc/net/softnet_stat", "0000007d 00000001 00000002 00000000\n000042c1 00000000 0000000a 00000000\n");
        let got = run(&mut Softnet::new(&t.config())).unwrap();
        assert_eq!(got.len(), 6);
        assert_eq!(value(&got, "node_softnet_processed_total{cpu=\"1\"}"), 17089.0);
        assert_eq!(value(&got, "node_softnet_times_squeezed_total{cpu=\"1\"}"), 10.0);
        assert_eq!(value(&got, "node_softnet_dropped_total{cpu=\"0\"}"), 1.0);
        t.write("proc/net/softnet_stat", "0000007d\n");
        assert!(run(&mut Softnet::new(&t.config())).is_err());
    }
}
