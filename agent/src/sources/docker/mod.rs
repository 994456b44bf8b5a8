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

/// Connects to the Docker Engine at `host` (`unix:///path`), or at
/// DOCKER_HOST / the default unix socket when `host` is empty. Only unix
/// sockets: the agent runs next to dockerd.
pub fn connect(host: &str) -> Result<bollard::Docker, String> {
    let env = std::env::var("DOCKER_HOST").unwrap_or_default();
    let host = if !host.is_empty() {
        host.to_string()
    } else if !env.is_empty() {
        env
    } else {
        "unix:///var/run/docker.sock".into()
    };
    let path = host.strip_prefix("unix://").ok_or_else(|| format!("host {host:?} is not supported; use a unix:// socket"))?;
    bollard::Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
        .map_err(|e| format!("cannot connect to {host}: {e}"))
}
