//! System metrics from procfs and sysfs under node_exporter 1.5's names,
//! types, labels and help texts, so existing dashboards and alerts keep
//! working. One file per collector group; this module holds the config,
//! the [`NodeCollector`] that runs every enabled collector, and the shared
//! helpers (reusable file buffers, the label-set cache) that keep a
//! collection cheap.

mod arp;
mod bcache;
mod bonding;
mod btrfs;
mod conntrack;
mod cpu;
mod cpufreq;
mod diskstats;
mod dmi;
mod edac;
mod entropy;
mod fibrechannel;
mod filefd;
mod filesystem;
mod hwmon;
mod infiniband;
mod ipvs;
mod mdadm;
mod meminfo;
mod netclass;
mod netdev;
mod netstat;
mod nfs;
mod nvme;
mod powersupply;
mod pressure;
mod processes;
mod rapl;
mod schedstat;
mod selinux;
mod softnet;
mod stat;
mod system;
mod tapestats;
mod textfile;
mod thermal;
mod udp_queues;
mod xfs;
mod zfs;

use std::collections::HashMap;
use std::ffi::CStr;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::common;
use crate::hash::Fnv1a;
use crate::sample::{Family, Labels, MetricType, Sample, METRIC_NAME};

/// How a collector is made from the `[node]` section.
type Factory = fn(&NodeConfig) -> Box<dyn Sub>;

/// Every collector Vantage implements: node_exporter's name, whether it
/// runs by default (node_exporter 1.5's default), and how it is made. This
/// table is the registry: a new collector is a file of its own and one line
/// here, like node_exporter's `registerCollector`.
const REGISTRY: &[(&str, bool, Factory)] = &[
    ("arp", true, |c| Box::new(arp::Arp::new(c))),
    ("bcache", true, |c| Box::new(bcache::Bcache::new(c))),
    ("bonding", true, |c| Box::new(bonding::Bonding::new(c))),
    ("btrfs", true, |c| Box::new(btrfs::Btrfs::new(c))),
    ("conntrack", true, |c| Box::new(conntrack::Conntrack::new(c))),
    ("cpu", true, |c| Box::new(cpu::Cpu::new(c))),
    ("cpufreq", true, |c| Box::new(cpufreq::Cpufreq::new(c))),
    ("diskstats", true, |c| Box::new(diskstats::Diskstats::new(c))),
    ("dmi", true, |c| Box::new(dmi::Dmi::new(c))),
    ("edac", true, |c| Box::new(edac::Edac::new(c))),
    ("entropy", true, |c| Box::new(entropy::Entropy::new(c))),
    ("fibrechannel", true, |c| Box::new(fibrechannel::Fibrechannel::new(c))),
    ("filefd", true, |c| Box::new(filefd::Filefd::new(c))),
    ("filesystem", true, |c| Box::new(filesystem::Filesystem::new(c))),
    ("hwmon", true, |c| Box::new(hwmon::Hwmon::new(c))),
    ("infiniband", true, |c| Box::new(infiniband::Infiniband::new(c))),
    ("ipvs", true, |c| Box::new(ipvs::Ipvs::new(c))),
    ("loadavg", true, |c| Box::new(stat::Loadavg::new(c))),
    ("mdadm", true, |c| Box::new(mdadm::Mdadm::new(c))),
    ("meminfo", true, |c| Box::new(meminfo::Meminfo::new(c))),
    ("netclass", true, |c| Box::new(netclass::Netclass::new(c))),
    ("netdev", true, |c| Box::new(netdev::Netdev::new(c))),
    ("netstat", true, |c| Box::new(netstat::Netstat::new(c))),
    ("nfs", true, |c| Box::new(nfs::Nfs::new(c))),
    ("nfsd", true, |c| Box::new(nfs::Nfsd::new(c))),
    ("nvme", true, |c| Box::new(nvme::Nvme::new(c))),
    ("os", true, |c| Box::new(system::Os::new(c))),
    ("powersupplyclass", true, |c| Box::new(powersupply::PowerSupply::new(c))),
    ("pressure", true, |c| Box::new(pressure::Pressure::new(c))),
    ("processes", false, |c| Box::new(processes::Processes::new(c))),
    ("rapl", true, |c| Box::new(rapl::Rapl::new(c))),
    ("schedstat", true, |c| Box::new(schedstat::Schedstat::new(c))),
    ("selinux", true, |c| Box::new(selinux::Selinux::new(c))),
    ("sockstat", true, |c| Box::new(netstat::Sockstat::new(c))),
    ("softnet", true, |c| Box::new(softnet::Softnet::new(c))),
    ("stat", true, |c| Box::new(stat::Stat::new(c))),
    ("tapestats", true, |c| Box::new(tapestats::Tapestats::new(c))),
    ("textfile", true, |c| Box::new(textfile::Textfile::new(c))),
    ("thermal_zone", true, |c| Box::new(thermal::ThermalZone::new(c))),
    ("time", true, |c| Box::new(system::Time::new(c))),
    ("timex", true, |_| Box::new(system::Timex)),
    ("udp_queues", true, |c| Box::new(udp_queues::UdpQueues::new(c))),
    ("uname", true, |_| Box::new(system::Uname)),
    ("vmstat", true, |c| Box::new(meminfo::Vmstat::new(c))),
    ("xfs", true, |c| Box::new(xfs::Xfs::new(c))),
    ("zfs", true, |c| Box::new(zfs::Zfs::new(c))),
];

