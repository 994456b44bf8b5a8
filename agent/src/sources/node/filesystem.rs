//! `filesystem`: size and inode use of mounted filesystems. Mount points
//! come from <proc>/1/mounts (the host's view even from a container) and
//! are statfs'd under root_path by a helper thread, so a hung mount (a
//! dead NFS server) costs one timeout, reports device_error 1, and is not
//! tried again while its statfs is still stuck (as node_exporter does).

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use super::{FileBuf, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// What statfs(2) says, in node_exporter's units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Stats {
    size: f64,
    free: f64,
    avail: f64,
    files: f64,
    files_free: f64,
}

/// A statfs implementation (the real one, or a slow one in tests).
type StatfsFn = fn(&CStr) -> Result<Stats, i32>;

fn real_statfs(path: &CStr) -> Result<Stats, i32> {
    // SAFETY: statfs writes into the zeroed struct; path is NUL-terminated.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    let bsize = s.f_bsize as f64;
    Ok(Stats {
        size: s.f_blocks as f64 * bsize,
        free: s.f_bfree as f64 * bsize,
        avail: s.f_bavail as f64 * bsize,
        files: s.f_files as f64,
        files_free: s.f_ffree as f64,
    })
}

/// The helper thread doing statfs calls; replaced when one gets stuck.
struct Worker {
    tx: mpsc::Sender<(u64, Arc<CString>)>,
    rx: mpsc::Receiver<(u64, Result<Stats, i32>)>,
}

impl Worker {
    fn spawn(statfs: StatfsFn, pending: Arc<Mutex<HashSet<u64>>>) -> Option<Worker> {
        let (tx, jobs) = mpsc::channel::<(u64, Arc<CString>)>();
        let (answers, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new().name("vantage-statfs".into()).spawn(move || {
            for (key, path) in jobs {
                let result = statfs(&path);
                // Done, even if nobody waits for the answer any more: the
                // mount may be tried again.
                pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
                if answers.send((key, result)).is_err() {
                    return;
                }
            }
        });
        spawned.ok().map(|_| Worker { tx, rx })
    }
}

/// One line of the mounts file, parsed and judged once.
struct Mount {
    line: String,
    device: String,
    mount_point: String,
    fs_type: String,
    read_only: bool,
    excluded: bool,
    key: u64,
    path: Arc<CString>,
    seen: u64,
}

/// The `filesystem` collector.
pub(super) struct Filesystem {
    mounts_file: FileBuf,
    fallback: PathBuf,
    root: PathBuf,
    exclude_mount_points: regex::Regex,
    exclude_fs_types: regex::Regex,
    timeout: Duration,
    statfs: StatfsFn,
    worker: Option<Worker>,
    /// Mounts whose statfs has been asked and not yet returned.
    pending: Arc<Mutex<HashSet<u64>>>,
    mounts: HashMap<u64, Mount>,
    order: Vec<u64>,
    generation: u64,
}

impl Filesystem {
    pub fn new(c: &NodeConfig) -> Self {
        Filesystem {
            mounts_file: FileBuf::new(c.proc_path.join("1/mounts")),
            fallback: c.proc_path.join("mounts"),
            root: c.root_path.clone(),
            exclude_mount_points: super::regex_or(&c.mount_points_exclude, super::DEFAULT_MOUNT_POINTS_EXCLUDE),
            exclude_fs_types: super::regex_or(&c.fs_types_exclude, super::DEFAULT_FS_TYPES_EXCLUDE),
            timeout: c.mount_timeout,
            statfs: real_statfs,
            worker: None,
            pending: Arc::default(),
            mounts: HashMap::new(),
            order: Vec::new(),
            generation: 0,
        }
    }

    /// Asks the helper thread for statfs of `m`; None when it did not answer
    /// within the timeout (the mount stays pending) or failed.
    fn stat(&mut self, key: u64, path: &Arc<CString>) -> Option<Result<Stats, i32>> {
        if self.worker.is_none() {
            self.worker = Worker::spawn(self.statfs, self.pending.clone());
        }
        let worker = self.worker.as_ref()?;
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(key);
        if worker.tx.send((key, path.clone())).is_err() {
            self.worker = None;
            return None;
        }
        match worker.rx.recv_timeout(self.timeout) {
            Ok((k, result)) if k == key => Some(result),
            _ => {
                // The thread is stuck in this statfs: leave it to finish (it
                // clears `pending` then) and use a fresh one from now on.
                self.worker = None;
                None
            }
        }
    }
}

/// Undoes the octal escapes of /proc/*/mounts (`\040` is a space).
fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_string();
    }
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

