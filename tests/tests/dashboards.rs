//! The Grafana dashboards in dashboards/: valid dashboard JSON (panels with
//! targets that carry a PromQL expr), and every metric an expr names is one
//! Vantage produces: the names `vantage collect --once` prints plus the
//! self-metrics of a running agent with both sinks configured.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use vantage_tests::promql::{collected_names, exposed_names, metric_names};
use vantage_tests::{free_port, http_get, vantage_bin, wait_for, workspace, Proc, TempDir};

fn dashboards() -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(workspace().join("dashboards")).expect("dashboards/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path.file_name().unwrap().to_string_lossy().into_owned(), json));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every PromQL expression of a dashboard: panel targets and the
/// `label_values(metric, label)` queries of its variables.
fn exprs(dashboard: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    for var in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = var["query"]["query"].as_str() {
            if let Some(inner) = q.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')) {
                out.push(inner.split(',').next().unwrap().trim().to_string());
            }
        }
    }
    out
}

#[test]
fn promql_name_extraction() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (server_name, le) (rate(x_bucket{a=~"$s",b="c(d"}[$__rate_interval])))"#
        ),
        ["x_bucket"]
    );
    assert_eq!(metric_names("time() - a_seconds{x=\"1\"} or vector(0)"), ["a_seconds"]);
    assert_eq!(metric_names("count(up == 0) / on (job) group_left (v) b"), ["up", "b"]);
}

#[test]
fn dashboards_are_valid_grafana_json() {
    let all = dashboards();
    assert!(all.len() >= 2, "an agent-health and an eBPF dashboard");
    let mut uids = BTreeSet::new();
    for (file, d) in &all {
        assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()), "{file}: title");
        assert!(
            uids.insert(d["uid"].as_str().unwrap_or_else(|| panic!("{file}: uid")).to_string()),
            "{file}: duplicate uid"
        );
        assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "{file}: schemaVersion");
        let panels = d["panels"].as_array().unwrap_or_else(|| panic!("{file}: panels"));
        let mut ids = BTreeSet::new();
        let mut queries = 0;
        for p in panels {
            let title = p["title"].as_str().unwrap_or_else(|| panic!("{file}: a panel without title"));
            assert!(
                ids.insert(p["id"].as_u64().unwrap_or_else(|| panic!("{file}/{title}: id"))),
                "{file}/{title}: duplicate id"
            );
            let grid = &p["gridPos"];
            let (x, w, h) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap(), grid["h"].as_u64().unwrap());
            assert!(w > 0 && h > 0 && x + w <= 24, "{file}/{title}: gridPos {grid}");
            let kind = p["type"].as_str().unwrap_or_else(|| panic!("{file}/{title}: type"));
            if kind == "row" {
                continue;
            }
            assert!(
                ["timeseries", "stat", "table", "heatmap", "state-timeline", "gauge", "bargauge"].contains(&kind),
                "{file}/{title}: {kind}"
            );
            assert_eq!(p["datasource"]["type"], "prometheus", "{file}/{title}");
            let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{file}/{title}: targets"));
            assert!(!targets.is_empty(), "{file}/{title}: no targets");
            let mut refs = BTreeSet::new();
            for t in targets {
                let expr = t["expr"].as_str().unwrap_or_else(|| panic!("{file}/{title}: target without expr"));
                assert!(!expr.trim().is_empty() && balanced(expr), "{file}/{title}: bad expr {expr:?}");
                assert!(refs.insert(t["refId"].as_str().unwrap().to_string()), "{file}/{title}: duplicate refId");
                if kind == "heatmap" {
                    assert_eq!(t["format"], "heatmap", "{file}/{title}");
                    assert!(
                        expr.contains("_bucket") && expr.contains("by (le)"),
                        "{file}/{title}: heatmaps plot buckets by le"
                    );
                }
                queries += 1;
            }
        }
        assert!(queries >= 8, "{file}: only {queries} queries");
    }
}