/// Collectors Vantage implements, by node_exporter's names, in the
/// registry's order.
pub fn collector_names() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().map(|(name, _, _)| *name)
}

/// node_exporter 1.5 collectors Vantage does not have: accepted in
/// `enable`/`disable` (seed configs name them) with one warning.
pub const FOREIGN_COLLECTORS: &[&str] = &[
    "buddyinfo",
    "cgroups",
    "devstat",
    "drbd",
    "drm",
    "ethtool",
    "interrupts",
    "ksmd",
    "lnstat",
    "logind",
    "meminfo_numa",
    "mountstats",
    "network_route",
    "ntp",
    "perf",
    "qdisc",
    "runit",
    "slabinfo",
    "softirqs",
    "supervisord",
    "sysctl",
    "systemd",
    "tcpstat",
    "wifi",
    "zoneinfo",
];

/// node_exporter's `--collector.filesystem.mount-points-exclude` default.
pub const DEFAULT_MOUNT_POINTS_EXCLUDE: &str =
    "^/(dev|proc|run|sys|mnt|media|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";
/// node_exporter's `--collector.filesystem.fs-types-exclude` default.
pub const DEFAULT_FS_TYPES_EXCLUDE: &str = "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$";
/// node_exporter's `--collector.diskstats.device-exclude` default.
pub const DEFAULT_DISK_EXCLUDE: &str = r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$";
/// node_exporter's `--collector.netdev.device-exclude` default.
pub const DEFAULT_NETDEV_EXCLUDE: &str = "^lo$";
/// node_exporter's `--collector.vmstat.fields` default.
pub const DEFAULT_VMSTAT_FIELDS: &str = "^(oom_kill|pgpg|pswp|pg.*fault).*";
/// node_exporter's `--collector.netstat.fields` default.
pub const DEFAULT_NETSTAT_FIELDS: &str = "^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts)|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$";

