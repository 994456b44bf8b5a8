//! Vantage: a host agent that collects node, eBPF, Docker, application and
//! log data and pushes it to Prometheus (remote_write) and Loki.
//!
//! # Layout
//!
//! - [`config`]: the TOML configuration, `${VAR}` interpolation, validation.
//! - [`sample`]: the sample model (labels, samples, families, batches).
//! - [`sources`]: one module per metric source (`node`, `ebpf`, `docker`,
//!   `scrape`), each producing [`sample::Batch`]es on its own interval.
//! - [`relabel`]: Prometheus relabeling, used by scrape jobs and sinks.
//! - [`sinks`]: `remote_write` (WAL, shards, HTTP), `loki`, and `latest`
//!   (the newest samples, served on `/metrics` in pull mode).
//! - [`logs`]: log sources (files, container logs) and processing stages.
//! - [`http`]: health, readiness, `/metrics`, the status page and API.
//! - [`status`] and [`selfmetrics`]: what the agent reports about itself.
//! - [`memory`]: allocator tuning that keeps the agent's RSS small.
//!
//! Data flows one way: sources -> one bounded channel -> the router in
//! [`run`] -> every metric sink. Logs have their own path to Loki.

pub mod config;
pub mod exposition;
pub mod failure_log;
pub mod http;
pub mod logs;
pub mod memory;
pub mod relabel;
pub mod sample;
pub mod selfmetrics;
pub mod sinks;
pub mod sources;
pub mod stale;
pub mod status;
pub mod status_page;
pub mod web;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::sample::Batch;
use crate::sinks::latest::Latest;
use crate::sinks::MetricSink;
use crate::sources::Collector;
use crate::status::Registry;

/// How long shutdown waits for sinks to flush before giving up; what is not
/// out by then is in the WAL (metrics) or not yet acknowledged (logs).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// Capacity of the metrics channel, in batches. Sources wait when it is
/// full; sinks never block it on the network (they write to their WAL).
const METRICS_CHANNEL_BATCHES: usize = 256;

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr}: {source} (set LISTEN_ADDR or --listen to a free address)")]
    Listen { addr: String, source: std::io::Error },
    #[error("{0}")]
    Sink(String),
}

/// What every source and sink is started with.
#[derive(Clone)]
pub struct Context {
    pub config: Arc<Config>,
    pub registry: Registry,
    /// Where metric sources send their batches.
    pub metrics: mpsc::Sender<Batch>,
    /// Cancelled on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
    /// Targets found by Docker discovery (`__address__` and `__meta_docker_*`
    /// labels), for scrape jobs that take targets from Docker.
    pub docker_targets: Option<tokio::sync::watch::Receiver<Vec<sample::Labels>>>,
}

/// The machine's host name, the default `instance` of built-in sources.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Runs the agent until `shutdown` is cancelled, then flushes and returns.
/// `listener` serves the HTTP endpoints (tests pass one bound to port 0).
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let config = Arc::new(config);
    let registry = Registry::default();
    registry.set_config(serde_json::to_value(&*config).unwrap_or_default());
    let (metrics_tx, mut metrics_rx) = mpsc::channel::<Batch>(METRICS_CHANNEL_BATCHES);
    let mut ctx = Context {
        config: config.clone(),
        registry: registry.clone(),
        metrics: metrics_tx,
        shutdown: shutdown.clone(),
        docker_targets: None,
    };
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();

    // Sinks first, so nothing a source sends is missed.
    let mut sinks: Vec<Arc<dyn MetricSink>> = Vec::new();
    for (sink, task) in sinks::remote_write::start(&ctx).map_err(RunError::Sink)? {
        sinks.push(sink);
        tasks.push(task);
    }
    let latest = Latest::default();
    if config.agent.serve_collected {
        sinks.push(Arc::new(latest.clone()));
    }
    tasks.extend(logs::start(&ctx).map_err(RunError::Sink)?);

    // Sources.
    let interval = config.agent.scrape_interval;
    if config.docker.enabled {
        let docker = sources::docker::start(&ctx);
        tasks.extend(docker.tasks);
        ctx.docker_targets = Some(docker.targets);
    }
    for collector in builtin_collectors(&config, &registry).await {
        let every = match collector.name() {
            "node" => config.node.interval,
            "ebpf" => config.ebpf.interval,
            _ => None,
        }
        .unwrap_or(interval);
        registry.register_source(collector.name(), collector.name(), true);
        let (tx, reg, stop) = (ctx.metrics.clone(), registry.clone(), shutdown.clone());
        tasks.push(tokio::spawn(sources::run_collector(collector, every, tx, reg, stop)));
    }
    tasks.extend(sources::scrape::start(&ctx));
    drop(ctx);

    // The router: every batch goes to every metric sink.
    let router = tokio::spawn(async move {
        while let Some(batch) = metrics_rx.recv().await {
            let batch = Arc::new(batch);
            for sink in &sinks {
                sink.accept(&batch);
            }
        }
    });

    let server = tokio::spawn(http::serve(
        listener,
        http::State {
            registry: registry.clone(),
            latest,
            serve_collected: config.agent.serve_collected,
            web_config_file: config.agent.web_config_file.clone(),
        },
        shutdown.clone(),
    ));
    tracing::info!(config = %config.origin, "vantage started");
    shutdown.cancelled().await;
    tracing::info!("shutting down");
    let flush = async {
        for task in tasks {
            let _ = task.await;
        }
        let _ = router.await;
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, flush).await.is_err() {
        tracing::warn!("some tasks did not finish within {SHUTDOWN_GRACE:?}; unsent samples stay in the WAL");
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), server).await;
    Ok(())
}

/// The synchronous collectors enabled by `config`: node, ebpf and Docker's
/// container metrics.
async fn builtin_collectors(config: &Config, registry: &Registry) -> Vec<Box<dyn Collector>> {
    let mut collectors: Vec<Box<dyn Collector>> = Vec::new();
    if config.node.enabled {
        collectors.push(Box::new(sources::node::NodeCollector::new(config.node.clone())));
    }
    if config.ebpf.enabled {
        let (ebpf, reg) = (config.ebpf.clone(), registry.clone());
        // Loading programs takes the verifier a few milliseconds each.
        if let Ok(c) = tokio::task::spawn_blocking(move || sources::ebpf::EbpfCollector::start(&ebpf, &reg)).await {
            collectors.push(Box::new(c));
        }
    }
    collectors
}

/// One collection of every metric source, as exposition text: what
/// `vantage collect --once` prints.
pub async fn collect_once(config: Config) -> String {
    let registry = Registry::default();
    let mut collectors = builtin_collectors(&config, &registry).await;
    // Give freshly attached kernel programs a moment to count something.
    if config.ebpf.enabled {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut families = Vec::new();
    let now = sample::now_ms();
    for c in &mut collectors {
        match c.collect(now) {
            Ok(f) => families.extend(f),
            Err(e) => tracing::warn!(source = c.name(), error = %e, "collection failed"),
        }
    }
    if config.docker.enabled && config.docker.container_metrics {
        families.extend(sources::docker::collect_once(&config.docker).await);
    }
    families.extend(sources::scrape::collect_once(&config).await);
    families.extend(selfmetrics::collect(&registry));
    exposition::render(&families, false)
}
