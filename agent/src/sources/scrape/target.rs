//! Targets and their scrape loops: target relabeling (`__address__`,
//! `__scheme__`, `__metrics_path__`, `__param_*`, `__meta_*`), the HTTP
//! request as Prometheus makes it, Prometheus's own per-target series, and
//! staleness when a scrape fails or a target goes away.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::cache::Cache;
use super::ingest::{self, attach_target_labels, IngestError};
use super::parser::{Format, ACCEPT};
use super::ScrapeConfig;
use crate::config::common::parse_size;
use crate::http_client::{self, Auth, Settings};
use crate::relabel::Relabeler;
use crate::sample::{now_ms, stale_nan, Batch, Family, Labels, MetricType, METRIC_NAME};

/// Why a scrape gave no samples. The text is what the status API and the
/// log show.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("timeout: no complete answer within {0:?} (scrape_timeout)")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("server returned HTTP status {0}")]
    Status(String),
    #[error("body size limit exceeded: more than {0} bytes")]
    BodyTooLarge(u64),
    #[error("request failed: {0}")]
    Http(String),
    #[error("{0}")]
    Ingest(#[from] IngestError),
}

/// One scrape job, ready to scrape: cheap to clone.
#[derive(Clone)]
pub struct Job {
    inner: Arc<JobInner>,
}

struct JobInner {
    config: ScrapeConfig,
    interval: Duration,
    timeout: Duration,
    client: reqwest::Client,
    /// With `tls.server_name`: one client per target host and port, whose
    /// URL names `server_name` (see [`crate::http_client`]).
    named: std::sync::Mutex<HashMap<String, (reqwest::Client, reqwest::Url)>>,
    auth: Auth,
    body_limit: u64,
    target_relabel: Relabeler,
    metric_relabel: Relabeler,
}

/// One target after target relabeling.
#[derive(Clone, Debug)]
pub struct Target {
    /// Labels put on every series of the target: job, instance and the
    /// rest of the non-`__` labels.
    pub labels: Labels,
    pub url: reqwest::Url,
    /// `scrape/<job>/<instance>`: the name in the status API.
    pub name: String,
    /// Identity of the target: labels and URL.
    pub key: String,
}

/// The client settings of a job (no single URL: a job has many targets).
fn client_settings(config: &ScrapeConfig) -> Settings<'_> {
    Settings {
        tls: config.tls.as_ref(),
        proxy_url: config.proxy_url.as_ref().map(|p| p.expose()),
        pool_max_idle_per_host: Some(1),
        no_gzip: !config.gzip,
        ..Default::default()
    }
}

/// Adds the scheme's default port when the address has none, as
/// Prometheus 2.42 does before it sets `instance`.
fn with_port(address: &str, scheme: &str) -> String {
    let has_port = match address.rfind(']') {
        Some(end) => address[end..].contains(':'),
        None => address.contains(':'),
    };
    if has_port {
        address.to_string()
    } else {
        format!("{address}:{}", if scheme == "https" { 443 } else { 80 })
    }
}

impl Job {
    /// Prepares a job: HTTP client, credentials, relabel rules.
    pub fn new(config: ScrapeConfig, default_interval: Duration) -> Result<Job, String> {
        let interval = config.interval(default_interval);
        let timeout = config.timeout(default_interval);
        if config.tls.as_ref().is_some_and(|t| t.insecure_skip_verify) {
            tracing::warn!(job = %config.job_name, "tls.insecure_skip_verify is set: server certificates are not checked");
        }
        let client = http_client::build(&client_settings(&config))?.client;
        let auth = Auth::new(config.basic_auth.as_ref(), &config.bearer_token, &config.bearer_token_file)?;
        let body_limit = config.body_size_limit.as_deref().map(parse_size).transpose()?.unwrap_or(0);
        let target_relabel = Relabeler::new(&config.relabel_configs).map_err(|e| format!("relabel_configs: {e}"))?;
        let metric_relabel =
            Relabeler::new(&config.metric_relabel_configs).map_err(|e| format!("metric_relabel_configs: {e}"))?;
        Ok(Job {
            inner: Arc::new(JobInner {
                config,
                interval,
                timeout,
                client,
                named: Default::default(),
                auth,
                body_limit,
                target_relabel,
                metric_relabel,
            }),
        })
    }

