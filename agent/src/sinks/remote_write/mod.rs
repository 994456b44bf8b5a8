//! Prometheus remote_write: WAL, shards, HTTP.

use serde::{Deserialize, Serialize};

/// One `[[remote_write]]` endpoint.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// Receiver URL; empty turns this endpoint off.
    #[serde(default)]
    pub url: String,
}

impl RemoteWriteConfig {
    /// Adds this endpoint's problems to `problems`, prefixed with `at`.
    pub fn validate(&self, _at: &str, _problems: &mut Vec<String>) {}

    /// One line for `vantage check`.
    pub fn describe(&self) -> String {
        self.url.clone()
    }
}

/// Starts one queue per active endpoint; returns each sink and its task.
pub fn start(
    ctx: &crate::Context,
) -> Result<Vec<(std::sync::Arc<dyn super::MetricSink>, tokio::task::JoinHandle<()>)>, String> {
    if ctx.config.active_remote_writes().next().is_some() {
        return Err("remote_write is not implemented yet".into());
    }
    Ok(Vec::new())
}