/// `[node]`: the procfs/sysfs collectors.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Whether the node source runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `job` label of the node series (the seed: `${SERVER_NAME}-node-exporter`).
    #[serde(default = "default_job")]
    pub job: String,
    /// `instance` label of the node series (the seed: `${SERVER_NAME}`); the host name when empty.
    #[serde(default)]
    pub instance: String,
    /// Collection interval; the agent's scrape_interval when unset.
    #[serde(default, with = "common::opt_duration")]
    pub interval: Option<Duration>,
    /// Where the host's procfs is (HOST_PROC in a container).
    #[serde(default = "default_proc")]
    pub proc_path: PathBuf,
    /// Where the host's sysfs is (HOST_SYS in a container).
    #[serde(default = "default_sys")]
    pub sys_path: PathBuf,
    /// Where the host's root filesystem is (HOST_ROOT in a container).
    #[serde(default = "default_root")]
    pub root_path: PathBuf,
    /// When not empty, only these collectors run (node_exporter's
    /// `--collector.disable-defaults` plus `--collector.<name>`).
    #[serde(default)]
    pub enable: Vec<String>,
    /// Collectors turned off (`--no-collector.<name>`).
    #[serde(default)]
    pub disable: Vec<String>,
    /// How long a statfs may take before the mount counts as hung.
    #[serde(default = "default_mount_timeout", with = "common::duration")]
    pub mount_timeout: Duration,
    /// Mount points left out (regex); node_exporter's default when unset.
    #[serde(default)]
    pub mount_points_exclude: Option<String>,
    /// Filesystem types left out (regex); node_exporter's default when unset.
    #[serde(default)]
    pub fs_types_exclude: Option<String>,
    /// Block devices left out of diskstats (regex).
    #[serde(default)]
    pub diskstats_device_exclude: Option<String>,
    /// Network devices left out of netdev (regex).
    #[serde(default)]
    pub netdev_device_exclude: Option<String>,
    /// Network devices left out of netclass (regex); none by default.
    #[serde(default)]
    pub netclass_ignored_devices: Option<String>,
    /// /proc/vmstat fields exposed (regex).
    #[serde(default)]
    pub vmstat_fields: Option<String>,
    /// /proc/net/{netstat,snmp,snmp6} fields exposed (regex over `Proto_Field`).
    #[serde(default)]
    pub netstat_fields: Option<String>,
    /// Directory of `*.prom` files for the textfile collector; off when unset.
    #[serde(default)]
    pub textfile_directory: Option<PathBuf>,
    /// Power supplies left out of powersupplyclass (regex); none by default.
    #[serde(default)]
    pub powersupply_ignored_supplies: Option<String>,
    /// Devices left out of arp (regex; node_exporter's `arp.device-exclude`).
    #[serde(default)]
    pub arp_device_exclude: Option<String>,
    /// Only these devices in arp (regex; `arp.device-include`).
    #[serde(default)]
    pub arp_device_include: Option<String>,
    /// One `node_rapl_joules_total` family with a `rapl_zone` label instead
    /// of one family per zone (`rapl.enable-zone-label`).
    #[serde(default)]
    pub rapl_zone_label: bool,
    /// Comma-separated labels of the ipvs backend series (`ipvs.backend-labels`);
    /// all six by default.
    #[serde(default)]
    pub ipvs_backend_labels: Option<String>,
    /// `node_cpu_guest_seconds_total` (`cpu.guest`, on by default).
    #[serde(default = "yes")]
    pub cpu_guest: bool,
    /// `node_cpu_info` from /proc/cpuinfo (`cpu.info`); implied by the two
    /// include patterns below.
    #[serde(default)]
    pub cpu_info: bool,
    /// CPU flags exposed as `node_cpu_flag_info` (regex; `cpu.info.flags-include`).
    #[serde(default)]
    pub cpu_info_flags_include: Option<String>,
    /// CPU bugs exposed as `node_cpu_bug_info` (regex; `cpu.info.bugs-include`).
    #[serde(default)]
    pub cpu_info_bugs_include: Option<String>,
    /// `node_softirqs_total` per softirq type from /proc/stat (`stat.softirq`).
    #[serde(default)]
    pub stat_softirq: bool,
    /// bcache's per-cache priority_stats (node_exporter's
    /// `--collector.bcache.priorityStats`): off by default, as they are
    /// expensive for the kernel to produce.
    #[serde(default)]
    pub bcache_priority_stats: bool,
}

fn yes() -> bool {
    true
}
fn default_job() -> String {
    "node-exporter".into()
}
fn default_proc() -> PathBuf {
    std::env::var_os("HOST_PROC").map_or_else(|| "/proc".into(), PathBuf::from)
}
fn default_sys() -> PathBuf {
    std::env::var_os("HOST_SYS").map_or_else(|| "/sys".into(), PathBuf::from)
}
fn default_root() -> PathBuf {
    std::env::var_os("HOST_ROOT").map_or_else(|| "/".into(), PathBuf::from)
}
fn default_mount_timeout() -> Duration {
    Duration::from_secs(5)
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            enabled: true,
            job: default_job(),
            instance: String::new(),
            interval: None,
            proc_path: default_proc(),
            sys_path: default_sys(),
            root_path: default_root(),
            enable: Vec::new(),
            disable: Vec::new(),
            mount_timeout: default_mount_timeout(),
            mount_points_exclude: None,
            fs_types_exclude: None,
            diskstats_device_exclude: None,
            netdev_device_exclude: None,
            netclass_ignored_devices: None,
            vmstat_fields: None,
            netstat_fields: None,
            textfile_directory: None,
            powersupply_ignored_supplies: None,
            arp_device_exclude: None,
            arp_device_include: None,
            rapl_zone_label: false,
            ipvs_backend_labels: None,
            cpu_guest: true,
            cpu_info: false,
            cpu_info_flags_include: None,
            cpu_info_bugs_include: None,
            stat_softirq: false,
            bcache_priority_stats: false,
        }
    }
}

