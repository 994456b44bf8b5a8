//! The Prometheus rules in rules/: `promtool check rules` and `promtool
//! test rules` (Debian's `prometheus` 2.42) pass, every alert has a unit
//! test where it fires and one where it does not, a summary, a description
//! and a runbook line in the README, and every metric a rule names is one
//! Vantage produces (as tests/tests/dashboards.rs checks the dashboards).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use vantage_tests::docker::{busybox_image, docker};
use vantage_tests::promql::{collected_names, exposed_names, metric_names};
use vantage_tests::{free_port, http_get, require_program, vantage_bin, wait_for, workspace, Proc, TempDir};

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(workspace().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    out.sort();
    out
}

fn load(path: &PathBuf) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every rule of every rule file: (file, rule as YAML).
fn rules() -> Vec<(String, serde_yaml_ng::Value)> {
    let mut out = Vec::new();
    for path in yaml_files("rules") {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for group in load(&path)["groups"].as_sequence().unwrap_or_else(|| panic!("{file}: groups")) {
            for rule in group["rules"].as_sequence().unwrap() {
                out.push((file.clone(), rule.clone()));
            }
        }
    }
    out
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new(require_program("promtool", "prometheus"))
        .args(args)
        .current_dir(workspace().join("rules"))
        .output()
        .expect("run promtool");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn promtool_checks_the_rule_files() {
    let files: Vec<String> =
        yaml_files("rules").iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(files, ["vantage-agent.rules.yml", "vantage-host.rules.yml"]);
    let mut args = vec!["check", "rules"];
    args.extend(files.iter().map(String::as_str));
    let (ok, out) = promtool(&args);
    assert!(ok, "promtool check rules:\n{out}");
    // The count promtool found is the count in the files: nothing skipped.
    for file in &files {
        let n = rules().iter().filter(|(f, _)| f == file).count();
        assert!(out.contains(&format!("Checking {file}\n  SUCCESS: {n} rules found")), "{file}: {n} rules?\n{out}");
    }
}

#[test]
fn promtool_unit_tests_pass() {
    let tests: Vec<String> = yaml_files("rules/tests")
        .iter()
        .map(|p| format!("tests/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    assert!(tests.len() >= 2, "{tests:?}");
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let (ok, out) = promtool(&args);
    assert!(ok, "promtool test rules:\n{out}");
    assert_eq!(out.matches("SUCCESS").count(), tests.len(), "{out}");
}

#[test]
fn every_alert_is_tested_firing_and_not_firing() {
    // alert -> (cases where it fires, cases where it does not)
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut covered_files = BTreeSet::new();
    for path in yaml_files("rules/tests") {
        let test = load(&path);
        for f in test["rule_files"].as_sequence().unwrap() {
            covered_files.insert(f.as_str().unwrap().trim_start_matches("../").to_string());
        }
        for case in test["tests"].as_sequence().unwrap() {
            for t in case["alert_rule_test"].as_sequence().into_iter().flatten() {
                let name = t["alertname"].as_str().unwrap().to_string();
                let fires = t["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty());
                let entry = cases.entry(name).or_default();
                if fires {
                    entry.0 += 1;
                } else {
                    entry.1 += 1;
                }
            }
        }
    }
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let mut alerts = 0;
    for (file, rule) in rules() {
        assert!(covered_files.contains(&file), "{file} is in no rules/tests file's rule_files");
        let Some(alert) = rule["alert"].as_str() else {
            assert!(rule["record"].as_str().is_some_and(|r| r.contains(':')), "{file}: {rule:?}");
            continue;
        };
        alerts += 1;
        let (fires, quiet) = cases.get(alert).copied().unwrap_or_default();
        assert!(fires >= 1 && quiet >= 1, "{file}/{alert}: {fires} firing and {quiet} quiet test cases");
        for key in ["summary", "description"] {
            assert!(
                rule["annotations"][key].as_str().is_some_and(|s| s.len() > 10),
                "{file}/{alert}: annotation {key}"
            );
        }
        assert!(
            ["warning", "critical"].contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
            "{file}/{alert}: severity"
        );
        assert!(
            readme.lines().any(|l| l.starts_with(&format!("| `{alert}` |"))),
            "{file}/{alert}: no runbook line in the README's alert table"
        );
    }
    assert!(alerts >= 14, "only {alerts} alerts");
}

/// /metrics of a running agent with a remote_write endpoint, Loki (both
/// unreachable: the sinks still report), a scrape target that is down and
/// security events, with an unexpected exec in a busybox container.
fn running_agent_names() -> BTreeSet<String> {
    let dir = TempDir::new("rules-agent");
    let container = format!("vt-rules-{}", std::process::id());
    let _ = Command::new("docker").args(["rm", "-f", &container]).output();
    docker(&["run", "-d", "--name", &container, "--network", "none", busybox_image(), "/bin/sleep", "600"]);
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
        }
    }
    let _remove = Remove(container.clone());
    let (port, dead) = (free_port(), free_port());
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("app.log"), "level=info msg=hello\n").unwrap();
    let config = dir.write(
        "agent.toml",
        &format!(
            "[agent]\nlisten_addr = \"127.0.0.1:{port}\"\ndata_dir = \"{data}\"\nscrape_interval = \"1s\"\n\n\
             [[remote_write]]\nurl = \"http://127.0.0.1:{dead}/api/v1/write\"\n\n\
             [loki]\nurl = \"http://127.0.0.1:{dead}\"\n\n\
             [[logs.files]]\nname = \"app\"\npaths = [\"{logs}/*.log\"]\n\n\
             [[scrape]]\njob_name = \"app\"\n[[scrape.static_configs]]\ntargets = [\"127.0.0.1:{dead}\"]\n\n\
             [security]\nenabled = true\nkinds = [\"exec\"]\n\
             [[security.expect]]\ncontainer = \"^{container}$\"\nexecutables = []\n",
            data = dir.path().join("data").display(),
            logs = logs.display()
        ),
    );
    let mut cmd = Command::new(vantage_bin());
    cmd.args(["run", "--config", config.to_str().unwrap()]);
    let log = dir.path().join("agent.log");
    let mut agent = Proc::spawn("vantage", cmd, &log);
    let body = wait_for(Duration::from_secs(20), || {
        if let Ok(Some(exit)) = agent.child.try_wait() {
            panic!("the agent exited ({exit}): {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        http_get(&format!("http://127.0.0.1:{port}/-/ready")).filter(|(s, _)| *s == 200)?;
        // After the sinks and the target had a moment to try and fail.
        std::thread::sleep(Duration::from_millis(1500));
        http_get(&format!("http://127.0.0.1:{port}/metrics")).map(|(_, b)| b)
    })
    .expect("agent /metrics within 20 s");
    // An exec no expectation lists, once the security programs are up.
    let metrics = || http_get(&format!("http://127.0.0.1:{port}/metrics")).map(|(_, b)| b).unwrap_or_default();
    wait_for(Duration::from_secs(20), || {
        metrics().contains("vantage_ebpf_program_up{program=\"security_exec\"} 1").then_some(())
    })
    .unwrap_or_else(|| panic!("security_exec not up: {}", std::fs::read_to_string(&log).unwrap_or_default()));
    docker(&["exec", &container, "/bin/true"]);
    let body = wait_for(Duration::from_secs(20), || {
        Some(metrics()).filter(|m| m.contains("ebpf_security_unexpected_events_total{"))
    })
    .map(|m| m + &body)
    .expect("an unexpected exec counted within 20 s");
    exposed_names(&body)
}

#[test]
fn every_metric_a_rule_names_is_produced() {
    let recorded: BTreeSet<String> =
        rules().iter().filter_map(|(_, r)| r["record"].as_str().map(str::to_string)).collect();
    let mut produced = collected_names();
    produced.extend(running_agent_names());
    let mut missing = BTreeSet::new();
    let mut checked = BTreeSet::new();
    for (file, rule) in rules() {
        let expr = rule["expr"].as_str().unwrap_or_else(|| panic!("{file}: expr"));
        for name in metric_names(expr) {
            if recorded.contains(&name) {
                continue;
            }
            if !produced.contains(&name) {
                missing.insert(format!("{file}: {name}"));
            }
            checked.insert(name);
        }
    }
    assert!(checked.len() >= 15, "only {} names found: {checked:?}", checked.len());
    assert!(missing.is_empty(), "rules query metrics Vantage does not produce: {missing:?}");
}
