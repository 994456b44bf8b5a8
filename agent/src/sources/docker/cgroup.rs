//! A container's cgroup: where it is (v1 per controller, or v2 unified)
//! and the counters in it. Reading a container costs a dozen small file
//! reads into one reused buffer; no process listing, no Docker API call.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Which cgroup hierarchy the host mounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The cgroup directories of one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dirs {
    pub version: Version,
    /// The cgroup path inside the hierarchy (`/docker/<id>`): cAdvisor's `id`.
    pub path: String,
    /// v2: the one directory; v1: the cpu, cpuacct, memory, blkio dirs.
    cpu: PathBuf,
    cpuacct: PathBuf,
    memory: PathBuf,
    blkio: PathBuf,
}

/// Everything read from one container's cgroup. A counter the kernel does
/// not offer (a controller not mounted, an old kernel) stays None and its
/// series is left out rather than reported as 0.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub cpu_usage_seconds: Option<f64>,
    pub cpu_user_seconds: Option<f64>,
    pub cpu_system_seconds: Option<f64>,
    pub cfs_periods: Option<f64>,
    pub cfs_throttled_periods: Option<f64>,
    pub cfs_throttled_seconds: Option<f64>,
    /// CPU quota in microseconds per period; None when unlimited.
    pub cpu_quota: Option<f64>,
    pub cpu_period: Option<f64>,
    pub cpu_shares: Option<f64>,
    pub memory_usage: Option<f64>,
    pub memory_working_set: Option<f64>,
    pub memory_rss: Option<f64>,
    pub memory_cache: Option<f64>,
    pub memory_swap: Option<f64>,
    pub memory_failcnt: Option<f64>,
    /// 0 when unlimited, as cAdvisor reports it.
    pub memory_limit: Option<f64>,
    pub oom_events: Option<f64>,
    pub processes: Option<f64>,
    /// (major, minor, read bytes, written bytes) per block device.
    pub io: Vec<(u32, u32, f64, f64)>,
}

/// The host's cgroup mount (`<HOST_SYS>/fs/cgroup`) and procfs.
#[derive(Clone, Debug)]
pub struct Host {
    pub root: PathBuf,
    pub proc: PathBuf,
    pub version: Version,
}

impl Host {
    /// The hierarchy under `sys` (a sysfs mount) with `proc` for pids.
    pub fn new(sys: &Path, proc: &Path) -> Host {
        let root = sys.join("fs/cgroup");
        // Only the unified hierarchy has cgroup.controllers at its root.
        let version = if root.join("cgroup.controllers").exists() { Version::V2 } else { Version::V1 };
        Host { root, proc: proc.to_path_buf(), version }
    }

    /// Finds the cgroup of container `id` whose init process is `pid`:
    /// from `/proc/<pid>/cgroup` when it names one, else from Docker's two
    /// layouts (cgroupfs driver `docker/<id>`, systemd driver
    /// `system.slice/docker-<id>.scope`). None when neither exists (the
    /// container is gone).
    pub fn locate(&self, id: &str, pid: u32) -> Option<Dirs> {
        let from_pid = if pid > 0 { self.path_of_pid(pid) } else { None };
        let candidates =
            from_pid.into_iter().chain([format!("/docker/{id}"), format!("/system.slice/docker-{id}.scope")]);
        for path in candidates {
            let dirs = self.dirs(&path);
            if dirs.memory.is_dir() {
                return Some(dirs);
            }
        }
        None
    }

    /// The container's cgroup path as its init process sees it, unless it
    /// is the root (a private cgroup namespace hides the real path).
    fn path_of_pid(&self, pid: u32) -> Option<String> {
        let text = std::fs::read_to_string(self.proc.join(pid.to_string()).join("cgroup")).ok()?;
        let path = text.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let wanted = match self.version {
                Version::V2 => controllers.is_empty(),
                Version::V1 => controllers.split(',').any(|c| c == "memory"),
            };
            wanted.then(|| path.to_string())
        })?;
        (path != "/").then_some(path)
    }

    fn dirs(&self, path: &str) -> Dirs {
        let rel = path.trim_start_matches('/');
        let at = |controller: &str| match self.version {
            Version::V2 => self.root.join(rel),
            Version::V1 => self.root.join(controller).join(rel),
        };
        Dirs {
            version: self.version,
            path: path.to_string(),
            cpu: at("cpu"),
            cpuacct: at("cpuacct"),
            memory: at("memory"),
            blkio: at("blkio"),
        }
    }
}

