//! Faults a production host produces, against the real binary: a full disk
//! under the data directory, a WAL damaged anywhere, receivers that
//! misbehave. Each test counts exactly what was produced, what arrived and
//! what the agent says it dropped or skipped.
//! Build the binary first: `cargo build -p vantage`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vantage_tests::loki::Loki;
use vantage_tests::prometheus::Prometheus;
use vantage_tests::receiver::{restart_prometheus, stop_prometheus};
use vantage_tests::{free_port, http_get, vantage_bin, wait_for, Proc, TempDir};

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop, so
/// also when the test panics.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(at).output();
        let out = out.expect("run mount");
        assert!(out.status.success(), "mount tmpfs on {}: {}", at.display(), String::from_utf8_lossy(&out.stderr));
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the agent may still hold files open if the test panicked.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem holding `dir` with one file; returns its size.
fn fill(file: &Path) -> u64 {
    let mut f = std::fs::File::create(file).unwrap();
    let chunk = vec![0x55u8; 4096];
    let mut n = 0u64;
    while f.write_all(&chunk).is_ok() {
        n += chunk.len() as u64;
    }
    let _ = f.sync_all();
    n
}

/// A scrape target serving `series` gauges; it counts the bodies it wrote
/// whole, and answers 503 once stopped, so the samples it produced are
/// known exactly.
struct Target {
    port: u16,
    served: Arc<AtomicU64>,
    stopped: Arc<Mutex<bool>>,
}

impl Target {
    fn start(series: usize) -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut body = String::from("# TYPE fault_gauge gauge\n");
        for i in 0..series {
            body.push_str(&format!("fault_gauge{{i=\"{i}\"}} {i}\n"));
        }
        let served = Arc::new(AtomicU64::new(0));
        let stopped = Arc::new(Mutex::new(false));
        let (s, st) = (served.clone(), stopped.clone());
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                // Held while answering, so `stop` returns only after the
                // last body was counted.
                let stopped = st.lock().unwrap();
                if *stopped {
                    let _ = conn.write_all(b"HTTP/1.1 503 Stopped\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    continue;
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                if conn.write_all(reply.as_bytes()).and_then(|_| conn.flush()).is_ok() {
                    s.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Target { port, served, stopped }
    }

    /// Stops serving; returns the bodies served whole.
    fn stop(&self) -> u64 {
        *self.stopped.lock().unwrap() = true;
        self.served.load(Ordering::SeqCst)
    }
}

/// Appends numbered lines to a file until stopped; returns how many.
struct Writer {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<u64>>,
}

impl Writer {
    fn start(path: &Path, every: Duration) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, path) = (stop.clone(), path.to_path_buf());
        let handle = std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) {
                writeln!(f, "line {n:06} of the fault test").unwrap();
                n += 1;
                std::thread::sleep(every);
            }
            n
        });
        Writer { stop, handle: Some(handle) }
    }

    fn stop(&mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}

struct Agent {
    _proc: Proc,
    port: u16,
    log: PathBuf,
}

impl Agent {
    fn start(dir: &Path, tag: &str, config: &str) -> Agent {
        let port = free_port();
        let path = dir.join(format!("vantage-{tag}.toml"));
        std::fs::write(&path, format!("[agent]\nlisten_addr = \"127.0.0.1:{port}\"\n{config}")).unwrap();
        let log = dir.join(format!("vantage-{tag}.log"));
        let mut cmd = Command::new(vantage_bin());
        cmd.args(["run", "--config"]).arg(&path).env("RUST_LOG", "info");
        let proc = Proc::spawn("vantage", cmd, &log);
        let agent = Agent { _proc: proc, port, log };
        let up = wait_for(Duration::from_secs(20), || http_get(&agent.url("/-/healthy")).filter(|(s, _)| *s == 200));
        assert!(up.is_some(), "agent did not start; log:\n{}", agent.log_text());
        agent
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Self-metric series exactly as rendered, e.g. `name{a="b"}`.
    fn metric(&self, series: &str) -> f64 {
        let (_, text) = http_get(&self.url("/metrics")).expect("GET /metrics");
        vantage_tests::parse_text(&text).into_iter().find(|(s, _)| s == series).map_or(f64::NAN, |(_, v)| v)
    }

    fn status(&self) -> serde_json::Value {
        let (_, text) = http_get(&self.url("/api/v1/status")).expect("GET /api/v1/status");
        serde_json::from_str(&text).expect("status JSON")
    }
}

/// Sum of the per-series sample counts of `selector` in Prometheus over the
/// last 10 minutes, and the count per series.
fn samples_in(prom: &Prometheus, selector: &str) -> (usize, HashMap<String, usize>) {
    let mut per = HashMap::new();
    let mut total = 0;
    for (labels, values) in prom.raw_samples(selector, "10m") {
        let mut distinct: Vec<u64> = values.iter().map(|(t, _)| (t * 1000.0).round() as u64).collect();
        distinct.sort_unstable();
        distinct.dedup();
        total += distinct.len();
        per.insert(labels.to_string(), distinct.len());
    }
    (total, per)
}

fn positions_offset(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} unreadable: {e}\n{text}", file.display()));
    v["files"][0]["offset"].as_u64()
}

