//! remote_write end to end: the real agent binary pushing node series to a
//! real Prometheus 2.42, a real VictoriaMetrics, and a scripted receiver
//! that decodes the real wire format and answers with faults on cue.
//!
//! The node source reads a fake procfs (a `loadavg` file the test writes),
//! so values are known exactly, at a 1 s interval.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vantage_tests::prometheus::Prometheus;
use vantage_tests::receiver::{self, Received, Receiver, Reply, VictoriaMetrics};
use vantage_tests::{free_port, vantage_bin, wait_for, Proc, TempDir};

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A running agent; its data directory outlives it (restarts reuse it).
struct Agent {
    proc: Proc,
    port: u16,
    log: PathBuf,
}

impl Agent {
    /// Starts `vantage run` with the node source on a fake procfs at 1 s,
    /// eBPF and Docker off, external labels, and `endpoints` (TOML
    /// `[[remote_write]]` blocks).
    fn start(dir: &Path, job: &str, endpoints: &str) -> Agent {
        let proc_dir = dir.join("proc");
        std::fs::create_dir_all(&proc_dir).unwrap();
        if !proc_dir.join("loadavg").exists() {
            std::fs::write(proc_dir.join("loadavg"), "1.25 2.5 3.75 1/100 1234\n").unwrap();
        }
        let port = free_port();
        let config = format!(
            r#"
[agent]
listen_addr = "127.0.0.1:{port}"
data_dir = "{data}"
scrape_interval = "1s"
[agent.external_labels]
cluster = "test"
server_name = "host-a"
[node]
interval = "1s"
# Only loadavg: the test's procfs holds just that file, so values are exact.
enable = ["loadavg"]
job = "{job}"
instance = "host-a:9100"
proc_path = "{proc}"
[ebpf]
enabled = false
[docker]
enabled = false
{endpoints}
"#,
            data = dir.join("data").display(),
            proc = proc_dir.display(),
        );
        let path = dir.join("vantage.toml");
        std::fs::write(&path, config).unwrap();
        static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let log = dir.join(format!("vantage-{}.log", RUN.fetch_add(1, Ordering::Relaxed)));
        let mut cmd = Command::new(vantage_bin());
        cmd.args(["run", "--config"]).arg(&path).env("RUST_LOG", "info");
        let proc = Proc::spawn("vantage", cmd, &log);
        let agent = Agent { proc, port, log };
        let up = wait_for(Duration::from_secs(20), || {
            vantage_tests::http_get(&agent.url("/-/healthy")).filter(|(s, _)| *s == 200)
        });
        assert!(up.is_some(), "agent did not start; log:\n{}", agent.log_text());
        agent
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The value of a self-metric series written exactly as `series`.
    fn metric(&self, series: &str) -> Option<f64> {
        let (_, text) = vantage_tests::http_get(&self.url("/metrics"))?;
        vantage_tests::parse_text(&text).into_iter().find(|(s, _)| s == series).map(|(_, v)| v)
    }
}

fn set_load(dir: &Path, load1: f64) {
    std::fs::write(dir.join("proc/loadavg"), format!("{load1} 2.5 3.75 1/100 1234\n")).unwrap();
}

/// Checks the protocol rules every request must follow.
fn check_requests(reqs: &[Received], version: &str) {
    assert!(!reqs.is_empty(), "no request arrived");
    for r in reqs {
        assert!(r.error.is_none(), "request {} did not decode: {:?}", r.n, r.error);
        assert_eq!(r.header("content-encoding"), Some("snappy"), "request {}", r.n);
        let ctype = if version == "0.1.0" {
            "application/x-protobuf"
        } else {
            "application/x-protobuf;proto=io.prometheus.write.v2.Request"
        };
        assert_eq!(r.header("content-type"), Some(ctype), "request {}", r.n);
        assert_eq!(r.header("x-prometheus-remote-write-version"), Some(version), "request {}", r.n);
        assert!(
            r.header("user-agent").is_some_and(|u| u.starts_with("vantage/")),
            "request {}: {:?}",
            r.n,
            r.header("user-agent")
        );
        for s in &r.series {
            let names: Vec<&str> = s.labels.iter().map(|(n, _)| n.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(names, sorted, "labels sorted and unique in request {}: {:?}", r.n, s.labels);
            assert!(s.labels.iter().all(|(n, v)| !n.is_empty() && !v.is_empty()), "empty label in {:?}", s.labels);
            assert!(s.label("__name__").is_some_and(|n| !n.is_empty()), "no __name__ in {:?}", s.labels);
            assert_eq!(s.label("cluster"), Some("test"), "external label missing on {:?}", s.labels);
            assert_eq!(s.label("server_name"), Some("host-a"), "external label missing on {:?}", s.labels);
            assert!(!s.samples.is_empty());
        }
    }
}

/// Per series, timestamps over the accepted requests in arrival order must
/// strictly increase; returns the number of samples checked.
fn check_order(reqs: &[Received]) -> usize {
    let mut reqs: Vec<&Received> = reqs.iter().filter(|r| (200..300).contains(&r.status)).collect();
    reqs.sort_by_key(|r| r.arrived);
    let mut last: std::collections::HashMap<String, i64> = Default::default();
    let mut n = 0;
    for r in reqs {
        for s in &r.series {
            for (ts, _) in &s.samples {
                let prev = last.insert(s.key(), *ts);
                assert!(
                    prev.is_none_or(|p| *ts > p),
                    "series {} went from {prev:?} to {ts} in request {}",
                    s.key(),
                    r.n
                );
                n += 1;
            }
        }
    }
    n
}

/// Gaps (start, end) between consecutive samples longer than `max` seconds
/// once any time the whole machine stalled inside them is taken out
/// (`watch_stalls`, started by each scenario).
fn gaps(samples: &[(f64, f64)], max: f64) -> Vec<(f64, f64)> {
    let mut found = Vec::new();
    for w in samples.windows(2) {
        let (a, b) = (w[0].0, w[1].0);
        let stalled = vantage_tests::stalled_within(a, b);
        if b - a - stalled > max {
            found.push((a, b));
        } else if b - a > max {
            eprintln!("gap {a}..{b} ({:.1} s) excused: the machine ran nothing for {stalled:.1} s of it", b - a);
        }
    }
    found
}

#[test]
fn series_arrive_with_labels_values_and_headers() {
    let dir = TempDir::new("rw-basic");
    let prom = Prometheus::start("");
    let recv = Receiver::start(Box::new(|_, _| Reply::Ok));
    let started = now_s();
    let agent = Agent::start(
        dir.path(),
        "rw-basic",
        &format!(
            r#"
[[remote_write]]
name = "prom"
url = "{}"
[remote_write.queue_config]
batch_send_deadline = "1s"
[[remote_write]]
name = "script"
url = "{}"
headers = {{ "X-Scope-OrgID" = "tenant-1" }}
[remote_write.queue_config]
batch_send_deadline = "1s"
"#,
            prom.remote_write_url(),
            recv.url()
        ),
    );
    let load = wait_for(Duration::from_secs(20), || prom.query("node_load1{job=\"rw-basic\"}").into_iter().next())
        .unwrap_or_else(|| panic!("node_load1 never reached Prometheus; log:\n{}", agent.log_text()));
    assert_eq!(load["value"][1], "1.25");
    assert_eq!(load["metric"]["cluster"], "test");
    assert_eq!(load["metric"]["server_name"], "host-a");
    assert_eq!(load["metric"]["instance"], "host-a:9100");
    for (q, v) in [("node_load5", "2.5"), ("node_load15", "3.75"), ("up", "1")] {
        let r = wait_for(Duration::from_secs(10), || {
            prom.query(&format!("{q}{{job=\"rw-basic\",cluster=\"test\"}}")).into_iter().next()
        });
        assert_eq!(r.expect(q)["value"][1], v, "{q}");
    }
    set_load(dir.path(), 4.5);
    let changed =
        wait_for(Duration::from_secs(10), || prom.query("node_load1{job=\"rw-basic\"} == 4.5").into_iter().next());
    assert!(changed.is_some(), "new value did not arrive");

    // Prometheus stored exactly what the scripted receiver got. Each
    // endpoint has its own queue, so the receiver may get a sample a moment
    // after Prometheus did: read Prometheus first, then wait (10 s) for the
    // receiver to hold every sample it stored.
    std::thread::sleep(Duration::from_secs(2));
    let stored = prom.raw_samples("node_load1{job=\"rw-basic\"}", "5m");
    assert_eq!(stored.len(), 1);
    let load1 = |reqs: &[Received]| -> Vec<(i64, f64)> {
        reqs.iter()
            .flat_map(|r| r.series.iter())
            .filter(|s| s.label("__name__") == Some("node_load1"))
            .flat_map(|s| s.samples.iter().copied())
            .collect()
    };
    let missing = |seen: &[(i64, f64)]| -> Vec<(i64, f64)> {
        stored[0].1.iter().map(|(ts, v)| ((ts * 1000.0).round() as i64, *v)).filter(|s| !seen.contains(s)).collect()
    };
    let reqs = wait_for(Duration::from_secs(10), || {
        let reqs = recv.requests();
        missing(&load1(&reqs)).is_empty().then_some(reqs)
    })
    .unwrap_or_else(|| {
        panic!("Prometheus has {:?} that the other endpoint never got (10 s after)", missing(&load1(&recv.requests())))
    });
    check_requests(&reqs, "0.1.0");
    assert!(reqs.iter().all(|r| r.header("x-scope-orgid") == Some("tenant-1")));
    assert!(check_order(&reqs) >= 20);
    let ended = now_s() + 1.0;
    for r in &reqs {
        for s in &r.series {
            for (ts, _) in &s.samples {
                let t = *ts as f64 / 1000.0;
                assert!(t >= started - 1.0 && t <= ended, "timestamp {t} outside [{started}, {ended}]");
            }
        }
    }
    assert!(stored[0].1.iter().any(|(_, v)| *v == 1.25) && stored[0].1.iter().any(|(_, v)| *v == 4.5));

    // Self-metrics per endpoint.
    let sent = agent.metric("vantage_remote_write_samples_sent_total{endpoint=\"prom\"}").unwrap();
    assert!(sent >= 20.0, "sent {sent}");
    assert!(agent.metric("vantage_remote_write_wal_segments{endpoint=\"script\"}").unwrap() >= 1.0);
    assert!(agent.metric("vantage_remote_write_last_send_timestamp_seconds{endpoint=\"prom\"}").unwrap() > started);
    assert!(agent.metric("vantage_remote_write_request_duration_seconds_count{endpoint=\"prom\"}").unwrap() >= 1.0);

    // SIGTERM: the agent flushes and exits within its grace period.
    agent.proc.signal(libc::SIGTERM);
    let mut agent = agent;
    let status = agent.proc.wait_timeout(Duration::from_secs(6));
    assert!(status.is_some_and(|s| s.success()), "agent did not exit cleanly; log:\n{}", agent.log_text());
}

#[test]
fn status_500_is_resent_with_same_timestamps_400_is_dropped_429_waits() {
    let dir = TempDir::new("rw-faults");
    let recv = Receiver::start(Box::new(|n, _| match n {
        0 => Reply::Status(500, "try later".into(), vec![]),
        2 => Reply::Status(400, "sample rejected: bad thing".into(), vec![]),
        4 => Reply::Status(429, "slow down".into(), vec![("Retry-After".into(), "2".into())]),
        _ => Reply::Ok,
    }));
    let agent = Agent::start(
        dir.path(),
        "rw-faults",
        &format!(
            "[[remote_write]]\nname = \"faulty\"\nurl = \"{}\"\n[remote_write.queue_config]\nbatch_send_deadline = \"1s\"\n",
            recv.url()
        ),
    );
    let got = wait_for(Duration::from_secs(30), || Some(recv.requests()).filter(|r| r.len() >= 8));
    let reqs = got.unwrap_or_else(|| panic!("too few requests; log:\n{}", agent.log_text()));
    check_requests(&reqs, "0.1.0");
    // 500: the same samples again, soon (backoff starts at 30 ms).
    assert_eq!(reqs[0].status, 500);
    assert_eq!(reqs[1].series, reqs[0].series, "the retry after 500 must carry the same samples");
    assert!(reqs[1].arrived - reqs[0].arrived < Duration::from_secs(1));
    // 400: never again.
    assert_eq!(reqs[2].status, 400);
    let rejected: Vec<(String, i64)> =
        reqs[2].series.iter().flat_map(|s| s.samples.iter().map(move |(ts, _)| (s.key(), *ts))).collect();
    assert!(!rejected.is_empty());
    for r in &reqs[3..] {
        for s in &r.series {
            for (ts, _) in &s.samples {
                assert!(!rejected.contains(&(s.key(), *ts)), "request {} re-sent a sample answered 400", r.n);
            }
        }
    }
    // 429 with Retry-After: 2.
    assert_eq!(reqs[4].status, 429);
    assert_eq!(reqs[5].series, reqs[4].series);
    let waited = reqs[5].arrived - reqs[4].arrived;
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}, Retry-After said 2 s");
    check_order(&reqs);

    let log = agent.log_text();
    assert!(
        log.contains("sample rejected: bad thing") && log.contains("faulty"),
        "the 400 body and endpoint must be logged:\n{log}"
    );
    let dropped = agent.metric("vantage_remote_write_samples_dropped_total{endpoint=\"faulty\",reason=\"rejected\"}");
    assert_eq!(dropped, Some(rejected.len() as f64));
    assert_eq!(
        agent.metric("vantage_remote_write_samples_failed_total{endpoint=\"faulty\"}"),
        Some(rejected.len() as f64)
    );
    let retried = agent.metric("vantage_remote_write_samples_retried_total{endpoint=\"faulty\"}").unwrap();
    let first_two: usize = [0, 4].iter().map(|&i| reqs[i].series.iter().map(|s| s.samples.len()).sum::<usize>()).sum();
    assert_eq!(retried, first_two as f64);
}

#[test]
fn wrong_password_is_dropped_counted_and_never_printed() {
    let dir = TempDir::new("rw-auth");
    let password = "Zq9-hunter2-not-for-logs";
    let seen_auth = Arc::new(Mutex::new(Vec::new()));
    let seen = seen_auth.clone();
    let recv = Receiver::start(Box::new(move |_, r: &Received| {
        seen.lock().unwrap().push(r.header("authorization").unwrap_or("").to_string());
        Reply::Status(401, "invalid username or password".into(), vec![])
    }));
    let pw_file = dir.write("pw", &format!("{password}\n"));
    let agent = Agent::start(
        dir.path(),
        "rw-auth",
        &format!(
            "[[remote_write]]\nname = \"authfail\"\nurl = \"{}\"\nbasic_auth = {{ username = \"agent\", password_file = \"{}\" }}\n[remote_write.queue_config]\nbatch_send_deadline = \"1s\"\n",
            recv.url(),
            pw_file.display()
        ),
    );
    let reqs = wait_for(Duration::from_secs(20), || Some(recv.requests()).filter(|r| r.len() >= 4)).expect("requests");
    // Basic auth carried the file's password (base64 of agent:<password>).
    let expected = format!("Basic {}", base64(&format!("agent:{password}")));
    assert!(seen_auth.lock().unwrap().iter().all(|a| *a == expected));
    // Dropped, not retried: no sample is sent twice.
    let mut all: Vec<(String, i64)> = reqs
        .iter()
        .flat_map(|r| r.series.iter().flat_map(|s| s.samples.iter().map(move |(t, _)| (s.key(), *t))))
        .collect();
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), total, "a sample answered 401 was sent again");
    let dropped =
        agent.metric("vantage_remote_write_samples_dropped_total{endpoint=\"authfail\",reason=\"rejected\"}").unwrap();
    assert!(dropped >= total as f64 - 20.0 && dropped > 0.0, "dropped {dropped} of {total}");
    let (_, status) = vantage_tests::http_get(&agent.url("/api/v1/status")).unwrap();
    let (_, metrics) = vantage_tests::http_get(&agent.url("/metrics")).unwrap();
    let mut agent = agent;
    agent.proc.signal(libc::SIGTERM);
    agent.proc.wait_timeout(Duration::from_secs(6));
    let log = agent.log_text();
    assert!(log.contains("authfail") && log.contains("401") && log.contains("invalid username or password"), "{log}");
    for (what, text) in [("log", &log), ("status API", &status), ("metrics", &metrics)] {
        assert!(!text.contains(password), "the password leaked into the {what}");
        assert!(!text.contains(&base64(&format!("agent:{password}"))), "the encoded password leaked into the {what}");
    }
}

