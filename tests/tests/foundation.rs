//! The foundation: configuration checks, the CLI, `collect --once` with a
//! real kernel program, and `run` with its HTTP endpoints and shutdown.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vantage_tests::{
    free_port, http_get, parse_text, require_program, vantage, vantage_bin, wait_for, workspace, Proc, TempDir,
};

#[test]
fn every_config_file_passes_check_with_env_example() {
    let env = workspace().join(".env.example");
    let mut checked = 0;
    for entry in std::fs::read_dir(workspace().join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = vantage(&["check", "--config", path.to_str().unwrap(), "--env-file", env.to_str().unwrap()]);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{}: {}{}", path.display(), stdout, String::from_utf8_lossy(&out.stderr));
            assert!(stdout.contains("configuration is valid"), "{stdout}");
            // .env.example's passwords are all "change-me": no secret is printed.
            assert!(!stdout.contains("change-me"), "a secret leaked into check output:\n{stdout}");
            checked += 1;
        }
    }
    assert_eq!(checked, 5, "config/ holds local, unified, accounts, exchange and kafka");
}

#[test]
fn unknown_key_fails_with_file_line_and_column() {
    let dir = TempDir::new("unknown-key");
    let path = dir.write("bad.toml", "[agent]\nscrape_interval = \"15s\"\n\n[node]\nenabled = true\nfrobnicate = 3\n");
    let out = vantage(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}:6:1", path.display())), "{stderr}");
    assert!(stderr.contains("frobnicate"), "{stderr}");
}