/// Prometheus's stale marker: a NaN with this bit pattern.
const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

const SERIES: usize = 1000;

#[test]
fn full_disk_keeps_sending_from_memory_counts_drops_and_resumes_by_itself() {
    let dir = TempDir::new("faults-disk");
    let data = dir.path().join("data");
    let _fs = Tmpfs::mount(&data, "4m");
    let mut prom = Prometheus::start("");
    let loki = Loki::start();
    let target = Target::start(SERIES);
    let log = dir.path().join("app.log");
    let mut writer = Writer::start(&log, Duration::from_millis(50));
    let agent = Agent::start(
        dir.path(),
        "disk",
        &format!(
            r#"data_dir = "{data}"
scrape_interval = "1s"
[node]
enabled = false
[ebpf]
enabled = false
[docker]
enabled = false
[[scrape]]
job_name = "fault"
targets = ["127.0.0.1:{port}"]
[[remote_write]]
name = "full"
url = "{rw}"
memory_buffer_size = "256KiB"
[remote_write.queue_config]
batch_send_deadline = "200ms"
max_samples_per_send = 2000
capacity = 2000
[loki]
url = "{loki}"
batch_wait = "200ms"
min_backoff = "100ms"
max_backoff = "1s"
[[logs.files]]
name = "app"
paths = ["{log}"]
"#,
            data = data.display(),
            port = target.port,
            rw = prom.remote_write_url(),
            loki = loki.url(),
            log = log.display(),
        ),
    );
    let m = |s: &str| agent.metric(s);
    let dropped = |reason: &str| {
        m(&format!("vantage_remote_write_samples_dropped_total{{endpoint=\"full\",reason=\"{reason}\"}}"))
    };
    let positions = data.join("positions.json");
    wait_for(Duration::from_secs(20), || (samples_in(&prom, "fault_gauge").0 >= 2 * SERIES).then_some(()))
        .unwrap_or_else(|| panic!("nothing reached Prometheus; log:\n{}", agent.log_text()));
    wait_for(Duration::from_secs(10), || positions_offset(&positions).filter(|o| *o > 0))
        .expect("positions saved before the disk fills");

    // The receiver goes down and the disk fills: new records can go only
    // to the memory buffer, which overflows.
    stop_prometheus(&mut prom);
    let filler = data.join("filler");
    fill(&filler);
    let saved_while_full = positions_offset(&positions).expect("positions file present");
    wait_for(Duration::from_secs(30), || (dropped("disk_full") > 0.0).then_some(()))
        .unwrap_or_else(|| panic!("the memory buffer never overflowed; log:\n{}", agent.log_text()));
    let status = agent.status();
    let err = status["sinks"]["remote_write/full"]["last_error"].as_str().unwrap_or_default().to_string();
    assert!(err.contains("disk full") && err.contains("No space left"), "status page says: {status}");
    assert!(m("vantage_remote_write_wal_memory_bytes{endpoint=\"full\"}") > 0.0);
    assert!(m("vantage_remote_write_wal_memory_bytes{endpoint=\"full\"}") <= 256.0 * 1024.0 + 200_000.0);
    // Log lines keep flowing to Loki; their positions cannot be saved, so
    // the file keeps the last ones saved (a restart re-sends, never skips).
    let lines_now = loki.count();
    wait_for(Duration::from_secs(10), || (loki.count() > lines_now + 20).then_some(()))
        .expect("log lines keep reaching Loki while the disk is full");
    assert_eq!(positions_offset(&positions), Some(saved_while_full), "positions changed on a full disk?");

    // The receiver comes back while the disk is still full: the memory
    // buffer is sent.
    restart_prometheus(&mut prom);
    let (before, _) = samples_in(&prom, "fault_gauge");
    wait_for(Duration::from_secs(20), || (samples_in(&prom, "fault_gauge").0 >= before + 2 * SERIES).then_some(()))
        .unwrap_or_else(|| panic!("nothing sent from memory on a full disk; log:\n{}", agent.log_text()));

    // Space returns: the WAL goes back to disk by itself, positions are saved.
    std::fs::remove_file(&filler).unwrap();
    wait_for(Duration::from_secs(15), || {
        (agent.log_text().contains("the WAL takes writes again")
            && m("vantage_remote_write_wal_memory_bytes{endpoint=\"full\"}") == 0.0)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the WAL did not resume; log:\n{}", agent.log_text()));
    // The status page is refreshed every second.
    let sink_error =
        || agent.status()["sinks"]["remote_write/full"]["last_error"].as_str().unwrap_or_default().to_string();
    wait_for(Duration::from_secs(5), || (!sink_error().contains("WAL")).then_some(()))
        .unwrap_or_else(|| panic!("status page still says: {}", sink_error()));

    // Stop the producers, let everything drain, and count.
    let served = target.stop();
    let written = writer.stop();
    let log_len = std::fs::metadata(&log).unwrap().len();
    wait_for(Duration::from_secs(30), || {
        (m("vantage_remote_write_samples_pending{endpoint=\"full\"}") == 0.0
            && loki.count() as u64 >= written
            && positions_offset(&positions) == Some(log_len))
        .then_some(())
    })
    .unwrap_or_else(|| panic!("did not drain; log:\n{}", agent.log_text()));
    std::thread::sleep(Duration::from_secs(2));
    let (total, per) = samples_in(&prom, "fault_gauge");
    assert_eq!(per.len(), SERIES);
    let received = per.values().copied().max().unwrap() as u64;
    assert!(per.values().all(|n| *n as u64 == received), "records are dropped whole, never in part: {per:?}");
    assert_eq!(total as u64, received * SERIES as u64);
    // Every sample of a record shares its fate: the series of the target
    // (its gauges plus up and the scrape_* series) in each dropped record.
    // Instant query: after the target stopped, its gauges are stale but
    // up and the scrape_* series are fresh.
    let others = prom.query("count({job=\"fault\",__name__!=\"fault_gauge\"})")[0]["value"][1]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    let per_record = SERIES as u64 + others;
    let lost_records = served - received;
    assert!(lost_records > 0, "the buffer overflowed, so records were lost");
    assert_eq!(dropped("disk_full") as u64, lost_records * per_record, "served {served}, received {received}");
    for reason in ["wal_error", "wal_full", "out_of_order", "rejected", "invalid"] {
        assert_eq!(dropped(reason), 0.0, "{reason}");
    }
    // Log lines: none lost, none twice.
    let mut lines: Vec<String> = loki.entries().into_iter().map(|e| e.line).collect();
    assert_eq!(lines.len() as u64, written, "lines sent twice or lost");
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len() as u64, written);
    // Nothing on disk is left unreadable: every segment opens clean.
    drop(agent);
    let (_, report) =
        vantage::sinks::remote_write::wal::Wal::open(&data.join("remote_write/full"), 1 << 30).expect("WAL opens");
    assert_eq!((report.corrupt_records, report.segments_skipped), (0, 0), "{report:?}");
}

/// One record of a WAL segment file: where it is and the timestamp of its
/// samples (one scrape each here).
#[derive(Clone, Debug)]
struct Rec {
    offset: usize,
    len: usize,
    ts: i64,
}

/// Parses a segment as the agent writes it: `VWAL` + version, then
/// `len | crc | samples | WalRecord`; the WalRecord's series are field 1
/// like a WriteRequest's, so the receiver's decoder reads them.
fn records_of(data: &[u8]) -> Vec<Rec> {
    assert_eq!(&data[..4], b"VWAL", "segment header");
    let mut at = 8;
    let mut out = Vec::new();
    while at + 8 <= data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        let payload = &data[at + 8..at + 8 + len];
        let body = snap::raw::Encoder::new().compress_vec(&payload[4..]).unwrap();
        let series = vantage_tests::receiver::decode(&body, false).expect("WAL record decodes");
        let ts = series[0].samples[0].0;
        assert!(series.iter().all(|s| s.samples.iter().all(|(t, _)| *t == ts)), "one scrape a record");
        out.push(Rec { offset: at, len: 8 + len, ts });
        at += 8 + len;
    }
    out
}