fn base64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn tls_works_with_ca_file_and_fails_without() {
    let dir = TempDir::new("rw-tls");
    let (ca, cert, key) = receiver::make_certs(dir.path());
    let with_ca = Receiver::start_tls(Box::new(|_, _| Reply::Ok), &cert, &key);
    let without_ca = Receiver::start_tls(Box::new(|_, _| Reply::Ok), &cert, &key);
    let agent = Agent::start(
        dir.path(),
        "rw-tls",
        &format!(
            r#"
[[remote_write]]
name = "with-ca"
url = "{}"
tls = {{ ca_file = "{}" }}
[remote_write.queue_config]
batch_send_deadline = "1s"
[[remote_write]]
name = "no-ca"
url = "{}"
[remote_write.queue_config]
batch_send_deadline = "1s"
"#,
            with_ca.url(),
            ca.display(),
            without_ca.url()
        ),
    );
    let ok = wait_for(Duration::from_secs(20), || Some(with_ca.requests()).filter(|r| r.len() >= 3));
    assert!(ok.is_some(), "no request over TLS with ca_file; log:\n{}", agent.log_text());
    check_requests(&with_ca.requests(), "0.1.0");
    assert_eq!(with_ca.tls_failures(), 0);
    assert!(without_ca.requests().is_empty(), "a request got through without the CA");
    assert!(without_ca.tls_failures() >= 1);
    let log = agent.log_text();
    assert!(
        log.lines().any(|l| l.contains("no-ca") && l.contains("retry")),
        "the failing endpoint must be named:\n{log}"
    );
}