    /// The client and URL for `url`: the job's client, or with
    /// `tls.server_name` set the target's own (built once, resolving the
    /// target's host off the runtime; a reload builds them anew).
    async fn client_for(&self, url: &reqwest::Url) -> Result<(reqwest::Client, reqwest::Url), String> {
        let j = &self.inner;
        if http_client::server_name(j.config.tls.as_ref()).is_none() {
            return Ok((j.client.clone(), url.clone()));
        }
        let key = format!("{}:{}", url.host_str().unwrap_or_default(), url.port_or_known_default().unwrap_or(0));
        let known = j.named.lock().unwrap().get(&key).cloned();
        let (client, named) = match known {
            Some(c) => c,
            None => {
                let job = self.clone();
                let u = url.clone();
                let built =
                    tokio::task::spawn_blocking(move || http_client::for_url(&client_settings(&job.inner.config), &u))
                        .await
                        .map_err(|e| format!("client for {}: {e}", http_client::display_url(url.as_str())))??;
                let pair = (built.client, built.url.expect("built with a url"));
                j.named.lock().unwrap().insert(key, pair.clone());
                pair
            }
        };
        // Same path and query as the target's URL, host renamed.
        let mut out = url.clone();
        let _ = out.set_host(named.host_str());
        Ok((client, out))
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.inner.config.job_name
    }

    /// The static targets, after target relabeling.
    pub fn static_targets(&self) -> Vec<Target> {
        let c = &self.inner.config;
        let mut groups: Vec<(&String, Option<&BTreeMap<String, String>>)> =
            c.targets.iter().map(|t| (t, None)).collect();
        for g in &c.static_configs {
            groups.extend(g.targets.iter().map(|t| (t, Some(&g.labels))));
        }
        let mut out = Vec::new();
        for (address, labels) in groups {
            if address.trim().is_empty() {
                continue;
            }
            let mut set = Labels::new();
            for (k, v) in labels.into_iter().flatten() {
                set.set(k.as_str(), v.as_str());
            }
            set.set("__address__", address.trim());
            out.extend(self.target(set));
        }
        dedup(out)
    }

    /// Targets from discovered label sets (Docker), after relabeling.
    pub fn discovered_targets(&self, discovered: &[Labels]) -> Vec<Target> {
        dedup(discovered.iter().filter_map(|l| self.target(l.clone())).collect())
    }

