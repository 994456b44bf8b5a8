//! Container discovery through the Docker Engine API.
//!
//! At each (re)connection the events stream is opened first and the
//! containers are listed second, so nothing that happens in between is
//! missed. After that only events cause work: a container event re-inspects
//! that one container, a network event re-reads the networks. dockerd
//! restarting ends the stream; discovery reconnects with backoff and lists
//! again. While dockerd is away the last inventory stays published, so
//! series do not flap during a daemon restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptions};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{socket_url, Container, Inventory, Network, Port, Publisher};
use crate::sample::Labels;
use crate::status::Registry;

/// Name of discovery in the status registry.
pub const SOURCE: &str = "docker/discovery";

/// First and longest wait between connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Container events after which the container is inspected again.
const CHANGING_ACTIONS: &[&str] =
    &["create", "start", "restart", "die", "stop", "kill", "pause", "unpause", "rename", "update", "oom"];

/// Networks by id, as the network list gives them.
type Networks = HashMap<String, Network>;

/// Keeps the inventory (every container) and the targets (Prometheus
/// Docker SD label sets for running containers) of `publisher` current
/// until `shutdown`.
pub async fn run(host: String, publisher: Arc<Publisher>, registry: Registry, shutdown: CancellationToken) {
    let url = socket_url(&host);
    registry.register_source(SOURCE, "docker", false);
    let mut backoff = BACKOFF_MIN;
    let mut reported: Option<String> = None;
    loop {
        let started = std::time::Instant::now();
        let error = match follow(&host, &publisher, &registry, &shutdown).await {
            Ok(()) => return,
            // Errors from the API calls do not say where dockerd was asked.
            Err(e) if e.contains(url.trim_start_matches("unix://")) => e,
            Err(e) => format!("{url}: {e}"),
        };
        // One line per distinct problem, not one per retry.
        if reported.as_deref() != Some(error.as_str()) {
            tracing::warn!(socket = %url, error = %error, "docker discovery: retrying with backoff");
            reported = Some(error.clone());
        }
        registry.record_collection(SOURCE, crate::sample::now_ms(), 0.0, publisher.current().len(), Some(error));
        // A connection that lasted a while was healthy: start over quickly.
        if started.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_MIN;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection: list, then follow events. Returns Ok on shutdown and
/// the reason when the connection fails or ends.
async fn follow(
    host: &str,
    publisher: &Publisher,
    registry: &Registry,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let docker = super::connect(host)?;
    docker.ping().await.map_err(|e| describe(&e))?;
    let filters: HashMap<&str, Vec<&str>> = HashMap::from([("type", vec!["container", "network"])]);
    let mut events = docker.events(Some(EventsOptionsBuilder::new().filters(&filters).build()));
    let mut networks = list_networks(&docker).await?;
    let mut containers = list_containers(&docker, &networks).await?;
    publish(&containers, &networks, publisher);
    registry.record_collection(SOURCE, crate::sample::now_ms(), 0.0, containers.len(), None);
    tracing::info!(socket = %socket_url(host), containers = containers.len(), "docker discovery connected");
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let event = match event {
            Some(Ok(event)) => event,
            Some(Err(e)) => return Err(format!("events stream: {}", describe(&e))),
            None => return Err("events stream ended (dockerd stopped?)".into()),
        };
        let action = event.action.as_deref().unwrap_or("");
        let attributes = event.actor.as_ref().and_then(|a| a.attributes.as_ref());
        let changed = match event.typ {
            Some(bollard::models::EventMessageTypeEnum::CONTAINER) => {
                let Some(id) = event.actor.as_ref().and_then(|a| a.id.clone()) else { continue };
                if action == "destroy" {
                    containers.remove(&id).is_some()
                } else if CHANGING_ACTIONS.contains(&action) {
                    refresh(&docker, &id, &networks, &mut containers).await?;
                    true
                } else {
                    false
                }
            }
            Some(bollard::models::EventMessageTypeEnum::NETWORK) => {
                networks = list_networks(&docker).await?;
                // connect/disconnect name the container whose endpoints changed.
                if let Some(id) = attributes.and_then(|a| a.get("container")) {
                    if containers.contains_key(id) {
                        refresh(&docker, id, &networks, &mut containers).await?;
                    }
                }
                true
            }
            _ => false,
        };
        if changed {
            publish(&containers, &networks, publisher);
            registry.record_collection(SOURCE, crate::sample::now_ms(), 0.0, containers.len(), None);
        }
    }
}

/// Lists and inspects every container, the inventory `vantage collect
/// --once` uses.
pub async fn list_once(host: &str) -> Result<Inventory, String> {
    let docker = super::connect(host)?;
    let networks = list_networks(&docker).await?;
    let containers = list_containers(&docker, &networks).await?;
    Ok(Arc::new(containers.into_values().collect()))
}

/// Re-inspects one container; a container that is gone is removed.
async fn refresh(
    docker: &bollard::Docker,
    id: &str,
    networks: &Networks,
    containers: &mut BTreeMap<String, Container>,
) -> Result<(), String> {
    match docker.inspect_container(id, None::<bollard::query_parameters::InspectContainerOptions>).await {
        Ok(info) => {
            let c = from_inspect(info, networks);
            containers.insert(c.id.clone(), c);
            Ok(())
        }
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
            containers.remove(id);
            Ok(())
        }
        Err(e) => Err(format!("inspect container {id}: {}", describe(&e))),
    }
}