#[test]
fn damaged_wal_anywhere_skips_exactly_the_damage_and_sends_the_rest_in_order() {
    use vantage_tests::receiver::{Receiver, Reply};
    const N: usize = 200;
    let dir = TempDir::new("faults-wal");
    let target = Target::start(N);
    // Down while the WAL fills; the agent dies with everything unsent.
    let recv = Receiver::start(Box::new(|_, _| Reply::Status(503, "down".into(), vec![])));
    let data = dir.path().join("data");
    let config = format!(
        r#"data_dir = "{data}"
scrape_interval = "300ms"
[node]
enabled = false
[ebpf]
enabled = false
[docker]
enabled = false
[[scrape]]
job_name = "wal"
targets = ["127.0.0.1:{port}"]
[[remote_write]]
name = "dmg"
url = "{url}"
# 64 KiB segments: two or three records each.
max_wal_size = "1MiB"
[remote_write.queue_config]
batch_send_deadline = "200ms"
"#,
        data = data.display(),
        port = target.port,
        url = recv.url(),
    );
    let agent = Agent::start(dir.path(), "wal1", &config);
    let wal_dir = data.join("remote_write/dmg");
    let segments = || {
        let mut s: Vec<PathBuf> = std::fs::read_dir(&wal_dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "seg"))
                    .collect()
            })
            .unwrap_or_default();
        s.sort();
        s
    };
    wait_for(Duration::from_secs(40), || (segments().len() >= 7).then_some(()))
        .unwrap_or_else(|| panic!("the WAL did not grow to 7 segments; log:\n{}", agent.log_text()));
    let killed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    drop(agent); // SIGKILL
    let segs = segments();
    let recs: Vec<Vec<Rec>> = segs.iter().map(|p| records_of(&std::fs::read(p).unwrap())).collect();
    assert!(
        recs[1].len() >= 2 && !recs[5].is_empty(),
        "records per segment: {:?}",
        recs.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let mut expected: Vec<i64> = Vec::new();
    let mut damaged: Vec<i64> = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        for (j, rec) in r.iter().enumerate() {
            let lost = match i {
                1 => j == 1,
                2..=4 => true,
                5 => j == r.len() - 1,
                _ => false,
            };
            if lost {
                damaged.push(rec.ts)
            } else {
                expected.push(rec.ts)
            }
        }
    }
    // Segment 1: one byte flipped in the middle of its second record.
    let mut d = std::fs::read(&segs[1]).unwrap();
    let r = &recs[1][1];
    d[r.offset + r.len / 2] ^= 0x20;
    std::fs::write(&segs[1], &d).unwrap();
    // Segment 2 deleted, 3 emptied, 4 from a future format version.
    std::fs::remove_file(&segs[2]).unwrap();
    std::fs::write(&segs[3], b"").unwrap();
    let mut d = std::fs::read(&segs[4]).unwrap();
    d[4..8].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&segs[4], &d).unwrap();
    // Segment 5: its last record torn.
    let d = std::fs::read(&segs[5]).unwrap();
    std::fs::write(&segs[5], &d[..d.len() - 5]).unwrap();

    recv.set_script(Box::new(|_, _| Reply::Ok));
    let agent = Agent::start(dir.path(), "wal2", &config);
    let m = |s: &str| agent.metric(s);
    wait_for(Duration::from_secs(30), || {
        (m("vantage_remote_write_samples_pending{endpoint=\"dmg\"}") == 0.0).then_some(())
    })
    .unwrap_or_else(|| panic!("the WAL was not sent; log:\n{}", agent.log_text()));
    assert_eq!(m("vantage_wal_corrupt_records_total{endpoint=\"dmg\"}"), 2.0);
    assert_eq!(m("vantage_wal_segments_skipped_total{endpoint=\"dmg\"}"), 3.0);
    // What arrived from before the kill: exactly the intact records, each
    // once, in order per series.
    let mut per: HashMap<String, Vec<i64>> = HashMap::new();
    for r in recv.requests().iter().filter(|r| r.status == 204) {
        for s in r.series.iter().filter(|s| s.label("__name__") == Some("fault_gauge")) {
            per.entry(s.key()).or_default().extend(s.samples.iter().map(|(t, _)| *t).filter(|t| *t < killed_at));
        }
    }
    assert_eq!(per.len(), N);
    expected.sort();
    for (series, ts) in &per {
        let mut sorted = ts.clone();
        sorted.sort();
        assert_eq!(ts, &sorted, "{series}: out of order");
        let before_kill: Vec<i64> =
            ts.iter().copied().filter(|t| expected.contains(t) || damaged.contains(t)).collect();
        assert_eq!(before_kill, expected, "{series}: damaged {damaged:?}");
    }
    assert!(dir
        .path()
        .join("data/remote_write/dmg")
        .join(segs[4].file_name().unwrap())
        .with_extension("seg.skipped")
        .exists());
    let log = agent.log_text();
    assert!(log.contains("WAL segment damaged") && log.contains("format version 2"), "{log}");
    assert!(log.contains("missing from the middle") && log.contains("empty WAL segment"), "{log}");
    // A second start finds nothing damaged left (and does not crash-loop).
    drop(agent);
    let agent = Agent::start(dir.path(), "wal3", &config);
    assert_eq!(agent.metric("vantage_wal_corrupt_records_total{endpoint=\"dmg\"}"), 0.0);
    assert_eq!(agent.metric("vantage_wal_segments_skipped_total{endpoint=\"dmg\"}"), 0.0);
}