#[test]
fn protocol_2_0_and_fallback_to_1_0_on_415() {
    let dir = TempDir::new("rw-v2");
    let v2 = Receiver::start(Box::new(|_, _| Reply::Ok));
    let v1_only = Receiver::start(Box::new(|_, _| Reply::Only1_0));
    let agent = Agent::start(
        dir.path(),
        "rw-v2",
        &format!(
            r#"
[[remote_write]]
name = "v2"
url = "{}"
protobuf_message = "v2"
[remote_write.queue_config]
batch_send_deadline = "1s"
[[remote_write]]
name = "v1-only"
url = "{}"
protobuf_message = "v2"
[remote_write.queue_config]
batch_send_deadline = "1s"
"#,
            v2.url(),
            v1_only.url()
        ),
    );
    let reqs = wait_for(Duration::from_secs(20), || Some(v2.requests()).filter(|r| r.len() >= 3))
        .unwrap_or_else(|| panic!("no v2 requests; log:\n{}", agent.log_text()));
    assert!(reqs.iter().all(|r| r.v2));
    check_requests(&reqs, "2.0.0");
    check_order(&reqs);
    let old = wait_for(Duration::from_secs(20), || Some(v1_only.requests()).filter(|r| r.len() >= 3)).unwrap();
    assert!(old[0].v2 && old[0].status == 415);
    assert!(old[1..].iter().all(|r| !r.v2 && r.status == 204));
    check_requests(&old[1..], "0.1.0");
    // The batch answered 415 went out again as 1.0, same samples.
    assert_eq!(old[1].series, old[0].series);
    assert!(agent.log_text().contains("falling back to 1.0"));
}

