//! The status page at `/`, loaded in a real headless Chromium: every source,
//! scrape target, sink and eBPF program shows with its state, a failing one
//! with its error, and the configuration with secrets redacted. A screenshot
//! is kept in target/test-artifacts/ for a human to look at.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vantage_tests::{free_port, http_get, require_program, vantage_bin, wait_for, workspace, Proc, TempDir};

/// Chromium with the flags a root, display-less, network-less CI needs.
fn chromium(profile: &Path) -> Command {
    let mut cmd = Command::new(require_program("chromium", "chromium"));
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

/// The DOM after Chromium loaded and rendered `url`.
fn rendered_dom(url: &str) -> String {
    let profile = TempDir::new("chromium-dom");
    let out = chromium(profile.path()).arg("--dump-dom").arg(url).output().expect("run chromium");
    assert!(out.status.success(), "chromium --dump-dom {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A PNG screenshot of `url` at `path`.
fn screenshot(url: &str, path: &Path) {
    let profile = TempDir::new("chromium-shot");
    let _ = std::fs::remove_file(path);
    let out = chromium(profile.path())
        .arg(format!("--screenshot={}", path.display()))
        .arg("--window-size=1280,1400")
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium --screenshot: {}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(path).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", path.display()));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "screenshot is not a real PNG ({} bytes)", png.len());
}

fn artifacts() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace().join("target"), PathBuf::from)
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts the agent on `config` and waits until it is ready.
fn start_agent(dir: &TempDir, config: &str) -> (Proc, String) {
    let path = dir.write("vantage.toml", config);
    let mut cmd = Command::new(vantage_bin());
    cmd.args(["run", "--config", path.to_str().unwrap()]).env("RUST_LOG", "info");
    let mut agent = Proc::spawn("vantage", cmd, &dir.path().join("agent.log"));
    let port = config.split("127.0.0.1:").nth(1).unwrap().split('"').next().unwrap().to_string();
    let base = format!("http://127.0.0.1:{port}");
    let ready = wait_for(Duration::from_secs(30), || {
        if let Ok(Some(exit)) = agent.child.try_wait() {
            return Some(Err(exit));
        }
        http_get(&format!("{base}/-/ready")).filter(|(s, _)| *s == 200).map(Ok)
    });
    assert!(
        matches!(ready, Some(Ok(_))),
        "agent not ready ({ready:?}); log:\n{}",
        std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
    );
    (agent, base)
}

/// The table row whose first cell is `name`, as text (tags stripped).
fn row(dom: &str, name: &str) -> String {
    let marker = format!("<tr data-name=\"{name}\">");
    let start = dom.find(&marker).unwrap_or_else(|| panic!("no row for {name:?} in the rendered page:\n{dom}"));
    let end = start + dom[start..].find("</tr>").unwrap();
    strip_tags(&dom[start..end])
}

fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn status_page_shows_sources_programs_errors_and_redacted_config() {
    let dir = TempDir::new("status-page");
    let port = free_port();
    // The node source reads a procfs that does not exist: every collector
    // fails, and the source stays up (as node_exporter reports each
    // collector's failure, not the scrape's). A failing scrape target with
    // its error is the second test's.
    let config = format!(
        r#"
[agent]
listen_addr = "127.0.0.1:{port}"
data_dir = "{data}"
scrape_interval = "30s"
external_labels = {{ server_name = "page-test" }}

[node]
proc_path = "/nonexistent/proc"

[ebpf]
enabled = true

[docker]
enabled = false
"#,
        data = dir.path().join("data").display()
    );
    let (_agent, base) = start_agent(&dir, &config);
    // A long interval: no collection lands between the JSON snapshot and
    // the rendered page, so their series counts must agree exactly.
    std::thread::sleep(Duration::from_millis(500));

    let (_, json) = http_get(&format!("{base}/api/v1/status")).unwrap();
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    let dom = rendered_dom(&format!("{base}/"));
    assert!(dom.contains("<h1>Vantage"), "{dom}");

    // Every source from the JSON is on the page with its health.
    let sources = status["sources"].as_object().unwrap();
    assert!(sources.contains_key("node") && sources.contains_key("ebpf"), "{status}");
    for (name, s) in sources {
        let text = row(&dom, name);
        let health = match s["health"].as_str().unwrap() {
            "up" => "up",
            "down" => "down",
            _ => "pending",
        };
        assert!(text.contains(&format!(" {health} ")), "{name}: {text}");
        assert!(text.contains(&format!(" {} ", s["series"])), "{name} series {}: {text}", s["series"]);
        assert!(text.contains("UTC ("), "{name}: last collection time missing: {text}");
    }
    let node = row(&dom, "node");
    assert!(node.contains(" up "), "{node}");
    let ebpf = row(&dom, "ebpf");
    assert!(ebpf.contains(" up "), "{ebpf}");

    // Every program with its state.
    let programs = status["programs"].as_object().unwrap();
    assert!(!programs.is_empty());
    for (name, p) in programs {
        let text = row(&dom, name);
        let state = if p["attached"] == true { "attached" } else { "not attached" };
        assert!(text.contains(state), "{name}: {text}");
    }
    assert!(dom.contains(&format!("eBPF programs: {} of {} attached", programs.len(), programs.len())), "{dom}");
    assert!(dom.contains("sources: 2 up, 0 down"), "summary line: {dom}");
    assert!(dom.contains("no sinks"), "no sink configured here");

    // The configuration in effect, escaped inside <pre>.
    assert!(
        dom.contains("&quot;proc_path&quot;: &quot;/nonexistent/proc&quot;")
            || dom.contains("\"proc_path\": \"/nonexistent/proc\""),
        "{dom}"
    );
    assert!(dom.contains("page-test"));

    // No external asset anywhere: the page must work on an isolated host.
    let (_, html) = http_get(&format!("{base}/")).unwrap();
    for external in ["http://", "https://", "<script", "<link", "@import"] {
        assert!(!html.contains(external), "the page references {external:?}");
    }

    let shot = artifacts().join("status_page.png");
    screenshot(&format!("{base}/"), &shot);
    eprintln!("screenshot: {}", shot.display());
}

#[test]
fn status_page_shows_failing_scrape_target_and_remote_write_sink() {
    // Needs the scrape and remote_write work (issues of the scrape and rw
    // helpers): until they are merged the agent refuses a remote_write
    // section and registers no targets, and this test fails.
    let dir = TempDir::new("status-page-sinks");
    let port = free_port();
    let dead = free_port();
    let config = format!(
        r#"
[agent]
listen_addr = "127.0.0.1:{port}"
data_dir = "{data}"
scrape_interval = "1s"

[ebpf]
enabled = false

[docker]
enabled = false

[[scrape]]
job_name = "app"
targets = ["127.0.0.1:{dead}"]

[[remote_write]]
url = "http://vantage:s3cret-pw@127.0.0.1:{dead}/api/v1/write"
"#,
        data = dir.path().join("data").display()
    );
    let (_agent, base) = start_agent(&dir, &config);
    let got = wait_for(Duration::from_secs(20), || {
        let (_, json) = http_get(&format!("{base}/api/v1/status"))?;
        let status: serde_json::Value = serde_json::from_str(&json).ok()?;
        let target_failed =
            status["sources"].as_object()?.values().any(|s| s["kind"] == "scrape" && s["health"] == "down");
        let sink_failed =
            status["sinks"].as_object()?.values().any(|s| !s["last_error"].as_str().unwrap_or("").is_empty());
        (target_failed && sink_failed).then_some(status)
    });
    let status = got.expect("a down scrape target and a failing sink in /api/v1/status within 20 s");
    let dom = rendered_dom(&format!("{base}/"));
    for (name, s) in status["sources"].as_object().unwrap() {
        let text = row(&dom, name);
        if s["kind"] == "scrape" {
            assert!(text.contains("down") && text.contains(&format!("127.0.0.1:{dead}")), "{text}");
            assert!(!s["last_error"].as_str().unwrap().is_empty());
        }
    }
    // The queue grows while the receiver refuses (sources keep sending), so
    // the page, rendered between two snapshots, shows a length between them.
    let (_, json) = http_get(&format!("{base}/api/v1/status")).expect("status after the render");
    let after: serde_json::Value = serde_json::from_str(&json).unwrap();
    for (name, s) in status["sinks"].as_object().unwrap() {
        let text = row(&dom, name);
        assert!(text.contains("failing"), "{text}");
        let shown: u64 = text
            .split_whitespace()
            .skip_while(|w| *w != "failing")
            .nth(1)
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no queue length after `failing`: {text}"));
        let (low, high) = (s["pending"].as_u64().unwrap(), after["sinks"][name]["pending"].as_u64().unwrap());
        assert!((low..=high).contains(&shown), "queue length {shown} outside {low}..={high}: {text}");
    }
    assert!(!dom.contains("s3cret-pw"), "URL credentials must be redacted");
    screenshot(&format!("{base}/"), &artifacts().join("status_page_sinks.png"));
}
