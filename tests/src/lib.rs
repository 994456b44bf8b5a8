//! Shared harness for Vantage's end-to-end tests: the agent binary, free
//! loopback ports, child processes that die with the test, a real
//! Prometheus with its remote-write receiver, and polling helpers.
//!
//! Tests run as root against real servers from Debian's packages; `.ci/run`
//! installs them. A missing server is a failure that names the package,
//! never a silent skip.

pub mod docker;
pub mod engine;
pub mod loki;
pub mod prometheus;
pub mod promql;
pub mod receiver;
pub mod scrape;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").to_path_buf()
}

/// The `vantage` binary built by `cargo build -p vantage` (the README's test
/// command builds it before the tests run).
pub fn vantage_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from);
    let bin = target.join("debug").join("vantage");
    assert!(bin.exists(), "{} is missing: run `cargo build -p vantage` first (cargo xtask test does)", bin.display());
    bin
}

/// Runs `vantage <args>` to completion.
pub fn vantage(args: &[&str]) -> Output {
    Command::new(vantage_bin()).args(args).output().expect("run vantage")
}

/// A loopback port that was free a moment ago.
///
/// It is taken below the kernel's ephemeral range and never handed out twice
/// by one process. `bind(0)` would give an ephemeral port, which the kernel
/// may hand to an outgoing connection (the agent's, Prometheus's) before the
/// test binds it again; CI once failed on exactly that.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    const FIRST: u32 = 10_000;
    let span = low.saturating_sub(FIRST).max(1000);
    // Processes that run at once start far apart.
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let port = FIRST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + span);
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vantage-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `content` to `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, content).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (SIGKILL) when dropped, so a failing test leaves
/// no server behind.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr sent to `log` (a file path).
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc { child, name: name.to_string() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (libc::SIGTERM, SIGKILL, ...).
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits up to `limit` for the process to exit; its status if it did.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 100 ms until it returns Some or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Times, as Unix seconds, when this machine ran nothing at all: a thread
/// that wakes every 50 ms records each wake-up that came more than 500 ms
/// late. A paused or migrated virtual machine does that (the hypervisor
/// stops every CPU; the wall clock jumps on resume); a busy one does not,
/// because a thread that sleeps almost always is woken ahead of CPU hogs.
/// A gap the agent left during such a stall is the machine's, not the
/// agent's. Call `watch_stalls` before the interval it should cover.
pub fn watch_stalls() -> &'static std::sync::Mutex<Vec<(f64, f64)>> {
    static STALLS: std::sync::OnceLock<&'static std::sync::Mutex<Vec<(f64, f64)>>> = std::sync::OnceLock::new();
    STALLS.get_or_init(|| {
        let stalls: &'static std::sync::Mutex<Vec<(f64, f64)>> = Box::leak(Box::default());
        std::thread::spawn(move || {
            let wall = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
            let mut last = wall();
            loop {
                std::thread::sleep(Duration::from_millis(50));
                let now = wall();
                if now - last > 0.5 {
                    stalls.lock().unwrap().push((last, now));
                }
                last = now;
            }
        });
        stalls
    })
}

/// Seconds of `from..to` during which the machine stalled (`watch_stalls`).
pub fn stalled_within(from: f64, to: f64) -> f64 {
    watch_stalls().lock().unwrap().iter().map(|(a, b)| (b.min(to) - a.max(from)).max(0.0)).sum()
}

/// A `/proc/<pid>/status` field in kB (`field` with its colon: "VmHWM:").
pub fn status_kib(pid: impl std::fmt::Display, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let value = status.lines().find_map(|l| l.strip_prefix(field)).unwrap_or_else(|| panic!("no {field} for {pid}"));
    value.split_whitespace().next().unwrap().parse().unwrap()
}

/// GET `url`; status and body, or None when the connection failed.
pub fn http_get(url: &str) -> Option<(u16, String)> {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().ok()?;
    let resp = client.get(url).send().ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().unwrap_or_default()))
}

/// Path of a program, or a panic naming the Debian package that has it.
pub fn require_program(program: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return p;
        }
    }
    panic!("{program} not found: install the Debian package {package} (the README's test command does)");
}

/// Parses exposition text into (series, value) pairs, series as written
/// (`name{labels}`); comments skipped. Good enough for assertions on our
/// own output, which has no timestamps.
pub fn parse_text(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().ok()?,
            };
            Some((series.to_string(), value))
        })
        .collect()
}
