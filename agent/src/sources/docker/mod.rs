//! Docker: container discovery and per-container metrics (cAdvisor names).

use serde::{Deserialize, Serialize};

/// `[docker]`: discovery and container metrics.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Docker Engine address; DOCKER_HOST or the default unix socket when empty.
    #[serde(default)]
    pub host: String,
}

fn yes() -> bool {
    true
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig { enabled: true, host: String::new() }
    }
}

impl DockerConfig {
    /// Adds this section's problems to `problems`.
    pub fn validate(&self, _problems: &mut Vec<String>) {}

    /// One line for `vantage check`.
    pub fn describe(&self) -> String {
        format!("host {}", if self.host.is_empty() { "unix:///var/run/docker.sock" } else { &self.host })
    }
}

/// Starts discovery and container metrics; returns the tasks and the
/// discovered targets.
pub fn start(
    _ctx: &crate::Context,
) -> (Vec<tokio::task::JoinHandle<()>>, tokio::sync::watch::Receiver<Vec<crate::sample::Labels>>) {
    let (_tx, rx) = tokio::sync::watch::channel(Vec::new());
    (Vec::new(), rx)
}

/// Connects to the Docker Engine at `host` (`unix:///path`, `tcp://h:p`),
/// or at DOCKER_HOST / the default unix socket when `host` is empty.
pub fn connect(host: &str) -> Result<bollard::Docker, String> {
    let _ = host;
    Err("docker support is not implemented yet".into())
}