fn balanced(expr: &str) -> bool {
    let mut stack = Vec::new();
    let mut in_str = false;
    for c in expr.chars() {
        match c {
            '"' => in_str = !in_str,
            '(' | '{' | '[' if !in_str => stack.push(c),
            ')' | '}' | ']' if !in_str => {
                let open = stack.pop();
                if open
                    != Some(match c {
                        ')' => '(',
                        '}' => '{',
                        _ => '[',
                    })
                {
                    return false;
                }
            }
            _ => {}
        }
    }
    stack.is_empty() && !in_str
}

/// The self-metrics of a running agent; with `sinks`, a remote_write and a
/// Loki endpoint are configured (both unreachable: the sinks still report).
/// Err with the agent's log when it exits.
fn self_metric_names(sinks: bool) -> Result<BTreeSet<String>, String> {
    let dir = TempDir::new("dashboards-agent");
    let (port, dead) = (free_port(), free_port());
    let mut text = format!(
        "[agent]\nlisten_addr = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nscrape_interval = \"1s\"\n",
        dir.path().join("data").display()
    );
    if sinks {
        // The Loki sink runs only when a log source feeds it.
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("app.log"), "level=info msg=hello\n").unwrap();
        text.push_str(&format!(
            "\n[[remote_write]]\nurl = \"http://127.0.0.1:{dead}/api/v1/write\"\n\n[loki]\nurl = \"http://127.0.0.1:{dead}\"\n\n[[logs.files]]\nname = \"app\"\npaths = [\"{}/*.log\"]\n",
            logs.display()
        ));
    }
    let config = dir.write("agent.toml", &text);
    let mut cmd = Command::new(vantage_bin());
    cmd.args(["run", "--config", config.to_str().unwrap()]);
    let log = dir.path().join("agent.log");
    let mut agent = Proc::spawn("vantage", cmd, &log);
    let body = wait_for(Duration::from_secs(20), || {
        if let Ok(Some(exit)) = agent.child.try_wait() {
            return Some(Err(format!(
                "the agent exited ({exit}): {}",
                std::fs::read_to_string(&log).unwrap_or_default().trim()
            )));
        }
        http_get(&format!("http://127.0.0.1:{port}/-/ready")).filter(|(s, _)| *s == 200)?;
        // A second look, after the sinks had a moment to try and fail.
        std::thread::sleep(Duration::from_millis(1500));
        http_get(&format!("http://127.0.0.1:{port}/metrics")).map(|(_, b)| Ok(b))
    })
    .expect("agent /metrics within 20 s")?;
    Ok(exposed_names(&body))
}

fn check(file: &str, produced: &BTreeSet<String>, note: &str) {
    let (_, d) = dashboards().into_iter().find(|(f, _)| f == file).unwrap_or_else(|| panic!("dashboards/{file}"));
    let mut missing = BTreeSet::new();
    let mut checked = 0;
    for expr in exprs(&d) {
        for name in metric_names(&expr) {
            checked += 1;
            if !produced.contains(&name) {
                missing.insert(name);
            }
        }
    }
    assert!(checked > 10, "{file}: only {checked} names found");
    assert!(missing.is_empty(), "{file} queries metrics Vantage does not produce: {missing:?}{note}");
}

#[test]
fn agent_dashboard_names_are_produced() {
    let mut produced = collected_names();
    produced.extend(self_metric_names(false).unwrap());
    // The sink metrics need remote_write and Loki running; say why when the
    // agent refuses them, after listing every name still missing.
    let note = match self_metric_names(true) {
        Ok(names) => {
            produced.extend(names);
            String::new()
        }
        Err(e) => format!("\n(the agent with remote_write and loki configured did not run: {e})"),
    };
    check("vantage-agent.json", &produced, &note);
}

#[test]
fn ebpf_dashboard_names_are_produced() {
    // collect --once also prints the self-metrics, vantage_build_info (the
    // server variable's source) among them.
    check("vantage-ebpf.json", &collected_names(), "");
}
