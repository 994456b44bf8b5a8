//! Docker: container discovery and per-container metrics (cAdvisor names).
//!
//! Discovery (`discovery`) keeps the agent's one inventory of containers
//! from the Engine API (a list at start, then the events stream) and
//! publishes it as a [`Feed`] of watch channels. Three consumers read it:
//! scrape jobs with `docker_sd = true` get one target per container network
//! and port (Prometheus's Docker SD meta labels), the container metrics
//! collector (`metrics`) reads each running container's cgroup and network
//! counters, and the container log source (`crate::logs::docker`) follows
//! the running containers' logs. The composition root makes the channels
//! once and hands each consumer its end, so no consumer depends on the
//! order components start in.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::common;
use crate::sample::Labels;
use crate::sources::Collector;

pub mod cgroup;
pub mod discovery;
pub mod metrics;

/// `[docker]`: discovery and container metrics.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Docker Engine address; DOCKER_HOST or the default unix socket when empty.
    #[serde(default)]
    pub host: String,
    /// Collect per-container metrics (cAdvisor's names) from the cgroup files.
    #[serde(default = "yes")]
    pub container_metrics: bool,
    /// Add `container_label_<k>` for each container label to container metrics.
    #[serde(default = "yes")]
    pub container_labels: bool,
    /// `job` label of container metrics.
    #[serde(default = "default_job")]
    pub job: String,
    /// `instance` label of container metrics; the host name when empty.
    #[serde(default)]
    pub instance: String,
    /// Interval of container metrics; `agent.scrape_interval` when unset.
    #[serde(default, with = "common::opt_duration", skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
}

fn yes() -> bool {
    true
}

fn default_job() -> String {
    "cadvisor".into()
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            enabled: true,
            host: String::new(),
            container_metrics: true,
            container_labels: true,
            job: default_job(),
            instance: String::new(),
            interval: None,
        }
    }
}

impl DockerConfig {
    /// Adds this section's problems to `problems`.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if !self.host.is_empty() && !self.host.starts_with("unix://") {
            problems.push(format!("docker.host {:?} is not supported; use a unix:// socket", self.host));
        }
        if self.job.is_empty() {
            problems.push("docker.job must not be empty".into());
        }
        if self.interval.is_some_and(|i| i.is_zero()) {
            problems.push("docker.interval must be above zero".into());
        }
    }

    /// One line for `vantage check`.
    pub fn describe(&self) -> String {
        format!(
            "host {}, container metrics {}",
            socket_url(&self.host),
            if self.container_metrics { "on" } else { "off" }
        )
    }
}

/// One container as discovery last saw it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Container {
    /// Full 64-hex-digit id.
    pub id: String,
    /// Name with Docker's leading slash (`/web`).
    pub name: String,
    /// Image as the container was created from (`busybox:latest`).
    pub image: String,
    /// The container's labels.
    pub labels: BTreeMap<String, String>,
    /// running, paused, restarting, exited, created, removing or dead.
    pub state: String,
    /// Host pid of the init process; 0 when not running.
    pub pid: u32,
    /// Start time, seconds since the epoch (0 when never started).
    pub started_at: f64,
    /// `HostConfig.NetworkMode` (bridge, host, none, container:<id>, a network name).
    pub network_mode: String,
    /// Networks the container is attached to.
    pub networks: Vec<Network>,
    /// Exposed and published ports.
    pub ports: Vec<Port>,
}

/// A network a container is attached to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Network {
    pub name: String,
    pub id: String,
    /// The container's IPv4 address on it (empty when none).
    pub ip: String,
    /// The network's own labels (from the network list).
    pub labels: BTreeMap<String, String>,
    pub scope: String,
    pub internal: bool,
    pub ingress: bool,
}

/// A container port, as `docker ps` lists it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Port {
    pub private: u16,
    /// Host port it is published on, if any.
    pub public: Option<u16>,
    /// Host address it is published on (empty when not published).
    pub public_ip: String,
    /// tcp, udp or sctp.
    pub protocol: String,
}

/// Every container discovery knows, sorted by id.
pub type Inventory = Arc<Vec<Container>>;

/// The Engine URL for `host`: the configured one, else DOCKER_HOST, else
/// the default unix socket.
pub fn socket_url(host: &str) -> String {
    let env = std::env::var("DOCKER_HOST").unwrap_or_default();
    if !host.is_empty() {
        host.to_string()
    } else if !env.is_empty() {
        env
    } else {
        "unix:///var/run/docker.sock".into()
    }
}