#[test]
fn per_series_order_with_a_slow_random_receiver() {
    let dir = TempDir::new("rw-order");
    // A small xorshift: sleeps 0-5 s per request.
    let state = Arc::new(Mutex::new(0x2545_f491_4f6c_dd1du64));
    let recv = Receiver::start(Box::new(move |_, _| {
        let mut x = state.lock().unwrap();
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        Reply::SleepThenOk(Duration::from_millis(*x % 5000))
    }));
    let agent = Agent::start(
        dir.path(),
        "rw-order",
        &format!(
            "[[remote_write]]\nname = \"slow\"\nurl = \"{}\"\n[remote_write.queue_config]\nmax_samples_per_send = 2\nbatch_send_deadline = \"200ms\"\nmin_shards = 4\nmax_shards = 4\ncapacity = 4\n",
            recv.url()
        ),
    );
    std::thread::sleep(Duration::from_secs(25));
    let reqs = recv.requests();
    assert!(reqs.len() >= 12, "only {} requests; log:\n{}", reqs.len(), agent.log_text());
    check_requests(&reqs, "0.1.0");
    let n = check_order(&reqs);
    assert!(n >= 20, "{n} samples");
    // Shards really ran in parallel: some requests overlapped (a request
    // arrived while another was still sleeping).
    let distinct_series: std::collections::HashSet<String> =
        reqs.iter().flat_map(|r| r.series.iter().map(|s| s.key())).collect();
    // node_load1/5/15, up, and the loadavg collector's success and duration.
    assert_eq!(distinct_series.len(), 6, "{distinct_series:?}");
}

