//! The running sources and sinks as components: each has a key, a
//! fingerprint of the configuration it was started with, its own stop
//! token and tasks. Applying a configuration stops what changed or went
//! away, keeps what is the same untouched, and starts what is new.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{send_stale, Context, Handover, SinkList};
use crate::config::common::fingerprint;
use crate::config::Config;
use crate::sample::Batch;
use crate::sinks::latest::Latest;
use crate::sinks::remote_write::Stats;
use crate::sinks::LogSink;
use crate::sources::docker::{Feed, Publisher};
use crate::sources::Collector;
use crate::status::{Registry, SelfMetrics};

/// What a component is, with where its configuration sits.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    RemoteWrite(usize),
    Logs,
    Docker,
    Node,
    Ebpf,
    Scrape(usize),
}

/// One component the configuration asks for.
#[derive(Debug)]
struct Planned {
    key: String,
    kind: Kind,
    /// Everything the component reads from the configuration: when this
    /// differs between two configurations, the component restarts.
    fingerprint: Value,
}

/// The components of `config`, in start order: sinks first so nothing a
/// source sends is missed, Docker before the scrape jobs that follow it.
/// `extra_log_sinks` says whether log sinks beyond Loki were given.
/// Fails when two components would share a key.
fn plan(config: &Config, extra_log_sinks: bool) -> Result<Vec<Planned>, String> {
    let interval = fingerprint(&config.agent.scrape_interval);
    // A collector with an interval of its own does not depend on the agent's.
    let every = |own: Option<Duration>| fingerprint(&own.unwrap_or(config.agent.scrape_interval));
    let outbound = json!([fingerprint(&config.agent.data_dir), fingerprint(&config.agent.external_labels)]);
    let docker = json!([fingerprint(&config.docker), every(config.docker.interval), config.docker_socket()]);
    let log_sinks = extra_log_sinks || !config.loki.url.trim().is_empty();
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, rw) in config.remote_write.iter().enumerate().filter(|(_, rw)| !rw.url.trim().is_empty()) {
        let name = rw.endpoint_name();
        if !names.insert(name.clone()) {
            return Err(format!("remote_write: two endpoints are named {name:?}; give each a distinct name"));
        }
        out.push(Planned {
            key: format!("remote_write/{name}"),
            kind: Kind::RemoteWrite(i),
            fingerprint: json!([fingerprint(rw), outbound]),
        });
    }
    // Container logs and security events name containers from the inventory.
    let follows_docker = config.logs.docker.enabled || config.security.enabled;
    if config.logs.any_source() || config.security.enabled {
        let docker_host = if follows_docker { fingerprint(&config.docker.host) } else { Value::Null };
        out.push(Planned {
            key: "logs".into(),
            kind: Kind::Logs,
            fingerprint: json!([
                fingerprint(&config.logs),
                fingerprint(&config.security),
                fingerprint(&config.loki),
                outbound,
                docker_host
            ]),
        });
    }
    // Discovery keeps the one inventory: log sources need it too.
    if config.docker.enabled || (follows_docker && log_sinks) {
        out.push(Planned { key: "docker".into(), kind: Kind::Docker, fingerprint: docker.clone() });
    }
    if config.node.enabled {
        out.push(Planned {
            key: "node".into(),
            kind: Kind::Node,
            fingerprint: json!([fingerprint(&config.node), every(config.node.interval)]),
        });
    }
    if config.ebpf.enabled {
        out.push(Planned {
            key: "ebpf".into(),
            kind: Kind::Ebpf,
            fingerprint: json!([fingerprint(&config.ebpf), every(config.ebpf.interval)]),
        });
    }
    for (i, job) in config.scrape.iter().enumerate() {
        // A job that follows Docker holds discovery's channel: it restarts with it.
        let follows = if job.docker_sd && config.docker.enabled { docker.clone() } else { Value::Null };
        out.push(Planned {
            key: format!("scrape/{}", job.job_name),
            kind: Kind::Scrape(i),
            fingerprint: json!([fingerprint(job), interval, follows]),
        });
    }
    Ok(out)
}

/// A started component.
struct Running {
    kind: Kind,
    fingerprint: Value,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    handover: Handover,
    /// Self-metric providers it added, removed when it stops.
    providers: Vec<Arc<dyn SelfMetrics>>,
    /// A remote_write endpoint's counters, carried over to its replacement.
    stats: Option<Arc<Stats>>,
}

/// Which components a new configuration stops, keeps and starts.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    pub stopped: Vec<String>,
    pub started: Vec<String>,
    pub kept: Vec<String>,
}