/// Reads cgroup files into one reused buffer.
#[derive(Default)]
pub struct Reader {
    buf: Vec<u8>,
}

impl Reader {
    /// The content of `dir/name`, or None when it cannot be read.
    fn read(&mut self, dir: &Path, name: &str) -> Option<&str> {
        self.buf.clear();
        let mut f = std::fs::File::open(dir.join(name)).ok()?;
        f.read_to_end(&mut self.buf).ok()?;
        std::str::from_utf8(&self.buf).ok().map(str::trim)
    }

    fn number(&mut self, dir: &Path, name: &str) -> Option<f64> {
        self.read(dir, name)?.parse::<f64>().ok()
    }

    /// Reads the container's counters. None when its memory cgroup is gone
    /// (the container vanished since it was located).
    pub fn stats(&mut self, dirs: &Dirs) -> Option<Stats> {
        match dirs.version {
            Version::V1 => self.stats_v1(dirs),
            Version::V2 => self.stats_v2(dirs),
        }
    }

    fn stats_v1(&mut self, d: &Dirs) -> Option<Stats> {
        let mut s = Stats { memory_usage: Some(self.number(&d.memory, "memory.usage_in_bytes")?), ..Stats::default() };
        s.cpu_usage_seconds = self.number(&d.cpuacct, "cpuacct.usage").map(|ns| ns / 1e9);
        if let Some(text) = self.read(&d.cpuacct, "cpuacct.stat") {
            // USER_HZ ticks, 100 per second on every Linux ABI Docker runs on.
            s.cpu_user_seconds = key_value(text, "user").map(|t| t / 100.0);
            s.cpu_system_seconds = key_value(text, "system").map(|t| t / 100.0);
        }
        if let Some(text) = self.read(&d.cpu, "cpu.stat") {
            s.cfs_periods = key_value(text, "nr_periods");
            s.cfs_throttled_periods = key_value(text, "nr_throttled");
            s.cfs_throttled_seconds = key_value(text, "throttled_time").map(|ns| ns / 1e9);
        }
        s.cpu_quota = self.number(&d.cpu, "cpu.cfs_quota_us").filter(|q| *q > 0.0);
        s.cpu_period = self.number(&d.cpu, "cpu.cfs_period_us");
        s.cpu_shares = self.number(&d.cpu, "cpu.shares");
        if let Some(text) = self.read(&d.memory, "memory.stat") {
            // The total_ keys include child cgroups, as cAdvisor reads them.
            let inactive = key_value(text, "total_inactive_file").unwrap_or(0.0);
            s.memory_working_set = s.memory_usage.map(|u| (u - inactive).max(0.0));
            s.memory_rss = key_value(text, "total_rss");
            s.memory_cache = key_value(text, "total_cache");
            s.memory_swap = key_value(text, "total_swap");
        }
        s.memory_failcnt = self.number(&d.memory, "memory.failcnt");
        s.memory_limit = self.number(&d.memory, "memory.limit_in_bytes").map(unlimited_as_zero);
        s.oom_events = self.read(&d.memory, "memory.oom_control").and_then(|t| key_value(t, "oom_kill"));
        s.processes = self.read(&d.memory, "cgroup.procs").map(count_lines);
        let io = self
            .read(&d.blkio, "blkio.throttle.io_service_bytes_recursive")
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .or_else(|| self.read(&d.blkio, "blkio.throttle.io_service_bytes").map(str::to_string));
        if let Some(text) = io {
            s.io = parse_blkio_v1(&text);
        }
        Some(s)
    }

