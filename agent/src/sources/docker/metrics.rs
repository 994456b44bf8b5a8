//! Per-container metrics under cAdvisor's names, types, help texts and
//! labels (`name` without Docker's slash, `image`, `id` = the cgroup path,
//! `container_label_<key>`), read from the cgroup files and the init
//! process's /proc/<pid>/net/dev. Docker's stats API costs about a second
//! per container; this costs a dozen small file reads.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

use tokio::sync::watch;

use super::cgroup::{Dirs, Host, Reader, Stats};
use super::discovery::sanitize_label_name;
use super::{Container, DockerConfig, Inventory};
use crate::sample::{Family, Labels, MetricType, METRIC_NAME};
use crate::sources::Collector;

use MetricType::{Counter, Gauge};

/// Every family, in output order: (name, type, cAdvisor's help text).
const FAMILIES: &[(&str, MetricType, &str)] = &[
    ("container_cpu_usage_seconds_total", Counter, "Cumulative cpu time consumed in seconds."),
    ("container_cpu_user_seconds_total", Counter, "Cumulative user cpu time consumed in seconds."),
    ("container_cpu_system_seconds_total", Counter, "Cumulative system cpu time consumed in seconds."),
    ("container_cpu_cfs_periods_total", Counter, "Number of elapsed enforcement period intervals."),
    ("container_cpu_cfs_throttled_periods_total", Counter, "Number of throttled period intervals."),
    ("container_cpu_cfs_throttled_seconds_total", Counter, "Total time duration the container has been throttled."),
    ("container_memory_usage_bytes", Gauge, "Current memory usage in bytes, including all memory regardless of when it was accessed"),
    ("container_memory_working_set_bytes", Gauge, "Current working set in bytes."),
    ("container_memory_rss", Gauge, "Size of RSS in bytes."),
    ("container_memory_cache", Gauge, "Number of bytes of page cache memory."),
    ("container_memory_swap", Gauge, "Container swap usage in bytes."),
    ("container_memory_failcnt", Counter, "Number of memory usage hits limits"),
    ("container_spec_memory_limit_bytes", Gauge, "Memory limit for the container."),
    ("container_spec_cpu_quota", Gauge, "CPU quota of the container."),
    ("container_spec_cpu_period", Gauge, "CPU period of the container."),
    ("container_spec_cpu_shares", Gauge, "CPU share of the container."),
    ("container_network_receive_bytes_total", Counter, "Cumulative count of bytes received"),
    ("container_network_receive_packets_total", Counter, "Cumulative count of packets received"),
    ("container_network_receive_errors_total", Counter, "Cumulative count of errors encountered while receiving"),
    ("container_network_receive_packets_dropped_total", Counter, "Cumulative count of packets dropped while receiving"),
    ("container_network_transmit_bytes_total", Counter, "Cumulative count of bytes transmitted"),
    ("container_network_transmit_packets_total", Counter, "Cumulative count of packets transmitted"),
    ("container_network_transmit_errors_total", Counter, "Cumulative count of errors encountered while transmitting"),
    ("container_network_transmit_packets_dropped_total", Counter, "Cumulative count of packets dropped while transmitting"),
    ("container_fs_reads_bytes_total", Counter, "Cumulative count of bytes read"),
    ("container_fs_writes_bytes_total", Counter, "Cumulative count of bytes written"),
    ("container_processes", Gauge, "Number of processes running inside the container."),
    ("container_start_time_seconds", Gauge, "Start time of the container since unix epoch in seconds."),
    ("container_last_seen", Gauge, "Last time a container was seen by the exporter"),
    ("container_oom_events_total", Counter, "Count of out of memory events observed for the container"),
    ("container_state", Gauge, "Whether the container is in this state (1) or not (0), per Docker's state: running, paused, restarting or exited."),
];

/// Index of each family in [`FAMILIES`].
#[derive(Clone, Copy)]
enum F {
    CpuUsage,
    CpuUser,
    CpuSystem,
    CfsPeriods,
    CfsThrottledPeriods,
    CfsThrottledSeconds,
    MemUsage,
    MemWorkingSet,
    MemRss,
    MemCache,
    MemSwap,
    MemFailcnt,
    SpecMemLimit,
    SpecCpuQuota,
    SpecCpuPeriod,
    SpecCpuShares,
    NetRxBytes,
    NetRxPackets,
    NetRxErrors,
    NetRxDropped,
    NetTxBytes,
    NetTxPackets,
    NetTxErrors,
    NetTxDropped,
    FsReads,
    FsWrites,
    Processes,
    StartTime,
    LastSeen,
    OomEvents,
    State,
}

