//! Scraping against real TCP: exposition bodies served on loopback by an
//! in-test HTTP server (the scrape target), the real `vantage` binary, and
//! assertions on exact series and values.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use vantage_tests::scrape::{kafka_jmx_body, ExpoServer, Route, OPENMETRICS};
use vantage_tests::{free_port, http_get, parse_text, vantage, wait_for, Proc, TempDir};

/// What Prometheus 2.42 sends, and so must Vantage.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

const APP_BODY: &str = concat!(
    "# HELP nodejs_heap_size_used_bytes Process heap size used from Node.js in bytes.\n",
    "# TYPE nodejs_heap_size_used_bytes gauge\n",
    "nodejs_heap_size_used_bytes 1.5e7\n",
    "# HELP http_request_duration_seconds Duration of HTTP requests.\n",
    "# TYPE http_request_duration_seconds histogram\n",
    "http_request_duration_seconds_bucket{le=\"0.1\",route=\"/api/v1/order\"} 3\n",
    "http_request_duration_seconds_bucket{le=\"+Inf\",route=\"/api/v1/order\"} 5\n",
    "http_request_duration_seconds_sum{route=\"/api/v1/order\"} 0.75\n",
    "http_request_duration_seconds_count{route=\"/api/v1/order\"} 5\n",
    "app_info{version=\"1.2.3\",commit=\"\",msg=\"say \\\"hi\\\"\\n\",city=\"Zürich\"} 1\n",
    "app_weird { a = \"x\" , } -Inf\n",
    "app_inf +Inf\n",
);

/// Series of `text` as a map, for exact lookups.
fn series(text: &str) -> BTreeMap<String, f64> {
    parse_text(text).into_iter().collect()
}

fn base_config(extra: &str) -> String {
    format!("[node]\nenabled = false\n[ebpf]\nenabled = false\n[docker]\nenabled = false\n{extra}")
}

/// The agent scraping `scrapes` every second and serving what it collected
/// on /metrics, with no other source; and the address it listens on.
fn serving_agent(dir: &TempDir, scrapes: &str) -> (Proc, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut cfg = format!(
        "[agent]\nlisten_addr = \"{listen}\"\nscrape_interval = \"1s\"\nserve_collected = true\ndata_dir = \"{}\"\n",
        dir.path().display()
    );
    cfg.push_str(&base_config(scrapes));
    let path = dir.write("vantage.toml", &cfg);
    let mut cmd = Command::new(vantage_tests::vantage_bin());
    cmd.args(["run", "--config", path.to_str().unwrap()]);
    (Proc::spawn("vantage", cmd, &dir.path().join("vantage.log")), listen)
}