/// Receiver outages: Prometheus down 60 s with the agent up; Prometheus down
/// 60 s with the agent SIGKILLed and restarted meanwhile; VictoriaMetrics
/// down 30 s next to a Prometheus that stays up. Run in parallel.
#[test]
fn outages_and_agent_kill_leave_no_gap() {
    let failed = Arc::new(AtomicBool::new(false));
    let scenarios: Vec<(&str, fn())> = vec![
        ("prometheus down 60 s", prometheus_down_60s),
        ("prometheus down 60 s, agent killed", prometheus_down_agent_killed),
        ("victoria-metrics down 30 s", victoria_down_30s),
    ];
    let handles: Vec<_> = scenarios
        .into_iter()
        .map(|(name, f)| {
            let failed = failed.clone();
            (
                name,
                std::thread::spawn(move || {
                    if std::panic::catch_unwind(f).is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                }),
            )
        })
        .collect();
    for (name, h) in handles {
        h.join().unwrap_or_else(|_| panic!("{name} thread"));
    }
    assert!(!failed.load(Ordering::Relaxed), "a scenario failed (see its panic above)");
}

/// Waits until `up{job}` in Prometheus has a sample newer than `after`.
fn wait_caught_up(prom: &Prometheus, job: &str, after: f64, limit: Duration) -> bool {
    wait_for(limit, || {
        prom.raw_samples(&format!("up{{job=\"{job}\"}}"), "10m")
            .first()
            .and_then(|(_, s)| s.last().copied())
            .filter(|(t, _)| *t >= after)
    })
    .is_some()
}