impl NodeConfig {
    /// Adds this section's problems to `problems`.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if !self.enabled {
            return;
        }
        if self.job.is_empty() {
            problems.push("node.job must not be empty".into());
        }
        if self.mount_timeout.is_zero() {
            problems.push("node.mount_timeout must be above zero".into());
        }
        for (key, list) in [("enable", &self.enable), ("disable", &self.disable)] {
            for name in list {
                if !collector_names().any(|c| c == name) && !FOREIGN_COLLECTORS.contains(&name.as_str()) {
                    problems.push(format!("node.{key}: {name:?} is not a node_exporter collector name"));
                }
            }
        }
        if let Some(Err(unknown)) = self.ipvs_backend_labels.as_deref().map(ipvs::backend_labels) {
            problems.push(format!(
                "node.ipvs_backend_labels: unknown labels {unknown:?} (known: {:?})",
                ipvs::BACKEND_LABELS
            ));
        }
        for (key, value) in self.regexes() {
            if let Some(text) = value {
                if let Err(e) = regex::Regex::new(text) {
                    problems.push(format!("node.{key}: invalid regex {text:?}: {e}"));
                }
            }
        }
    }

    fn regexes(&self) -> [(&'static str, &Option<String>); 12] {
        [
            ("mount_points_exclude", &self.mount_points_exclude),
            ("fs_types_exclude", &self.fs_types_exclude),
            ("diskstats_device_exclude", &self.diskstats_device_exclude),
            ("netdev_device_exclude", &self.netdev_device_exclude),
            ("netclass_ignored_devices", &self.netclass_ignored_devices),
            ("vmstat_fields", &self.vmstat_fields),
            ("netstat_fields", &self.netstat_fields),
            ("powersupply_ignored_supplies", &self.powersupply_ignored_supplies),
            ("arp_device_exclude", &self.arp_device_exclude),
            ("arp_device_include", &self.arp_device_include),
            ("cpu_info_flags_include", &self.cpu_info_flags_include),
            ("cpu_info_bugs_include", &self.cpu_info_bugs_include),
        ]
    }

    /// The collectors that run, in the registry's order: the defaults, or
    /// exactly `enable` when it is set, less `disable`.
    pub fn active_collectors(&self) -> Vec<&'static str> {
        self.active().map(|(name, _)| name).collect()
    }

    fn active(&self) -> impl Iterator<Item = (&'static str, Factory)> + '_ {
        REGISTRY
            .iter()
            .filter(
                |(name, default, _)| {
                    if self.enable.is_empty() {
                        *default
                    } else {
                        self.enable.iter().any(|e| e == name)
                    }
                },
            )
            .filter(|(name, _, _)| !self.disable.iter().any(|d| d == name))
            .map(|(name, _, factory)| (*name, *factory))
    }

    /// One line for `vantage check`.
    pub fn describe(&self) -> String {
        format!(
            "job {:?}, proc {}, sys {}, root {}, {} collectors",
            self.job,
            self.proc_path.display(),
            self.sys_path.display(),
            self.root_path.display(),
            self.active_collectors().len()
        )
    }
}

/// Compiles an optional regex setting, falling back to `default`
/// (validate() has already rejected bad ones).
fn regex_or(value: &Option<String>, default: &str) -> regex::Regex {
    let text = value.as_deref().unwrap_or(default);
    regex::Regex::new(text).unwrap_or_else(|_| regex::Regex::new(default).expect("default regexes compile"))
}

/// Why one collector could not produce its metrics.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {what}")]
    Parse { path: String, what: String },
    /// What the collector reads does not exist on this host (node_exporter's
    /// ErrNoData): reported as not successful, as node_exporter does, but
    /// logged at debug level only.
    #[error("no data: {0} is absent")]
    NoData(String),
}

impl NodeError {
    fn read(path: &Path, source: std::io::Error) -> Self {
        NodeError::Read { path: path.display().to_string(), source }
    }
    fn parse(path: &Path, what: impl Into<String>) -> Self {
        NodeError::Parse { path: path.display().to_string(), what: what.into() }
    }
    fn no_data(path: &Path) -> Self {
        NodeError::NoData(path.display().to_string())
    }
    /// [`NodeError::NoData`] when `e` says the file is absent, else a read error.
    fn read_or_absent(path: &Path, e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::NotFound {
            NodeError::no_data(path)
        } else {
            NodeError::read(path, e)
        }
    }
}