    /// Applies Prometheus's target labeling to `set` (`__address__` and
    /// discovered labels): defaults, relabel_configs, then `instance`.
    pub fn target(&self, mut set: Labels) -> Option<Target> {
        let c = &self.inner.config;
        let defaults = [
            ("job", c.job_name.clone()),
            ("__metrics_path__", c.metrics_path.clone().unwrap_or_else(|| "/metrics".into())),
            ("__scheme__", c.scheme.clone().unwrap_or_else(|| "http".into())),
            ("__scrape_interval__", crate::config::common::format_duration(self.inner.interval)),
            ("__scrape_timeout__", crate::config::common::format_duration(self.inner.timeout)),
        ];
        for (k, v) in defaults {
            if set.get(k).is_none() {
                set.set(k, v);
            }
        }
        for (k, v) in &c.params {
            let name = format!("__param_{k}");
            if set.get(&name).is_none() {
                if let Some(first) = v.first() {
                    set.set(name, first.as_str());
                }
            }
        }
        if !self.inner.target_relabel.apply(&mut set) {
            return None;
        }
        let address = set.get("__address__").unwrap_or("").trim().to_string();
        if address.is_empty() {
            return None;
        }
        let scheme = set.get("__scheme__").unwrap_or("http").to_string();
        let address = with_port(&address, &scheme);
        set.set("__address__", address.as_str());
        if set.get("instance").is_none() {
            set.set("instance", address.as_str());
        }
        let path = set.get("__metrics_path__").unwrap_or("/metrics").to_string();
        let mut url = reqwest::Url::parse(&format!("{scheme}://{address}{path}")).ok()?;
        let mut params: BTreeMap<String, Vec<String>> = c.params.clone();
        for l in set.iter() {
            if let Some(k) = l.name.strip_prefix("__param_") {
                let entry = params.entry(k.to_string()).or_default();
                match entry.first_mut() {
                    Some(first) => *first = l.value.to_string(),
                    None => entry.push(l.value.to_string()),
                }
            }
        }
        if !params.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, vs) in &params {
                for v in vs {
                    q.append_pair(k, v);
                }
            }
        }
        set.retain(|l| !l.name.starts_with("__"));
        let name = format!("scrape/{}/{}", set.get("job").unwrap_or(""), set.get("instance").unwrap_or(""));
        let key = format!("{set}|{url}");
        Some(Target { labels: set, url, name, key })
    }

    /// Fetches the body of `target` (the Prometheus Accept header, auth,
    /// the body size limit, the format from the Content-Type) and ingests
    /// it piece by piece as it arrives: the body is never held whole, and
    /// reading stops at the first error or passed limit.
    async fn fetch(
        &self,
        target: &Target,
        opts: &ingest::Options<'_>,
        cache: &mut Cache,
    ) -> Result<ingest::Ingested, ScrapeError> {
        let j = &self.inner;
        let (client, url) = self.client_for(&target.url).await.map_err(ScrapeError::Connect)?;
        let req = client
            .get(url)
            .header(reqwest::header::ACCEPT, ACCEPT)
            .header("X-Prometheus-Scrape-Timeout-Seconds", format!("{}", j.timeout.as_secs_f64()));
        let req = j.auth.apply(req);
        let mut resp = req.send().await.map_err(|e| {
            if e.is_connect() {
                ScrapeError::Connect(crate::errors::chain(&e))
            } else {
                ScrapeError::Http(crate::errors::chain(&e))
            }
        })?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(ScrapeError::Status(resp.status().to_string()));
        }
        let format = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(Format::from_content_type)
            .unwrap_or(Format::Prometheus);
        let limit = j.body_limit;
        if limit > 0 && resp.content_length().is_some_and(|n| n > limit) {
            return Err(ScrapeError::BodyTooLarge(limit));
        }
        let opts = ingest::Options { format, ..*opts };
        let mut ingest = ingest::Ingest::new(&opts, cache);
        // The end of the body's last whole line read so far waits here for
        // the rest of its line.
        let mut partial: Vec<u8> = Vec::new();
        let mut read = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| ScrapeError::Http(crate::errors::chain(&e)))? {
            read += chunk.len() as u64;
            if limit > 0 && read > limit {
                return Err(ScrapeError::BodyTooLarge(limit));
            }
            let Some(end) = chunk.iter().rposition(|&b| b == b'\n') else {
                partial.extend_from_slice(&chunk);
                continue;
            };
            if partial.is_empty() {
                ingest.feed(&chunk[..=end])?;
            } else {
                partial.extend_from_slice(&chunk[..=end]);
                ingest.feed(&partial)?;
                partial.clear();
            }
            partial.extend_from_slice(&chunk[end + 1..]);
        }
        if !partial.is_empty() {
            ingest.feed(&partial)?;
        }
        Ok(ingest.finish()?)
    }

    /// One scrape of `target`: its families plus Prometheus's per-target
    /// series (`up`, `scrape_duration_seconds`, ...) and stale markers for
    /// the series that went away, and the error if it failed (then only
    /// the per-target series and stale markers). `cache` is the target's.
    pub async fn scrape(&self, target: &Target, cache: &mut Cache) -> (Vec<Family>, Option<ScrapeError>) {
        let j = &self.inner;
        let start_ms = now_ms();
        let started = Instant::now();
        let opts = ingest::Options {
            format: Format::Prometheus,
            scrape_ms: start_ms,
            honor_timestamps: j.config.honor_timestamps,
            honor_labels: j.config.honor_labels,
            target_labels: &target.labels,
            metric_relabel: &j.metric_relabel,
            sample_limit: j.config.sample_limit,
            label_limit: j.config.label_limit,
        };
        let result = match tokio::time::timeout(j.timeout, self.fetch(target, &opts, cache)).await {
            Ok(r) => r,
            Err(_) => Err(ScrapeError::Timeout(j.timeout)),
        };
        let seconds = started.elapsed().as_secs_f64();
        let (mut families, scraped, kept, added, error) = match result {
            Ok(ing) => {
                let added = cache.added();
                let mut families = ing.families;
                cache.finish_good(&mut families, start_ms);
                (families, ing.scraped, ing.kept, added, None)
            }
            Err(e) => {
                let (scraped, kept) = match &e {
                    ScrapeError::Ingest(IngestError::Parse { error, kept }) => (error.samples_before, *kept),
                    ScrapeError::Ingest(other) => (other.scraped(), 0),
                    _ => (0, 0),
                };
                let mut families = Vec::new();
                cache.finish_failed(&mut families, start_ms);
                (families, scraped, kept, 0, Some(e))
            }
        };
        let up = if error.is_none() { 1.0 } else { 0.0 };
        families.extend(report(target, [up, seconds, scraped as f64, kept as f64, added as f64], start_ms));
        (families, error)
    }

    /// Where this target's first scrape falls in the interval: a fixed
    /// offset from the target's hash, so targets spread over the interval
    /// and keep their phase across restarts (as Prometheus does).
    pub fn first_delay(&self, target: &Target) -> Duration {
        let interval = self.inner.interval.as_millis().max(1) as u64;
        let offset = crate::hash::fnv1a(target.key.as_bytes()) % interval;
        let now = now_ms().max(0) as u64 % interval;
        Duration::from_millis((offset + interval - now) % interval)
    }
}