async fn list_networks(docker: &bollard::Docker) -> Result<Networks, String> {
    let list = docker
        .list_networks(None::<ListNetworksOptions>)
        .await
        .map_err(|e| format!("list networks: {}", describe(&e)))?;
    Ok(list
        .into_iter()
        .filter_map(|n| {
            let id = n.id?;
            let network = Network {
                name: n.name.unwrap_or_default(),
                id: id.clone(),
                ip: String::new(),
                labels: n.labels.unwrap_or_default().into_iter().collect(),
                scope: n.scope.unwrap_or_default(),
                internal: n.internal.unwrap_or(false),
                ingress: n.ingress.unwrap_or(false),
            };
            Some((id, network))
        })
        .collect())
}

async fn list_containers(docker: &bollard::Docker, networks: &Networks) -> Result<BTreeMap<String, Container>, String> {
    let list = docker
        .list_containers(Some(ListContainersOptionsBuilder::new().all(true).build()))
        .await
        .map_err(|e| format!("list containers: {}", describe(&e)))?;
    let mut containers = BTreeMap::new();
    for summary in list {
        let Some(id) = summary.id else { continue };
        // A container removed between the list and the inspect is simply skipped.
        refresh(docker, &id, networks, &mut containers).await?;
    }
    Ok(containers)
}

/// The inventory entry for an inspected container.
fn from_inspect(info: bollard::models::ContainerInspectResponse, networks: &Networks) -> Container {
    let state = info.state.unwrap_or_default();
    let config = info.config.unwrap_or_default();
    let settings = info.network_settings.unwrap_or_default();
    let mut attached: Vec<Network> = settings
        .networks
        .unwrap_or_default()
        .into_iter()
        .map(|(name, endpoint)| {
            let id = endpoint.network_id.unwrap_or_default();
            let mut n = networks.get(&id).cloned().unwrap_or_default();
            n.name = name;
            n.id = id;
            n.ip = endpoint.ip_address.unwrap_or_default();
            n
        })
        .collect();
    attached.sort_by(|a, b| a.name.cmp(&b.name));
    let mut ports = Vec::new();
    for (spec, bindings) in settings.ports.unwrap_or_default() {
        let (private, protocol) = spec.split_once('/').unwrap_or((spec.as_str(), "tcp"));
        let Ok(private) = private.parse::<u16>() else { continue };
        let bindings = bindings.unwrap_or_default();
        if bindings.is_empty() {
            ports.push(Port { private, public: None, public_ip: String::new(), protocol: protocol.into() });
        }
        for b in bindings {
            ports.push(Port {
                private,
                public: b.host_port.and_then(|p| p.parse().ok()),
                public_ip: b.host_ip.unwrap_or_default(),
                protocol: protocol.into(),
            });
        }
    }
    ports.sort_by(|a, b| {
        (a.private, &a.protocol, a.public, &a.public_ip).cmp(&(b.private, &b.protocol, b.public, &b.public_ip))
    });
    let running = state.running.unwrap_or(false);
    Container {
        id: info.id.unwrap_or_default(),
        name: info.name.unwrap_or_default(),
        image: config.image.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        state: state.status.map(|s| s.to_string()).unwrap_or_default(),
        pid: if running { state.pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0) } else { 0 },
        started_at: state.started_at.as_deref().map_or(0.0, parse_time),
        network_mode: info.host_config.and_then(|h| h.network_mode).unwrap_or_default(),
        networks: attached,
        ports,
    }
}

