//! Container logs through the Docker API.

use serde::{Deserialize, Serialize};

/// `[logs.docker]`: container logs.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DockerLogsConfig {
    #[serde(default)]
    pub enabled: bool,
}

impl DockerLogsConfig {
    /// Adds this section's problems to `problems`.
    pub fn validate(&self, _problems: &mut Vec<String>) {}
    /// One line for `vantage check`.
    pub fn describe(&self) -> String {
        String::new()
    }
}

/// The container log source.
pub struct DockerLogs;

impl DockerLogs {
    /// Prepares the source.
    pub fn new(
        _cfg: &DockerLogsConfig,
        _positions: std::sync::Arc<super::positions::Positions>,
        _sender: crate::sinks::loki::LogSender,
        _stats: std::sync::Arc<super::SourceStats>,
        _shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<DockerLogs, String> {
        Err("docker logs: not yet".into())
    }
    /// Follows containers until shutdown.
    pub async fn run(self) {}
}