    fn stats_v2(&mut self, d: &Dirs) -> Option<Stats> {
        let mut s = Stats { memory_usage: Some(self.number(&d.memory, "memory.current")?), ..Stats::default() };
        if let Some(text) = self.read(&d.cpu, "cpu.stat") {
            s.cpu_usage_seconds = key_value(text, "usage_usec").map(|us| us / 1e6);
            s.cpu_user_seconds = key_value(text, "user_usec").map(|us| us / 1e6);
            s.cpu_system_seconds = key_value(text, "system_usec").map(|us| us / 1e6);
            s.cfs_periods = key_value(text, "nr_periods");
            s.cfs_throttled_periods = key_value(text, "nr_throttled");
            s.cfs_throttled_seconds = key_value(text, "throttled_usec").map(|us| us / 1e6);
        }
        if let Some(text) = self.read(&d.cpu, "cpu.max") {
            let mut parts = text.split_whitespace();
            s.cpu_quota = parts.next().and_then(|q| q.parse::<f64>().ok());
            s.cpu_period = parts.next().and_then(|p| p.parse::<f64>().ok());
        }
        // cpu.weight (1..10000) back to v1 shares (2..262144) with integer
        // arithmetic, inverting runc's conversion as cAdvisor does.
        s.cpu_shares = self.number(&d.cpu, "cpu.weight").map(|w| 2.0 + ((w - 1.0) * 262_142.0 / 9_999.0).floor());
        if let Some(text) = self.read(&d.memory, "memory.stat") {
            let inactive = key_value(text, "inactive_file").unwrap_or(0.0);
            s.memory_working_set = s.memory_usage.map(|u| (u - inactive).max(0.0));
            s.memory_rss = key_value(text, "anon");
            s.memory_cache = key_value(text, "file");
        }
        s.memory_swap = self.number(&d.memory, "memory.swap.current");
        // "max" (unlimited) does not parse: cAdvisor's 0.
        s.memory_limit = Some(self.number(&d.memory, "memory.max").map_or(0.0, unlimited_as_zero));
        if let Some(text) = self.read(&d.memory, "memory.events") {
            s.memory_failcnt = key_value(text, "max");
            s.oom_events = key_value(text, "oom_kill");
        }
        s.processes = self.read(&d.memory, "cgroup.procs").map(count_lines);
        if let Some(text) = self.read(&d.blkio, "io.stat") {
            s.io = parse_io_stat_v2(text);
        }
        Some(s)
    }
}

/// The value of `key` in a "key value" per line file (memory.stat, cpu.stat).
fn key_value(text: &str, key: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse::<f64>().ok()).flatten()
    })
}

fn count_lines(text: &str) -> f64 {
    text.lines().filter(|l| !l.trim().is_empty()).count() as f64
}

/// v1 reports "no limit" as the largest page-aligned signed 64-bit value.
fn unlimited_as_zero(limit: f64) -> f64 {
    if limit >= (1u64 << 62) as f64 {
        0.0
    } else {
        limit
    }
}

/// blkio.throttle.io_service_bytes: "MAJ:MIN Read N" / "MAJ:MIN Write N" lines.
fn parse_blkio_v1(text: &str) -> Vec<(u32, u32, f64, f64)> {
    let mut out: Vec<(u32, u32, f64, f64)> = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(dev), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let (Some((major, minor)), Ok(value)) = (parse_dev(dev), value.parse::<f64>()) else { continue };
        let entry = match out.iter_mut().position(|e| e.0 == major && e.1 == minor) {
            Some(i) => &mut out[i],
            None => {
                out.push((major, minor, 0.0, 0.0));
                out.last_mut().expect("just pushed")
            }
        };
        match op {
            "Read" => entry.2 = value,
            "Write" => entry.3 = value,
            _ => {}
        }
    }
    out
}