const FAMILIES: [(&str, &str); 7] = [
    ("node_filesystem_device_error", "Whether an error occurred while getting statistics for the given device."),
    ("node_filesystem_readonly", "Filesystem read-only status."),
    ("node_filesystem_size_bytes", "Filesystem size in bytes."),
    ("node_filesystem_free_bytes", "Filesystem free space in bytes."),
    ("node_filesystem_avail_bytes", "Filesystem space available to non-root users in bytes."),
    ("node_filesystem_files", "Filesystem total file nodes."),
    ("node_filesystem_files_free", "Filesystem total free file nodes."),
];

impl Sub for Filesystem {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        self.generation += 1;
        let generation = self.generation;
        if !self.mounts_file.path.exists() && self.fallback.exists() {
            self.mounts_file = FileBuf::new(self.fallback.clone());
        }
        let (path, text) = self.mounts_file.read()?;
        self.order.clear();
        for line in text.lines() {
            let h = hash(line);
            if self.mounts.get(&h).is_none_or(|m| m.line != line) {
                let f: Vec<&str> = line.split_ascii_whitespace().collect();
                if f.len() < 4 {
                    return Err(NodeError::parse(path, format!("short line {line:?}")));
                }
                let (device, mount_point, fs_type) = (unescape(f[0]), unescape(f[1]), f[2].to_string());
                let excluded =
                    self.exclude_mount_points.is_match(&mount_point) || self.exclude_fs_types.is_match(&fs_type);
                let full = self.root.join(mount_point.trim_start_matches('/'));
                let cpath = CString::new(full.as_os_str().as_encoded_bytes()).unwrap_or_default();
                let key = hash(&format!("{device}\0{mount_point}\0{fs_type}"));
                let read_only = f[3].split(',').any(|o| o == "ro");
                let m = Mount {
                    line: line.to_string(),
                    device,
                    mount_point,
                    fs_type,
                    read_only,
                    excluded,
                    key,
                    path: Arc::new(cpath),
                    seen: generation,
                };
                self.mounts.insert(h, m);
            }
            let m = self.mounts.get_mut(&h).expect("inserted above");
            m.seen = generation;
            if !m.excluded {
                self.order.push(h);
            }
        }
        let from = out.mark();
        let mut done: Vec<u64> = Vec::with_capacity(self.order.len());
        for i in 0..self.order.len() {
            let h = self.order[i];
            let (key, path) = {
                let m = &self.mounts[&h];
                (m.key, m.path.clone())
            };
            // The same filesystem mounted twice with the same labels: once.
            if done.contains(&key) {
                continue;
            }
            done.push(key);
            let stuck = self.pending.lock().unwrap_or_else(|e| e.into_inner()).contains(&key);
            let result = if stuck { None } else { self.stat(key, &path) };
            let m = &self.mounts[&h];
            let labels =
                [("device", m.device.as_str()), ("fstype", m.fs_type.as_str()), ("mountpoint", m.mount_point.as_str())];
            let stats = match result {
                Some(Ok(s)) => Some(s),
                Some(Err(errno)) => {
                    tracing::debug!(mountpoint = %m.mount_point, errno, "statfs failed");
                    None
                }
                None => {
                    if !stuck {
                        tracing::warn!(mountpoint = %m.mount_point, timeout = ?self.timeout, "statfs timed out; not retried until it returns");
                    }
                    None
                }
            };
            let (de, ro) = FAMILIES[0..2].split_at(1);
            out.add_to(from, de[0].0, MetricType::Gauge, de[0].1, &labels, if stats.is_some() { 0.0 } else { 1.0 });
            out.add_to(from, ro[0].0, MetricType::Gauge, ro[0].1, &labels, if m.read_only { 1.0 } else { 0.0 });
            let Some(s) = stats else { continue };
            for ((name, help), v) in FAMILIES[2..].iter().zip([s.size, s.free, s.avail, s.files, s.files_free]) {
                out.add_to(from, name, MetricType::Gauge, help, &labels, v);
            }
        }
        if self.mounts.len() > self.order.len() * 2 + 64 {
            self.mounts.retain(|_, m| m.seen == generation);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, value, Tree};
    use super::*;
    use std::time::Instant;

    fn fixed(path: &CStr) -> Result<Stats, i32> {
        let p = path.to_str().unwrap();
        if p.ends_with("/broken") {
            return Err(libc::EIO);
        }
        if p.ends_with("/hung") {
            std::thread::sleep(Duration::from_millis(700));
        }
        Ok(Stats { size: 4096.0 * 100.0, free: 4096.0 * 60.0, avail: 4096.0 * 50.0, files: 1000.0, files_free: 900.0 })
    }