/// What the fault proxy does with a connection.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Passes bytes both ways to the upstream.
    Pass,
    /// Accepts, reads, never answers.
    Hang,
    /// Closes in the middle of its status line. (A 200 status line that
    /// arrived whole is an acknowledgement whatever follows, as in
    /// Prometheus' own client.)
    CloseMidResponse,
    /// Forwards the request, throws the upstream's answer away and answers
    /// 200 with a body that is not what any receiver sends.
    Garbage,
}

/// A TCP proxy in front of a real receiver that misbehaves on cue.
struct FaultProxy {
    port: u16,
    mode: Arc<Mutex<Mode>>,
    /// Connections held open by `Hang` that the client has not closed.
    hanging: Arc<AtomicU64>,
}

/// Reads one HTTP/1.1 message (head and Content-Length body).
fn read_request(conn: &mut impl Read) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = conn.read(&mut chunk).ok().filter(|n| *n > 0)?;
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(buf);
        }
        let n = conn.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
}

impl FaultProxy {
    fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(Mutex::new(Mode::Pass));
        let hanging = Arc::new(AtomicU64::new(0));
        let (m, h) = (mode.clone(), hanging.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (m, h) = (m.clone(), h.clone());
                std::thread::spawn(move || serve_fault(conn, upstream, &m, &h));
            }
        });
        FaultProxy { port, mode, hanging }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }
}