/// io.stat: "MAJ:MIN rbytes=N wbytes=N rios=N ..." lines.
fn parse_io_stat_v2(text: &str) -> Vec<(u32, u32, f64, f64)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let (major, minor) = parse_dev(parts.next()?)?;
            let (mut read, mut written) = (0.0, 0.0);
            for kv in parts {
                match kv.split_once('=') {
                    Some(("rbytes", v)) => read = v.parse().unwrap_or(0.0),
                    Some(("wbytes", v)) => written = v.parse().unwrap_or(0.0),
                    _ => {}
                }
            }
            Some((major, minor, read, written))
        })
        .collect()
}

fn parse_dev(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, content: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), content).unwrap();
    }

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vantage-cgroup-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    const ID: &str = "7503e6e9d26274ab574ef7d71fac893edc368b455af091639b1ad1d547bf5dbf";

    #[test]
    fn v1_cgroupfs_layout_found_from_the_pid_and_read() {
        let base = temp("v1");
        let (sys, proc) = (base.join("sys"), base.join("proc"));
        let cg = |c: &str| sys.join("fs/cgroup").join(c).join("docker").join(ID);
        write(
            &proc.join("42"),
            "cgroup",
            &format!("12:cpu,cpuacct:/docker/{ID}\n4:memory:/docker/{ID}\n0::/docker/{ID}\n"),
        );
        write(&cg("cpuacct"), "cpuacct.usage", "2500000000\n");
        write(&cg("cpuacct"), "cpuacct.stat", "user 150\nsystem 75\n");
        write(&cg("cpu"), "cpu.stat", "nr_periods 10\nnr_throttled 4\nthrottled_time 2000000000\n");
        write(&cg("cpu"), "cpu.cfs_quota_us", "-1\n");
        write(&cg("cpu"), "cpu.cfs_period_us", "100000\n");
        write(&cg("cpu"), "cpu.shares", "1024\n");
        write(&cg("memory"), "memory.usage_in_bytes", "10485760\n");
        write(
            &cg("memory"),
            "memory.stat",
            "cache 1\nrss 2\ntotal_cache 4096000\ntotal_rss 5000000\ntotal_swap 0\ntotal_inactive_file 1485760\n",
        );
        write(&cg("memory"), "memory.failcnt", "3\n");
        write(&cg("memory"), "memory.limit_in_bytes", "9223372036854771712\n");
        write(&cg("memory"), "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
        write(&cg("memory"), "cgroup.procs", "42\n57\n");
        write(
            &cg("blkio"),
            "blkio.throttle.io_service_bytes_recursive",
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 1\n8:0 Total 12288\nTotal 12288\n",
        );

        let host = Host::new(&sys, &proc);
        assert_eq!(host.version, Version::V1);
        let dirs = host.locate(ID, 42).expect("located");
        assert_eq!(dirs.path, format!("/docker/{ID}"));
        let s = Reader::default().stats(&dirs).unwrap();
        assert_eq!(s.cpu_usage_seconds, Some(2.5));
        assert_eq!(s.cpu_user_seconds, Some(1.5));
        assert_eq!(s.cpu_system_seconds, Some(0.75));
        assert_eq!(
            (s.cfs_periods, s.cfs_throttled_periods, s.cfs_throttled_seconds),
            (Some(10.0), Some(4.0), Some(2.0))
        );
        assert_eq!((s.cpu_quota, s.cpu_period, s.cpu_shares), (None, Some(100000.0), Some(1024.0)));
        assert_eq!(s.memory_usage, Some(10485760.0));
        assert_eq!(s.memory_working_set, Some(9000000.0));
        assert_eq!((s.memory_rss, s.memory_cache, s.memory_swap), (Some(5000000.0), Some(4096000.0), Some(0.0)));
        assert_eq!((s.memory_failcnt, s.memory_limit, s.oom_events), (Some(3.0), Some(0.0), Some(2.0)));
        assert_eq!(s.processes, Some(2.0));
        assert_eq!(s.io, vec![(8, 0, 4096.0, 8192.0)]);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn v2_systemd_layout_found_by_id_when_the_pid_shows_only_the_namespace_root() {
        let base = temp("v2");
        let (sys, proc) = (base.join("sys"), base.join("proc"));
        write(&sys.join("fs/cgroup"), "cgroup.controllers", "cpu io memory pids\n");
        write(&proc.join("42"), "cgroup", "0::/\n");
        let cg = sys.join(format!("fs/cgroup/system.slice/docker-{ID}.scope"));
        write(&cg, "cpu.stat", "usage_usec 3000000\nuser_usec 2000000\nsystem_usec 1000000\nnr_periods 5\nnr_throttled 1\nthrottled_usec 250000\n");
        write(&cg, "cpu.max", "50000 100000\n");
        // runc makes the default 1024 shares weight 39.
        write(&cg, "cpu.weight", "39\n");
        write(&cg, "memory.current", "2000000\n");
        write(&cg, "memory.stat", "anon 1000000\nfile 800000\ninactive_file 2500000\n");
        write(&cg, "memory.swap.current", "4096\n");
        write(&cg, "memory.max", "max\n");
        write(&cg, "memory.events", "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n");
        write(&cg, "cgroup.procs", "42\n");
        write(&cg, "io.stat", "259:0 rbytes=1000 wbytes=2000 rios=1 wios=2 dbytes=0 dios=0\n8:16 rbytes=5 wbytes=0\n");

        let host = Host::new(&sys, &proc);
        assert_eq!(host.version, Version::V2);
        let dirs = host.locate(ID, 42).expect("located by id");
        assert_eq!(dirs.path, format!("/system.slice/docker-{ID}.scope"));
        let s = Reader::default().stats(&dirs).unwrap();
        assert_eq!((s.cpu_usage_seconds, s.cpu_user_seconds, s.cpu_system_seconds), (Some(3.0), Some(2.0), Some(1.0)));
        assert_eq!(
            (s.cfs_periods, s.cfs_throttled_periods, s.cfs_throttled_seconds),
            (Some(5.0), Some(1.0), Some(0.25))
        );
        assert_eq!((s.cpu_quota, s.cpu_period, s.cpu_shares), (Some(50000.0), Some(100000.0), Some(998.0)));
        // inactive_file above usage: the working set floors at 0.
        assert_eq!((s.memory_usage, s.memory_working_set), (Some(2000000.0), Some(0.0)));
        assert_eq!((s.memory_rss, s.memory_cache, s.memory_swap), (Some(1000000.0), Some(800000.0), Some(4096.0)));
        assert_eq!((s.memory_limit, s.memory_failcnt, s.oom_events), (Some(0.0), Some(7.0), Some(1.0)));
        assert_eq!(s.io, vec![(259, 0, 1000.0, 2000.0), (8, 16, 5.0, 0.0)]);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_vanished_container_is_not_found_and_malformed_files_leave_gaps() {
        let base = temp("gone");
        let (sys, proc) = (base.join("sys"), base.join("proc"));
        std::fs::create_dir_all(sys.join("fs/cgroup")).unwrap();
        let host = Host::new(&sys, &proc);
        assert_eq!(host.locate(ID, 42), None);

        let cg = |c: &str| sys.join("fs/cgroup").join(c).join("docker").join(ID);
        write(&cg("memory"), "memory.usage_in_bytes", "100\n");
        write(&cg("memory"), "memory.stat", "total_rss not-a-number\ngarbage\n");
        write(&cg("cpuacct"), "cpuacct.usage", "\n");
        let dirs = host.locate(ID, 0).unwrap();
        let s = Reader::default().stats(&dirs).unwrap();
        assert_eq!(s.memory_usage, Some(100.0));
        assert_eq!(s.memory_working_set, Some(100.0));
        assert_eq!((s.memory_rss, s.cpu_usage_seconds, s.processes), (None, None, None));
        // Gone between locate and read: no stats at all.
        std::fs::remove_dir_all(cg("memory")).unwrap();
        assert_eq!(Reader::default().stats(&dirs), None);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
