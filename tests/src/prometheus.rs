//! A real Prometheus 2.42 (Debian package `prometheus`) on a loopback port,
//! with the remote-write receiver on, and PromQL queries against it.

use std::process::Command;
use std::time::Duration;

use crate::{free_port, require_program, wait_for, Proc, TempDir};

/// A running Prometheus; killed on drop.
pub struct Prometheus {
    pub port: u16,
    pub dir: TempDir,
    pub proc: Proc,
}

impl Prometheus {
    /// Starts Prometheus with an empty scrape config (or `scrape_config`,
    /// the body of `scrape_configs:` as YAML) and the remote-write receiver.
    pub fn start(scrape_config: &str) -> Prometheus {
        let bin = require_program("prometheus", "prometheus");
        let dir = TempDir::new("prometheus");
        let config =
            format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{scrape_config}\n");
        let config_path = dir.write("prometheus.yml", &config);
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--storage.tsdb.retention.time=1d")
            // Accept remote-written samples up to an hour old (replays after outages).
            .arg("--query.lookback-delta=5m");
        let log = dir.path().join("prometheus.log");
        let proc = Proc::spawn("prometheus", cmd, &log);
        let prom = Prometheus { port, dir, proc };
        let ready = wait_for(Duration::from_secs(30), || {
            crate::http_get(&format!("{}/-/ready", prom.url())).filter(|(s, _)| *s == 200)
        });
        assert!(
            ready.is_some(),
            "prometheus did not become ready; log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        prom
    }

    /// Base URL, e.g. `http://127.0.0.1:9090`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The remote-write receiver URL.
    pub fn remote_write_url(&self) -> String {
        format!("{}/api/v1/write", self.url())
    }

    /// An instant query; the `data.result` array.
    pub fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        self.api("query", &[("query", promql)])
    }

    /// An instant query evaluated at `time` (Unix seconds).
    pub fn query_at(&self, promql: &str, time: f64) -> Vec<serde_json::Value> {
        self.api("query", &[("query", promql), ("time", &format!("{time:.3}"))])
    }

    /// A range query over [start, end] (Unix seconds) with `step` seconds;
    /// the `data.result` array of matrices.
    pub fn query_range(&self, promql: &str, start: f64, end: f64, step: f64) -> Vec<serde_json::Value> {
        self.api(
            "query_range",
            &[("query", promql), ("start", &start.to_string()), ("end", &end.to_string()), ("step", &step.to_string())],
        )
    }

    /// Raw samples of a selector over the last `window` (e.g. "5m"), via a
    /// range-vector instant query: (labels, [(ts_seconds, value)]).
    pub fn raw_samples(&self, selector: &str, window: &str) -> Vec<(serde_json::Value, Vec<(f64, f64)>)> {
        self.query(&format!("{selector}[{window}]"))
            .into_iter()
            .map(|series| {
                let values = series["values"]
                    .as_array()
                    .map(|vs| {
                        vs.iter()
                            .filter_map(|v| {
                                let ts = v[0].as_f64()?;
                                let val = v[1].as_str()?.parse::<f64>().ok()?;
                                Some((ts, val))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (series["metric"].clone(), values)
            })
            .collect()
    }

    fn api(&self, endpoint: &str, params: &[(&str, &str)]) -> Vec<serde_json::Value> {
        let client = reqwest::blocking::Client::new();
        let resp = client
            .get(format!("{}/api/v1/{endpoint}", self.url()))
            .query(params)
            .send()
            .unwrap_or_else(|e| panic!("prometheus {endpoint} {params:?}: {e}"));
        let body: serde_json::Value = resp.json().expect("prometheus answers JSON");
        assert_eq!(body["status"], "success", "prometheus {endpoint} {params:?}: {body}");
        body["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}