fn serve_fault(mut conn: std::net::TcpStream, upstream: u16, mode: &Mutex<Mode>, hanging: &AtomicU64) {
    // One request at a time per connection; the mode is read per request.
    while let Some(req) = read_request(&mut conn) {
        let m = *mode.lock().unwrap();
        match m {
            Mode::Hang => {
                hanging.fetch_add(1, Ordering::SeqCst);
                // Until the client gives up and closes.
                let mut sink = [0u8; 1024];
                while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
                hanging.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            Mode::CloseMidResponse => {
                let _ = conn.write_all(b"HTTP/1.1 20");
                let _ = conn.shutdown(std::net::Shutdown::Both);
                return;
            }
            Mode::Pass | Mode::Garbage => {
                let Ok(mut up) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else { return };
                if up.write_all(&req).is_err() {
                    return;
                }
                let Some(answer) = read_request(&mut up) else { return };
                let reply = if m == Mode::Garbage {
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 9\r\n\r\n\xff\x00garbage".to_vec()
                } else {
                    answer
                };
                if conn.write_all(&reply).is_err() {
                    return;
                }
            }
        }
    }
}

/// Socket file descriptors of a process.
fn sockets_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn receivers_that_hang_close_mid_response_or_answer_garbage_lose_nothing() {
    const N: usize = 20;
    let dir = TempDir::new("faults-recv");
    let prom = Prometheus::start("");
    let proxy = FaultProxy::start(prom.port);
    let target = Target::start(N);
    let agent = Agent::start(
        dir.path(),
        "recv",
        &format!(
            r#"data_dir = "{data}"
scrape_interval = "1s"
[node]
enabled = false
[ebpf]
enabled = false
[docker]
enabled = false
[[scrape]]
job_name = "recv"
targets = ["127.0.0.1:{port}"]
[[remote_write]]
name = "misbehaving"
url = "{url}"
timeout = "1s"
[remote_write.queue_config]
batch_send_deadline = "200ms"
max_backoff = "500ms"
"#,
            data = dir.path().join("data").display(),
            port = target.port,
            url = proxy.url(),
        ),
    );
    let m = |s: &str| agent.metric(s);
    let pid = agent._proc.pid();
    wait_for(Duration::from_secs(20), || (samples_in(&prom, "fault_gauge").0 >= 2 * N).then_some(()))
        .unwrap_or_else(|| panic!("nothing reached Prometheus; log:\n{}", agent.log_text()));
    let baseline = sockets_of(pid);

    // A receiver that accepts and never answers: each request times out
    // after 1 s, is retried, and its connection is closed (not piled up).
    proxy.set(Mode::Hang);
    let sent_before = m("vantage_remote_write_samples_sent_total{endpoint=\"misbehaving\"}");
    std::thread::sleep(Duration::from_secs(6));
    assert!(proxy.hanging.load(Ordering::SeqCst) <= 1, "hung connections left open by the agent");
    assert!(sockets_of(pid) <= baseline + 2, "sockets {} after hangs, {baseline} before", sockets_of(pid));
    assert_eq!(m("vantage_remote_write_samples_sent_total{endpoint=\"misbehaving\"}"), sent_before);
    assert!(m("vantage_remote_write_samples_pending{endpoint=\"misbehaving\"}") >= N as f64, "the queue holds");
    assert!(agent.log_text().contains("timed out") || agent.log_text().contains("timeout"), "{}", agent.log_text());

    // One that closes in the middle of its answer: a network error, retried.
    proxy.set(Mode::CloseMidResponse);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(m("vantage_remote_write_samples_sent_total{endpoint=\"misbehaving\"}"), sent_before);

    // One that answers 200 with garbage: a 2xx is an acknowledgement
    // whatever its body (the protocol's rule); the request did reach
    // Prometheus behind it, so nothing is lost.
    proxy.set(Mode::Garbage);
    wait_for(Duration::from_secs(15), || {
        (m("vantage_remote_write_samples_sent_total{endpoint=\"misbehaving\"}") > sent_before).then_some(())
    })
    .unwrap_or_else(|| panic!("nothing acknowledged by a 200 with garbage; log:\n{}", agent.log_text()));
    std::thread::sleep(Duration::from_secs(2));
    proxy.set(Mode::Pass);

    let served = target.stop();
    wait_for(Duration::from_secs(30), || {
        (m("vantage_remote_write_samples_pending{endpoint=\"misbehaving\"}") == 0.0
            && samples_in(&prom, "fault_gauge").0 as u64 >= served * N as u64)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("did not drain: {:?}; log:\n{}", samples_in(&prom, "fault_gauge").0, agent.log_text()));
    let (total, per) = samples_in(&prom, "fault_gauge");
    assert_eq!(per.len(), N);
    assert!(per.values().all(|n| *n as u64 == served), "served {served}: {per:?}");
    assert_eq!(total as u64, served * N as u64, "samples lost: 0");
    assert!(m("vantage_remote_write_samples_retried_total{endpoint=\"misbehaving\"}") > 0.0);
    for reason in ["wal_error", "wal_full", "disk_full", "out_of_order", "rejected", "invalid"] {
        assert_eq!(
            m(&format!("vantage_remote_write_samples_dropped_total{{endpoint=\"misbehaving\",reason=\"{reason}\"}}")),
            0.0,
            "{reason}"
        );
    }
}

#[test]
fn loki_429_with_retry_after_and_500_for_a_while_lose_no_line_and_wait_as_asked() {
    let dir = TempDir::new("faults-loki");
    let loki = Loki::start();
    let log = dir.path().join("app.log");
    let agent = Agent::start(
        dir.path(),
        "loki",
        &format!(
            r#"data_dir = "{data}"
[node]
enabled = false
[ebpf]
enabled = false
[docker]
enabled = false
[loki]
url = "{url}"
batch_wait = "100ms"
min_backoff = "100ms"
max_backoff = "200ms"
[[logs.files]]
name = "app"
paths = ["{log}"]
"#,
            data = dir.path().join("data").display(),
            url = loki.url(),
            log = log.display(),
        ),
    );
    // Two 429s asking for 2 s each, then four 500s.
    loki.set_retry_after(2);
    loki.script(&[(429, "slow down"), (429, "slow down"), (500, "ingester down"), (500, "x"), (500, "x"), (500, "x")]);
    let mut writer = Writer::start(&log, Duration::from_millis(20));
    std::thread::sleep(Duration::from_secs(2));
    let written = writer.stop();
    wait_for(Duration::from_secs(30), || (loki.count() as u64 >= written).then_some(()))
        .unwrap_or_else(|| panic!("{} of {written} lines; log:\n{}", loki.count(), agent.log_text()));
    std::thread::sleep(Duration::from_millis(500));
    let at = loki.refused_at();
    assert_eq!(at.len(), 6, "every scripted error was met");
    // Retry-After is honoured (the agent's own backoff is 100-200 ms here).
    assert!(at[1] - at[0] >= Duration::from_millis(1900), "second try {:?} after a Retry-After of 2 s", at[1] - at[0]);
    assert!(at[2] - at[1] >= Duration::from_millis(1900), "third try {:?} after a Retry-After of 2 s", at[2] - at[1]);
    let mut lines: Vec<String> = loki.entries().into_iter().map(|e| e.line).collect();
    assert_eq!(lines.len() as u64, written, "no line lost, none twice");
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len() as u64, written);
    assert_eq!(agent.metric("vantage_loki_requests_failed_total"), 6.0);
}

#[test]
fn twenty_sigkills_while_metrics_and_logs_flow_and_receivers_flap_lose_nothing() {
    use vantage_tests::receiver::{Receiver, Reply};
    const N: usize = 5;
    const KILLS: u64 = 20;
    let dir = TempDir::new("faults-kill");
    let target = Target::start(N);
    let started = std::time::Instant::now();
    // remote_write flaps: 503 for one second in three.
    let recv = Receiver::start(Box::new(move |_, _| {
        if started.elapsed().as_secs() % 3 == 2 {
            Reply::Status(503, "flapping".into(), vec![])
        } else {
            Reply::Ok
        }
    }));
    let loki = Arc::new(Loki::start());
    let log = dir.path().join("app.log");
    let mut writer = Writer::start(&log, Duration::from_millis(10));
    let config = format!(
        r#"data_dir = "{data}"
scrape_interval = "200ms"
[node]
enabled = false
[ebpf]
enabled = false
[docker]
enabled = false
[[scrape]]
job_name = "kill"
targets = ["127.0.0.1:{port}"]
[[remote_write]]
name = "kill"
url = "{url}"
[remote_write.queue_config]
batch_send_deadline = "100ms"
max_samples_per_send = 50
capacity = 50
min_backoff = "50ms"
max_backoff = "200ms"
[loki]
url = "{loki}"
batch_wait = "100ms"
min_backoff = "50ms"
max_backoff = "200ms"
[[logs.files]]
name = "app"
paths = ["{log}"]
[logs]
positions_sync_period = "200ms"
"#,
        data = dir.path().join("data").display(),
        port = target.port,
        url = recv.url(),
        loki = loki.url(),
        log = log.display(),
    );
    // Loki flaps too: down for 700 ms every 2 s.
    let stop_flap = Arc::new(AtomicBool::new(false));
    let flapper = {
        let (loki, stop) = (loki.clone(), stop_flap.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1300));
                loki.set_down(true);
                std::thread::sleep(Duration::from_millis(700));
                loki.set_down(false);
            }
        })
    };
    // Moments from a fixed xorshift sequence: 300 ms to 1.5 s after ready.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..KILLS {
        let agent = Agent::start(dir.path(), &format!("kill{i}"), &config);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_millis(300 + x % 1200));
        drop(agent); // SIGKILL
    }
    stop_flap.store(true, Ordering::SeqCst);
    flapper.join().unwrap();
    loki.set_down(false);
    let agent = Agent::start(dir.path(), "final", &config);
    std::thread::sleep(Duration::from_secs(1));
    let served = target.stop();
    let written = writer.stop();
    wait_for(Duration::from_secs(60), || {
        (agent.metric("vantage_remote_write_samples_pending{endpoint=\"kill\"}") == 0.0
            && agent.metric("vantage_loki_entries_pending") == 0.0
            && loki.count() as u64 >= written)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("did not drain: {} of {written} lines; log:\n{}", loki.count(), agent.log_text()));
    std::thread::sleep(Duration::from_secs(1));

    // Metrics: per series, what the receiver accepted.
    let mut per: HashMap<String, Vec<i64>> = HashMap::new();
    let mut largest_request = 0;
    for r in recv.requests().iter().filter(|r| r.status == 204) {
        largest_request = largest_request.max(r.series.iter().map(|s| s.samples.len()).sum::<usize>());
        for s in r.series.iter().filter(|s| s.label("__name__") == Some("fault_gauge")) {
            // Scrapes only: the final agent's scrape of the stopped target
            // (503) sends stale markers, which are no scrape.
            let scraped = s.samples.iter().filter(|(_, v)| v.to_bits() != STALE_NAN_BITS);
            per.entry(s.key()).or_default().extend(scraped.map(|(t, _)| *t));
        }
    }
    assert_eq!(per.len(), N);
    let mut sample_dups = 0;
    let mut distinct_sets = Vec::new();
    for ts in per.values() {
        let mut d = ts.clone();
        d.sort();
        d.dedup();
        sample_dups += ts.len() - d.len();
        distinct_sets.push(d);
    }
    assert!(distinct_sets.iter().all(|d| *d == distinct_sets[0]), "every series has the same scrapes");
    let scrapes = distinct_sets[0].len() as u64;
    // A scrape whose body was served but that a kill cut before it reached
    // the WAL was never accepted: at most one per kill. Everything that
    // reached the WAL arrived.
    assert!(scrapes <= served && scrapes + KILLS >= served, "{scrapes} scrapes arrived of {served} served");
    // Duplicates: at most the request in flight at each kill.
    assert!(
        sample_dups <= KILLS as usize * largest_request,
        "{sample_dups} samples twice, bound {KILLS} x {largest_request}"
    );

    // Logs: every line written arrived; duplicates within one request per kill.
    let lines: Vec<String> = loki.entries().into_iter().map(|e| e.line).collect();
    let mut distinct = lines.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len() as u64, written, "lines lost");
    let largest_push = loki.requests().iter().map(|r| r.entries).max().unwrap_or(0);
    let line_dups = lines.len() - distinct.len();
    assert!(line_dups <= KILLS as usize * largest_push, "{line_dups} lines twice, bound {KILLS} x {largest_push}");
    eprintln!(
        "kills {KILLS}: scrapes served {served}, arrived {scrapes}; samples sent twice {sample_dups} (largest request {largest_request}); lines {written}, sent twice {line_dups} (largest push {largest_push})"
    );
}