/// States reported by `container_state`.
const STATES: [&str; 4] = ["running", "paused", "restarting", "exited"];

/// The container metrics source.
pub struct ContainerCollector {
    host: Host,
    inventory: watch::Receiver<Inventory>,
    container_labels: bool,
    interval: Option<std::time::Duration>,
    job: String,
    instance: String,
    /// Cgroup directories by container id, found once per container.
    located: HashMap<String, Dirs>,
    reader: Reader,
    /// Block device names by (major, minor), from /sys/dev/block.
    devices: HashMap<(u32, u32), String>,
    sys: PathBuf,
    netdev: Vec<u8>,
}

impl ContainerCollector {
    /// A collector of the containers in `inventory`, reading the host's
    /// cgroups and procfs (HOST_SYS / HOST_PROC in a container).
    pub fn new(config: &DockerConfig, inventory: watch::Receiver<Inventory>) -> Self {
        let sys = std::env::var_os("HOST_SYS").map_or_else(|| "/sys".into(), PathBuf::from);
        let proc = std::env::var_os("HOST_PROC").map_or_else(|| "/proc".into(), PathBuf::from);
        Self::with_paths(config, inventory, sys, proc)
    }

    /// As [`ContainerCollector::new`] with explicit sysfs and procfs roots.
    pub fn with_paths(
        config: &DockerConfig,
        inventory: watch::Receiver<Inventory>,
        sys: PathBuf,
        proc: PathBuf,
    ) -> Self {
        ContainerCollector {
            host: Host::new(&sys, &proc),
            inventory,
            container_labels: config.container_labels,
            interval: config.interval,
            job: config.job.clone(),
            instance: if config.instance.is_empty() { crate::hostname() } else { config.instance.clone() },
            located: HashMap::new(),
            reader: Reader::default(),
            devices: HashMap::new(),
            sys,
            netdev: Vec::with_capacity(2048),
        }
    }

    /// The labels every series of `c` carries.
    fn base_labels(&self, c: &Container, id: &str) -> Labels {
        let mut labels = Labels::with_capacity(8 + if self.container_labels { c.labels.len() } else { 0 });
        labels.set("name", c.name.trim_start_matches('/'));
        labels.set("image", c.image.as_str());
        labels.set("id", id);
        labels.set("job", self.job.as_str());
        labels.set("instance", self.instance.as_str());
        if self.container_labels {
            for (k, v) in &c.labels {
                labels.set(format!("container_label_{}", sanitize_label_name(k)), v.as_str());
            }
        }
        labels
    }

    fn device_name(&mut self, major: u32, minor: u32) -> String {
        let sys = &self.sys;
        self.devices
            .entry((major, minor))
            .or_insert_with(|| {
                std::fs::read_link(sys.join(format!("dev/block/{major}:{minor}")))
                    .ok()
                    .and_then(|p| p.file_name().map(|n| format!("/dev/{}", n.to_string_lossy())))
                    .unwrap_or_else(|| format!("{major}:{minor}"))
            })
            .clone()
    }

    /// /proc/<pid>/net/dev of the container's init process: per interface
    /// (rx bytes, packets, errs, drop, tx bytes, packets, errs, drop).
    fn network(&mut self, pid: u32) -> Vec<(String, [f64; 8])> {
        self.netdev.clear();
        let path = self.host.proc.join(pid.to_string()).join("net/dev");
        let Ok(mut f) = std::fs::File::open(path) else { return Vec::new() };
        if f.read_to_end(&mut self.netdev).is_err() {
            return Vec::new();
        }
        parse_net_dev(&String::from_utf8_lossy(&self.netdev))
    }
}

/// Parses /proc/net/dev, leaving out the loopback device.
fn parse_net_dev(text: &str) -> Vec<(String, [f64; 8])> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (iface, rest) = line.split_once(':')?;
            let iface = iface.trim();
            if iface == "lo" {
                return None;
            }
            let cols: Vec<f64> = rest.split_whitespace().filter_map(|v| v.parse().ok()).collect();
            if cols.len() < 12 {
                return None;
            }
            Some((iface.to_string(), [cols[0], cols[1], cols[2], cols[3], cols[8], cols[9], cols[10], cols[11]]))
        })
        .collect()
}

