//! Reloading a running agent's configuration, end to end: the real binary
//! with node and eBPF sources, a scrape job on a loopback target, and two
//! remote_write endpoints (a real Prometheus 2.42 and a recording
//! receiver). The configuration changes through SIGHUP, then through
//! `POST /-/reload`, then an invalid file is refused.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vantage_tests::prometheus::Prometheus;
use vantage_tests::receiver::{Receiver, Reply};
use vantage_tests::scrape::{ExpoServer, Route};
use vantage_tests::{free_port, http_get, parse_text, vantage_bin, wait_for, Proc, TempDir};

/// Collection and scrape interval of the agent under test.
const INTERVAL: f64 = 1.0;

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// What stays the same in every version of the configuration.
struct Setup<'a> {
    port: u16,
    data: &'a Path,
    target: &'a str,
    prom: &'a str,
    recv: &'a str,
}

/// The agent's configuration: `stage` is what the relabel rule writes,
/// `tenant` the receiver endpoint's X-Scope-OrgID, `extra` adds a job.
fn config(setup: &Setup, stage: &str, tenant: &str, extra: bool) -> String {
    let Setup { port, data, target, prom, recv } = *setup;
    let extra_job = if extra {
        format!("[[scrape]]\njob_name = \"extra\"\nmetrics_path = \"/extra\"\n[[scrape.static_configs]]\ntargets = [\"{target}\"]\n")
    } else {
        String::new()
    };
    format!(
        r#"
[agent]
listen_addr = "127.0.0.1:{port}"
data_dir = "{data}"
scrape_interval = "1s"
[node]
interval = "1s"
enable = ["loadavg"]
instance = "host-a:9100"
[ebpf]
enabled = true
[docker]
enabled = false

[[scrape]]
job_name = "steady"
metrics_path = "/steady"
[[scrape.static_configs]]
targets = ["{target}"]

[[scrape]]
job_name = "app"
metrics_path = "/app"
[[scrape.static_configs]]
targets = ["{target}"]
[[scrape.metric_relabel_configs]]
action = "replace"
target_label = "stage"
replacement = "{stage}"

{extra_job}
[[remote_write]]
name = "prom"
url = "{prom}"
[remote_write.queue_config]
batch_send_deadline = "500ms"

[[remote_write]]
name = "recv"
url = "{recv}"
headers = {{ "X-Scope-OrgID" = "{tenant}" }}
[remote_write.queue_config]
batch_send_deadline = "500ms"
"#,
        data = data.display(),
    )
}

/// Ids of the eBPF programs the process holds, from its fds' fdinfo (the
/// `prog_id` bpftool shows).
fn prog_ids(pid: u32) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap().flatten() {
        let Ok(info) = std::fs::read_to_string(fd.path()) else { continue };
        for line in info.lines() {
            if let Some(id) = line.strip_prefix("prog_id:") {
                ids.insert(id.trim().parse().unwrap());
            }
        }
    }
    ids
}

struct Agent {
    proc: Proc,
    port: u16,
    log: std::path::PathBuf,
}

impl Agent {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metric(&self, series: &str) -> Option<f64> {
        let (_, text) = http_get(&self.url("/metrics"))?;
        parse_text(&text).into_iter().find(|(s, _)| s == series).map(|(_, v)| v)
    }

    fn post_reload(&self) -> (u16, String) {
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let resp = client.post(self.url("/-/reload")).send().expect("POST /-/reload");
        (resp.status().as_u16(), resp.text().unwrap_or_default())
    }

    fn status(&self) -> serde_json::Value {
        let (_, body) = http_get(&self.url("/api/v1/status")).expect("status");
        serde_json::from_str(&body).unwrap()
    }
}

/// Waits until Prometheus has a sample of `selector` stamped at or after
/// `since` (Unix seconds); returns the earliest such timestamp.
fn first_sample_after(prom: &Prometheus, selector: &str, since: f64, agent: &Agent) -> f64 {
    wait_for(Duration::from_secs(20), || {
        prom.raw_samples(selector, "2m")
            .into_iter()
            .flat_map(|(_, v)| v)
            .map(|(ts, _)| ts)
            .filter(|ts| *ts >= since)
            .reduce(f64::min)
    })
    .unwrap_or_else(|| panic!("no {selector} at or after {since} in Prometheus; log:\n{}", agent.log_text()))
}

/// The first request to the receiver carrying `tenant`, and how long after
/// `since` it arrived.
fn tenant_arrival(recv: &Receiver, tenant: &str, since: Instant) -> Duration {
    let at = wait_for(Duration::from_secs(20), || {
        recv.requests().into_iter().find(|r| r.header("x-scope-orgid") == Some(tenant)).map(|r| r.arrived)
    })
    .unwrap_or_else(|| panic!("no request with X-Scope-OrgID {tenant}"));
    at.saturating_duration_since(since)
}