#[test]
fn container_log_positions_are_pruned_when_the_container_is_removed() {
    use vantage_tests::docker::{busybox_image, docker, ensure_dockerd};
    ensure_dockerd();
    let image = busybox_image();
    let dir = TempDir::new("faults-prune");
    let loki = Loki::start();
    let (keep, gone) = (format!("faults-keep-{}", std::process::id()), format!("faults-gone-{}", std::process::id()));
    struct Cleanup(Vec<String>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for n in &self.0 {
                let _ = Command::new("docker").args(["rm", "-f", n]).output();
            }
        }
    }
    let _cleanup = Cleanup(vec![keep.clone(), gone.clone()]);
    let script = "i=0; while true; do echo \"line $i\"; i=$((i+1)); sleep 0.1; done";
    let keep_id = docker(&["run", "-d", "--network", "none", "--name", &keep, image, "/bin/sh", "-c", script]);
    let gone_id = docker(&["run", "-d", "--network", "none", "--name", &gone, image, "/bin/sh", "-c", script]);
    let data = dir.path().join("data");
    let agent = Agent::start(
        dir.path(),
        "prune",
        &format!(
            r#"data_dir = "{data}"
[node]
enabled = false
[ebpf]
enabled = false
[docker]
enabled = false
[loki]
url = "{url}"
batch_wait = "100ms"
[logs]
positions_sync_period = "200ms"
[logs.docker]
enabled = true
include = "^faults-(keep|gone)-{pid}$"
refresh_interval = "1s"
"#,
            data = data.display(),
            url = loki.url(),
            pid = std::process::id(),
        ),
    );
    let saved = || -> Vec<String> {
        let text = std::fs::read_to_string(data.join("positions.json")).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        v["containers"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["id"].as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    wait_for(Duration::from_secs(20), || {
        let s = saved();
        (s.contains(&keep_id) && s.contains(&gone_id)).then_some(())
    })
    .unwrap_or_else(|| panic!("both containers' positions saved; got {:?}; log:\n{}", saved(), agent.log_text()));
    // Stopped keeps its position (a restart continues after it); removed drops it.
    docker(&["stop", "-t", "1", &keep]);
    docker(&["rm", "-f", &gone]);
    wait_for(Duration::from_secs(10), || (!saved().contains(&gone_id)).then_some(()))
        .unwrap_or_else(|| panic!("the removed container's position is still saved: {:?}", saved()));
    std::thread::sleep(Duration::from_secs(2));
    assert!(saved().contains(&keep_id), "a stopped container keeps its position: {:?}", saved());
}

/// Terminates TLS on a loopback port and passes each request to `upstream`
/// (plain HTTP), as a TLS front of a Loki would.
fn tls_front(upstream: u16, cert: &Path, key: &Path) -> u16 {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(cert).unwrap().map(|c| c.unwrap()).collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let config = Arc::new(rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let mut tls = rustls::StreamOwned::new(rustls::ServerConnection::new(config).unwrap(), sock);
                let Ok(mut up) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else { return };
                while let Some(req) = read_request(&mut tls) {
                    let Some(answer) = up.write_all(&req).ok().and_then(|_| read_request(&mut up)) else { return };
                    if tls.write_all(&answer).and_then(|_| tls.flush()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn loki_over_tls_with_ca_file_delivers_and_refuses_without_it() {
    let dir = TempDir::new("faults-loki-tls");
    let (ca, cert, key) = vantage_tests::receiver::make_certs(dir.path());
    let loki = Loki::start();
    let port = tls_front(loki.port, &cert, &key);
    let log = dir.path().join("app.log");
    let config = |tag: &str, tls: &str| {
        format!(
            r#"data_dir = "{data}"
[node]
enabled = false
[ebpf]
enabled = false
[docker]
enabled = false
[loki]
url = "https://localhost:{port}"
batch_wait = "100ms"
min_backoff = "100ms"
max_backoff = "300ms"
{tls}
[[logs.files]]
name = "app"
paths = ["{log}"]
"#,
            data = dir.path().join(tag).display(),
            log = log.display(),
        )
    };
    std::fs::write(&log, (0..100).map(|i| format!("tls line {i}\n")).collect::<String>()).unwrap();
    // Without the CA: the certificate is refused, nothing is sent, it says why.
    let agent = Agent::start(dir.path(), "no-ca", &config("data-no-ca", ""));
    let why = wait_for(Duration::from_secs(10), || {
        let e = agent.status()["sinks"]["loki"]["last_error"].as_str().unwrap_or_default().to_string();
        (!e.is_empty()).then_some(e)
    })
    .unwrap_or_else(|| panic!("no Loki error on the status page; log:\n{}", agent.log_text()));
    assert!(why.to_lowercase().contains("certificate") || why.contains("tls") || why.contains("connect"), "{why}");
    assert_eq!(loki.count(), 0);
    drop(agent);
    // With ca_file: every line, once.
    let ca_toml = format!("[loki.tls]\nca_file = \"{}\"", ca.display());
    let agent = Agent::start(dir.path(), "ca", &config("data-ca", &ca_toml));
    wait_for(Duration::from_secs(20), || (loki.count() >= 100).then_some(()))
        .unwrap_or_else(|| panic!("{} of 100 lines over TLS; log:\n{}", loki.count(), agent.log_text()));
    std::thread::sleep(Duration::from_millis(500));
    let mut lines: Vec<String> = loki.entries().into_iter().map(|e| e.line).collect();
    lines.sort();
    lines.dedup();
    assert_eq!((loki.count(), lines.len()), (100, 100));
}