fn prometheus_down_60s() {
    vantage_tests::watch_stalls();
    let dir = TempDir::new("rw-out1");
    let mut prom = Prometheus::start("");
    let job = "rw-out1";
    let agent = Agent::start(dir.path(), job, &format!("[[remote_write]]\nname = \"prom\"\nurl = \"{}\"\n[remote_write.queue_config]\nbatch_send_deadline = \"1s\"\n", prom.remote_write_url()));
    let t0 = now_s();
    assert!(wait_caught_up(&prom, job, t0, Duration::from_secs(20)), "first samples; log:\n{}", agent.log_text());
    std::thread::sleep(Duration::from_secs(5));
    receiver::stop_prometheus(&mut prom);
    std::thread::sleep(Duration::from_secs(60));
    receiver::restart_prometheus(&mut prom);
    let back = now_s();
    assert!(wait_caught_up(&prom, job, back, Duration::from_secs(60)), "no catch-up; log:\n{}", agent.log_text());
    let series = prom.raw_samples(&format!("up{{job=\"{job}\"}}"), "10m");
    let samples = &series[0].1;
    let g = gaps(samples, 1.6);
    assert!(
        g.is_empty(),
        "gaps {g:?} in {} samples from {} to {}",
        samples.len(),
        samples[0].0,
        samples.last().unwrap().0
    );
    let span = samples.last().unwrap().0 - samples[0].0;
    assert!(span >= 64.0, "samples span only {span} s across the outage");
    assert!(samples.first().unwrap().0 <= t0 + 1.0);
    assert!(agent.metric("vantage_remote_write_samples_retried_total{endpoint=\"prom\"}").unwrap() > 0.0);
}

fn prometheus_down_agent_killed() {
    vantage_tests::watch_stalls();
    let dir = TempDir::new("rw-out2");
    let mut prom = Prometheus::start("");
    let job = "rw-out2";
    let endpoint = format!(
        "[[remote_write]]\nname = \"prom\"\nurl = \"{}\"\n[remote_write.queue_config]\nbatch_send_deadline = \"1s\"\n",
        prom.remote_write_url()
    );
    let agent = Agent::start(dir.path(), job, &endpoint);
    let t0 = now_s();
    assert!(wait_caught_up(&prom, job, t0, Duration::from_secs(20)), "first samples; log:\n{}", agent.log_text());
    std::thread::sleep(Duration::from_secs(5));
    receiver::stop_prometheus(&mut prom);
    std::thread::sleep(Duration::from_secs(25));
    let killed = now_s();
    agent.proc.signal(libc::SIGKILL);
    drop(agent);
    std::thread::sleep(Duration::from_secs(3));
    let agent = Agent::start(dir.path(), job, &endpoint);
    let restarted = now_s();
    std::thread::sleep(Duration::from_secs(30));
    receiver::restart_prometheus(&mut prom);
    let back = now_s();
    assert!(wait_caught_up(&prom, job, back, Duration::from_secs(60)), "no catch-up; log:\n{}", agent.log_text());
    let samples = prom.raw_samples(&format!("up{{job=\"{job}\"}}"), "10m").remove(0).1;
    let g = gaps(&samples, 1.6);
    // The only gap allowed is the agent's own downtime.
    assert!(g.len() <= 1, "gaps {g:?}");
    for (a, b) in &g {
        assert!(
            *a >= killed - 1.6 && *b <= restarted + 2.0,
            "gap {a}..{b} is not the agent's downtime {killed}..{restarted}"
        );
    }
    assert!(samples.iter().filter(|(t, _)| *t > t0 && *t < killed).count() as f64 >= (killed - t0) - 2.0);
    assert!(agent.log_text().contains("WAL found"), "the restart replayed nothing:\n{}", agent.log_text());
}