/// Adds one sample of family `f` with the base labels plus `extra`.
fn put(families: &mut [Family], f: F, base: &Labels, extra: &[(&str, &str)], value: f64, ts: i64) {
    let family = &mut families[f as usize];
    let mut labels = base.clone();
    labels.set(METRIC_NAME, family.name.as_str());
    for (k, v) in extra {
        labels.set(*k, *v);
    }
    family.samples.push(crate::sample::Sample { labels, value, timestamp_ms: ts });
}

fn put_opt(families: &mut [Family], f: F, base: &Labels, value: Option<f64>, ts: i64) {
    if let Some(v) = value {
        put(families, f, base, &[], v, ts);
    }
}

fn put_stats(families: &mut [Family], base: &Labels, s: &Stats, ts: i64) {
    if let Some(v) = s.cpu_usage_seconds {
        put(families, F::CpuUsage, base, &[("cpu", "total")], v, ts);
    }
    put_opt(families, F::CpuUser, base, s.cpu_user_seconds, ts);
    put_opt(families, F::CpuSystem, base, s.cpu_system_seconds, ts);
    put_opt(families, F::CfsPeriods, base, s.cfs_periods, ts);
    put_opt(families, F::CfsThrottledPeriods, base, s.cfs_throttled_periods, ts);
    put_opt(families, F::CfsThrottledSeconds, base, s.cfs_throttled_seconds, ts);
    put_opt(families, F::MemUsage, base, s.memory_usage, ts);
    put_opt(families, F::MemWorkingSet, base, s.memory_working_set, ts);
    put_opt(families, F::MemRss, base, s.memory_rss, ts);
    put_opt(families, F::MemCache, base, s.memory_cache, ts);
    put_opt(families, F::MemSwap, base, s.memory_swap, ts);
    put_opt(families, F::MemFailcnt, base, s.memory_failcnt, ts);
    put_opt(families, F::SpecMemLimit, base, s.memory_limit, ts);
    put_opt(families, F::SpecCpuQuota, base, s.cpu_quota, ts);
    put_opt(families, F::SpecCpuPeriod, base, s.cpu_period, ts);
    put_opt(families, F::SpecCpuShares, base, s.cpu_shares, ts);
    put_opt(families, F::Processes, base, s.processes, ts);
    put_opt(families, F::OomEvents, base, s.oom_events, ts);
}

impl Collector for ContainerCollector {
    fn name(&self) -> &str {
        "docker"
    }

    fn interval(&self) -> Option<std::time::Duration> {
        self.interval
    }

    fn collect(&mut self, now_ms: i64) -> Result<Vec<Family>, String> {
        let inventory = self.inventory.borrow().clone();
        let mut families: Vec<Family> =
            FAMILIES.iter().map(|(name, kind, help)| Family::new(*name, *kind, *help)).collect();
        let now_s = now_ms as f64 / 1000.0;
        for c in inventory.iter() {
            let live = matches!(c.state.as_str(), "running" | "paused" | "restarting") && c.pid > 0;
            let dirs = if live {
                match self.located.get(&c.id) {
                    Some(d) => Some(d.clone()),
                    None => self.host.locate(&c.id, c.pid),
                }
            } else {
                None
            };
            // A stopped container has no cgroup; cAdvisor's id for it would
            // be its cgroup path, which the cgroupfs driver makes /docker/<id>.
            let id = dirs.as_ref().map_or_else(|| format!("/docker/{}", c.id), |d| d.path.clone());
            let base = self.base_labels(c, &id);
            for state in STATES {
                put(&mut families, F::State, &base, &[("state", state)], f64::from(u8::from(c.state == state)), now_ms);
            }
            let Some(dirs) = dirs else { continue };
            // Gone since discovery last looked: its series go stale, nothing fails.
            let Some(stats) = self.reader.stats(&dirs) else {
                self.located.remove(&c.id);
                continue;
            };
            self.located.insert(c.id.clone(), dirs);
            put_stats(&mut families, &base, &stats, now_ms);
            for (major, minor, read, written) in &stats.io {
                let device = self.device_name(*major, *minor);
                put(&mut families, F::FsReads, &base, &[("device", &device)], *read, now_ms);
                put(&mut families, F::FsWrites, &base, &[("device", &device)], *written, now_ms);
            }
            // Host networking would report the host's interfaces as the container's.
            if c.network_mode != "host" {
                let order = [
                    F::NetRxBytes,
                    F::NetRxPackets,
                    F::NetRxErrors,
                    F::NetRxDropped,
                    F::NetTxBytes,
                    F::NetTxPackets,
                    F::NetTxErrors,
                    F::NetTxDropped,
                ];
                for (iface, values) in self.network(c.pid) {
                    for (f, v) in order.iter().zip(values) {
                        put(&mut families, *f, &base, &[("interface", &iface)], v, now_ms);
                    }
                }
            }
            if c.started_at > 0.0 {
                put(&mut families, F::StartTime, &base, &[], c.started_at, now_ms);
            }
            put(&mut families, F::LastSeen, &base, &[], now_s, now_ms);
        }
        self.located.retain(|id, _| inventory.iter().any(|c| &c.id == id));
        families.retain(|f| !f.samples.is_empty());
        Ok(families)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    #[test]
    fn net_dev_without_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
                    face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
                    eth0:    5000      40    1    2    0     0          0         0     3000      30    3    4    0     0       0          0\n";
        assert_eq!(parse_net_dev(text), vec![("eth0".to_string(), [5000.0, 40.0, 1.0, 2.0, 3000.0, 30.0, 3.0, 4.0])]);
        assert!(parse_net_dev("garbage\n\nx: 1 2\n").is_empty());
    }