/// One collector group (node_exporter's unit of enable/disable).
trait Sub: Send {
    /// node_exporter's collector name.
    fn name(&self) -> &'static str;
    /// Appends this collector's families to `out`.
    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError>;
}

/// A file read whole on every collection into a buffer kept between
/// collections, so steady state allocates nothing for it.
pub(crate) struct FileBuf {
    pub path: PathBuf,
    buf: Vec<u8>,
}

impl FileBuf {
    fn new(path: PathBuf) -> Self {
        FileBuf { path, buf: Vec::with_capacity(4096) }
    }

    /// The file's current content, with its path for error messages.
    fn read(&mut self) -> Result<(&Path, &str), NodeError> {
        self.buf.clear();
        let mut f = std::fs::File::open(&self.path).map_err(|e| NodeError::read(&self.path, e))?;
        f.read_to_end(&mut self.buf).map_err(|e| NodeError::read(&self.path, e))?;
        let text = std::str::from_utf8(&self.buf).map_err(|_| NodeError::parse(&self.path, "not UTF-8"))?;
        Ok((&self.path, text))
    }

    /// [`FileBuf::read`], with a missing file as [`NodeError::NoData`]
    /// (one failed open when the subsystem is absent).
    fn read_or_no_data(&mut self) -> Result<(&Path, &str), NodeError> {
        self.buf.clear();
        let mut f = std::fs::File::open(&self.path).map_err(|e| NodeError::read_or_absent(&self.path, e))?;
        f.read_to_end(&mut self.buf).map_err(|e| NodeError::read(&self.path, e))?;
        let text = std::str::from_utf8(&self.buf).map_err(|_| NodeError::parse(&self.path, "not UTF-8"))?;
        Ok((&self.path, text))
    }
}

/// A directory opened once per collection, whose small attribute files
/// are read with openat(2): no path is built per attribute.
pub(crate) struct Dir(std::fs::File);

impl Dir {
    fn open(path: &Path) -> std::io::Result<Dir> {
        std::fs::File::open(path).map(Dir)
    }

    /// Reads `name` inside the directory into `buf` (cleared first),
    /// trimmed of the trailing newline.
    fn read<'b>(&self, name: &CStr, buf: &'b mut Vec<u8>) -> std::io::Result<&'b str> {
        buf.clear();
        // SAFETY: openat on a directory fd we own with a NUL-terminated name;
        // the returned fd is owned by the File below.
        let fd = unsafe { libc::openat(self.0.as_raw_fd(), name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a freshly opened descriptor nobody else owns.
        let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
        f.read_to_end(buf)?;
        let text = std::str::from_utf8(buf).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
        Ok(text.trim_end_matches('\n'))
    }
}

/// Label sets already built, keyed by a hash of the metric name and label
/// pairs. A hit clones the cached set (no formatting, no sorting); entries
/// not used in a collection are dropped so vanished devices do not pile up.
#[derive(Default)]
pub(crate) struct LabelCache {
    map: HashMap<u64, (Labels, u64), BuildFnv>,
    generation: u64,
    used: usize,
}

#[derive(Default, Clone, Copy)]
struct BuildFnv;
impl std::hash::BuildHasher for BuildFnv {
    type Hasher = PassThrough;
    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}
/// The keys are already hashes: pass them through.
struct PassThrough(u64);
impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn fnv(h: &mut Fnv1a, bytes: &[u8]) {
    h.write(bytes);
    // A separator so ("ab","c") and ("a","bc") differ.
    h.write_u8(0xff);
}

impl LabelCache {
    fn get(&mut self, name: &str, base: &[(&str, &str); 2], pairs: &[(&str, &str)]) -> Labels {
        let mut h = Fnv1a::new();
        fnv(&mut h, name.as_bytes());
        for (k, v) in pairs {
            fnv(&mut h, k.as_bytes());
            fnv(&mut h, v.as_bytes());
        }
        let h = h.finish();
        let generation = self.generation;
        if let Some((labels, seen)) = self.map.get_mut(&h) {
            if matches(labels, name, pairs) {
                if *seen != generation {
                    *seen = generation;
                    self.used += 1;
                }
                return labels.clone();
            }
            // A hash collision: build without caching.
            return build_labels(name, base, pairs);
        }
        let labels = build_labels(name, base, pairs);
        self.map.insert(h, (labels.clone(), generation));
        self.used += 1;
        labels
    }

    /// Ends a collection: forgets label sets nobody asked for this time.
    fn end_collection(&mut self) {
        if self.map.len() > self.used {
            let generation = self.generation;
            self.map.retain(|_, (_, seen)| *seen == generation);
        }
        self.generation += 1;
        self.used = 0;
    }
}