#[test]
fn unset_variable_fails_naming_it_and_where() {
    let dir = TempDir::new("unset-var");
    let path = dir.write("bad.toml", "[node]\njob = \"${VANTAGE_TEST_NEVER_SET}-node-exporter\"\n");
    let out = Command::new(vantage_bin())
        .args(["check", "--config", path.to_str().unwrap()])
        .env_remove("VANTAGE_TEST_NEVER_SET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("${VANTAGE_TEST_NEVER_SET} at line 2, column 8"), "{stderr}");
}

#[test]
fn env_file_fills_variables_and_the_environment_wins() {
    let dir = TempDir::new("env-file");
    let env = dir.write(".env", "SERVER_NAME=from-file\nENVIRONMENT=staging\n");
    let path = dir.write(
        "c.toml",
        "[agent]\nexternal_labels = { server_name = \"${SERVER_NAME}\", environment = \"${ENVIRONMENT}\" }\n[node]\njob = \"${SERVER_NAME}-node-exporter\"\n",
    );
    let out = Command::new(vantage_bin())
        .args(["check", "--config", path.to_str().unwrap(), "--env-file", env.to_str().unwrap()])
        .env("SERVER_NAME", "from-env")
        .env_remove("ENVIRONMENT")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("environment=\"staging\", server_name=\"from-env\""), "{stdout}");
    assert!(stdout.contains("job \"from-env-node-exporter\""), "{stdout}");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(vantage(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(vantage(&["collect"]).status.code(), Some(2), "collect needs --once");
    assert_eq!(vantage(&["check"]).status.code(), Some(2), "check needs --config");
    let out = vantage(&["version"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("vantage {}", env!("CARGO_PKG_VERSION")));
}

/// Runs `promtool check metrics` on `text`: (exit success, its findings).
fn promtool_check(text: &str) -> (bool, Vec<String>) {
    let promtool = require_program("promtool", "prometheus");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let checked = child.wait_with_output().unwrap();
    let findings = String::from_utf8_lossy(&checked.stdout).to_string() + &String::from_utf8_lossy(&checked.stderr);
    (checked.status.success(), findings.lines().map(str::to_string).filter(|l| !l.trim().is_empty()).collect())
}

/// Lint findings that node_exporter's and cAdvisor's own names draw
/// (node_memory_AnonPages_bytes is camelCase, node_entropy_*_bits is not in
/// bytes, the counter container_memory_failcnt has no _total): Vantage keeps
/// those names on purpose so dashboards keep working. (Container metrics
/// appear whenever a container runs on the machine.)
fn is_peer_naming_lint(finding: &str) -> bool {
    (finding.starts_with("node_")
        && (finding.contains("should be written in 'snake_case' not 'camelCase'")
            || finding.contains("use base unit \"bytes\" instead of \"bits\"")))
        || finding == "container_memory_failcnt counter metrics should have \"_total\" suffix"
}

#[test]
fn collect_once_without_node_names_passes_promtool_exactly() {
    let dir = TempDir::new("collect-ebpf");
    let config = dir.write("c.toml", "[node]\nenabled = false\n[docker]\nenabled = false\n");
    let out = vantage(&["collect", "--once", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (ok, findings) = promtool_check(&text);
    assert!(ok && findings.is_empty(), "promtool check metrics: {findings:?}");
    assert!(text.contains("ebpf_runqueue_latency_seconds_bucket{"), "{text}");
}

#[test]
fn collect_once_is_valid_exposition_with_kernel_context_switches() {
    let out = vantage(&["collect", "--once"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (_, findings) = promtool_check(&text);
    let other: Vec<&String> = findings.iter().filter(|f| !is_peer_naming_lint(f)).collect();
    assert!(
        other.is_empty(),
        "promtool check metrics found more than node_exporter's and cAdvisor's own naming lints: {other:?}"
    );
    let series = parse_text(&text);
    let switches: Vec<f64> =
        series.iter().filter(|(s, _)| s.starts_with("ebpf_cpu_context_switches_total{cpu=")).map(|(_, v)| *v).collect();
    assert!(!switches.is_empty(), "no ebpf_cpu_context_switches_total in:\n{text}");
    assert!(switches.iter().sum::<f64>() > 0.0, "context switches all zero: {switches:?}");
    assert!(
        series.iter().any(|(s, v)| s == "vantage_ebpf_program_up{program=\"sched_switch\"}" && *v == 1.0),
        "sched_switch not reported up:\n{text}"
    );
}

#[test]
fn run_serves_health_readiness_metrics_and_stops_within_5s_of_sigterm() {
    let dir = TempDir::new("run");
    let port = free_port();
    let config = dir.write(
        "agent.toml",
        &format!(
            "[agent]\nlisten_addr = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nscrape_interval = \"1s\"\nserve_collected = true\n[docker]\nenabled = false\n",
            dir.path().display()
        ),
    );
    let mut cmd = Command::new(vantage_bin());
    cmd.args(["run", "--config", config.to_str().unwrap()]);
    let mut agent = Proc::spawn("vantage", cmd, &dir.path().join("agent.log"));
    let base = format!("http://127.0.0.1:{port}");
    let healthy =
        wait_for(Duration::from_secs(10), || http_get(&format!("{base}/-/healthy")).filter(|(s, _)| *s == 200));
    assert!(
        healthy.is_some(),
        "no /-/healthy; log: {}",
        std::fs::read_to_string(dir.path().join("agent.log")).unwrap()
    );
    let ready = wait_for(Duration::from_secs(10), || http_get(&format!("{base}/-/ready")).filter(|(s, _)| *s == 200));
    assert!(ready.is_some(), "never ready");
    let (status, metrics) = http_get(&format!("{base}/metrics")).unwrap();
    assert_eq!(status, 200);
    let series = parse_text(&metrics);
    assert!(series.iter().any(|(s, v)| s.starts_with("vantage_build_info{") && *v == 1.0), "{metrics}");
    assert!(series.iter().any(|(s, v)| s == "vantage_ready" && *v == 1.0), "{metrics}");
    assert!(series.iter().any(|(s, _)| s.starts_with("ebpf_cpu_context_switches_total{cpu=")), "{metrics}");
    assert!(series.iter().any(|(s, _)| s.starts_with("node_load1{")), "{metrics}");

    agent.signal(libc::SIGTERM);
    let start = Instant::now();
    let status = agent.wait_timeout(Duration::from_secs(5));
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    let status = status.unwrap_or_else(|| panic!("still running 5 s after SIGTERM; log: {log}"));
    assert!(status.success(), "exit {status}; log: {log}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn ready_follows_every_enabled_source() {
    // Collectors fire at once, so the 503 window is too short to catch from
    // outside (the unit test in status.rs covers it); check here that the
    // enabled sources are the ones readiness waits for.
    let dir = TempDir::new("ready");
    let port = free_port();
    let config = dir.write(
        "agent.toml",
        &format!(
            "[agent]\nlisten_addr = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n[docker]\nenabled = false\n",
            dir.path().display()
        ),
    );
    let mut cmd = Command::new(vantage_bin());
    cmd.args(["run", "--config", config.to_str().unwrap()]);
    let _agent = Proc::spawn("vantage", cmd, &dir.path().join("agent.log"));
    let base = format!("http://127.0.0.1:{port}");
    let status = wait_for(Duration::from_secs(10), || {
        let (code, body) = http_get(&format!("{base}/api/v1/status"))?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (code == 200 && v["ready"] == true).then_some(v)
    })
    .expect("status never ready");
    for source in ["node", "ebpf"] {
        assert!(status["sources"][source]["collections"].as_u64().unwrap() >= 1, "{status}");
        assert_eq!(status["sources"][source]["required_for_ready"], true);
    }
}