/// What discovery publishes, as its consumers read it. Cheap to clone.
#[derive(Clone)]
pub struct Feed {
    /// Every container discovery knows, sorted by id.
    pub inventory: watch::Receiver<Inventory>,
    /// Scrape targets (Prometheus Docker SD label sets) of running containers.
    pub targets: watch::Receiver<Vec<Labels>>,
    /// True once discovery has listed the containers: before that an empty
    /// inventory means "not known yet", not "no containers".
    pub listed: watch::Receiver<bool>,
}

/// Discovery's end of the [`Feed`].
pub struct Publisher {
    inventory: watch::Sender<Inventory>,
    targets: watch::Sender<Vec<Labels>>,
    listed: watch::Sender<bool>,
}

/// The channels of the one inventory: discovery publishes, every
/// consumer reads. Nothing is known until discovery first lists.
pub fn feed() -> (Arc<Publisher>, Feed) {
    let (inventory_tx, inventory) = watch::channel(Inventory::default());
    let (targets_tx, targets) = watch::channel(Vec::new());
    let (listed_tx, listed) = watch::channel(false);
    (
        Arc::new(Publisher { inventory: inventory_tx, targets: targets_tx, listed: listed_tx }),
        Feed { inventory, targets, listed },
    )
}

impl Publisher {
    /// Publishes a fresh inventory and its scrape targets (targets only
    /// wake their readers when they changed).
    pub fn publish(&self, inventory: Inventory, targets: Vec<Labels>) {
        self.inventory.send_replace(inventory);
        self.targets.send_if_modified(|current| {
            let changed = *current != targets;
            if changed {
                *current = targets;
            }
            changed
        });
        self.listed.send_if_modified(|l| !std::mem::replace(l, true));
    }

    /// The inventory discovery last published.
    pub fn current(&self) -> Inventory {
        self.inventory.borrow().clone()
    }

    /// Back to "nothing known": discovery stopped, and what it published
    /// may not hold for the next one (another socket).
    pub fn reset(&self) {
        self.listed.send_replace(false);
        self.inventory.send_replace(Inventory::default());
        self.targets.send_if_modified(|t| !std::mem::take(t).is_empty());
    }
}

/// Starts discovery on the `host` socket, publishing to `publisher`, and
/// container metrics reading `feed` when `container_metrics` is on. Never
/// fails: without a reachable dockerd, discovery retries in the background
/// and every other source runs on.
pub fn start(
    ctx: &crate::Context,
    host: &str,
    publisher: Arc<Publisher>,
    feed: &Feed,
    container_metrics: bool,
) -> Vec<tokio::task::JoinHandle<()>> {
    let config = &ctx.config.docker;
    let mut tasks =
        vec![tokio::spawn(discovery::run(host.to_string(), publisher, ctx.registry.clone(), ctx.shutdown.clone()))];
    if container_metrics {
        let collector = metrics::ContainerCollector::new(config, feed.inventory.clone());
        // Not required for readiness: the agent is ready without dockerd.
        ctx.registry.register_source(collector.name(), "docker", false);
        tasks.push(tokio::spawn(crate::sources::run_collector(Box::new(collector), ctx.clone())));
    }
    tasks
}

/// One collection of container metrics from a fresh list of the
/// containers, for `vantage collect --once`; nothing (and a warning)
/// without dockerd.
pub async fn collect_once(config: &DockerConfig) -> Vec<crate::sample::Family> {
    let inventory = match discovery::list_once(&config.host).await {
        Ok(inventory) => inventory,
        Err(e) => {
            tracing::warn!(socket = %socket_url(&config.host), error = %e, "docker: no container metrics");
            return Vec::new();
        }
    };
    let (_tx, rx) = watch::channel(inventory);
    let mut collector = metrics::ContainerCollector::new(config, rx);
    collector.collect(crate::sample::now_ms()).unwrap_or_default()
}

/// Connects to the Docker Engine at `host` (`unix:///path`), or at
/// DOCKER_HOST / the default unix socket when `host` is empty. Only unix
/// sockets: the agent runs next to dockerd.
pub fn connect(host: &str) -> Result<bollard::Docker, String> {
    let host = socket_url(host);
    let path =
        host.strip_prefix("unix://").ok_or_else(|| format!("host {host:?} is not supported; use a unix:// socket"))?;
    bollard::Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION).map_err(|e| match e {
        bollard::errors::Error::SocketNotFoundError(_) => format!("no Docker socket at {path} (is dockerd running?)"),
        e => format!("cannot connect to {host}: {e}"),
    })
}