    /// A fake host with one running container (cgroup v1) and one exited.
    #[test]
    fn series_with_cadvisor_labels_and_state_for_stopped_containers() {
        let base = std::env::temp_dir().join(format!("vantage-docker-metrics-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (sys, proc) = (base.join("sys"), base.join("proc"));
        let id = "a".repeat(64);
        let mem = sys.join("fs/cgroup/memory/docker").join(&id);
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::write(mem.join("memory.usage_in_bytes"), "4096\n").unwrap();
        std::fs::create_dir_all(proc.join("7/net")).unwrap();
        std::fs::write(proc.join("7/net/dev"), "h1\nh2\n  eth0: 10 1 0 0 0 0 0 0 20 2 0 0 0 0 0 0\n").unwrap();

        let running = Container {
            id: id.clone(),
            name: "/web".into(),
            image: "busybox:latest".into(),
            labels: BTreeMap::from([("com.example.team".into(), "payments".into())]),
            state: "running".into(),
            pid: 7,
            started_at: 1_700_000_000.5,
            network_mode: "bridge".into(),
            ..Default::default()
        };
        let exited = Container {
            id: "b".repeat(64),
            name: "/old".into(),
            image: "busybox".into(),
            state: "exited".into(),
            ..Default::default()
        };
        let (_tx, rx) = watch::channel(Arc::new(vec![running, exited]));
        let config = DockerConfig { instance: "host-1".into(), ..DockerConfig::default() };
        let mut c = ContainerCollector::with_paths(&config, rx, sys, proc);
        let families = c.collect(1_000).unwrap();
        let text = crate::exposition::render(&families, false);
        let labels = |extra: &str| {
            format!("container_label_com_example_team=\"payments\",id=\"/docker/{id}\",image=\"busybox:latest\",instance=\"host-1\",{extra}job=\"cadvisor\",name=\"web\"")
        };
        let base_labels = labels("");
        for line in [
            format!("container_memory_usage_bytes{{{base_labels}}} 4096"),
            format!("container_network_receive_bytes_total{{{}}} 10", labels("interface=\"eth0\",")),
            format!("container_network_transmit_packets_total{{{}}} 2", labels("interface=\"eth0\",")),
            format!("container_start_time_seconds{{{base_labels}}} 1700000000.5"),
            format!("container_last_seen{{{base_labels}}} 1"),
            format!("container_state{{{base_labels},state=\"running\"}} 1"),
            format!("container_state{{{base_labels},state=\"exited\"}} 0"),
            format!("container_state{{id=\"/docker/{}\",image=\"busybox\",instance=\"host-1\",job=\"cadvisor\",name=\"old\",state=\"exited\"}} 1", "b".repeat(64)),
        ] {
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
        // The exited container has only its state series; files missing for
        // the running one (no cpuacct here) leave their families out.
        assert!(!text.contains("name=\"old\"}") && !text.contains("container_cpu_usage_seconds_total{"), "{text}");
        assert_eq!(text.matches("container_state{").count(), 8);

        // The container vanishes: no error, only its state series remain.
        std::fs::remove_dir_all(&mem).unwrap();
        let families = c.collect(2_000).unwrap();
        assert!(families.iter().all(|f| f.name == "container_state"), "{families:?}");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