#[test]
fn collect_once_app_with_basic_auth_and_kafka_brokers() {
    let app = ExpoServer::start();
    app.set("/system-stats", Route { basic_auth: Some(("metrics".into(), "s3cret".into())), ..Route::text(APP_BODY) });
    let brokers: Vec<ExpoServer> = (1..=3).map(|_| ExpoServer::start()).collect();
    for (i, b) in brokers.iter().enumerate() {
        b.set("/metrics", Route::text(&kafka_jmx_body(100.0 * (i + 1) as f64)));
    }
    let dir = TempDir::new("scrape-once");
    let mut cfg = format!(
        "[[scrape]]\njob_name = \"accounts\"\nmetrics_path = \"/system-stats\"\ntargets = [\"{}\"]\n\
         [scrape.basic_auth]\nusername = \"metrics\"\npassword = \"s3cret\"\n\
         [[scrape]]\njob_name = \"kafka-brokers\"\n",
        app.address()
    );
    for (i, b) in brokers.iter().enumerate() {
        cfg.push_str(&format!(
            "[[scrape.static_configs]]\ntargets = [\"{}\"]\nlabels = {{ broker_id = \"{}\" }}\n",
            b.address(),
            i + 1
        ));
    }
    let path = dir.write("vantage.toml", &base_config(&cfg));
    let out = vantage(&["collect", "--once", "--config", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "vantage failed: {}", String::from_utf8_lossy(&out.stderr));
    let got = series(&text);

    let a = app.address();
    let app_series = |name: &str, labels: &str| -> String {
        let sep = if labels.is_empty() { "" } else { "," };
        format!("{name}{{{labels}{sep}instance=\"{a}\",job=\"accounts\"}}")
    };
    let want_app = [
        (app_series("nodejs_heap_size_used_bytes", ""), 15_000_000.0),
        (format!("http_request_duration_seconds_bucket{{instance=\"{a}\",job=\"accounts\",le=\"0.1\",route=\"/api/v1/order\"}}"), 3.0),
        (format!("http_request_duration_seconds_bucket{{instance=\"{a}\",job=\"accounts\",le=\"+Inf\",route=\"/api/v1/order\"}}"), 5.0),
        (format!("http_request_duration_seconds_sum{{instance=\"{a}\",job=\"accounts\",route=\"/api/v1/order\"}}"), 0.75),
        (format!("http_request_duration_seconds_count{{instance=\"{a}\",job=\"accounts\",route=\"/api/v1/order\"}}"), 5.0),
        (format!("app_info{{city=\"Zürich\",instance=\"{a}\",job=\"accounts\",msg=\"say \\\"hi\\\"\\n\",version=\"1.2.3\"}}"), 1.0),
        (format!("app_weird{{a=\"x\",instance=\"{a}\",job=\"accounts\"}}"), f64::NEG_INFINITY),
        (app_series("app_inf", ""), f64::INFINITY),
        (app_series("up", ""), 1.0),
        (app_series("scrape_samples_scraped", ""), 8.0),
        (app_series("scrape_samples_post_metric_relabeling", ""), 8.0),
        (app_series("scrape_series_added", ""), 8.0),
    ];
    for (s, v) in &want_app {
        assert_eq!(got.get(s), Some(v), "{s} in:\n{text}");
    }
    let app_lines = got.keys().filter(|k| k.contains(&format!("instance=\"{a}\""))).count();
    // The body's 8 series, 4 report series with exact values, and
    // scrape_duration_seconds.
    assert_eq!(app_lines, 13, "{text}");
    assert!(got.get(&app_series("scrape_duration_seconds", "")).is_some_and(|d| *d > 0.0 && *d < 5.0));

    for (i, b) in brokers.iter().enumerate() {
        let (id, addr) = (i + 1, b.address());
        let labels = format!("broker_id=\"{id}\",instance=\"{addr}\",job=\"kafka-brokers\"");
        assert_eq!(
            got.get(&format!("kafka_server_brokertopicmetrics_messagesin_total{{{labels},topic=\"orders\"}}")),
            Some(&(100.0 * id as f64)),
            "{text}"
        );
        assert_eq!(got.get(&format!("jvm_memory_bytes_used{{area=\"heap\",{labels}}}")), Some(&536870912.0));
        assert_eq!(
            got.get(&format!(
                "kafka_network_requestmetrics_totaltimems{{{labels},quantile=\"0.99\",request=\"Produce\"}}"
            )),
            Some(&12.5)
        );
        assert_eq!(got.get(&format!("up{{{labels}}}")), Some(&1.0));
        assert_eq!(b.seen("/metrics").accept, PROMETHEUS_ACCEPT);
    }
    assert_eq!(app.seen("/system-stats").accept, PROMETHEUS_ACCEPT);
    assert!(app.seen("/system-stats").user_agent.starts_with("vantage/"));
}

#[test]
fn openmetrics_body_by_content_negotiation() {
    let server = ExpoServer::start();
    let body = "# TYPE a counter\na_total{x=\"1\"} 5 # {trace_id=\"abc\"} 1\n# TYPE s stateset\ns{s=\"on\"} 1\n# EOF\n";
    server.set("/metrics", Route { body: body.into(), content_type: OPENMETRICS.into(), ..Default::default() });
    // The same body as 0.0.4 text is malformed (exemplar, # EOF is fine as
    // a comment): only negotiation makes it parse.
    let dir = TempDir::new("scrape-om");
    let cfg = format!("[[scrape]]\njob_name = \"om\"\ntargets = [\"{}\"]\n", server.address());
    let path = dir.write("vantage.toml", &base_config(&cfg));
    let out = vantage(&["collect", "--once", "--config", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    let got = series(&text);
    let a = server.address();
    assert_eq!(got.get(&format!("a_total{{instance=\"{a}\",job=\"om\",x=\"1\"}}")), Some(&5.0), "{text}");
    assert_eq!(got.get(&format!("s{{instance=\"{a}\",job=\"om\",s=\"on\"}}")), Some(&1.0), "{text}");
    assert_eq!(got.get(&format!("up{{instance=\"{a}\",job=\"om\"}}")), Some(&1.0), "{text}");
}

#[test]
fn bad_targets_are_isolated() {
    let good = ExpoServer::start();
    good.set("/metrics", Route::text("good_metric{k=\"v\"} 42\n"));
    let malformed = ExpoServer::start();
    malformed.set("/metrics", Route::text("bad_partial 1\nbad_second 2\nthis is { not valid\n"));
    let big = ExpoServer::start();
    big.set("/metrics", Route::text(&"big_metric_with_a_long_name_xxxxxxxxxxxxxxxxxxxxxxxx 1\n".repeat(100)));
    let slow = ExpoServer::start();
    slow.set("/metrics", Route { delay: Duration::from_secs(3), ..Route::text("slow_metric 1\n") });
    let unauthorized = ExpoServer::start();
    unauthorized
        .set("/metrics", Route { basic_auth: Some(("u".into(), "p".into())), ..Route::text("secret_metric 1\n") });
    // A target that answers well first and then breaks: its series must go.
    let flaky = ExpoServer::start();
    flaky.set("/metrics", Route::text("flaky_metric 7\n"));
    let refused = format!("127.0.0.1:{}", free_port());

    let dir = TempDir::new("scrape-bad");
    let mut cfg =
        format!("[[scrape]]\njob_name = \"good\"\nscrape_timeout = \"800ms\"\ntargets = [\"{}\"]\n", good.address());
    cfg.push_str("[[scrape]]\njob_name = \"bad\"\nscrape_timeout = \"800ms\"\nbody_size_limit = \"1KB\"\n");
    let bad = [
        ("malformed", malformed.address()),
        ("big", big.address()),
        ("slow", slow.address()),
        ("unauthorized", unauthorized.address()),
        ("refused", refused.clone()),
        ("flaky", flaky.address()),
    ];
    for (kind, addr) in &bad {
        cfg.push_str(&format!("[[scrape.static_configs]]\ntargets = [\"{addr}\"]\nlabels = {{ kind = \"{kind}\" }}\n"));
    }
    let (_agent, listen) = serving_agent(&dir, &cfg);
    let url = format!("http://{listen}/metrics");

    // Wait until the flaky target was scraped well once, then break it.
    let flaky_series = format!("flaky_metric{{instance=\"{}\",job=\"bad\",kind=\"flaky\"}}", flaky.address());
    wait_for(Duration::from_secs(15), || {
        let (_, text) = http_get(&url)?;
        series(&text).contains_key(&flaky_series).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "flaky target never scraped; log:\n{}",
            std::fs::read_to_string(dir.path().join("vantage.log")).unwrap_or_default()
        )
    });
    flaky.set("/metrics", Route::text("flaky_metric 7\nflaky_metric{ 8\n"));

    let up = |text: &str, job: &str, kind: Option<&str>, addr: &str| -> Option<f64> {
        let labels = match kind {
            Some(k) => format!("instance=\"{addr}\",job=\"{job}\",kind=\"{k}\""),
            None => format!("instance=\"{addr}\",job=\"{job}\""),
        };
        series(text).get(&format!("up{{{labels}}}")).copied()
    };
    let text = wait_for(Duration::from_secs(15), || {
        let (_, text) = http_get(&url)?;
        let all_down = bad.iter().all(|(k, a)| up(&text, "bad", Some(k), a) == Some(0.0));
        (all_down && up(&text, "good", None, &good.address()) == Some(1.0)).then_some(text)
    })
    .unwrap_or_else(|| panic!("targets never reached the expected up values: {:?}", http_get(&url)));
    let got = series(&text);
    assert_eq!(got.get(&format!("good_metric{{instance=\"{}\",job=\"good\",k=\"v\"}}", good.address())), Some(&42.0));
    for name in ["bad_partial", "bad_second", "big_metric", "slow_metric", "secret_metric", "flaky_metric"] {
        assert!(!got.keys().any(|k| k.starts_with(name)), "{name} must not be stored:\n{text}");
    }
    // Prometheus counts the samples read before a parse error.
    let malformed_labels = format!("instance=\"{}\",job=\"bad\",kind=\"malformed\"", malformed.address());
    assert_eq!(got.get(&format!("scrape_samples_scraped{{{malformed_labels}}}")), Some(&2.0), "{text}");

    // The reasons, on the status API.
    let (_, status) = http_get(&format!("http://{listen}/api/v1/status")).unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let reasons = [
        (malformed.address(), "parse error at line 3"),
        (big.address(), "body size limit exceeded"),
        (slow.address(), "timeout"),
        (unauthorized.address(), "401"),
        (refused.clone(), "connection failed"),
        (flaky.address(), "parse error at line 2"),
    ];
    for (addr, reason) in reasons {
        let src = &status["sources"][format!("scrape/bad/{addr}")];
        assert_eq!(src["health"], "down", "{addr}: {src}");
        assert_eq!(src["kind"], "scrape");
        let err = src["last_error"].as_str().unwrap_or("");
        assert!(err.contains(reason), "{addr}: want {reason:?} in {err:?}");
    }
    // The good target keeps its 1s interval while the slow one times out.
    // Counted against the time that really passed (a busy machine may
    // sleep longer than asked) and against the target's own count.
    let before = status["sources"][format!("scrape/good/{}", good.address())]["collections"].as_u64().unwrap();
    let (served_before, t0) = (good.seen("/metrics").count, std::time::Instant::now());
    std::thread::sleep(Duration::from_secs(4));
    let (_, status) = http_get(&format!("http://{listen}/api/v1/status")).unwrap();
    let (served_after, elapsed) = (good.seen("/metrics").count, t0.elapsed().as_secs_f64());
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let good_state = &status["sources"][format!("scrape/good/{}", good.address())];
    let after = good_state["collections"].as_u64().unwrap();
    let n = after - before;
    // One scrape a second over `elapsed`, give or take the one at each end.
    assert!(
        (elapsed.floor() - 1.0..=elapsed.ceil() + 1.0).contains(&(n as f64)),
        "good target scraped {n} times in {elapsed:.2} s"
    );
    assert!(
        n.abs_diff((served_after - served_before) as u64) <= 1,
        "the target saw {} scrapes, the agent counted {n}",
        served_after - served_before
    );
    assert_eq!(good_state["health"], "up");
    assert_eq!(good.seen("/metrics").accept, PROMETHEUS_ACCEPT);
}

/// Bodies for the differential test: what real exporters write, and the
/// corners of the format.
fn differential_bodies(now_ms: i64) -> Vec<(&'static str, Route)> {
    let escapes = concat!(
        "# HELP esc_total Escapes: backslash \\\\ and newline \\n in help.\n",
        "# TYPE esc_total counter\n",
        "esc_total{path=\"C:\\\\dir\\\\file\",quote=\"say \\\"hi\\\"\",nl=\"a\\nb\",odd=\"x\\zy\"} 3\n",
        "unicode_gauge{city=\"Zürich\",snow=\"☃\",cjk=\"東京\"} 1.5\n",
        "empty_values{a=\"\",b=\"kept\"} 2\n",
        "only_empty{a=\"\"} 4\n",
        "trailing{a=\"1\",b=\"2\",} 5\n",
        "spaced{ a = \"1\" , b=\"2\" } 6\n",
        "tabbed\t8\n",
        "special_values{v=\"nan\"} NaN\n",
        "special_values{v=\"pinf\"} +Inf\n",
        "special_values{v=\"ninf\"} -Inf\n",
        "big_and_small{v=\"big\"} 1.7976931348623157e+308\n",
        "big_and_small{v=\"small\"} 5e-324\n",
        "big_and_small{v=\"neg\"} -0.000123\n",
        "# a free comment line\n",
        "colon:metric:name 9\n",
        // honor_labels=false: the target's job/instance win, the body's
        // become exported_job/exported_instance.
        "clash_total{job=\"inner\",instance=\"elsewhere:1\"} 7\n",
    );
    let with_ts = format!("stamped_gauge{{k=\"v\"}} 11 {now_ms}\n# TYPE plain gauge\nplain 12\n");
    let histogram = concat!(
        "# HELP rpc_duration_seconds RPC latency.\n",
        "# TYPE rpc_duration_seconds histogram\n",
        "rpc_duration_seconds_bucket{service=\"a\",le=\"0.005\"} 1\n",
        "rpc_duration_seconds_bucket{service=\"a\",le=\"0.01\"} 2\n",
        "rpc_duration_seconds_bucket{service=\"a\",le=\"0.1\"} 4\n",
        "rpc_duration_seconds_bucket{service=\"a\",le=\"+Inf\"} 5\n",
        "rpc_duration_seconds_sum{service=\"a\"} 0.2345\n",
        "rpc_duration_seconds_count{service=\"a\"} 5\n",
        "# HELP go_gc_duration_seconds A summary of GC pauses.\n",
        "# TYPE go_gc_duration_seconds summary\n",
        "go_gc_duration_seconds{quantile=\"0\"} 4.1e-05\n",
        "go_gc_duration_seconds{quantile=\"0.5\"} 0.000112\n",
        "go_gc_duration_seconds{quantile=\"1\"} NaN\n",
        "go_gc_duration_seconds_sum 0.5\n",
        "go_gc_duration_seconds_count 4321\n",
    );
    let openmetrics = concat!(
        "# TYPE om_requests counter\n",
        "# HELP om_requests Requests.\n",
        "om_requests_total{code=\"200\"} 10 # {trace_id=\"abc\"} 1.0\n",
        "om_requests_created{code=\"200\"} 1700000000.5\n",
        "# TYPE om_build info\n",
        "om_build_info{version=\"2.0\"} 1\n",
        "# TYPE om_state stateset\n",
        "om_state{om_state=\"ready\"} 1\n",
        "om_state{om_state=\"starting\"} 0\n",
        "# TYPE om_temp_celsius gauge\n",
        "# UNIT om_temp_celsius celsius\n",
        "om_temp_celsius 21.5\n",
        "# EOF\n",
    );
    vec![
        ("escapes", Route::text(escapes)),
        ("stamped", Route::text(&with_ts)),
        ("histogram", Route::text(histogram)),
        ("kafka", Route::text(&kafka_jmx_body(1234.0))),
        ("openmetrics", Route { body: openmetrics.into(), content_type: OPENMETRICS.into(), ..Default::default() }),
        ("broken", Route::text("fine_metric 1\nbroken_metric{a=\"1\" 2\n")),
        // Prometheus keeps the blanks in the name and fails the scrape.
        ("leading_blank", Route::text("fine_metric 1\n  leading_space 7\n")),
    ]
}

/// Instant query of everything of `job`: labels without `job` -> value
/// (as Prometheus prints it, so NaN compares equal to NaN).
fn job_series(prom: &vantage_tests::prometheus::Prometheus, job: &str, at: f64) -> BTreeMap<String, String> {
    let client = reqwest::blocking::Client::new();
    let body: serde_json::Value = client
        .get(format!("{}/api/v1/query", prom.url()))
        .query(&[("query", format!("{{job=\"{job}\"}}")), ("time", at.to_string())])
        .send()
        .and_then(|r| r.json())
        .expect("query prometheus");
    let mut out = BTreeMap::new();
    for s in body["data"]["result"].as_array().cloned().unwrap_or_default() {
        let mut labels: Vec<(String, String)> = s["metric"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k != "job")
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
            .collect();
        labels.sort();
        let key = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join(",");
        out.insert(key, s["value"][1].as_str().unwrap_or("").to_string());
    }
    out
}

/// Done-when of the scrape issue: a real Prometheus scrapes the bodies
/// directly, Vantage scrapes the same bodies and remote_writes into the
/// same Prometheus; every series and value agrees, apart from `job`.
#[test]
fn differential_against_prometheus() {
    let server = ExpoServer::start();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let bodies = differential_bodies(now_ms);
    let mut prom_jobs = String::new();
    let mut vantage_jobs = String::new();
    for (name, route) in &bodies {
        server.set(&format!("/b/{name}"), route.clone());
        prom_jobs.push_str(&format!(
            "  - job_name: direct_{name}\n    metrics_path: /b/{name}\n    static_configs:\n      - targets: ['{}']\n",
            server.address()
        ));
        vantage_jobs.push_str(&format!(
            "[[scrape]]\njob_name = \"vantage_{name}\"\nmetrics_path = \"/b/{name}\"\ntargets = [\"{}\"]\n",
            server.address()
        ));
    }
    let prom = vantage_tests::prometheus::Prometheus::start(&prom_jobs);
    let dir = TempDir::new("scrape-diff");
    let listen = format!("127.0.0.1:{}", free_port());
    let cfg = format!(
        "[agent]\nlisten_addr = \"{listen}\"\nscrape_interval = \"1s\"\ndata_dir = \"{}\"\n{}{vantage_jobs}\
         [[remote_write]]\nname = \"prom\"\nurl = \"{}\"\n[remote_write.queue_config]\nbatch_send_deadline = \"1s\"\n",
        dir.path().display(),
        base_config(""),
        prom.remote_write_url()
    );
    let path = dir.write("vantage.toml", &cfg);
    let mut cmd = Command::new(vantage_tests::vantage_bin());
    cmd.args(["run", "--config", path.to_str().unwrap()]);
    let _agent = Proc::spawn("vantage", cmd, &dir.path().join("vantage.log"));

    // Both sides have scraped every body a few times.
    let ready = wait_for(Duration::from_secs(40), || {
        let all = bodies.iter().all(|(name, _)| {
            ["direct", "vantage"]
                .iter()
                .all(|side| prom.query(&format!("count_over_time(up{{job=\"{side}_{name}\"}}[1m]) >= 3")).len() == 1)
        });
        all.then_some(())
    });
    let log = || std::fs::read_to_string(dir.path().join("vantage.log")).unwrap_or_default();
    assert!(ready.is_some(), "scrapes did not arrive; vantage log:\n{}", log());
    std::thread::sleep(Duration::from_secs(2));
    let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64() - 1.0;

    let mut total = 0;
    for (name, _) in &bodies {
        let direct = job_series(&prom, &format!("direct_{name}"), at);
        let via = job_series(&prom, &format!("vantage_{name}"), at);
        let keys = |m: &BTreeMap<String, String>| m.keys().cloned().collect::<Vec<_>>();
        let targets = http_get(&format!("{}/api/v1/targets", prom.url())).map(|(_, b)| b).unwrap_or_default();
        assert_eq!(
            keys(&via),
            keys(&direct),
            "{name}: series differ\nPrometheus targets: {targets}\nvantage log:\n{}",
            log()
        );
        for (series, value) in &direct {
            if series.contains("__name__=\"scrape_duration_seconds\"") {
                continue;
            }
            assert_eq!(&via[series], value, "{name}: {series}");
        }
        total += direct.len();
        let up = if name.starts_with("broken") || name.starts_with("leading") { "0" } else { "1" };
        assert!(direct.iter().any(|(k, v)| k.starts_with("__name__=\"up\"") && v == up), "{name}: up {direct:?}");
    }
    // 7 bodies with 5 per-target series each, and the bodies' 41 series (one of them the job/instance clash).
    assert_eq!(total, 7 * 5 + 41, "series compared");

    // A target that breaks: both sides mark its series stale at once, so
    // an instant query sees only the per-target series, with up=0.
    server.set("/b/histogram", Route::text("rpc_duration_seconds_bucket{le=\"+Inf\" 1\n"));
    let stale = wait_for(Duration::from_secs(20), || {
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64() - 1.0;
        let direct = job_series(&prom, "direct_histogram", at);
        let via = job_series(&prom, "vantage_histogram", at);
        (direct.len() == 5 && via.len() == 5).then_some((direct, via))
    });
    let (direct, via) = stale.unwrap_or_else(|| panic!("histogram series were not marked stale on both sides"));
    assert_eq!(direct.keys().collect::<Vec<_>>(), via.keys().collect::<Vec<_>>());
    for (series, value) in &direct {
        if series.starts_with("__name__=\"up\"") || series.starts_with("__name__=\"scrape_samples_post") {
            assert_eq!(value, "0", "{series}");
            assert_eq!(&via[series], value, "{series}");
        }
    }
}

/// `n` series of one family, as a target with `n` instances of something
/// would expose them.
fn many_series(n: usize) -> String {
    let mut body = String::with_capacity(n * 32);
    body.push_str("# TYPE jump_series gauge\n");
    for i in 0..n {
        body.push_str(&format!("jump_series{{i=\"{i}\"}} 1\n"));
    }
    body
}

/// A target whose series jump from 1,000 to 1,000,000 between two scrapes
/// fails by its sample_limit: the agent stops reading at the limit, keeps
/// none of that scrape, stays within a few MiB of its earlier peak, and its
/// other target keeps its interval.
#[test]
fn a_target_jumping_to_a_million_series_fails_by_its_sample_limit() {
    const LIMIT: usize = 10_000;
    let jumpy = ExpoServer::start();
    jumpy.set("/metrics", Route::text(&many_series(1_000)));
    let good = ExpoServer::start();
    good.set("/metrics", Route::text("good_metric 1\n"));
    let dir = TempDir::new("scrape-jump");
    let scrapes = format!(
        "[[scrape]]\njob_name = \"jumpy\"\nsample_limit = {LIMIT}\ntargets = [\"{}\"]\n\
         [[scrape]]\njob_name = \"good\"\ntargets = [\"{}\"]\n",
        jumpy.address(),
        good.address()
    );
    let (agent, listen) = serving_agent(&dir, &scrapes);
    let url = format!("http://{listen}/metrics");
    let log = || std::fs::read_to_string(dir.path().join("vantage.log")).unwrap_or_default();
    let jumpy_labels = format!("instance=\"{}\",job=\"jumpy\"", jumpy.address());
    let value = |text: &str, name: &str| series(text).get(&format!("{name}{{{jumpy_labels}}}")).copied();
    let jump_series = |text: &str| parse_text(text).iter().filter(|(s, _)| s.starts_with("jump_series{")).count();

    // 1,000 series: all kept, scrape after scrape.
    wait_for(Duration::from_secs(20), || {
        let (_, text) = http_get(&url)?;
        (value(&text, "up") == Some(1.0) && jump_series(&text) == 1_000).then_some(())
    })
    .unwrap_or_else(|| panic!("1,000 series never collected; log:\n{}", log()));
    let (_, text) = http_get(&url).unwrap();
    assert_eq!(value(&text, "scrape_samples_scraped"), Some(1_000.0));
    std::thread::sleep(Duration::from_secs(2));
    let hwm_before = vantage_tests::status_kib(agent.pid(), "VmHWM:");

    // 1,000,000 series (27 MB): the scrape fails and keeps nothing.
    let big = many_series(1_000_000);
    let body_mib = big.len() as f64 / (1 << 20) as f64;
    jumpy.set("/metrics", Route::text(&big));
    drop(big);
    let text = wait_for(Duration::from_secs(20), || {
        let (_, text) = http_get(&url)?;
        (value(&text, "up") == Some(0.0)).then_some(text)
    })
    .unwrap_or_else(|| panic!("the jump never failed the scrape; log:\n{}", log()));
    assert_eq!(jump_series(&text), 0, "a failed scrape keeps none of its series");
    let (_, status) = http_get(&format!("http://{listen}/api/v1/status")).unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let err = status["sources"][format!("scrape/jumpy/{}", jumpy.address())]["last_error"].as_str().unwrap_or("");
    assert!(err.contains("sample_limit"), "last_error {err:?}");

    // Meanwhile the other target keeps its 1 s interval, counted against
    // the time that really passed and against the target's own count.
    let (served_before, t0) = (good.seen("/metrics").count, std::time::Instant::now());
    let jumpy_before = jumpy.seen("/metrics").count;
    std::thread::sleep(Duration::from_secs(5));
    let (served, elapsed) = (good.seen("/metrics").count - served_before, t0.elapsed().as_secs_f64());
    assert!(
        (elapsed.floor() - 1.0..=elapsed.ceil() + 1.0).contains(&(served as f64)),
        "good target scraped {served} times in {elapsed:.2} s"
    );
    let jumpy_scrapes = jumpy.seen("/metrics").count - jumpy_before;
    assert!(jumpy_scrapes >= 3, "the failing target was scraped {jumpy_scrapes} times in {elapsed:.2} s");
    let (_, text) = http_get(&url).unwrap();
    assert_eq!(value(&text, "up"), Some(0.0));
    assert_eq!(jump_series(&text), 0);

    // Reading stopped at the limit: the peak grew by far less than the body.
    let hwm_after = vantage_tests::status_kib(agent.pid(), "VmHWM:");
    eprintln!(
        "jump to 1,000,000 series ({body_mib:.0} MiB body), {jumpy_scrapes} failed scrapes: VmHWM {hwm_before} -> {hwm_after} KiB"
    );
    assert!(hwm_after <= hwm_before + 8 * 1024, "VmHWM grew from {hwm_before} to {hwm_after} KiB");
}