fn matches(labels: &Labels, name: &str, pairs: &[(&str, &str)]) -> bool {
    labels.metric_name() == name
        && pairs.iter().all(|(k, v)| v.is_empty() || labels.get(k) == Some(v))
        && labels.len() == 3 + pairs.iter().filter(|(_, v)| !v.is_empty()).count()
}

fn build_labels(name: &str, base: &[(&str, &str); 2], pairs: &[(&str, &str)]) -> Labels {
    let mut labels = Labels::from_pairs(pairs.iter().copied());
    for (k, v) in base {
        labels.set(*k, *v);
    }
    labels.set(METRIC_NAME, name);
    labels
}

/// Where collectors put their families during one collection.
pub(crate) struct Out<'a> {
    families: &'a mut Vec<Family>,
    cache: &'a mut LabelCache,
    base: [(&'a str, &'a str); 2],
    ts: i64,
}

impl Out<'_> {
    /// Starts a family; samples go to it with [`Out::add`] until the next.
    fn family(&mut self, name: &str, kind: MetricType, help: &str) {
        self.families.push(Family::new(name, kind, help));
    }

    /// Adds a sample to the family started last.
    fn add(&mut self, labels: &[(&str, &str)], value: f64) {
        let family = self.families.last_mut().expect("family() before add()");
        let labels = self.cache.get(&family.name, &self.base, labels);
        family.samples.push(Sample { labels, value, timestamp_ms: self.ts });
    }

    /// A family with one sample.
    fn single(&mut self, name: &str, kind: MetricType, help: &str, labels: &[(&str, &str)], value: f64) {
        self.family(name, kind, help);
        self.add(labels, value);
    }

    /// Adds a sample to the family named `name` among those this collector
    /// added since `from` (families created on demand, in first-use order).
    fn add_to(&mut self, from: usize, name: &str, kind: MetricType, help: &str, labels: &[(&str, &str)], value: f64) {
        self.add_series(from, name, kind, help, name, labels, value);
    }

    /// [`Out::add_to`] for a series named differently from its family
    /// (`<family>_bucket` of a histogram read from a text file).
    #[allow(clippy::too_many_arguments)]
    fn add_series(
        &mut self,
        from: usize,
        family: &str,
        kind: MetricType,
        help: &str,
        name: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let at = match self.families[from..].iter().position(|f| f.name == family) {
            Some(i) => from + i,
            None => {
                self.families.push(Family::new(family, kind, help));
                self.families.len() - 1
            }
        };
        let labels = self.cache.get(name, &self.base, labels);
        self.families[at].samples.push(Sample { labels, value, timestamp_ms: self.ts });
    }

    /// Number of families so far (a starting point for [`Out::add_to`]).
    fn mark(&self) -> usize {
        self.families.len()
    }
}

/// The node source: runs every enabled collector and reports each one's
/// success and duration as node_exporter does.
pub struct NodeCollector {
    job: String,
    interval: Option<Duration>,
    instance: String,
    subs: Vec<Box<dyn Sub>>,
    /// Whether each collector failed last time, to log on change only.
    failing: Vec<bool>,
    /// The collectors that failed in the last collection, with the error.
    errors: Vec<(&'static str, String)>,
    cache: LabelCache,
}

impl NodeCollector {
    /// A collector reading the paths of `config`.
    pub fn new(config: NodeConfig) -> Self {
        let instance = if config.instance.is_empty() { crate::hostname() } else { config.instance.clone() };
        let foreign: Vec<&str> = config
            .enable
            .iter()
            .chain(config.disable.iter())
            .map(String::as_str)
            .filter(|n| FOREIGN_COLLECTORS.contains(n))
            .collect();
        if !foreign.is_empty() {
            tracing::warn!(collectors = ?foreign, "node: these node_exporter collectors are not part of Vantage; ignored");
        }
        let subs: Vec<Box<dyn Sub>> = config.active().map(|(_, make)| make(&config)).collect();
        let failing = vec![false; subs.len()];
        NodeCollector {
            job: config.job,
            interval: config.interval,
            instance,
            subs,
            failing,
            errors: Vec::new(),
            cache: LabelCache::default(),
        }
    }
}

impl super::Collector for NodeCollector {
    fn name(&self) -> &str {
        "node"
    }

    fn interval(&self) -> Option<Duration> {
        self.interval
    }

