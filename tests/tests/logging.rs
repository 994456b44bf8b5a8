//! The agent's log as a log pipeline sees it: stderr read through a pipe
//! has no ANSI colour, a target and a sink that stay down are logged when
//! they go down and then once a period (`agent.log_repeat_interval`, here
//! 2 s instead of the default minute: 3 periods stand for 3 minutes) with
//! the failures meanwhile, the JSON format has the documented fields, and
//! a node collector that fails is on the status page with its error and
//! since when.

use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vantage_tests::scrape::{ExpoServer, Route};
use vantage_tests::{free_port, http_get, vantage_bin, wait_for, TempDir};

/// The agent with stderr (and stdout) on a pipe, read by a thread.
struct Agent {
    child: Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Agent {
    fn start(config: &std::path::Path, args: &[&str]) -> Agent {
        let mut child = Command::new(vantage_bin())
            .args(args)
            .args(["run", "--config", config.to_str().unwrap()])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vantage");
        let mut stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Agent { child, log, reader: Some(reader) }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    /// Stops the agent (SIGTERM) and returns everything it wrote.
    fn stop(mut self) -> String {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.text()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `key=` in a text log line (logfmt-like, as tracing writes it).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split_whitespace().next()
}

#[test]
fn text_log_through_a_pipe_is_plain_and_a_down_target_or_sink_logs_once_a_period() {
    let app = ExpoServer::start();
    let mut route = Route::text("app_requests_total 1\n");
    route.basic_auth = Some(("prom".into(), "secret".into()));
    app.set("/metrics", route);
    let dir = TempDir::new("logging-text");
    let (port, dead) = (free_port(), free_port());
    let config = dir.write(
        "agent.toml",
        &format!(
            "[agent]\nlisten_addr = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nscrape_interval = \"250ms\"\n\
             log_repeat_interval = \"2s\"\n\n[node]\nenabled = false\n\n[ebpf]\nenabled = false\n\n\
             [docker]\nenabled = false\n\n[[remote_write]]\nurl = \"http://127.0.0.1:{dead}/api/v1/write\"\n\n\
             [[scrape]]\njob_name = \"app\"\n[[scrape.static_configs]]\ntargets = [\"{}\"]\n",
            dir.path().join("data").display(),
            app.address()
        ),
    );
    let started = Instant::now();
    let agent = Agent::start(&config, &[]);
    let target = format!("scrape/app/{}", app.address());
    let down_since = wait_for(Duration::from_secs(20), || agent.text().contains("scrape failed").then(Instant::now))
        .unwrap_or_else(|| panic!("no scrape failure logged: {}", agent.text()));
    // Three periods of 401s, every 250 ms.
    std::thread::sleep(Duration::from_millis(6500).saturating_sub(down_since.elapsed()));
    let answered_401 = app.seen("/metrics").count;
    let mut route = Route::text("app_requests_total 1\n");
    route.basic_auth = None;
    app.set("/metrics", route);
    wait_for(Duration::from_secs(10), || agent.text().contains("scrape works again").then_some(()))
        .unwrap_or_else(|| panic!("no recovery logged: {}", agent.text()));
    let log = agent.stop();
    let ran_for = started.elapsed();

    assert!(!log.contains('\x1b'), "ANSI escapes in a piped log:\n{log}");
    let about_target: Vec<&str> = log.lines().filter(|l| l.contains(&target)).collect();
    let (down, back): (Vec<&str>, Vec<&str>) = about_target.iter().partition(|l| !l.contains("works again"));
    assert!((2..=4).contains(&down.len()), "{} lines while down:\n{}", down.len(), down.join("\n"));
    assert!(down[0].contains("WARN") && down[0].contains("scrape failed") && down[0].contains("401"), "{}", down[0]);
    // Every later line is a repeat with the failures since the line before;
    // together they account for every failure up to the last one.
    let mut accounted = 1;
    for l in &down[1..] {
        assert!(l.contains("scrape still failing"), "{l}");
        accounted += field(l, "since_last_line").unwrap().parse::<u64>().unwrap();
        assert_eq!(field(l, "failures").unwrap().parse::<u64>().unwrap(), accounted, "{l}");
    }
    assert_eq!(back.len(), 1, "{back:?}");
    let failures: usize = field(back[0], "failures").unwrap().parse().unwrap();
    // The agent saw every 401 the server sent before the switch, and at
    // most one request that was in flight at the switch.
    assert!(
        failures >= answered_401.saturating_sub(1) && failures <= app.seen("/metrics").count,
        "recovery says {failures} failures, the server answered {answered_401} 401s"
    );
    assert!(failures >= 20, "at 250 ms over 6.5 s: {failures}");

    // The remote_write endpoint refused every push the whole time: one
    // line, then at most one a period.
    let about_sink: Vec<&str> = log.lines().filter(|l| l.contains("push failed")).collect();
    let most = 1 + (ran_for.as_secs_f64() / 2.0) as usize;
    assert!(
        (1..=most).contains(&about_sink.len()),
        "{} remote_write lines in {ran_for:?}:\n{}",
        about_sink.len(),
        about_sink.join("\n")
    );
    assert!(about_sink[0].contains("failures=1 "), "{}", about_sink[0]);
}

#[test]
fn json_log_has_the_documented_fields_and_a_failing_node_collector_is_on_the_status_page() {
    // A proc directory with loadavg but no schedstat, as on a kernel
    // built without CONFIG_SCHEDSTATS.
    let dir = TempDir::new("logging-json");
    let proc_dir = dir.path().join("proc");
    std::fs::create_dir_all(&proc_dir).unwrap();
    std::fs::write(proc_dir.join("loadavg"), "0.25 0.50 0.75 1/123 4567\n").unwrap();
    let port = free_port();
    let config = dir.write(
        "agent.toml",
        &format!(
            "[agent]\nlisten_addr = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nscrape_interval = \"500ms\"\n\n\
             [node]\nproc_path = \"{}\"\nenable = [\"loadavg\", \"schedstat\"]\n\n[ebpf]\nenabled = false\n\n\
             [docker]\nenabled = false\n",
            dir.path().join("data").display(),
            proc_dir.display()
        ),
    );
    let agent = Agent::start(&config, &["--log-format", "json"]);
    let status = |()| {
        let (code, body) = http_get(&format!("http://127.0.0.1:{port}/api/v1/status"))?;
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        (code == 200 && json["sources"]["node"]["collections"].as_u64() >= Some(2)).then_some(json)
    };
    let first =
        wait_for(Duration::from_secs(20), || status(())).unwrap_or_else(|| panic!("no status: {}", agent.text()));
    let part = &first["sources"]["node"]["failing_parts"]["schedstat"];
    let error = part["error"].as_str().unwrap_or_else(|| panic!("schedstat not failing: {first}"));
    assert!(error.contains(&format!("{}/schedstat", proc_dir.display())), "{error}");
    assert_eq!(first["sources"]["node"]["failing_parts"].as_object().unwrap().len(), 1, "loadavg works: {first}");
    assert_eq!(first["sources"]["node"]["health"], "up", "a failing collector does not fail the source");
    let since = part["since_ms"].as_i64().unwrap();
    // Since when: the first failed collection, not the latest.
    let seen = first["sources"]["node"]["collections"].as_u64().unwrap();
    let later = wait_for(Duration::from_secs(10), || {
        status(()).filter(|s| s["sources"]["node"]["collections"].as_u64() > Some(seen + 1))
    })
    .expect("more collections");
    assert_eq!(later["sources"]["node"]["failing_parts"]["schedstat"]["since_ms"].as_i64(), Some(since));
    assert!(since <= first["sources"]["node"]["last_collection_ms"].as_i64().unwrap() - 400, "{first}");
    let (_, html) = http_get(&format!("http://127.0.0.1:{port}/")).unwrap();
    assert!(html.contains("<span data-part=\"schedstat\">schedstat: "), "{html}");
    assert!(html.contains("failing since "), "{html}");

    let log = agent.stop();
    assert!(!log.contains('\x1b'), "{log}");
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    for l in &lines {
        for key in ["timestamp", "level", "target"] {
            assert!(l[key].is_string(), "{key} in {l}");
        }
        assert!(l["fields"]["message"].is_string(), "{l}");
    }
    let failed: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["fields"]["message"] == "node collector failed").collect();
    assert_eq!(failed.len(), 1, "logged when it starts failing only: {failed:?}");
    assert_eq!(failed[0]["level"], "WARN");
    assert_eq!(failed[0]["fields"]["collector"], "schedstat");
    assert!(failed[0]["fields"]["error"].as_str().unwrap().contains("schedstat"));
    assert!(lines.iter().any(|l| l["fields"]["message"] == "vantage started" && l["level"] == "INFO"));
}