/// Seconds since the epoch of Docker's RFC 3339 time; 0 for Docker's
/// "never" (year 1) and for anything unparsable.
fn parse_time(text: &str) -> f64 {
    match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(t) if t.timestamp() > 0 => t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9,
        _ => 0.0,
    }
}

fn publish(containers: &BTreeMap<String, Container>, networks: &Networks, publisher: &Publisher) {
    let all: Vec<Container> = containers.values().cloned().collect();
    let found = target_labels(&all, networks);
    publisher.publish(Arc::new(all), found);
}

/// Prometheus's Docker service discovery: for each running container, one
/// target per attached network and TCP port (`<network ip>:<private
/// port>`), or one per network on port 80 when it exposes no TCP port.
/// A container in another container's network namespace
/// (`container:<id>`) takes that container's networks.
pub fn target_labels(containers: &[Container], networks: &Networks) -> Vec<Labels> {
    let by_id: HashMap<&str, &Container> = containers.iter().map(|c| (c.id.as_str(), c)).collect();
    let mut out = Vec::new();
    for c in containers.iter().filter(|c| c.state == "running") {
        let mut common = Labels::new();
        common.set("__meta_docker_container_id", c.id.as_str());
        common.set("__meta_docker_container_name", c.name.as_str());
        common.set("__meta_docker_container_network_mode", c.network_mode.as_str());
        for (k, v) in &c.labels {
            common.set(format!("__meta_docker_container_label_{}", sanitize_label_name(k)), v.as_str());
        }
        let attached = match c.network_mode.strip_prefix("container:").and_then(|other| by_id.get(other)) {
            Some(other) => &other.networks,
            None => &c.networks,
        };
        for n in attached {
            let mut base = common.clone();
            base.set("__meta_docker_network_id", n.id.as_str());
            base.set("__meta_docker_network_name", n.name.as_str());
            base.set("__meta_docker_network_ip", n.ip.as_str());
            base.set("__meta_docker_network_scope", n.scope.as_str());
            base.set("__meta_docker_network_internal", n.internal.to_string());
            base.set("__meta_docker_network_ingress", n.ingress.to_string());
            let current = networks.get(&n.id).unwrap_or(n);
            for (k, v) in &current.labels {
                base.set(format!("__meta_docker_network_label_{}", sanitize_label_name(k)), v.as_str());
            }
            // Host networking has no container address: the agent shares
            // the host's network, so the container is on localhost.
            let ip = if n.ip.is_empty() && c.network_mode == "host" { "localhost" } else { n.ip.as_str() };
            let mut added = false;
            for p in c.ports.iter().filter(|p| p.protocol == "tcp") {
                let mut t = base.clone();
                t.set("__meta_docker_port_private", p.private.to_string());
                if let Some(public) = p.public {
                    t.set("__meta_docker_port_public", public.to_string());
                    t.set("__meta_docker_port_public_ip", p.public_ip.as_str());
                }
                t.set("__address__", join_host_port(ip, p.private));
                out.push(t);
                added = true;
            }
            if !added {
                base.set("__address__", join_host_port(ip, 80));
                out.push(base);
            }
        }
    }
    out
}