    fn collect(&mut self, now_ms: i64) -> Result<Vec<Family>, String> {
        let mut families = Vec::with_capacity(256);
        let mut results: Vec<(&'static str, bool, f64)> = Vec::with_capacity(self.subs.len());
        self.errors.clear();
        let mut out = Out {
            families: &mut families,
            cache: &mut self.cache,
            base: [("instance", &self.instance), ("job", &self.job)],
            ts: now_ms,
        };
        for (sub, failing) in self.subs.iter_mut().zip(self.failing.iter_mut()) {
            let started = Instant::now();
            let result = sub.update(&mut out);
            let seconds = started.elapsed().as_secs_f64();
            match &result {
                Err(e @ NodeError::NoData(_)) => {
                    tracing::debug!(collector = sub.name(), error = %e, "node collector has no data")
                }
                Err(e) if !*failing => tracing::warn!(collector = sub.name(), error = %e, "node collector failed"),
                Ok(()) if *failing => tracing::info!(collector = sub.name(), "node collector works again"),
                _ => {}
            }
            // No data (the subsystem is absent) is success 0, as node_exporter
            // reports it, but not a failure worth a log line or the status page.
            *failing = result.as_ref().is_err_and(|e| !matches!(e, NodeError::NoData(_)));
            if let Err(e) = &result {
                if *failing {
                    self.errors.push((sub.name(), e.to_string()));
                }
            }
            results.push((sub.name(), result.is_ok(), seconds));
        }
        out.family(
            "node_scrape_collector_duration_seconds",
            MetricType::Gauge,
            "node_exporter: Duration of a collector scrape.",
        );
        for (name, _, seconds) in &results {
            out.add(&[("collector", name)], *seconds);
        }
        out.family("node_scrape_collector_success", MetricType::Gauge, "node_exporter: Whether a collector succeeded.");
        for (name, ok, _) in &results {
            out.add(&[("collector", name)], if *ok { 1.0 } else { 0.0 });
        }
        out.single("up", MetricType::Gauge, "1 if the source's last collection succeeded.", &[], 1.0);
        self.cache.end_collection();
        Ok(families)
    }

    fn failing_parts(&self) -> Vec<(String, String)> {
        self.errors.iter().map(|(name, e)| (name.to_string(), e.clone())).collect()
    }
}

/// Metric names and help texts derived from field names (meminfo, vmstat,
/// netstat ...), remembered by position so a steady file formats nothing.
#[derive(Default)]
pub(crate) struct NameCache {
    entries: Vec<(String, Option<(String, String)>)>,
}

impl NameCache {
    /// Name and help for the `i`th field, `key`; `make` builds them (or
    /// None to skip the field) when the field at `i` changed.
    fn get(
        &mut self,
        i: usize,
        key: &str,
        make: impl FnOnce(&str) -> Option<(String, String)>,
    ) -> Option<(&str, &str)> {
        if i >= self.entries.len() {
            self.entries.resize_with(i + 1, || (String::new(), None));
        }
        let entry = &mut self.entries[i];
        if entry.0 != key || (entry.0.is_empty() && entry.1.is_none()) {
            *entry = (key.to_string(), make(key));
        }
        entry.1.as_ref().map(|(n, h)| (n.as_str(), h.as_str()))
    }
}

/// Parses a decimal or float field, naming the file on failure.
fn num(path: &Path, field: &str) -> Result<f64, NodeError> {
    field.parse::<f64>().map_err(|_| NodeError::parse(path, format!("bad number {field:?}")))
}

/// Reads a file holding one number.
fn one_number(file: &mut FileBuf) -> Result<f64, NodeError> {
    let (path, text) = file.read()?;
    num(path, text.trim())
}

#[cfg(test)]
mod testing {
    //! Helpers for the collectors' unit tests: a fake procfs/sysfs tree in a
    //! temp dir and a one-shot run of one collector.
    use super::*;

    /// A temporary directory tree removed on drop.
    pub struct Tree(pub PathBuf);