/// Every running component, and what they share.
pub struct Agent {
    pub config: Option<Arc<Config>>,
    registry: Registry,
    metrics: mpsc::Sender<Batch>,
    shutdown: CancellationToken,
    sinks: SinkList,
    latest: Latest,
    serve_collected: Arc<AtomicBool>,
    running: BTreeMap<String, Running>,
    /// The one Docker inventory, made once: discovery publishes into it
    /// whenever it runs, and every consumer is handed its end at start, so
    /// none depends on the order components start in.
    docker: (Arc<Publisher>, Feed),
    /// Log sinks given beside the configured ones.
    extra_log_sinks: Vec<Arc<dyn LogSink>>,
}

impl Agent {
    /// An agent with nothing running yet.
    pub fn new(
        registry: Registry,
        metrics: mpsc::Sender<Batch>,
        shutdown: CancellationToken,
        sinks: SinkList,
        latest: Latest,
        serve_collected: Arc<AtomicBool>,
        extra_log_sinks: Vec<Arc<dyn LogSink>>,
    ) -> Agent {
        Agent {
            config: None,
            registry,
            metrics,
            shutdown,
            sinks,
            latest,
            serve_collected,
            running: BTreeMap::new(),
            docker: crate::sources::docker::feed(),
            extra_log_sinks,
        }
    }

    /// The registry every component reports to.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Checks what `config` would change without touching anything: the
    /// part of a reload that can refuse it whole.
    pub fn check(&self, config: &Config) -> Result<(), String> {
        plan(config, !self.extra_log_sinks.is_empty()).map(|_| ())
    }

