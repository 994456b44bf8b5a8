//! System metrics from procfs and sysfs under node_exporter's names.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::common;
use crate::sample::{Family, MetricType};

/// `[node]`: the procfs/sysfs collectors.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `job` label of the node series (the seed: `${SERVER_NAME}-node-exporter`).
    #[serde(default = "default_job")]
    pub job: String,
    /// `instance` label of the node series (the seed: `${SERVER_NAME}`).
    #[serde(default)]
    pub instance: String,
    /// Collection interval; the agent's scrape_interval when unset.
    #[serde(default, with = "common::opt_duration")]
    pub interval: Option<Duration>,
    /// Where the host's procfs is (HOST_PROC in a container).
    #[serde(default = "default_proc")]
    pub proc_path: PathBuf,
    /// Where the host's sysfs is (HOST_SYS in a container).
    #[serde(default = "default_sys")]
    pub sys_path: PathBuf,
    /// Where the host's root filesystem is (HOST_ROOT in a container).
    #[serde(default = "default_root")]
    pub root_path: PathBuf,
}

fn yes() -> bool {
    true
}
fn default_job() -> String {
    "node-exporter".into()
}
fn default_proc() -> PathBuf {
    std::env::var_os("HOST_PROC").map_or_else(|| "/proc".into(), PathBuf::from)
}
fn default_sys() -> PathBuf {
    std::env::var_os("HOST_SYS").map_or_else(|| "/sys".into(), PathBuf::from)
}
fn default_root() -> PathBuf {
    std::env::var_os("HOST_ROOT").map_or_else(|| "/".into(), PathBuf::from)
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            enabled: true,
            job: default_job(),
            instance: String::new(),
            interval: None,
            proc_path: default_proc(),
            sys_path: default_sys(),
            root_path: default_root(),
        }
    }
}

impl NodeConfig {
    /// Adds this section's problems to `problems`.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if self.enabled && self.job.is_empty() {
            problems.push("node.job must not be empty".into());
        }
    }

    /// One line for `vantage check`.
    pub fn describe(&self) -> String {
        format!("job {:?}, proc {}, sys {}", self.job, self.proc_path.display(), self.sys_path.display())
    }
}

/// The node source.
pub struct NodeCollector {
    config: NodeConfig,
    instance: String,
}

impl NodeCollector {
    /// A collector reading the paths of `config`.
    pub fn new(config: NodeConfig) -> Self {
        let instance = if config.instance.is_empty() { crate::hostname() } else { config.instance.clone() };
        NodeCollector { config, instance }
    }
}

impl super::Collector for NodeCollector {
    fn name(&self) -> &str {
        "node"
    }

    fn collect(&mut self, now_ms: i64) -> Result<Vec<Family>, String> {
        let path = self.config.proc_path.join("loadavg");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut out = Vec::new();
        let base = [("job", self.config.job.as_str()), ("instance", self.instance.as_str())];
        for (i, field) in text.split_whitespace().take(3).enumerate() {
            let name = ["node_load1", "node_load5", "node_load15"][i];
            let mut f = Family::new(name, MetricType::Gauge, format!("{}m load average.", [1, 5, 15][i]));
            f.push(&base, field.parse().map_err(|_| format!("{}: bad field {field:?}", path.display()))?, now_ms);
            out.push(f);
        }
        let mut up = Family::new("up", MetricType::Gauge, "1 if the source's last collection succeeded.");
        up.push(&base, 1.0, now_ms);
        out.push(up);
        Ok(out)
    }
}