    impl Tree {
        pub fn new(tag: &str) -> Tree {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("vantage-node-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Tree(p)
        }
        pub fn write(&self, rel: &str, content: &str) {
            let p = self.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        /// A config whose proc, sys and root are all this tree.
        pub fn config(&self) -> NodeConfig {
            NodeConfig {
                proc_path: self.0.join("proc"),
                sys_path: self.0.join("sys"),
                root_path: self.0.clone(),
                ..NodeConfig::default()
            }
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Runs `sub` once; its families as (series text, value) sorted, with
    /// job/instance left out.
    pub fn run(sub: &mut dyn Sub) -> Result<Vec<(String, f64)>, NodeError> {
        let (families, result) = run_families(sub);
        result?;
        let mut v: Vec<(String, f64)> = families
            .iter()
            .flat_map(|f| f.samples.iter())
            .map(|s| {
                let mut l = s.labels.clone();
                l.remove("job");
                l.remove("instance");
                (l.to_string(), s.value)
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }

    /// Runs `sub` once and returns its raw families and result.
    pub fn run_families(sub: &mut dyn Sub) -> (Vec<Family>, Result<(), NodeError>) {
        let mut families = Vec::new();
        let mut cache = LabelCache::default();
        let mut out =
            Out { families: &mut families, cache: &mut cache, base: [("instance", "i"), ("job", "j")], ts: 1 };
        let r = sub.update(&mut out);
        (families, r)
    }

    /// The value of the series written as `series` (selector form, e.g.
    /// `node_load1{}`), panicking with the list when absent.
    pub fn value(got: &[(String, f64)], series: &str) -> f64 {
        got.iter()
            .find(|(s, _)| s == series)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{series} missing from {got:#?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::Collector;

    #[test]
    fn enable_and_disable_select_collectors() {
        let mut c = NodeConfig { disable: vec!["hwmon".into(), "cpu".into()], ..NodeConfig::default() };
        let active = c.active_collectors();
        assert!(!active.contains(&"cpu") && active.contains(&"meminfo"));
        c.enable = vec!["loadavg".into(), "cpu".into()];
        assert_eq!(c.active_collectors(), ["loadavg"]);
        let mut problems = Vec::new();
        c.disable.push("nonsense".into());
        c.netstat_fields = Some("(".into());
        c.validate(&mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("nonsense"), "{problems:?}");
    }

    #[test]
    fn collector_options_are_validated() {
        let c = NodeConfig {
            ipvs_backend_labels: Some("proto,nope".into()),
            cpu_info_flags_include: Some("(".into()),
            arp_device_exclude: Some("[".into()),
            ..NodeConfig::default()
        };
        let mut problems = Vec::new();
        c.validate(&mut problems);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("ipvs_backend_labels") && problems[0].contains("nope"), "{problems:?}");
        assert!(NodeConfig::default().cpu_guest && !NodeConfig::default().active_collectors().contains(&"processes"));
    }

    #[test]
    fn a_failing_collector_does_not_fail_the_others() {
        let t = testing::Tree::new("mod");
        t.write("proc/loadavg", "0.50 1.00 2.00 1/100 42\n");
        let config =
            NodeConfig { enable: vec!["loadavg".into(), "meminfo".into()], instance: "h".into(), ..t.config() };
        let mut c = NodeCollector::new(config);
        let families = c.collect(5).unwrap();
        let find = |name: &str, collector: &str| {
            families
                .iter()
                .flat_map(|f| f.samples.iter())
                .find(|s| s.labels.metric_name() == name && s.labels.get("collector") == Some(collector))
                .map(|s| s.value)
        };
        assert_eq!(find("node_scrape_collector_success", "loadavg"), Some(1.0));
        assert_eq!(find("node_scrape_collector_success", "meminfo"), Some(0.0));
        let load = families.iter().find(|f| f.name == "node_load5").unwrap();
        assert_eq!(load.samples[0].value, 1.0);
        assert_eq!(load.samples[0].labels.get("job"), Some("node-exporter"));
        assert_eq!(load.samples[0].labels.get("instance"), Some("h"));
        assert!(families.iter().any(|f| f.name == "up" && f.samples[0].value == 1.0));
    }

    #[test]
    fn label_cache_reuses_and_forgets() {
        let mut cache = LabelCache::default();
        let base = [("instance", "i"), ("job", "j")];
        let a = cache.get("m", &base, &[("device", "sda")]);
        assert_eq!(a.get("device"), Some("sda"));
        assert_eq!(a.len(), 4);
        cache.end_collection();
        let _ = cache.get("m", &base, &[("device", "sdb")]);
        cache.end_collection();
        assert_eq!(cache.map.len(), 1, "sda was not used in the second collection");
        // Empty values are dropped, as Labels does.
        let e = cache.get("m", &base, &[("model", "")]);
        assert_eq!(e.get("model"), None);
        let e2 = cache.get("m", &base, &[("model", "")]);
        assert_eq!(e, e2);
    }
}
