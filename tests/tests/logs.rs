//! Log files to Loki, end to end: the real `vantage` binary tails real
//! files and pushes to the in-test Loki receiver (real protobuf + snappy).
//! Build the binary first: `cargo build -p vantage`.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vantage_tests::loki::{Entry, Loki};
use vantage_tests::{free_port, http_get, vantage_bin, wait_for, Proc, TempDir};

/// A running agent with its config file.
struct Agent {
    proc: Proc,
    port: u16,
}

fn config(dir: &Path, loki: &Loki, files: &str, loki_extra: &str) -> PathBuf {
    let text = format!(
        r#"
[agent]
listen_addr = "127.0.0.1:0"
data_dir = "{data}"
external_labels = {{ server_name = "test-host", environment = "ci" }}

[node]
enabled = false
[ebpf]
enabled = false
[docker]
enabled = false

[loki]
url = "{url}"
batch_wait = "300ms"
min_backoff = "100ms"
max_backoff = "1s"
{loki_extra}

{files}
"#,
        data = dir.join("data").display(),
        url = loki.url(),
    );
    let p = dir.join("vantage.toml");
    std::fs::write(&p, text).unwrap();
    p
}

impl Agent {
    fn start(dir: &Path, cfg: &Path, tag: &str) -> Agent {
        let port = free_port();
        let mut cmd = Command::new(vantage_bin());
        cmd.args(["run", "--config"]).arg(cfg).args(["--listen", &format!("127.0.0.1:{port}")]);
        cmd.env("RUST_LOG", "info");
        let proc = Proc::spawn("vantage", cmd, &dir.join(format!("vantage-{tag}.log")));
        let url = format!("http://127.0.0.1:{port}/-/healthy");
        wait_for(Duration::from_secs(10), || http_get(&url).filter(|(s, _)| *s == 200)).unwrap_or_else(|| {
            panic!("agent did not come up; see {}", dir.join(format!("vantage-{tag}.log")).display())
        });
        Agent { proc, port }
    }

    /// The value of a self-metric series (`name{labels}` as rendered).
    fn metric(&self, series_prefix: &str) -> f64 {
        let (_, text) = http_get(&format!("http://127.0.0.1:{}/metrics", self.port)).expect("GET /metrics");
        vantage_tests::parse_text(&text).into_iter().filter(|(s, _)| s.starts_with(series_prefix)).map(|(_, v)| v).sum()
    }
}

fn file_source(name: &str, path: &Path, extra: &str) -> String {
    format!(
        r#"
[[logs.files]]
name = "{name}"
paths = ["{path}"]
{extra}
"#,
        path = path.display()
    )
}

fn lines_of(loki: &Loki) -> Vec<String> {
    loki.entries().into_iter().map(|e| e.line).collect()
}

