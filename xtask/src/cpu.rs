//! CPU time of a group of benchmark processes, to the nanosecond.
//!
//! /proc/<pid>/stat counts in clock ticks (10 ms), too coarse for agents
//! that use a few ticks a minute, and summing per-thread counters loses the
//! threads that exit meanwhile (tokio's blocking pool, Go's Ms). A cgroup of
//! its own per group counts everything its processes and their threads ever
//! ran, exited or not: cpuacct.usage (cgroup v1, ns) or cpu.stat usage_usec
//! (cgroup v2). Without a usable cgroup filesystem, the ticks are the
//! fallback, and [`CpuGroup::precision`] says so in the table.

use std::path::{Path, PathBuf};

/// Where group directories are made, and how usage is read there.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// cgroup v1 cpuacct hierarchy: `cpuacct.usage`, nanoseconds.
    V1,
    /// cgroup v2: `cpu.stat` `usage_usec`, microseconds.
    V2,
}

/// A set of processes whose CPU time is read together.
pub struct CpuGroup {
    /// The group's own cgroup, when one could be made.
    cgroup: Option<(PathBuf, Kind)>,
    /// The processes, for the ticks fallback.
    pids: Vec<u32>,
}

impl CpuGroup {
    /// A new, empty group named `name` (unique within the run).
    pub fn new(name: &str) -> CpuGroup {
        let cgroup = hierarchy().and_then(|(root, kind)| {
            let dir = root.join(format!("vantage-bench-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).ok()?;
            Some((dir, kind))
        });
        CpuGroup { cgroup, pids: Vec::new() }
    }

    /// Moves `pid` (all its threads, and what it starts later) into the group.
    pub fn add(&mut self, pid: u32) {
        self.pids.push(pid);
        if let Some((dir, _)) = &self.cgroup {
            if std::fs::write(dir.join("cgroup.procs"), pid.to_string()).is_err() {
                // One process outside the cgroup would be missed: count by ticks.
                eprintln!("bench: cannot move pid {pid} into {}; counting clock ticks", dir.display());
                let _ = std::fs::remove_dir(dir);
                self.cgroup = None;
            }
        }
    }

    /// The processes added to the group.
    pub fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.pids.iter().copied()
    }

    /// CPU seconds (user + system) the group used so far.
    pub fn seconds(&self) -> f64 {
        match &self.cgroup {
            Some((dir, Kind::V1)) => read_number(&dir.join("cpuacct.usage"), None).map_or(0.0, |ns| ns / 1e9),
            Some((dir, Kind::V2)) => read_number(&dir.join("cpu.stat"), Some("usage_usec")).map_or(0.0, |us| us / 1e6),
            None => self.pids.iter().map(|&p| tick_seconds(p)).sum(),
        }
    }

    /// How finely [`CpuGroup::seconds`] counts, for the report.
    pub fn precision(&self) -> &'static str {
        match &self.cgroup {
            Some((_, Kind::V1)) => "cgroup cpuacct.usage (ns)",
            Some((_, Kind::V2)) => "cgroup cpu.stat (µs)",
            None => "/proc/<pid>/stat clock ticks (10 ms)",
        }
    }
}

impl Drop for CpuGroup {
    fn drop(&mut self) {
        // A cgroup can only be removed once empty: what still runs in it
        // (a process that outlives its group) goes back to the parent.
        let Some((dir, _)) = &self.cgroup else { return };
        let parent = dir.parent().map(|p| p.join("cgroup.procs"));
        for _ in 0..50 {
            for pid in std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines() {
                if let Some(parent) = &parent {
                    let _ = std::fs::write(parent, pid);
                }
            }
            if std::fs::remove_dir(dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("bench: could not remove {}", dir.display());
    }
}

/// The cgroup hierarchy to make groups in: v1's cpuacct when mounted, else
/// a cgroup v2 mount.
fn hierarchy() -> Option<(PathBuf, Kind)> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let mut v2 = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(dir), Some(fstype), Some(options)) = (f.get(1), f.get(2), f.get(3)) else { continue };
        if *fstype == "cgroup" && options.split(',').any(|o| o == "cpuacct") {
            return Some((PathBuf::from(dir), Kind::V1));
        }
        if *fstype == "cgroup2" && v2.is_none() {
            v2 = Some((PathBuf::from(dir), Kind::V2));
        }
    }
    v2
}

/// The number in `path`: the whole file, or the value after `key`.
fn read_number(path: &Path, key: Option<&str>) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    match key {
        None => text.trim().parse().ok(),
        Some(key) => text.lines().find_map(|l| l.strip_prefix(key)?.trim().parse().ok()),
    }
}

/// utime + stime of `pid` from /proc/<pid>/stat, in seconds.
fn tick_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
