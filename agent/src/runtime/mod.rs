//! The composition root: what starts in which order, the routers from the
//! metrics channel to every metric sink and from the log channel to every
//! log sink, the HTTP server, reloads and shutdown.
//!
//! Every source and sink runs as a component ([`components`]) with its own
//! stop token, so a reload ([`reload`]) stops and starts only the ones
//! whose configuration changed.

pub mod components;
pub mod reload;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::logline::LogReceiver;
use crate::sample::Batch;
use crate::sinks::latest::Latest;
use crate::sinks::{LogSink, MetricSink};
use crate::stale::Carry;
use crate::status::Registry;

pub use reload::{Reload, ReloadHandle};

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
    /// Cancelled when this component stops: on a reload that changes or
    /// removes it, and on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
    /// Cancelled on SIGTERM/SIGINT only: a source that sees `shutdown`
    /// without it was stopped by a reload.
    pub agent_shutdown: CancellationToken,
    /// Staleness state a source stopped by a reload leaves for the source
    /// that replaces it.
    pub handover: Handover,
}

/// The series a stopped source had, by key (a collector's name, a scrape
/// target's identity), with the source name they were sent under. The
/// replacement takes its own; what is left gets stale markers.
#[derive(Clone, Default)]
pub struct Handover(Arc<Mutex<std::collections::HashMap<String, Carried>>>);

/// A stopped source's name and the series it had sent.
type Carried = (Arc<str>, Box<dyn Carry>);

impl Handover {
    /// Leaves `state` of source `name` under `key`.
    pub fn put(&self, key: &str, name: Arc<str>, state: impl Carry) {
        self.0.lock().unwrap().insert(key.to_string(), (name, Box::new(state)));
    }

    /// Takes what was left under `key`, when it is a `T` (keys of
    /// different kinds of source never meet, so another type is dropped).
    pub fn take<T: Carry>(&self, key: &str) -> Option<(Arc<str>, T)> {
        let (name, state) = self.0.lock().unwrap().remove(key)?;
        state.into_any().downcast::<T>().ok().map(|t| (name, *t))
    }

    fn drain(&self) -> Vec<Carried> {
        self.0.lock().unwrap().drain().map(|(_, v)| v).collect()
    }
}

/// Sends stale markers for every series left in `handover`: those of
/// sources that a reload removed and nothing replaced.
pub async fn send_stale(handover: &Handover, metrics: &mpsc::Sender<Batch>) {
    let now = crate::sample::now_ms();
    for (source, mut tracker) in handover.drain() {
        let families = tracker.mark_all(now);
        if !families.is_empty() {
            let _ = metrics.send(Batch { source, families }).await;
        }
    }
}

/// The metric sinks the router hands every batch to, by component key.
/// Reloads swap entries; the router holds the read lock only while it
/// hands one batch over (sinks never wait on the network in `accept`).
pub type SinkList = Arc<RwLock<Vec<(String, Arc<dyn MetricSink>)>>>;

/// The log router, the log side of the metrics router in [`run`]: every
/// entry goes to every log sink, each with its own receipt, so an entry's
/// position is committed once every sink has it. On `stop` it hands on
/// what the sources had queued, then drops the sinks (which makes them push
/// what they hold) and waits for their `sink_tasks`.
pub async fn route_logs(
    mut entries: LogReceiver,
    sinks: Vec<Arc<dyn LogSink>>,
    stop: CancellationToken,
    sink_tasks: Vec<tokio::task::JoinHandle<()>>,
) {
    let n = sinks.len();
    let forward = |(entry, receipts): (crate::logline::LogEntry, Vec<crate::logline::Receipt>)| {
        let mut receipts = receipts.into_iter();
        // Every sink but the last gets a copy; the last takes the entry.
        for sink in &sinks[..n.saturating_sub(1)] {
            sink.accept(entry.clone(), receipts.next().expect("one receipt per sink"));
        }
        if let (Some(sink), Some(receipt)) = (sinks.last(), receipts.next()) {
            sink.accept(entry, receipt);
        }
    };
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => {
                while let Some(e) = entries.try_recv(n) {
                    forward(e);
                }
                break;
            }
            e = entries.recv(n) => match e {
                Some(e) => forward(e),
                None => break,
            },
        }
    }
    drop(sinks);
    for task in sink_tasks {
        let _ = task.await;
    }
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
/// `listener` serves the HTTP endpoints (tests pass one bound to port 0);
/// `reload` carries the requests to read the configuration again (SIGHUP,
/// `POST /-/reload`).
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
    reload: Reload,
) -> Result<(), RunError> {
    run_with_log_sinks(config, listener, shutdown, reload, Vec::new()).await
}