    const MOUNTS: &str = "/dev/vda / ext4 rw,relatime 0 0\n\
proc /proc proc rw,nosuid 0 0\n\
overlay /var/lib/docker/overlay2/abc/merged overlay rw 0 0\n\
/dev/vda /var/lib/docker ext4 rw,relatime 0 0\n\
/dev/vdb /srv/my\\040data xfs ro,noatime 0 0\n\
/dev/vdb /srv/my\\040data xfs ro,noatime 0 0\n\
tmpfs /run tmpfs rw 0 0\n\
nfs:/x /broken nfs4 rw 0 0\n";

    #[test]
    fn mounts_exclusions_dedup_and_errors() {
        let t = Tree::new("fs");
        t.write("proc/1/mounts", MOUNTS);
        let mut fs = Filesystem::new(&t.config());
        fs.statfs = fixed;
        let got = run(&mut fs).unwrap();
        let l = |mp: &str, dev: &str, ty: &str| format!("{{device=\"{dev}\", fstype=\"{ty}\", mountpoint=\"{mp}\"}}");
        assert_eq!(value(&got, &format!("node_filesystem_size_bytes{}", l("/", "/dev/vda", "ext4"))), 409600.0);
        assert_eq!(
            value(&got, &format!("node_filesystem_avail_bytes{}", l("/var/lib/docker", "/dev/vda", "ext4"))),
            204800.0
        );
        assert_eq!(value(&got, &format!("node_filesystem_readonly{}", l("/srv/my data", "/dev/vdb", "xfs"))), 1.0);
        assert_eq!(value(&got, &format!("node_filesystem_files_free{}", l("/srv/my data", "/dev/vdb", "xfs"))), 900.0);
        assert_eq!(value(&got, &format!("node_filesystem_device_error{}", l("/broken", "nfs:/x", "nfs4"))), 1.0);
        assert!(
            !got.iter().any(|(s, _)| s.contains("/proc") || s.contains("overlay") || s.contains("/run")),
            "{got:#?}"
        );
        // 3 good mounts x 7 + the broken one's device_error and readonly.
        assert_eq!(got.len(), 23, "{got:#?}");
        t.write("proc/1/mounts", "/dev/vda\n");
        assert!(run(&mut fs).is_err());
    }

    #[test]
    fn a_hung_mount_times_out_and_is_not_retried_while_stuck() {
        let t = Tree::new("fs-hung");
        t.write("proc/1/mounts", "/dev/vda / ext4 rw 0 0\nnfs:/y /hung nfs4 rw 0 0\n/dev/vdc /data ext4 rw 0 0\n");
        let mut config = t.config();
        config.mount_timeout = Duration::from_millis(150);
        let mut fs = Filesystem::new(&config);
        fs.statfs = fixed;
        let hung = "node_filesystem_device_error{device=\"nfs:/y\", fstype=\"nfs4\", mountpoint=\"/hung\"}";
        let started = Instant::now();
        let got = run(&mut fs).unwrap();
        let first = started.elapsed();
        assert!(first >= Duration::from_millis(150) && first < Duration::from_millis(600), "{first:?}");
        assert_eq!(value(&got, hung), 1.0);
        // The mount after the hung one was still measured (by a new helper).
        assert_eq!(
            value(&got, "node_filesystem_size_bytes{device=\"/dev/vdc\", fstype=\"ext4\", mountpoint=\"/data\"}"),
            409600.0
        );
        // While the statfs is stuck, the mount is reported without waiting.
        let started = Instant::now();
        let got = run(&mut fs).unwrap();
        assert!(started.elapsed() < Duration::from_millis(100), "{:?}", started.elapsed());
        assert_eq!(value(&got, hung), 1.0);
        // Once it returns, the mount is tried again.
        std::thread::sleep(Duration::from_millis(800));
        let got = run(&mut fs).unwrap();
        assert_eq!(value(&got, hung), 1.0, "still slow, so timed out again");
    }

    #[test]
    fn real_statfs_of_root() {
        let s = real_statfs(c"/").unwrap();
        assert!(s.size > 0.0 && s.avail <= s.free && s.free <= s.size, "{s:?}");
        assert_eq!(real_statfs(c"/nonexistent/vantage"), Err(libc::ENOENT));
    }

    #[test]
    fn unescape_octal() {
        assert_eq!(unescape("/srv/my\\040data"), "/srv/my data");
        assert_eq!(unescape("/a\\134b"), "/a\\b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/bad\\04"), "/bad\\04");
    }
}