    /// Makes `config` the one in effect, sinks first, then sources: the
    /// sinks it changes or drops stop (a replaced remote_write endpoint
    /// flushes while every source still runs and its old sink still takes
    /// their batches) and the new ones start; then the sources it changes or
    /// drops stop (their last batches and stale markers reach the sinks) and
    /// the new ones start, Docker before the jobs that follow it.
    /// Unchanged components are not touched.
    pub async fn apply(&mut self, config: Arc<Config>) -> Result<Changes, String> {
        let planned = plan(&config, !self.extra_log_sinks.is_empty())?;
        let mut changes = Changes::default();
        self.serve_collected.store(config.agent.serve_collected, Ordering::Relaxed);
        {
            let mut sinks = self.sinks.write().unwrap();
            sinks.retain(|(k, _)| k != "latest");
            if config.agent.serve_collected {
                sinks.push(("latest".into(), Arc::new(self.latest.clone())));
            }
        }
        self.config = Some(config.clone());
        let mut first_error = None;
        for sinks_phase in [true, false] {
            let in_phase = |kind: Kind| matches!(kind, Kind::RemoteWrite(_) | Kind::Logs) == sinks_phase;
            let wanted: BTreeMap<&str, &Planned> =
                planned.iter().filter(|p| in_phase(p.kind)).map(|p| (p.key.as_str(), p)).collect();
            let mut stopping: Vec<(String, Running)> = Vec::new();
            for key in self.running.keys().cloned().collect::<Vec<_>>() {
                if !in_phase(self.running[&key].kind) {
                    continue;
                }
                if wanted.get(key.as_str()).is_some_and(|p| p.fingerprint == self.running[&key].fingerprint) {
                    changes.kept.push(key);
                } else {
                    stopping.push((key.clone(), self.running.remove(&key).expect("listed above")));
                }
            }
            // Scrape jobs before the Docker discovery they follow.
            stopping.sort_by_key(|(_, r)| std::cmp::Reverse(start_rank(r.kind)));
            let mut carried: BTreeMap<String, (Handover, Option<Arc<Stats>>)> = BTreeMap::new();
            for (key, r) in stopping {
                let replaced = wanted.contains_key(key.as_str());
                self.stop(&key, r.kind, r.stop, r.tasks, &r.providers, replaced).await;
                if !replaced {
                    // Nothing takes these series over: they end now.
                    send_stale(&r.handover, &self.metrics).await;
                }
                carried.insert(key.clone(), (r.handover, r.stats));
                changes.stopped.push(key);
            }
            for p in planned.iter().filter(|p| in_phase(p.kind)) {
                if self.running.contains_key(&p.key) {
                    continue;
                }
                let (handover, stats) = carried.remove(&p.key).unwrap_or_default();
                match self.start(&config, p, handover, stats).await {
                    Ok(r) => {
                        self.running.insert(p.key.clone(), r);
                        changes.started.push(p.key.clone());
                    }
                    Err(e) => {
                        tracing::error!(component = %p.key, error = %e, "cannot start");
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(changes),
        }
    }

    async fn start(
        &mut self,
        config: &Arc<Config>,
        p: &Planned,
        handover: Handover,
        stats: Option<Arc<Stats>>,
    ) -> Result<Running, String> {
        let stop = self.shutdown.child_token();
        let ctx = Context {
            config: config.clone(),
            registry: self.registry.clone(),
            metrics: self.metrics.clone(),
            shutdown: stop.clone(),
            agent_shutdown: self.shutdown.clone(),
            handover: handover.clone(),
        };
        let providers_before = self.registry.provider_count();
        let mut tasks = Vec::new();
        let mut carried_stats = None;
        match p.kind {
            Kind::RemoteWrite(i) => {
                // A replaced endpoint's old sink stayed in the list while its
                // queue flushed, so no batch went past it. It leaves under the
                // lock, before the new WAL handle opens the same directory:
                // no batch is lost in between and none lands behind the
                // new handle's back.
                let mut sinks = self.sinks.write().unwrap();
                sinks.retain(|(k, _)| *k != p.key);
                let ((sink, task), stats) =
                    crate::sinks::remote_write::start_one(&ctx, &config.remote_write[i], stats)?;
                sinks.push((p.key.clone(), sink));
                tasks.push(task);
                carried_stats = Some(stats);
            }
            Kind::Logs => tasks.extend(self.start_logs(&ctx).inspect_err(|_| stop.cancel())?),
            Kind::Docker => {
                let (publisher, feed) = &self.docker;
                let metrics = config.docker.enabled && config.docker.container_metrics;
                let socket = config.docker_socket();
                tasks.extend(crate::sources::docker::start(&ctx, socket, publisher.clone(), feed, metrics));
            }
            Kind::Node => tasks.push(self.spawn_collector(node_collector(config), &ctx)),
            Kind::Ebpf => {
                if let Some(c) = ebpf_collector(config, &self.registry).await {
                    tasks.push(self.spawn_collector(c, &ctx));
                }
            }
            Kind::Scrape(i) => {
                let job = &config.scrape[i];
                let j = crate::sources::scrape::target::Job::new(job.clone(), config.agent.scrape_interval)
                    .map_err(|e| format!("scrape job {}: {e}", job.job_name))?;
                // Without discovery a docker_sd job has static targets only.
                let docker = (job.docker_sd && config.docker.enabled).then(|| self.docker.1.targets.clone());
                tasks.push(tokio::spawn(crate::sources::scrape::target::run_job(j, ctx, docker)));
            }
        }
        Ok(Running {
            kind: p.kind,
            fingerprint: p.fingerprint.clone(),
            stop,
            tasks,
            handover,
            providers: self.registry.providers_since(providers_before),
            stats: carried_stats,
        })
    }

    /// Starts the log path: the log sinks (Loki when `loki.url` is set,
    /// and the extra ones), the log router to them, and the log sources
    /// sending into it. Without any log sink nothing starts.
    fn start_logs(&self, ctx: &Context) -> Result<Vec<JoinHandle<()>>, String> {
        let config = &ctx.config;
        let mut sinks = Vec::new();
        let mut sink_tasks = Vec::new();
        let mut capacity = crate::sinks::loki::LokiConfig::default().buffer_size;
        if !config.loki.url.trim().is_empty() {
            let loki = crate::sinks::loki::start(
                &config.loki,
                &config.agent.external_labels,
                &self.registry,
                ctx.shutdown.clone(),
            )
            .map_err(|e| e.to_string())?;
            sinks.push(Arc::new(loki.sink) as Arc<dyn LogSink>);
            sink_tasks.push(loki.task);
            capacity = config.loki.buffer_size;
        }
        sinks.extend(self.extra_log_sinks.iter().cloned());
        if sinks.is_empty() {
            tracing::warn!("log sources are configured but loki.url is empty: logs are not collected");
            return Ok(Vec::new());
        }
        let (sender, entries) = crate::logline::channel(capacity);
        let routed = tokio::spawn(super::route_logs(entries, sinks, ctx.shutdown.clone(), sink_tasks));
        let follows = config.logs.docker.enabled || config.security.enabled;
        let feed = follows.then(|| (config.docker_socket(), self.docker.1.clone()));
        crate::logs::start(ctx, &sender, feed, routed)
    }

    /// Starts a collector that must collect once before /-/ready; it runs
    /// on the interval it carries.
    fn spawn_collector(&self, collector: Box<dyn Collector>, ctx: &Context) -> JoinHandle<()> {
        self.registry.register_source(collector.name(), collector.name(), true);
        tokio::spawn(crate::sources::run_collector(collector, ctx.clone()))
    }

    /// Stops one component and waits for it: sources leave their staleness
    /// state in their handover, a remote_write queue flushes (up to its
    /// flush_deadline) while its sink still takes batches into the WAL,
    /// the Loki sink pushes what it holds.
    async fn stop(
        &mut self,
        key: &str,
        kind: Kind,
        stop: CancellationToken,
        tasks: Vec<JoinHandle<()>>,
        providers: &[Arc<dyn SelfMetrics>],
        replaced: bool,
    ) {
        if matches!(kind, Kind::RemoteWrite(_)) && !replaced {
            self.sinks.write().unwrap().retain(|(k, _)| k != key);
        }
        stop.cancel();
        for task in tasks {
            let _ = task.await;
        }
        self.registry.remove_providers(providers);
        match kind {
            Kind::RemoteWrite(_) if !replaced => self.registry.remove_sink(key),
            Kind::Logs => self.registry.remove_sink("loki"),
            Kind::Docker => {
                self.registry.remove_source(crate::sources::docker::discovery::SOURCE);
                // What it published may not hold for its successor.
                self.docker.0.reset();
            }
            Kind::Ebpf => self.registry.clear_programs(),
            _ => {}
        }
    }

    /// Every task of every component, for the shutdown to wait on; drops
    /// the agent's own sender so the router ends once the sources have.
    pub fn into_tasks(self) -> Vec<JoinHandle<()>> {
        self.running.into_values().flat_map(|r| r.tasks).collect()
    }
}

/// Where a kind comes in the start order.
fn start_rank(kind: Kind) -> u8 {
    match kind {
        Kind::RemoteWrite(_) => 0,
        Kind::Logs => 1,
        Kind::Docker => 2,
        Kind::Node => 3,
        Kind::Ebpf => 4,
        Kind::Scrape(_) => 5,
    }
}

/// The node collector of `config`.
pub fn node_collector(config: &Config) -> Box<dyn Collector> {
    Box::new(crate::sources::node::NodeCollector::new(config.node.clone()))
}

/// The eBPF collector of `config`, with its programs loaded and attached.
pub async fn ebpf_collector(config: &Config, registry: &Registry) -> Option<Box<dyn Collector>> {
    let (ebpf, reg) = (config.ebpf.clone(), registry.clone());
    // Loading programs takes the verifier a few milliseconds each.
    let c = tokio::task::spawn_blocking(move || crate::sources::ebpf::EbpfCollector::start(&ebpf, &reg)).await.ok()?;
    Some(Box::new(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_text(text, "t.toml", &crate::config::Vars::from_map(Default::default())).unwrap()
    }

    fn keys(text: &str) -> BTreeMap<String, Value> {
        plan(&config(text), false).unwrap().into_iter().map(|p| (p.key, p.fingerprint)).collect()
    }

    #[test]
    fn only_the_changed_sections_get_new_fingerprints() {
        let base = r#"
            [node]
            enabled = true
            [ebpf]
            enabled = true
            [[scrape]]
            job_name = "app"
            [[scrape.static_configs]]
            targets = ["127.0.0.1:1"]
            [[remote_write]]
            url = "http://127.0.0.1:2/api/v1/write"
            headers = { "X-Scope-OrgID" = "a" }
        "#;
        let before = keys(base);
        let header = keys(&base.replace("\"a\"", "\"b\""));
        let changed: Vec<&String> = before.keys().filter(|k| before[*k] != header[*k]).collect();
        assert_eq!(changed.len(), 1, "a header (a secret) is a change of its endpoint only: {changed:?}");
        assert!(changed[0].starts_with("remote_write/"), "{changed:?}");

        let added = keys(&format!("{base}\n[[scrape]]\njob_name = \"more\"\n"));
        assert_eq!(added.len(), before.len() + 1);
        assert!(before.iter().all(|(k, v)| added[k] == *v), "adding a job changes nothing else");

        let interval = keys(&format!("[agent]\nscrape_interval = \"5s\"\n{base}"));
        let moved: Vec<&String> = before.keys().filter(|k| before[*k] != interval[*k]).collect();
        assert!(moved.iter().all(|k| !k.starts_with("remote_write/")), "sinks do not use the interval: {moved:?}");
        assert!(moved.iter().any(|k| *k == "node") && moved.iter().any(|k| *k == "scrape/app"), "{moved:?}");
    }

    #[test]
    fn two_endpoints_with_one_name_are_refused() {
        let c = config(
            "[[remote_write]]\nurl = \"http://a:1/w\"\nname = \"x\"\n[[remote_write]]\nurl = \"http://b:1/w\"\nname = \"x\"\n",
        );
        assert!(plan(&c, false).unwrap_err().contains("two endpoints are named \"x\""));
    }
}