fn victoria_down_30s() {
    vantage_tests::watch_stalls();
    let dir = TempDir::new("rw-out3");
    let prom = Prometheus::start("");
    let mut vm = VictoriaMetrics::start();
    let job = "rw-out3";
    let agent = Agent::start(
        dir.path(),
        job,
        &format!(
            "[[remote_write]]\nname = \"prom\"\nurl = \"{}\"\n[remote_write.queue_config]\nbatch_send_deadline = \"1s\"\n[[remote_write]]\nname = \"vm\"\nurl = \"{}\"\n[remote_write.queue_config]\nbatch_send_deadline = \"1s\"\n",
            prom.remote_write_url(),
            vm.remote_write_url()
        ),
    );
    let t0 = now_s();
    assert!(wait_caught_up(&prom, job, t0, Duration::from_secs(20)));
    std::thread::sleep(Duration::from_secs(5));
    vm.stop();
    let down = now_s();
    std::thread::sleep(Duration::from_secs(15));
    // Prometheus keeps receiving while VictoriaMetrics is down.
    assert!(
        wait_caught_up(&prom, job, now_s() - 3.0, Duration::from_secs(5)),
        "Prometheus stalled while VictoriaMetrics was down"
    );
    std::thread::sleep(Duration::from_secs(15));
    vm.restart();
    let back = now_s();
    let caught_up = wait_for(Duration::from_secs(60), || {
        vm.raw_samples(&format!("up{{job=\"{job}\"}}"), "10m")
            .first()
            .and_then(|(_, s)| s.last().copied())
            .filter(|(t, _)| *t >= back)
    });
    assert!(caught_up.is_some(), "VictoriaMetrics never caught up; log:\n{}", agent.log_text());
    std::thread::sleep(Duration::from_secs(3));
    let p = prom.raw_samples(&format!("up{{job=\"{job}\"}}"), "10m").remove(0).1;
    let v = vm.raw_samples(&format!("up{{job=\"{job}\"}}"), "10m").remove(0).1;
    assert!(gaps(&p, 1.6).is_empty(), "Prometheus gaps {:?}", gaps(&p, 1.6));
    assert!(gaps(&v, 1.6).is_empty(), "VictoriaMetrics gaps {:?}", gaps(&v, 1.6));
    assert!(
        v.iter().filter(|(t, _)| *t > down && *t < back).count() >= 25,
        "VictoriaMetrics is missing the outage window"
    );
}

#[test]
fn damaged_wal_tail_is_cut_and_the_rest_is_sent() {
    let dir = TempDir::new("rw-wal");
    // The receiver is down (503) while the WAL fills; then the agent dies.
    let mut recv = Receiver::start(Box::new(|_, _| Reply::Status(503, "down".into(), vec![])));
    let endpoint = format!("[[remote_write]]\nname = \"walrus\"\nurl = \"{}\"\n[remote_write.queue_config]\nbatch_send_deadline = \"1s\"\n", recv.url());
    let agent = Agent::start(dir.path(), "rw-wal", &endpoint);
    let t0 = now_s();
    std::thread::sleep(Duration::from_secs(8));
    agent.proc.signal(libc::SIGKILL);
    let killed = now_s();
    drop(agent);
    // Flip one bit in the last record of the newest segment.
    let wal_dir = dir.path().join("data/remote_write/walrus");
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    let last = segs.last().expect("a WAL segment").clone();
    let mut data = std::fs::read(&last).unwrap();
    assert!(data.len() > 100, "the WAL holds {} bytes", data.len());
    let n = data.len();
    data[n - 3] ^= 0x04;
    std::fs::write(&last, &data).unwrap();
    recv.set_script(Box::new(|_, _| Reply::Ok));
    recv.restart();
    let agent = Agent::start(dir.path(), "rw-wal", &endpoint);
    let before: Vec<i64> = wait_for(Duration::from_secs(20), || {
        let ts: Vec<i64> = recv
            .requests()
            .iter()
            .filter(|r| r.status == 204)
            .flat_map(|r| {
                r.series
                    .iter()
                    .filter(|s| s.label("__name__") == Some("up"))
                    .flat_map(|s| s.samples.iter().map(|(t, _)| *t))
                    .collect::<Vec<_>>()
            })
            .filter(|t| (*t as f64) / 1000.0 < killed)
            .collect();
        Some(ts).filter(|t| t.len() as f64 >= (killed - t0) - 3.0)
    })
    .unwrap_or_else(|| panic!("the WAL before the damage was not sent; log:\n{}", agent.log_text()));
    // One `up` per second before the kill, minus at most the damaged record.
    let mut sorted = before.clone();
    sorted.sort();
    sorted.dedup();
    assert!(sorted.len() as f64 >= (killed - t0) - 3.0, "{} samples of up for {:.1} s", sorted.len(), killed - t0);
    let log = agent.log_text();
    assert!(log.contains("WAL segment damaged") && log.contains("CRC mismatch"), "the cut must be logged:\n{log}");
}