/// Prometheus's per-target series, in this order.
const REPORT: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// The per-target series of `target` with `values` (in [`REPORT`] order).
fn report(target: &Target, values: [f64; 5], timestamp_ms: i64) -> Vec<Family> {
    REPORT
        .iter()
        .zip(values)
        .map(|(name, value)| {
            let mut labels = Labels::from_pairs([(METRIC_NAME, *name)]);
            attach_target_labels(&mut labels, &target.labels, false);
            let mut f = Family::new(*name, MetricType::Gauge, "");
            f.samples.push(crate::sample::Sample { labels, value, timestamp_ms });
            f
        })
        .collect()
}

fn dedup(targets: Vec<Target>) -> Vec<Target> {
    let mut keys = HashSet::new();
    targets.into_iter().filter(|t| keys.insert(t.key.clone())).collect()
}

/// Logs a scrape's failure when the target goes down, fails differently,
/// or once a period while it stays down; and when it works again.
fn log_outcome(
    failures: &mut crate::failure_log::FailureLog,
    name: &str,
    url: &impl std::fmt::Display,
    error: Option<&str>,
) {
    use crate::failure_log::Change;
    let Some(error) = error else {
        if let Some(r) = failures.succeeded() {
            let down_for_s = r.down_for.as_secs();
            tracing::info!(target = %name, url = %url, failures = r.failures, down_for_s, "scrape works again");
        }
        return;
    };
    let Some(r) = failures.failed(error) else { return };
    match r.change {
        Change::Down => tracing::warn!(target = %name, url = %url, error = %error, "scrape failed"),
        Change::NewError => {
            tracing::warn!(target = %name, url = %url, error = %error, failures = r.failures, "scrape fails differently")
        }
        Change::StillDown => tracing::warn!(
            target = %name,
            url = %url,
            error = %error,
            failures = r.failures,
            since_last_line = r.since_last_line,
            down_for_s = r.down_for.as_secs(),
            "scrape still failing"
        ),
    }
}

/// What a target stopped by a reload leaves for its replacement: its cache
/// (series, staleness) and, once it has scraped, itself, for the stale
/// markers of its own series (`up`, `scrape_*`) if nothing replaces it.
pub struct Carried {
    cache: Cache,
    scraped: Option<Target>,
}