/// [`run`] with `log_sinks` beside the configured ones (Loki): each gets
/// every log line, and a line's position is committed only once all have
/// acknowledged it. For embedding the agent and for tests.
pub async fn run_with_log_sinks(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
    reload: Reload,
    log_sinks: Vec<Arc<dyn LogSink>>,
) -> Result<(), RunError> {
    let registry = Registry::default();
    let (metrics_tx, mut metrics_rx) = mpsc::channel::<Batch>(METRICS_CHANNEL_BATCHES);
    let sinks: SinkList = Arc::default();
    let latest = Latest::default();
    let serve_collected = Arc::new(AtomicBool::new(false));
    let mut agent = components::Agent::new(
        registry.clone(),
        metrics_tx,
        shutdown.clone(),
        sinks.clone(),
        latest.clone(),
        serve_collected.clone(),
        log_sinks,
    );
    let origin = config.origin.clone();
    // The web configuration's file is fixed at start; its content
    // (certificates included) is re-read when it changes on disk.
    let web_config_file = config.agent.web_config_file.clone();
    registry.set_config(serde_json::to_value(&config).unwrap_or_default());
    agent.apply(Arc::new(config)).await.map_err(RunError::Sink)?;
    registry.record_start(crate::sample::now_ms());

    // The router: every batch goes to every metric sink. It has a thread of
    // its own because `accept` encodes and writes the WAL record (disk I/O,
    // fsync at a segment's end). On a worker, a busy router never yielded:
    // the queue task it woke waited in that worker's LIFO slot, which other
    // workers cannot steal, and a 100,000-series scrape on a loaded host was
    // written to the WAL but never sent.
    let routed = registry.clone();
    let router = tokio::task::spawn_blocking(move || {
        while let Some(batch) = metrics_rx.blocking_recv() {
            let batch = Arc::new(batch);
            for (_, sink) in sinks.read().unwrap().iter() {
                sink.accept(&batch);
            }
            // Readiness waits for this, not for the collection alone.
            routed.record_routed(&batch.source);
        }
    });

    let Reload { load, handle, mut requests } = reload;
    let server = tokio::spawn(crate::http::serve(
        listener,
        crate::http::State { registry: registry.clone(), latest, serve_collected, reload: handle, web_config_file },
        shutdown.clone(),
    ));
    tracing::info!(config = %origin, "vantage started");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(answer) = requests.recv() => {
                let outcome = reload::reload(&mut agent, load.as_deref()).await;
                let _ = answer.send(outcome);
            }
        }
    }
    tracing::info!("shutting down");
    let tasks = agent.into_tasks();
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

/// One collection of every metric source, as exposition text: what
/// `vantage collect --once` prints.
pub async fn collect_once(config: Config) -> String {
    let registry = Registry::default();
    let mut collectors = Vec::new();
    if config.node.enabled {
        collectors.push(components::node_collector(&config));
    }
    if config.ebpf.enabled {
        collectors.extend(components::ebpf_collector(&config, &registry).await);
        // Give freshly attached kernel programs a moment to count something.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut families = Vec::new();
    let now = crate::sample::now_ms();
    for c in &mut collectors {
        match c.collect(now) {
            Ok(f) => families.extend(f),
            Err(e) => tracing::warn!(source = c.name(), error = %e, "collection failed"),
        }
    }
    if config.docker.enabled && config.docker.container_metrics {
        families.extend(crate::sources::docker::collect_once(&config.docker).await);
    }
    families.extend(crate::sources::scrape::collect_once(&config).await);
    families.extend(crate::selfmetrics::collect(&registry));
    crate::exposition::render(&families, false)
}