#[test]
fn shards_grow_when_the_receiver_falls_behind_and_order_holds() {
    let dir = TempDir::new("rw-reshard");
    // 1 s per request and 2 samples per request: one shard moves 2 samples/s
    // while the node source makes 4 (load1/5/15, up) every second.
    let recv = Receiver::start(Box::new(|_, _| Reply::SleepThenOk(Duration::from_secs(1))));
    let agent = Agent::start(
        dir.path(),
        "rw-reshard",
        &format!(
            "[[remote_write]]\nname = \"behind\"\nurl = \"{}\"\n[remote_write.queue_config]\nmax_samples_per_send = 2\nbatch_send_deadline = \"100ms\"\nmin_shards = 1\nmax_shards = 4\ncapacity = 2\n",
            recv.url()
        ),
    );
    let grew = wait_for(Duration::from_secs(45), || {
        agent.metric("vantage_remote_write_shards{endpoint=\"behind\"}").filter(|n| *n >= 2.0)
    });
    assert!(grew.is_some(), "shards never grew; log:\n{}", agent.log_text());
    std::thread::sleep(Duration::from_secs(5));
    let reqs = recv.requests();
    check_requests(&reqs, "0.1.0");
    check_order(&reqs);
    assert!(agent.log_text().contains("resharded"));
}

#[test]
fn restart_after_sigkill_resends_only_what_was_unacknowledged() {
    let dir = TempDir::new("rw-resend");
    let recv = Receiver::start(Box::new(|_, _| Reply::Ok));
    let endpoint = format!(
        "[[remote_write]]\nname = \"ok\"\nurl = \"{}\"\n[remote_write.queue_config]\nbatch_send_deadline = \"200ms\"\n",
        recv.url()
    );
    let agent = Agent::start(dir.path(), "rw-resend", &endpoint);
    std::thread::sleep(Duration::from_secs(6));
    agent.proc.signal(libc::SIGKILL);
    drop(agent);
    let before = recv.requests().len();
    let agent = Agent::start(dir.path(), "rw-resend", &endpoint);
    std::thread::sleep(Duration::from_secs(4));
    let reqs = recv.requests();
    assert!(reqs.len() > before, "nothing sent after the restart; log:\n{}", agent.log_text());
    let mut seen = std::collections::HashSet::new();
    let mut duplicates = 0;
    for r in &reqs {
        for s in &r.series {
            for (ts, _) in &s.samples {
                if !seen.insert((s.key(), *ts)) {
                    duplicates += 1;
                }
            }
        }
    }
    // At most the request in flight at the kill (4 series a second here).
    assert!(duplicates <= 8, "{duplicates} samples sent twice after the restart");
    check_requests(&reqs, "0.1.0");
}

/// Needs the real `relabel::Relabeler` (the scrape helper's, on main).
#[test]
fn write_relabel_configs_drop_and_rewrite_before_the_wal() {
    let dir = TempDir::new("rw-relabel");
    let recv = Receiver::start(Box::new(|_, _| Reply::Ok));
    let agent = Agent::start(
        dir.path(),
        "rw-relabel",
        &format!(
            r#"
[[remote_write]]
name = "relabeled"
url = "{}"
[[remote_write.write_relabel_configs]]
source_labels = ["__name__"]
regex = "node_load5"
action = "drop"
[[remote_write.write_relabel_configs]]
target_label = "team"
replacement = "infra"
[remote_write.queue_config]
batch_send_deadline = "1s"
"#,
            recv.url()
        ),
    );
    let reqs = wait_for(Duration::from_secs(20), || Some(recv.requests()).filter(|r| r.len() >= 3))
        .unwrap_or_else(|| panic!("no requests; log:\n{}", agent.log_text()));
    check_requests(&reqs, "0.1.0");
    let names: std::collections::BTreeSet<String> =
        reqs.iter().flat_map(|r| r.series.iter().map(|s| s.label("__name__").unwrap().to_string())).collect();
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["node_load1", "node_load15", "node_scrape_collector_duration_seconds", "node_scrape_collector_success", "up"]
    );
    assert!(reqs.iter().flat_map(|r| &r.series).all(|s| s.label("team") == Some("infra")));
}