impl crate::stale::Carry for Carried {
    fn mark_all(&mut self, timestamp_ms: i64) -> Vec<Family> {
        let mut families = self.cache.mark_all(timestamp_ms);
        if let Some(target) = self.scraped.take() {
            families.extend(report(&target, [stale_nan(); 5], timestamp_ms));
        }
        families
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

/// Runs one target until `stop`: scrape on the interval, send each result
/// with stale markers for series that went away. When the target is
/// removed (stop without agent shutdown) every series gets a stale marker;
/// when its whole job stops for a reload, its staleness state goes to the
/// handover instead, for the job that replaces it. `carried` is that state
/// from the job this one replaces.
async fn run_target(job: Job, target: Target, ctx: crate::Context, stop: CancellationToken, carried: Option<Carried>) {
    let name: Arc<str> = target.name.as_str().into();
    ctx.registry.register_source(&name, "scrape", false);
    let interval = job.inner.interval;
    let start = tokio::time::Instant::now() + job.first_delay(&target);
    let mut ticker = tokio::time::interval_at(start, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let limit = job.inner.config.sample_limit;
    let (mut cache, mut scraped) =
        carried.map_or_else(|| (Cache::new(limit), false), |c| (c.cache, c.scraped.is_some()));
    let mut failures = crate::failure_log::FailureLog::default();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => break,
        }
        let at = now_ms();
        let started = Instant::now();
        let (families, error) = tokio::select! {
            r = job.scrape(&target, &mut cache) => r,
            _ = stop.cancelled() => break,
        };
        scraped = true;
        let batch = Batch { source: name.clone(), families };
        let error = error.map(|e| e.to_string());
        log_outcome(&mut failures, &name, &target.url, error.as_deref());
        ctx.registry.record_collection(&name, at, started.elapsed().as_secs_f64(), batch.len(), error);
        if ctx.metrics.send(batch).await.is_err() {
            return;
        }
    }
    if ctx.agent_shutdown.is_cancelled() {
        return;
    }
    ctx.registry.remove_source(&name);
    if ctx.shutdown.is_cancelled() {
        let state = Carried { cache, scraped: scraped.then(|| target.clone()) };
        ctx.handover.put(&target.key, name, state);
    } else {
        let at = now_ms();
        let mut families = cache.mark_all(at);
        if scraped {
            families.extend(report(&target, [stale_nan(); 5], at));
        }
        let _ = ctx.metrics.send(Batch { source: name.clone(), families }).await;
    }
}

/// Runs a job: one loop per target, following Docker discovery's
/// `docker` targets when the job asks for it (None: discovery is off).
pub async fn run_job(
    job: Job,
    ctx: crate::Context,
    docker: Option<tokio::sync::watch::Receiver<Vec<crate::sample::Labels>>>,
) {
    let statics = job.static_targets();
    let mut docker = if job.inner.config.docker_sd { docker } else { None };
    if job.inner.config.docker_sd && docker.is_none() {
        tracing::warn!(job = %job.name(), "docker_sd is set but Docker discovery is not enabled ([docker] enabled = false)");
    }
    let mut running: HashMap<String, (CancellationToken, tokio::task::JoinHandle<()>)> = HashMap::new();
    let mut first_round = true;
    loop {
        let mut wanted = statics.clone();
        if let Some(rx) = &docker {
            let discovered = rx.borrow().clone();
            wanted.extend(job.discovered_targets(&discovered));
            wanted = dedup(wanted);
        }
        let keys: HashSet<String> = wanted.iter().map(|t| t.key.clone()).collect();
        running.retain(|key, (stop, _)| {
            let keep = keys.contains(key);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for t in wanted {
            if !running.contains_key(&t.key) {
                let stop = ctx.shutdown.child_token();
                let key = t.key.clone();
                let carried = ctx.handover.take(&key).map(|(_, s)| s);
                let task = tokio::spawn(run_target(job.clone(), t, ctx.clone(), stop.clone(), carried));
                running.insert(key, (stop, task));
            }
        }
        if std::mem::take(&mut first_round) {
            // Targets of the job this one replaced that it no longer has.
            crate::runtime::send_stale(&ctx.handover, &ctx.metrics).await;
        }
        match docker.as_mut() {
            Some(rx) => {
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { docker = None; },
                    _ = ctx.shutdown.cancelled() => break,
                }
            }
            None => {
                ctx.shutdown.cancelled().await;
                break;
            }
        }
    }
    for (_, (_, task)) in running {
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relabel::RelabelConfig;

    #[test]
    fn target_relabeling_builds_url_and_instance() {
        let config: ScrapeConfig = toml::from_str(
            r#"
            job_name = "app"
            metrics_path = "/system-stats"
            params = { module = ["a", "b"] }
            [[static_configs]]
            targets = ["10.0.0.1:3000", "", "10.0.0.2"]
            labels = { team = "x" }
            [[relabel_configs]]
            source_labels = ["__address__"]
            regex = "10\\.0\\.0\\.2.*"
            target_label = "__param_module"
            replacement = "c"
            "#,
        )
        .unwrap();
        let job = Job::new(config, Duration::from_secs(15)).unwrap();
        let t = job.static_targets();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].url.as_str(), "http://10.0.0.1:3000/system-stats?module=a&module=b");
        assert_eq!(t[0].labels.to_string(), "{instance=\"10.0.0.1:3000\", job=\"app\", team=\"x\"}");
        assert_eq!(t[0].name, "scrape/app/10.0.0.1:3000");
        assert_eq!(t[1].url.as_str(), "http://10.0.0.2/system-stats?module=c&module=b");
        let d = job.first_delay(&t[0]);
        assert!(d < Duration::from_secs(15));
    }

    /// Serves `body` over HTTP on loopback to every connection.
    async fn serve(body: &'static str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(body.as_bytes()).await;
                });
            }
        });
        addr
    }

    /// Docker discovery adds a target, then the container goes away: its
    /// series (its own and `up`...) get stale markers and the status entry
    /// is removed.
    #[tokio::test]
    async fn discovered_target_that_disappears_gets_stale_markers() {
        let addr = serve("app_requests_total{path=\"/\"} 3\n").await;
        let mut config = crate::config::Config::default();
        config.agent.scrape_interval = Duration::from_millis(200);
        config.scrape.push(ScrapeConfig { job_name: "docker".into(), docker_sd: true, ..Default::default() });
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let (targets_tx, targets_rx) = tokio::sync::watch::channel(Vec::<Labels>::new());
        let ctx = crate::Context {
            config: Arc::new(config),
            registry: crate::status::Registry::default(),
            metrics: tx,
            shutdown: CancellationToken::new(),
            agent_shutdown: CancellationToken::new(),
            handover: Default::default(),
        };
        let tasks = super::super::start(&ctx, Some(targets_rx));
        targets_tx
            .send(vec![Labels::from_pairs([("__address__", addr.as_str()), ("__meta_docker_container_name", "/web")])])
            .unwrap();
        let name = format!("scrape/docker/{addr}");
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
        assert_eq!(&*first.source, name.as_str());
        let series: Vec<String> = first.samples().map(|s| format!("{} {}", s.labels, s.value)).collect();
        assert!(
            series.contains(&format!("app_requests_total{{instance=\"{addr}\", job=\"docker\", path=\"/\"}} 3")),
            "{series:?}"
        );
        assert!(series.contains(&format!("up{{instance=\"{addr}\", job=\"docker\"}} 1")), "{series:?}");
        assert_eq!(ctx.registry.snapshot().sources[&name].kind, "scrape");

        targets_tx.send(Vec::new()).unwrap();
        let last = loop {
            let b = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
            if b.samples().all(|s| crate::sample::is_stale(s.value)) {
                break b;
            }
        };
        let mut stale: Vec<String> = last.samples().map(|s| s.labels.metric_name().to_string()).collect();
        stale.sort();
        assert_eq!(
            stale,
            [
                "app_requests_total",
                "scrape_duration_seconds",
                "scrape_samples_post_metric_relabeling",
                "scrape_samples_scraped",
                "scrape_series_added",
                "up"
            ]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!ctx.registry.snapshot().sources.contains_key(&name));
        ctx.shutdown.cancel();
        for t in tasks {
            t.await.unwrap();
        }
    }

    #[test]
    fn docker_targets_with_meta_labels() {
        let mut config = ScrapeConfig { job_name: "docker".into(), docker_sd: true, ..Default::default() };
        config.relabel_configs = vec![
            RelabelConfig {
                source_labels: vec!["__meta_docker_container_label_metrics".into()],
                regex: Some("true".into()),
                action: Some("keep".into()),
                ..Default::default()
            },
            RelabelConfig {
                source_labels: vec!["__meta_docker_container_name".into()],
                regex: Some("/?(.*)".into()),
                target_label: Some("container".into()),
                ..Default::default()
            },
        ];
        let job = Job::new(config, Duration::from_secs(15)).unwrap();
        let found = vec![
            Labels::from_pairs([
                ("__address__", "172.17.0.2:8080"),
                ("__meta_docker_container_name", "/web"),
                ("__meta_docker_container_label_metrics", "true"),
            ]),
            Labels::from_pairs([("__address__", "172.17.0.3:8080"), ("__meta_docker_container_name", "/db")]),
        ];
        let t = job.discovered_targets(&found);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].labels.to_string(), "{container=\"web\", instance=\"172.17.0.2:8080\", job=\"docker\"}");
    }
}