fn wait_lines(loki: &Loki, n: usize, secs: u64) -> Vec<String> {
    wait_for(Duration::from_secs(secs), || {
        let l = lines_of(loki);
        (l.len() >= n).then_some(l)
    })
    .unwrap_or_else(|| panic!("expected {n} lines, got {:?}", lines_of(loki)))
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn delete_and_recreate_reads_the_new_file_once() {
    let dir = TempDir::new("logs-recreate");
    let loki = Loki::start();
    let log = dir.path().join("app.log");
    append(&log, b"one\ntwo\nthree\n");
    let cfg = config(dir.path(), &loki, &file_source("app", &log, ""), "");
    let _agent = Agent::start(dir.path(), &cfg, "a");
    wait_lines(&loki, 3, 10);
    std::fs::remove_file(&log).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    append(&log, b"four\nfive\n");
    wait_lines(&loki, 5, 10);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(lines_of(&loki), ["one", "two", "three", "four", "five"]);
    let e = &loki.entries()[0];
    assert_eq!(e.labels.get("filename").map(String::as_str), Some(log.to_str().unwrap()));
    assert_eq!(e.labels.get("job").map(String::as_str), Some("app"));
    assert_eq!(e.labels.get("server_name").map(String::as_str), Some("test-host"));
    assert_eq!(e.labels.get("environment").map(String::as_str), Some("ci"));
}

#[test]
fn recreated_larger_than_the_old_offset_is_read_from_the_start() {
    let dir = TempDir::new("logs-larger");
    let loki = Loki::start();
    let log = dir.path().join("app.log");
    append(&log, b"old-1\nold-2\n");
    let cfg = config(dir.path(), &loki, &file_source("app", &log, ""), "");
    // While the agent runs: replaced in place between two polls by a file
    // already longer than the old offset.
    let mut agent = Agent::start(dir.path(), &cfg, "a");
    wait_lines(&loki, 2, 10);
    std::fs::remove_file(&log).unwrap();
    append(&log, b"new-1 a longer first line than before\nnew-2\nnew-3\n");
    wait_lines(&loki, 5, 10);
    // While the agent is down: the positions file says offset N of a file
    // whose first bytes no longer match.
    agent.proc.signal(libc::SIGTERM);
    agent.proc.wait_timeout(Duration::from_secs(10)).expect("agent stops on SIGTERM");
    std::fs::remove_file(&log).unwrap();
    let mut big = Vec::new();
    for i in 0..200 {
        big.extend(format!("again-{i:03} padding padding padding\n").as_bytes());
    }
    append(&log, &big);
    let _agent = Agent::start(dir.path(), &cfg, "b");
    let lines = wait_lines(&loki, 205, 15);
    std::thread::sleep(Duration::from_millis(1000));
    let lines = if lines.len() == 205 { lines_of(&loki) } else { lines };
    assert_eq!(lines.len(), 205, "{lines:?}");
    assert_eq!(&lines[..5], ["old-1", "old-2", "new-1 a longer first line than before", "new-2", "new-3"]);
    assert_eq!(lines[5], "again-000 padding padding padding");
    assert_eq!(lines[204], "again-199 padding padding padding");
}

#[test]
fn long_lines_are_cut_and_counted() {
    let dir = TempDir::new("logs-long");
    let loki = Loki::start();
    let log = dir.path().join("app.log");
    let cfg = config(dir.path(), &loki, &file_source("app", &log, "max_line_size = 1024"), "");
    let agent = Agent::start(dir.path(), &cfg, "a");
    let mut data = vec![b'x'; 5000];
    data.push(b'\n');
    data.extend(b"after\n");
    // A line longer than one read chunk, too.
    data.extend(vec![b'y'; 200_000]);
    data.extend(b"\nlast\n");
    append(&log, &data);
    let lines = wait_lines(&loki, 4, 10);
    assert_eq!(lines[0], "x".repeat(1024));
    assert_eq!(lines[1], "after");
    assert_eq!(lines[2], "y".repeat(1024));
    assert_eq!(lines[3], "last");
    assert_eq!(agent.metric("vantage_log_lines_truncated_total{source=\"app\"}"), 2.0);
}

#[test]
fn a_last_line_without_newline_waits_for_it() {
    let dir = TempDir::new("logs-partial");
    let loki = Loki::start();
    let log = dir.path().join("app.log");
    let cfg = config(dir.path(), &loki, &file_source("app", &log, ""), "");
    let _agent = Agent::start(dir.path(), &cfg, "a");
    append(&log, b"first\nsecond half");
    wait_lines(&loki, 1, 10);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(lines_of(&loki), ["first"]);
    append(&log, b" written later\n");
    wait_lines(&loki, 2, 10);
    assert_eq!(lines_of(&loki), ["first", "second half written later"]);
}

#[test]
fn invalid_utf8_and_nul_become_replacement_characters() {
    let dir = TempDir::new("logs-utf8");
    let loki = Loki::start();
    let log = dir.path().join("app.log");
    let cfg = config(dir.path(), &loki, &file_source("app", &log, ""), "");
    let agent = Agent::start(dir.path(), &cfg, "a");
    append(&log, b"ok \xff\xfe bad\nnul\0byte\nfine \xc3\xa9\n");
    let lines = wait_lines(&loki, 3, 10);
    assert_eq!(lines, ["ok \u{FFFD}\u{FFFD} bad", "nul\u{FFFD}byte", "fine é"]);
    assert_eq!(agent.metric("vantage_log_invalid_utf8_lines_total{source=\"app\"}"), 2.0);
}

#[test]
fn globs_find_new_files_within_a_second() {
    let dir = TempDir::new("logs-glob");
    let loki = Loki::start();
    std::fs::create_dir_all(dir.path().join("a/deep")).unwrap();
    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    let pattern = format!("{}/{{a,b}}/**/*.log", dir.path().display());
    let src = format!("[[logs.files]]\nname = \"g\"\npaths = [\"{pattern}\"]\nexclude = [\"**/skip.log\"]\n");
    let cfg = config(dir.path(), &loki, &src, "");
    let _agent = Agent::start(dir.path(), &cfg, "a");
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    append(&dir.path().join("a/deep/x.log"), b"from a\n");
    append(&dir.path().join("b/y.log"), b"from b\n");
    append(&dir.path().join("b/skip.log"), b"skipped\n");
    append(&dir.path().join("b/z.txt"), b"not a log\n");
    wait_lines(&loki, 2, 5);
    std::thread::sleep(Duration::from_millis(1000));
    let mut lines = lines_of(&loki);
    lines.sort();
    assert_eq!(lines, ["from a", "from b"]);
    // How soon each new file was read, by the kernel's clock of its write
    // (its mtime) and the agent's of its read (the entry's timestamp): no
    // batching, no receiver, no test polling in between. Globs are
    // searched every other 250 ms poll, so 500 ms plus one poll, and 250 ms
    // for a loaded machine to schedule the agent.
    for (file, line) in [("a/deep/x.log", "from a"), ("b/y.log", "from b")] {
        let written = std::fs::metadata(dir.path().join(file)).unwrap().modified().unwrap();
        let written = written.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
        let entry = loki.entries().into_iter().find(|e| e.line == line).unwrap();
        let after = Duration::from_nanos((entry.timestamp_ns - written).max(0) as u64);
        assert!(after < Duration::from_millis(1000), "{file} was read {after:?} after it was written");
    }
    eprintln!("both files arrived {:?} after they were written (test clock)", t0.elapsed());
}

#[test]
fn loki_errors_retry_5xx_and_429_but_not_400() {
    let dir = TempDir::new("logs-status");
    let loki = Loki::start();
    let log = dir.path().join("app.log");
    let cfg = config(
        dir.path(),
        &loki,
        &file_source("app", &log, ""),
        "tenant = \"team-a\"\nbasic_auth = { username = \"u\", password = \"p\" }",
    );
    let agent = Agent::start(dir.path(), &cfg, "a");
    loki.script(&[(500, "boom"), (429, "slow down")]);
    append(&log, b"retried\n");
    wait_lines(&loki, 1, 10);
    assert_eq!(loki.refused(), 2);
    loki.script(&[(400, "entry too far behind")]);
    append(&log, b"rejected\n");
    wait_for(Duration::from_secs(5), || (loki.refused() == 3).then_some(())).expect("the 400 was answered");
    std::thread::sleep(Duration::from_millis(800));
    append(&log, b"after\n");
    wait_lines(&loki, 2, 10);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(lines_of(&loki), ["retried", "after"]);
    assert_eq!(loki.refused(), 3, "a 400 is not retried");
    assert_eq!(agent.metric("vantage_loki_entries_dropped_total"), 1.0);
    let req = &loki.requests()[0];
    assert_eq!(req.tenant.as_deref(), Some("team-a"));
    assert_eq!(req.authorization.as_deref(), Some("Basic dTpw"));
    let text = std::fs::read_to_string(dir.path().join("vantage-a.log")).unwrap();
    assert!(text.contains("entry too far behind"), "the 400 body is logged verbatim");
}

const LEVELS: [(&str, &str); 6] = [
    ("INFO", "info"),
    ("warning", "warn"),
    ("error", "error"),
    ("debug", "debug"),
    ("info", "info"),
    ("FATAL", "fatal"),
];

fn seq_of(line: &str) -> u64 {
    line.split(" seq=").nth(1).and_then(|s| s.split(' ').next()).and_then(|s| s.parse().ok()).expect("seq in line")
}

/// The writer: a logger that reopens its file when told (after a rename).
struct Writer {
    file: Mutex<File>,
    written: AtomicU64,
}

/// 40,000 lines through a rename rotation, a copytruncate, a SIGKILL of the
/// agent and a 10 s Loki outage: every line arrives, duplicates only from
/// the SIGKILL window, order kept per stream, the right level on each.
#[test]
fn forty_thousand_lines_survive_rotation_crash_and_outage() {
    const TOTAL: u64 = 40_000;
    let dir = TempDir::new("logs-e2e");
    let loki = Loki::start();
    let log = dir.path().join("app.log");
    let stages = r#"
[[logs.files.stages]]
type = "logfmt"
mapping = { ts = "", seq = "" }
[[logs.files.stages]]
type = "timestamp"
source = "ts"
format = "RFC3339Nano"
[[logs.files.stages]]
type = "level"
"#;
    let cfg = config(dir.path(), &loki, &format!("{}{stages}", file_source("app", &log, "")), "");
    let writer = Arc::new(Writer {
        file: Mutex::new(OpenOptions::new().create(true).append(true).open(&log).unwrap()),
        written: AtomicU64::new(0),
    });
    let mut agent = Agent::start(dir.path(), &cfg, "1");
    let done = Arc::new(AtomicBool::new(false));
    let w = writer.clone();
    let d = done.clone();
    let writer_thread = std::thread::spawn(move || {
        let mut seq = 0u64;
        while seq < TOTAL {
            let mut buf = String::new();
            for _ in 0..100 {
                let (lvl, _) = LEVELS[(seq % LEVELS.len() as u64) as usize];
                let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
                let secs = ts.as_secs();
                let (days, rem) = (secs / 86400, secs % 86400);
                let (y, m, dd) = civil(days as i64);
                buf.push_str(&format!(
                    "ts={y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:09}Z level={lvl} seq={seq} msg=\"payment processed for order {seq}\"\n",
                    rem / 3600,
                    rem % 3600 / 60,
                    rem % 60,
                    ts.subsec_nanos()
                ));
                seq += 1;
            }
            {
                let mut f = w.file.lock().unwrap();
                f.write_all(buf.as_bytes()).unwrap();
                w.written.store(seq, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        d.store(true, Ordering::SeqCst);
    });
    let at = |n: u64| {
        while writer.written.load(Ordering::SeqCst) < n {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    // 1. Rotation by rename: the logger reopens app.log after the move.
    at(6_000);
    {
        let mut f = writer.file.lock().unwrap();
        std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
        *f = OpenOptions::new().create(true).append(true).open(&log).unwrap();
    }
    // 2. copytruncate, as logrotate does it (the logger keeps its descriptor).
    at(12_000);
    {
        let f = writer.file.lock().unwrap();
        std::fs::copy(&log, dir.path().join("app.log.2")).unwrap();
        f.set_len(0).unwrap();
    }
    // 3. SIGKILL the agent, restart it a second later.
    at(18_000);
    agent.proc.signal(libc::SIGKILL);
    agent.proc.wait_timeout(Duration::from_secs(5)).expect("SIGKILL ends the agent");
    let kill_seq = writer.written.load(Ordering::SeqCst);
    let at_kill = loki.entries().iter().map(|e| seq_of(&e.line)).max().unwrap_or(0);
    let positions = std::fs::read_to_string(dir.path().join("data/positions.json")).unwrap_or_default();
    eprintln!("killed at written={kill_seq}, received up to seq {at_kill}, positions: {positions}");
    std::thread::sleep(Duration::from_secs(1));
    agent = Agent::start(dir.path(), &cfg, "2");
    // 4. Loki down for 10 s while lines keep coming.
    at(24_000);
    loki.set_down(true);
    let down_at = loki.count();
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(loki.count(), down_at, "nothing arrives while Loki is down");
    loki.set_down(false);
    writer_thread.join().unwrap();
    assert!(done.load(Ordering::SeqCst));

    wait_for(Duration::from_secs(60), || {
        let e = loki.entries();
        let seen: std::collections::HashSet<u64> = e.iter().map(|e| seq_of(&e.line)).collect();
        (seen.len() as u64 == TOTAL).then_some(e)
    })
    .unwrap_or_else(|| {
        let e = loki.entries();
        let seen: std::collections::BTreeSet<u64> = e.iter().map(|e| seq_of(&e.line)).collect();
        let missing: Vec<u64> = (0..TOTAL).filter(|s| !seen.contains(s)).take(20).collect();
        panic!("{} of {TOTAL} distinct lines arrived; first missing: {missing:?}", seen.len())
    });
    std::thread::sleep(Duration::from_secs(2));
    let entries: Vec<Entry> = loki.entries();
    let _ = agent.metric("vantage_loki_entries_sent_total");

    // Duplicates: only lines read before the SIGKILL and not yet saved as
    // acknowledged, and fewer than one batch of lines.
    let mut count: HashMap<u64, usize> = HashMap::new();
    for e in &entries {
        *count.entry(seq_of(&e.line)).or_default() += 1;
    }
    let dups: Vec<u64> = count.iter().filter(|(_, c)| **c > 1).map(|(s, _)| *s).collect();
    let line_len = entries[0].line.len() as u64 + 1;
    let batch_lines = (1 << 20) / line_len;
    assert!((dups.len() as u64) < batch_lines, "{} duplicates, one batch is {batch_lines} lines", dups.len());
    assert!(count.values().all(|c| *c <= 2), "a line arrived more than twice");
    for s in &dups {
        assert!(
            *s <= kill_seq && *s + batch_lines > kill_seq,
            "duplicate seq {s} outside the SIGKILL window (kill at {kill_seq})"
        );
    }
    eprintln!("{} entries, {} duplicates (killed at seq {kill_seq})", entries.len(), dups.len());

    // Order within each stream (first arrivals), level and timestamp of each line.
    let mut last: BTreeMap<BTreeMap<String, String>, u64> = BTreeMap::new();
    let mut first_seen = std::collections::HashSet::new();
    for e in &entries {
        let seq = seq_of(&e.line);
        let want = LEVELS[(seq % LEVELS.len() as u64) as usize].1;
        assert_eq!(e.labels.get("level").map(String::as_str), Some(want), "level of {:?}", e.line);
        assert_eq!(e.labels.get("filename").map(String::as_str), Some(log.to_str().unwrap()));
        assert_eq!(e.labels.get("server_name").map(String::as_str), Some("test-host"));
        let ts_text = e.line.split_whitespace().next().unwrap().trim_start_matches("ts=");
        assert!(
            ts_text.ends_with(&format!(".{:09}Z", e.timestamp_ns.rem_euclid(1_000_000_000))),
            "timestamp of {:?} is {}",
            e.line,
            e.timestamp_ns
        );
        if !first_seen.insert(seq) {
            continue;
        }
        if let Some(prev) = last.insert(e.labels.clone(), seq) {
            assert!(seq > prev, "seq {seq} after {prev} in stream {:?}", e.labels);
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + if m <= 2 { 1 } else { 0 }, m, d)
}

/// RSS of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// With Loki down, lines keep coming: the agent stops reading once its
/// buffer is full, memory stays flat, and everything arrives afterwards.
/// VANTAGE_RSS_SECS sets the outage (default 20 s; the report used 60).
#[test]
fn memory_stays_flat_while_loki_is_down() {
    let secs: u64 = std::env::var("VANTAGE_RSS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let dir = TempDir::new("logs-rss");
    let loki = Loki::start();
    let log = dir.path().join("app.log");
    let cfg = config(
        dir.path(),
        &loki,
        &format!("{}[[logs.files.stages]]\ntype = \"level\"\n", file_source("app", &log, "")),
        "buffer_size = 4194304",
    );
    let agent = Agent::start(dir.path(), &cfg, "a");
    loki.set_down(true);
    let mut f = OpenOptions::new().create(true).append(true).open(&log).unwrap();
    let line = format!("level=info msg=\"{}\"", "z".repeat(150));
    let start = Instant::now();
    let mut written = 0u64;
    let mut samples = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        let mut buf = String::new();
        for _ in 0..2000 {
            buf.push_str(&format!("{written} {line}\n"));
            written += 1;
        }
        f.write_all(buf.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        samples.push((start.elapsed().as_secs_f64(), rss_kib(agent.proc.pid())));
    }
    let bytes = std::fs::metadata(&log).unwrap().len();
    let early = samples.iter().find(|(t, _)| *t >= secs as f64 / 4.0).unwrap().1;
    let late = samples.last().unwrap().1;
    let peak = samples.iter().map(|s| s.1).max().unwrap();
    eprintln!("wrote {written} lines ({} MiB) with Loki down for {secs}s: RSS {early} KiB at {:.0}s, {late} KiB at the end, peak {peak} KiB", bytes >> 20, secs as f64 / 4.0);
    assert!(late <= early + 4096, "RSS grew from {early} KiB to {late} KiB while Loki was down");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    loki.set_down(false);
    wait_for(Duration::from_secs(120), || (loki.count() as u64 >= written).then_some(()))
        .unwrap_or_else(|| panic!("{} of {written} lines arrived after Loki came back", loki.count()));
}

/// A busybox container's stdout and stderr arrive with container labels,
/// Docker's 16 KiB splits joined; after `docker restart` and after an agent
/// restart nothing arrives twice and nothing is missing.
#[test]
fn container_logs_arrive_once_across_docker_and_agent_restarts() {
    use vantage_tests::docker::{busybox_image, docker};
    let image = busybox_image();
    let dir = TempDir::new("logs-docker");
    let loki = Loki::start();
    let name = format!("vantage-logs-{}", std::process::id());
    let _ = Command::new("docker").args(["rm", "-f", &name]).output();
    let script = r#"r=$(cat /proc/sys/kernel/random/uuid); printf "long-$r-"; head -c 40000 /dev/zero | tr '\0' x; echo; i=0; while true; do echo "out $r $i"; echo "err $r $i" >&2; i=$((i+1)); sleep 0.05; done"#;
    let id = docker(&["run", "-d", "--name", &name, image, "/bin/sh", "-c", script]);
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
        }
    }
    let _cleanup = Cleanup(name.clone());
    let src = format!("[logs.docker]\nenabled = true\ninclude = \"^{name}$\"\nrefresh_interval = \"1s\"\n");
    let cfg = config(dir.path(), &loki, &src, "");
    let mut agent = Agent::start(dir.path(), &cfg, "1");
    let runs = |loki: &Loki| -> Vec<String> {
        let mut r: Vec<String> = Vec::new();
        for e in loki.entries() {
            if let Some(id) = e.line.strip_prefix("out ").and_then(|s| s.split(' ').next()) {
                if !r.iter().any(|x| x == id) {
                    r.push(id.to_string());
                }
            }
        }
        r
    };
    let count_of =
        |loki: &Loki, run: &str| loki.entries().iter().filter(|e| e.line.starts_with(&format!("out {run} "))).count();
    wait_for(Duration::from_secs(20), || runs(&loki).first().filter(|r| count_of(&loki, r) >= 20).cloned())
        .expect("first run's lines");
    docker(&["restart", "-t", "1", &name]);
    wait_for(Duration::from_secs(20), || {
        (runs(&loki).len() >= 2 && count_of(&loki, &runs(&loki)[1]) >= 20).then_some(())
    })
    .expect("lines after docker restart");
    agent.proc.signal(libc::SIGTERM);
    agent.proc.wait_timeout(Duration::from_secs(10)).expect("agent stops on SIGTERM");
    let before = loki.count();
    std::thread::sleep(Duration::from_secs(1));
    let _agent = Agent::start(dir.path(), &cfg, "2");
    wait_for(Duration::from_secs(20), || (loki.count() >= before + 60).then_some(()))
        .expect("lines after the agent restart");
    docker(&["stop", "-t", "1", &name]);
    std::thread::sleep(Duration::from_secs(2));

    let entries = loki.entries();
    let mut seen = std::collections::HashSet::new();
    for e in &entries {
        assert!(seen.insert((e.line.clone(), e.labels.get("stream").cloned())), "sent twice: {:?}", e.line);
        assert_eq!(e.labels.get("container_name"), Some(&name));
        assert_eq!(e.labels.get("container_id"), Some(&id));
        assert_eq!(e.labels.get("image").map(String::as_str), Some(image));
        assert_eq!(e.labels.get("job").map(String::as_str), Some("docker"));
        let want = if e.line.starts_with("err ") { "stderr" } else { "stdout" };
        assert_eq!(e.labels.get("stream").map(String::as_str), Some(want), "{:?}", e.line);
    }
    let runs = runs(&loki);
    assert!(runs.len() >= 2, "{runs:?}");
    for r in &runs {
        // Every line of every run, both streams, without a gap.
        for stream in ["out", "err"] {
            let mut seqs: Vec<u64> = entries
                .iter()
                .filter_map(|e| e.line.strip_prefix(&format!("{stream} {r} ")).and_then(|s| s.parse().ok()))
                .collect();
            seqs.sort();
            assert_eq!(seqs.first(), Some(&0), "{stream} of run {r} starts at 0");
            assert_eq!(*seqs.last().unwrap() as usize + 1, seqs.len(), "{stream} of run {r} has gaps");
        }
        let long = format!("long-{r}-{}", "x".repeat(40000));
        assert_eq!(entries.iter().filter(|e| e.line == long).count(), 1, "the 40,000-byte line of run {r}, joined");
    }
    assert!(entries.iter().any(|e| e.timestamp_ns % 1_000_000_000 != 0), "nanosecond timestamps");
}

/// Rotated (renamed) and copytruncated while the agent was stopped: the
/// unread rest of the old content is found beside the file and sent, then
/// the new file, each line once.
#[test]
fn rotation_while_the_agent_is_down_loses_nothing() {
    let dir = TempDir::new("logs-down-rotate");
    let loki = Loki::start();
    let log = dir.path().join("app.log");
    append(&log, b"a1\na2\na3\n");
    let cfg = config(dir.path(), &loki, &file_source("app", &log, ""), "");
    let mut agent = Agent::start(dir.path(), &cfg, "1");
    wait_lines(&loki, 3, 10);
    agent.proc.signal(libc::SIGTERM);
    agent.proc.wait_timeout(Duration::from_secs(10)).expect("agent stops");
    // Rename rotation with unread lines in the old file.
    append(&log, b"a4\na5\n");
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    append(&log, b"b1\nb2\n");
    let mut agent = Agent::start(dir.path(), &cfg, "2");
    wait_lines(&loki, 7, 10);
    agent.proc.signal(libc::SIGTERM);
    agent.proc.wait_timeout(Duration::from_secs(10)).expect("agent stops");
    // copytruncate with unread lines.
    append(&log, b"b3\n");
    std::fs::copy(&log, dir.path().join("app.log.2")).unwrap();
    OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    append(&log, b"c1\n");
    let _agent = Agent::start(dir.path(), &cfg, "3");
    wait_lines(&loki, 9, 10);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(lines_of(&loki), ["a1", "a2", "a3", "a4", "a5", "b1", "b2", "b3", "c1"]);
}