fn join_host_port(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// A Docker label key as a Prometheus label name: every character outside
/// `[a-zA-Z0-9_]` becomes `_` (`prometheus.scrape` → `prometheus_scrape`).
pub fn sanitize_label_name(key: &str) -> String {
    key.chars().map(|ch| if ch.is_ascii_alphanumeric() || ch == '_' { ch } else { '_' }).collect()
}

/// bollard's error, said plainly: a missing socket and a refused permission
/// are the common cases and deserve words, not an errno dump.
fn describe(e: &bollard::errors::Error) -> String {
    let text = e.to_string();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut io_kind = None;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        source = s.source();
    }
    match io_kind {
        Some(std::io::ErrorKind::NotFound) => "the Docker socket is gone (dockerd stopped?)".into(),
        Some(std::io::ErrorKind::PermissionDenied) => "permission denied on the Docker socket".into(),
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused (dockerd not listening)".into(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, name: &str, ip: &str, ports: &[(u16, Option<u16>)]) -> Container {
        Container {
            id: id.into(),
            name: name.into(),
            image: "busybox".into(),
            labels: BTreeMap::from([
                ("prometheus.scrape".into(), "true".into()),
                ("com.example/team".into(), "x".into()),
            ]),
            state: "running".into(),
            pid: 42,
            started_at: 1.0,
            network_mode: "bridge".into(),
            networks: vec![Network {
                name: "bridge".into(),
                id: "n1".into(),
                ip: ip.into(),
                scope: "local".into(),
                ..Default::default()
            }],
            ports: ports
                .iter()
                .map(|&(private, public)| Port {
                    private,
                    public,
                    public_ip: if public.is_some() { "0.0.0.0".into() } else { String::new() },
                    protocol: "tcp".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn one_target_per_network_and_tcp_port_with_prometheus_meta_labels() {
        let mut web = container("aa", "/web", "172.17.0.2", &[(8080, Some(18080)), (9090, None)]);
        web.ports.push(Port { private: 53, protocol: "udp".into(), ..Default::default() });
        let networks = Networks::from([(
            "n1".to_string(),
            Network { labels: BTreeMap::from([("env".into(), "prod".into())]), ..Default::default() },
        )]);
        let t = target_labels(&[web], &networks);
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(
            t[0].to_string(),
            "{__address__=\"172.17.0.2:8080\", __meta_docker_container_id=\"aa\", \
             __meta_docker_container_label_com_example_team=\"x\", \
             __meta_docker_container_label_prometheus_scrape=\"true\", \
             __meta_docker_container_name=\"/web\", __meta_docker_container_network_mode=\"bridge\", \
             __meta_docker_network_id=\"n1\", __meta_docker_network_ingress=\"false\", \
             __meta_docker_network_internal=\"false\", __meta_docker_network_ip=\"172.17.0.2\", \
             __meta_docker_network_label_env=\"prod\", __meta_docker_network_name=\"bridge\", \
             __meta_docker_network_scope=\"local\", __meta_docker_port_private=\"8080\", \
             __meta_docker_port_public=\"18080\", __meta_docker_port_public_ip=\"0.0.0.0\"}"
        );
        assert_eq!(t[1].get("__address__"), Some("172.17.0.2:9090"));
        assert_eq!(t[1].get("__meta_docker_port_public"), None);
    }

    #[test]
    fn no_tcp_port_falls_back_to_port_80_and_stopped_containers_are_not_targets() {
        let bare = container("bb", "/bare", "172.17.0.3", &[]);
        let mut stopped = container("cc", "/stopped", "172.17.0.4", &[(8080, None)]);
        stopped.state = "exited".into();
        let t = target_labels(&[bare, stopped], &Networks::new());
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].get("__address__"), Some("172.17.0.3:80"));
        assert_eq!(t[0].get("__meta_docker_port_private"), None);
    }

    #[test]
    fn shared_network_namespace_takes_the_other_containers_networks() {
        let owner = container("aa", "/owner", "172.17.0.2", &[]);
        let mut sidecar = container("bb", "/sidecar", "", &[(9100, None)]);
        sidecar.network_mode = "container:aa".into();
        sidecar.networks.clear();
        let t = target_labels(&[owner, sidecar], &Networks::new());
        let sidecar: Vec<_> = t.iter().filter(|l| l.get("__meta_docker_container_name") == Some("/sidecar")).collect();
        assert_eq!(sidecar.len(), 1);
        assert_eq!(sidecar[0].get("__address__"), Some("172.17.0.2:9100"));
    }

    #[test]
    fn host_networking_targets_localhost() {
        let mut c = container("aa", "/node", "", &[]);
        c.network_mode = "host".into();
        c.networks[0].name = "host".into();
        let t = target_labels(&[c], &Networks::new());
        assert_eq!(t[0].get("__address__"), Some("localhost:80"));
        assert_eq!(t[0].get("__meta_docker_network_ip"), None);
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        assert_eq!(join_host_port("fd00::2", 80), "[fd00::2]:80");
    }

    #[test]
    fn docker_times() {
        assert_eq!(parse_time("0001-01-01T00:00:00Z"), 0.0);
        assert_eq!(parse_time("2024-01-02T03:04:05.5Z"), 1_704_164_645.5);
        assert_eq!(parse_time("garbage"), 0.0);
    }

    #[test]
    fn label_names_are_sanitized_as_prometheus_does() {
        assert_eq!(sanitize_label_name("prometheus.port"), "prometheus_port");
        assert_eq!(sanitize_label_name("com.docker/compose-project"), "com_docker_compose_project");
        assert_eq!(sanitize_label_name("ok_1"), "ok_1");
    }
}