/// Largest distance between consecutive samples of each series matching
/// `selector` over `[from, to]`, less any time the whole machine stalled
/// in it (`watch_stalls`), and how many samples there were.
fn gaps(prom: &Prometheus, selector: &str, window: &str, from: f64, to: f64) -> Vec<(String, f64, usize)> {
    prom.raw_samples(selector, window)
        .into_iter()
        .map(|(labels, values)| {
            let ts: Vec<f64> = values.iter().map(|(t, _)| *t).filter(|t| *t >= from && *t <= to).collect();
            let max =
                ts.windows(2).map(|w| w[1] - w[0] - vantage_tests::stalled_within(w[0], w[1])).fold(0.0, f64::max);
            (labels.to_string(), max, ts.len())
        })
        .collect()
}

#[test]
fn reload_applies_changes_keeps_the_rest_and_refuses_an_invalid_file() {
    vantage_tests::watch_stalls();
    let dir = TempDir::new("reload");
    let prom = Prometheus::start("");
    let recv = Receiver::start(Box::new(|_, _| Reply::Ok));
    let target = ExpoServer::start();
    target.set("/steady", Route::text("steady_value 7\n"));
    target.set("/app", Route::text("app_requests_total{path=\"/\"} 3\n"));
    target.set("/extra", Route::text("extra_value 11\n"));
    let port = free_port();
    let data = dir.path().join("data");
    let (address, prom_url, recv_url) = (target.address(), prom.remote_write_url(), recv.url());
    let setup = Setup { port, data: &data, target: &address, prom: &prom_url, recv: &recv_url };
    let write =
        |stage: &str, tenant: &str, extra: bool| dir.write("vantage.toml", &config(&setup, stage, tenant, extra));
    let path = write("one", "tenant-a", false);
    let log = dir.path().join("vantage.log");
    let mut cmd = Command::new(vantage_bin());
    // --log-format json: the assertions on the log do not depend on colours.
    cmd.args(["--log-format", "json", "run", "--config"]).arg(&path).env("RUST_LOG", "info");
    let agent = Agent { proc: Proc::spawn("vantage", cmd, &log), port, log };
    let ready = wait_for(Duration::from_secs(30), || http_get(&agent.url("/-/ready")).filter(|(s, _)| *s == 200));
    assert!(ready.is_some(), "agent not ready; log:\n{}", agent.log_text());
    let started = unix_now();
    first_sample_after(&prom, "app_requests_total{stage=\"one\"}", 0.0, &agent);
    tenant_arrival(&recv, "tenant-a", Instant::now());
    let programs = prog_ids(agent.proc.pid());
    assert!(programs.len() >= 3, "eBPF programs attached: {programs:?}; log:\n{}", agent.log_text());
    assert_eq!(agent.metric("vantage_config_last_reload_successful"), Some(1.0));
    let start_stamp = agent.metric("vantage_config_last_reload_success_timestamp_seconds").unwrap();
    assert!((start_stamp - started).abs() < 30.0, "start stamp {start_stamp} against {started}");
    std::thread::sleep(Duration::from_secs(3));

    // 1. SIGHUP: a new job, a new relabel value, a new header.
    write("two", "tenant-b", true);
    let (hup_at, hup_instant) = (unix_now(), Instant::now());
    agent.proc.signal(libc::SIGHUP);
    let two = first_sample_after(&prom, "app_requests_total{stage=\"two\"}", 0.0, &agent);
    let extra = first_sample_after(&prom, "extra_value", 0.0, &agent);
    let header = tenant_arrival(&recv, "tenant-b", hup_instant);
    println!("SIGHUP: relabel +{:.3} s, new job +{:.3} s, header +{:?}", two - hup_at, extra - hup_at, header);
    // Samples are stamped when scraped: the new settings are in the first
    // scrape after the reload, within one interval (plus 1 s for a busy machine).
    assert!(two - hup_at <= INTERVAL + 1.0, "relabel took effect {:.3} s after SIGHUP", two - hup_at);
    assert!(extra - hup_at <= INTERVAL + 1.0, "new job scraped {:.3} s after SIGHUP", extra - hup_at);
    // A request goes out within batch_send_deadline (0.5 s) of the scrape.
    assert!(header <= Duration::from_secs_f64(INTERVAL + 0.5 + 1.5), "new header after {header:?}");
    let ones_after = prom.raw_samples("app_requests_total{stage=\"one\"}", "2m");
    assert!(
        ones_after.iter().flat_map(|(_, v)| v).all(|(ts, _)| *ts < hup_at + INTERVAL + 1.0),
        "the old relabel value went on after the reload: {ones_after:?}"
    );
    assert_eq!(agent.metric("vantage_config_last_reload_successful"), Some(1.0));
    let hup_stamp = agent.metric("vantage_config_last_reload_success_timestamp_seconds").unwrap();
    assert!(hup_stamp >= hup_at - 0.01 && hup_stamp < hup_at + 10.0, "reload stamp {hup_stamp}, SIGHUP at {hup_at}");
    assert_eq!(prog_ids(agent.proc.pid()), programs, "eBPF programs were detached and loaded again");
    std::thread::sleep(Duration::from_secs(3));

    // 2. POST /-/reload: the relabel and header again, the extra job gone.
    write("three", "tenant-c", false);
    let (post_at, post_instant) = (unix_now(), Instant::now());
    let (code, body) = agent.post_reload();
    assert_eq!(code, 200, "POST /-/reload: {body}");
    let three = first_sample_after(&prom, "app_requests_total{stage=\"three\"}", 0.0, &agent);
    let header = tenant_arrival(&recv, "tenant-c", post_instant);
    println!("POST: relabel +{:.3} s, header +{:?}", three - post_at, header);
    assert!(three - post_at <= INTERVAL + 1.0, "relabel took effect {:.3} s after POST", three - post_at);
    assert!(header <= Duration::from_secs_f64(INTERVAL + 0.5 + 1.5), "new header after {header:?}");
    // The removed job's series end with a stale marker: an instant query
    // finds nothing although the lookback is 5 minutes.
    let gone = wait_for(Duration::from_secs(10), || prom.query("extra_value").is_empty().then_some(()));
    assert!(gone.is_some(), "extra_value still queryable: {:?}", prom.query("extra_value"));
    let status = agent.status();
    assert!(
        !status["sources"].as_object().unwrap().keys().any(|k| k.starts_with("scrape/extra/")),
        "removed job still in the status: {}",
        status["sources"]
    );
    assert_eq!(prog_ids(agent.proc.pid()), programs, "eBPF programs were detached and loaded again");
    std::thread::sleep(Duration::from_secs(2));

    // 3. An invalid file is refused whole, by both paths.
    std::fs::write(&path, std::fs::read_to_string(&path).unwrap().replace("[docker]", "[docker]\nbogus = 1")).unwrap();
    let (code, body) = agent.post_reload();
    assert_eq!(code, 500, "an invalid file must be refused: {body}");
    assert!(body.contains("vantage.toml") && body.contains("bogus"), "the answer names the file and key: {body}");
    assert_eq!(agent.metric("vantage_config_last_reload_successful"), Some(0.0));
    let status = agent.status();
    let error = status["reload"]["last_error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("vantage.toml") && error.contains("bogus"), "status: {}", status["reload"]);
    assert_eq!(status["reload"]["last_successful"], false);
    let (_, page) = http_get(&agent.url("/")).unwrap();
    assert!(page.contains("reload failed") && page.contains("bogus"), "the status page shows the error");
    let refused_at = unix_now();
    agent.proc.signal(libc::SIGHUP);
    let logged = wait_for(Duration::from_secs(10), || {
        let text = agent.log_text();
        (text.matches("configuration reload failed").count() >= 2).then_some(text)
    });
    assert!(logged.is_some(), "both refusals are logged:\n{}", agent.log_text());
    assert!(logged.unwrap().contains("bogus"));
    assert_eq!(agent.metric("vantage_config_last_reload_successful"), Some(0.0));
    // The success stamp is still the one of the POST reload.
    let stamp = agent.metric("vantage_config_last_reload_success_timestamp_seconds").unwrap();
    assert!(stamp >= post_at - 0.01 && stamp < refused_at, "stamp {stamp}");
    // The previous configuration keeps running.
    first_sample_after(&prom, "app_requests_total{stage=\"three\"}", refused_at + 1.0, &agent);
    assert_eq!(prog_ids(agent.proc.pid()), programs, "eBPF programs were detached and loaded again");

    // Across all of it, the untouched sources have no gap in Prometheus:
    // the node source (whose collections the agent counts) and the job
    // that never changed. The receiver endpoint, restarted twice on its
    // WAL, has no gap either.
    let end = unix_now() - 2.0;
    let node_collections = agent.metric("vantage_source_collections_total{kind=\"node\",source=\"node\"}").unwrap();
    for selector in ["node_load1", "steady_value"] {
        let found = gaps(&prom, selector, "5m", started, end);
        assert_eq!(found.len(), 1, "{selector}: {found:?}");
        let (labels, max, n) = &found[0];
        println!("{selector} {labels}: {n} samples over {:.1} s, largest step {max:.3} s", end - started);
        assert!(*max < 2.0 * INTERVAL, "{selector}: a step of {max:.3} s in {labels}");
        let ran = end - started - vantage_tests::stalled_within(started, end);
        assert!(*n as f64 >= ran / INTERVAL - 3.0, "{selector}: only {n} samples");
    }
    let node_in_prom = prom.raw_samples("node_load1", "5m").into_iter().map(|(_, v)| v.len()).sum::<usize>() as f64;
    assert!(
        node_in_prom >= node_collections - 3.0,
        "Prometheus has {node_in_prom} node_load1 samples for {node_collections} collections"
    );
    let mut recv_ts: Vec<f64> = recv
        .requests()
        .iter()
        .flat_map(|r| r.series.iter())
        .filter(|s| s.label("__name__") == Some("node_load1"))
        .flat_map(|s| s.samples.iter().map(|(t, _)| *t as f64 / 1000.0))
        .filter(|t| *t >= started && *t <= end)
        .collect();
    recv_ts.sort_by(f64::total_cmp);
    recv_ts.dedup();
    let recv_max = recv_ts.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    println!("receiver node_load1: {} samples, largest step {recv_max:.3} s", recv_ts.len());
    assert!(recv_max < 2.0 * INTERVAL, "the receiver endpoint has a gap of {recv_max:.3} s");
}
