//! Loki push API sink: log entries are batched per stream, encoded as
//! `logproto.PushRequest`, snappy-compressed and POSTed to
//! /loki/api/v1/push. A batch is retried until Loki takes it (a 400 is the
//! one exception); only then does it finish its entries' receipts (the
//! log model, [`crate::logline`]), and the positions file records what
//! every log sink has finished. Sources wait, rather than memory growing,
//! once the bounded buffer (`buffer_size`) is full.

pub mod proto;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::common::{self, BasicAuth, TlsConfig};
use crate::logline::{LogEntry, Receipt};
use crate::sample::{now_ms, Family, Labels, MetricType};
use crate::selfmetrics as m;
use crate::status::{Registry, SelfMetrics};

/// The path Loki serves pushes on.
pub const PUSH_PATH: &str = "/loki/api/v1/push";

/// `[loki]`: where log lines go.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LokiConfig {
    /// Loki base URL (`http://loki:3100`) or full push URL; empty turns the sink off.
    #[serde(default)]
    pub url: String,
    /// Tenant sent as `X-Scope-OrgID`; empty sends none.
    #[serde(default)]
    pub tenant: String,
    /// HTTP basic authentication; an empty username turns it off.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// TLS settings for an https URL.
    #[serde(default)]
    pub tls: TlsConfig,
    /// A batch is sent once its lines reach this many bytes.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// ... or once its oldest line has waited this long.
    #[serde(default = "default_batch_wait", with = "common::duration")]
    pub batch_wait: Duration,
    /// Time limit of one push request.
    #[serde(default = "default_timeout", with = "common::duration")]
    pub timeout: Duration,
    /// First wait after a failed push; doubled up to `max_backoff`.
    #[serde(default = "default_min_backoff", with = "common::duration")]
    pub min_backoff: Duration,
    /// Longest wait between retries. Retries never give up.
    #[serde(default = "default_max_backoff", with = "common::duration")]
    pub max_backoff: Duration,
    /// Bytes of lines held in memory (queued and in flight) before sources
    /// stop reading.
    #[serde(default = "default_buffer_size")]
    pub buffer_size: usize,
    /// Labels added to every stream (after `agent.external_labels`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_batch_size() -> usize {
    1 << 20
}
fn default_batch_wait() -> Duration {
    Duration::from_secs(1)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_min_backoff() -> Duration {
    Duration::from_millis(500)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_buffer_size() -> usize {
    8 << 20
}

impl Default for LokiConfig {
    fn default() -> Self {
        LokiConfig {
            url: String::new(),
            tenant: String::new(),
            basic_auth: None,
            tls: TlsConfig::default(),
            batch_size: default_batch_size(),
            batch_wait: default_batch_wait(),
            timeout: default_timeout(),
            min_backoff: default_min_backoff(),
            max_backoff: default_max_backoff(),
            buffer_size: default_buffer_size(),
            labels: BTreeMap::new(),
        }
    }
}

impl LokiConfig {
    /// Adds this section's problems to `problems`.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if self.url.trim().is_empty() {
            return;
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            problems.push(format!("loki.url {:?} must start with http:// or https://", self.url));
        }
        if self.batch_size == 0 {
            problems.push("loki.batch_size must be above zero".into());
        }
        if self.buffer_size < self.batch_size {
            problems.push(format!(
                "loki.buffer_size ({}) must be at least loki.batch_size ({})",
                self.buffer_size, self.batch_size
            ));
        }
        if self.batch_wait.is_zero() {
            problems.push("loki.batch_wait must be above zero".into());
        }
        if self.min_backoff.is_zero() || self.max_backoff < self.min_backoff {
            problems.push("loki.min_backoff must be above zero and at most loki.max_backoff".into());
        }
        for name in self.labels.keys() {
            if !crate::relabel::is_valid_label_name(name) {
                problems.push(format!("loki.labels: {name:?} is not a valid label name"));
            }
        }
        if let Some(auth) = &self.basic_auth {
            if let Err(e) = auth.credentials() {
                problems.push(format!("loki.basic_auth: {e}"));
            }
        }
    }

    /// One line for `vantage check`.
    pub fn describe(&self) -> String {
        let mut s = self.push_url();
        if !self.tenant.is_empty() {
            s.push_str(&format!(", tenant {}", self.tenant));
        }
        if self.basic_auth.as_ref().is_some_and(|a| !a.username.is_empty()) {
            s.push_str(", basic auth");
        }
        s.push_str(&format!(
            ", batch {} bytes / {}, buffer {} bytes",
            self.batch_size,
            common::format_duration(self.batch_wait),
            self.buffer_size
        ));
        s
    }

    /// The full push URL.
    pub fn push_url(&self) -> String {
        let url = self.url.trim().trim_end_matches('/');
        if url.ends_with(PUSH_PATH) {
            url.to_string()
        } else {
            format!("{url}{PUSH_PATH}")
        }
    }
}

/// Counters of the sink, exported as `vantage_loki_*`.
#[derive(Default)]
pub struct LokiStats {
    pub entries_sent: AtomicU64,
    pub entries_rejected: AtomicU64,
    pub requests_failed: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub pending_entries: AtomicI64,
    pub pending_bytes: AtomicI64,
    pub last_send_ms: AtomicI64,
}

impl SelfMetrics for LokiStats {
    fn self_metrics(&self, out: &mut Vec<Family>) {
        let ts = now_ms();
        let mut add = |name: &str, kind, help: &str, v: f64| {
            let mut f = Family::new(name, kind, help);
            f.push(&[], v, ts);
            out.push(f);
        };
        use MetricType::{Counter, Gauge};
        add(
            m::LOKI_ENTRIES_SENT,
            Counter,
            "Entries Loki acknowledged.",
            self.entries_sent.load(Ordering::Relaxed) as f64,
        );
        add(
            m::LOKI_ENTRIES_DROPPED,
            Counter,
            "Entries Loki rejected with a 400 (not retried).",
            self.entries_rejected.load(Ordering::Relaxed) as f64,
        );
        add(
            m::LOKI_REQUESTS_FAILED,
            Counter,
            "Push requests that failed and were retried.",
            self.requests_failed.load(Ordering::Relaxed) as f64,
        );
        add(
            m::LOKI_BYTES_SENT,
            Counter,
            "Compressed bytes Loki acknowledged.",
            self.bytes_sent.load(Ordering::Relaxed) as f64,
        );
        add(
            m::LOKI_ENTRIES_PENDING,
            Gauge,
            "Entries buffered or in flight.",
            self.pending_entries.load(Ordering::Relaxed) as f64,
        );
        add(
            m::LOKI_BUFFER_BYTES,
            Gauge,
            "Bytes of lines buffered or in flight.",
            self.pending_bytes.load(Ordering::Relaxed) as f64,
        );
        add(
            m::LOKI_LAST_SEND,
            Gauge,
            "Unix time of the last acknowledged push.",
            self.last_send_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        );
    }
}

/// Why the sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum LokiError {
    #[error("loki: {0}")]
    Config(String),
}

/// Builds the HTTP client for `cfg` ([`crate::http_client`]) and the push
/// URL to use (renamed to `tls.server_name` when that is set).
fn client(cfg: &LokiConfig) -> Result<(reqwest::Client, String), LokiError> {
    if cfg.tls.insecure_skip_verify {
        tracing::warn!(url = %cfg.push_url(), "loki: TLS certificate verification is OFF (tls.insecure_skip_verify)");
    }
    let push_url = cfg.push_url();
    let built = crate::http_client::build(&crate::http_client::Settings {
        url: Some(&push_url),
        tls: Some(&cfg.tls),
        timeout: Some(cfg.timeout),
        pool_idle_timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    })
    .map_err(LokiError::Config)?;
    Ok((built.client, built.url.map(String::from).unwrap_or(push_url)))
}

/// The running sink: the [`crate::sinks::LogSink`] the fan-out hands
/// entries to, and the task that pushes. The task ends once `sink` is
/// dropped (after one last push) or, while retrying, on shutdown.
pub struct Sink {
    pub sink: LokiSink,
    pub task: tokio::task::JoinHandle<()>,
    pub stats: Arc<LokiStats>,
}

/// The Loki sink's intake: entries wait here for the pusher. Unbounded
/// because the log path's buffer ([`crate::logline::channel`]) bounds it.
pub struct LokiSink {
    tx: mpsc::UnboundedSender<(LogEntry, Receipt)>,
}

impl crate::sinks::LogSink for LokiSink {
    fn accept(&self, entry: LogEntry, receipt: Receipt) {
        // A send fails only once the pusher stopped (shutdown): the receipt
        // is dropped unfinished and the line is read again after a restart.
        let _ = self.tx.send((entry, receipt));
    }
}

/// Starts the sink for `cfg`; `external` labels go on every stream.
pub fn start(
    cfg: &LokiConfig,
    external: &BTreeMap<String, String>,
    registry: &Registry,
    shutdown: CancellationToken,
) -> Result<Sink, LokiError> {
    let (http, url) = client(cfg)?;
    let auth = match &cfg.basic_auth {
        Some(a) => a.credentials().map_err(LokiError::Config)?,
        None => None,
    };
    let mut extra: Vec<(String, String)> = external.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    extra.extend(cfg.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    let (tx, rx) = mpsc::unbounded_channel();
    let stats = Arc::new(LokiStats::default());
    registry.add_provider(stats.clone());
    let endpoint = cfg.push_url();
    registry.update_sink("loki", |s| {
        s.kind = "loki".into();
        s.endpoint = endpoint.clone();
    });
    let pusher = Pusher {
        cfg: cfg.clone(),
        url,
        http,
        auth,
        extra,
        stats: stats.clone(),
        registry: registry.clone(),
        shutdown,
        failures: Default::default(),
    };
    let task = tokio::spawn(pusher.run(rx));
    Ok(Sink { sink: LokiSink { tx }, task, stats })
}

/// Streams per batch up to which a stream is found by comparison.
const LINEAR_STREAMS: usize = 16;

/// Entries collected for one request, grouped by stream.
#[derive(Default)]
struct Pending {
    streams: HashMap<Labels, usize>,
    entries: Vec<(Labels, Vec<(i64, String)>)>,
    receipts: Vec<Receipt>,
    /// Entries taken in, ack-only ones included.
    items: usize,
    /// Lines to send.
    count: usize,
    bytes: usize,
    cost: usize,
    first_at: Option<Instant>,
}

impl Pending {
    fn add(&mut self, e: LogEntry, receipt: Option<Receipt>) {
        self.cost += e.cost();
        self.items += 1;
        self.first_at.get_or_insert_with(Instant::now);
        self.receipts.extend(receipt);
        let Some(line) = e.line else { return };
        self.count += 1;
        self.bytes += line.len();
        // Few streams per batch is the common case: comparing label sets
        // is cheaper than hashing them, so the map is only used beyond that.
        let i = if self.entries.len() <= LINEAR_STREAMS {
            self.entries.iter().position(|(l, _)| *l == e.labels)
        } else {
            self.streams.get(&e.labels).copied()
        };
        let i = match i {
            Some(i) => i,
            None => {
                if self.entries.len() == LINEAR_STREAMS {
                    self.streams = self.entries.iter().enumerate().map(|(i, (l, _))| (l.clone(), i)).collect();
                }
                if self.entries.len() >= LINEAR_STREAMS {
                    self.streams.insert(e.labels.clone(), self.entries.len());
                }
                self.entries.push((e.labels, Vec::new()));
                self.entries.len() - 1
            }
        };
        self.entries[i].1.push((e.timestamp_ns, line));
    }

    fn is_empty(&self) -> bool {
        self.first_at.is_none()
    }
}

/// Renders a label set as a Loki stream selector, `{a="b", c="d"}`.
pub fn selector(labels: &Labels) -> String {
    let mut s = String::with_capacity(16 * labels.len() + 2);
    s.push('{');
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&l.name);
        s.push_str("=\"");
        s.push_str(&crate::exposition::escape_label_value(&l.value));
        s.push('"');
    }
    s.push('}');
    s
}

/// Encodes `pending` as a snappy-compressed PushRequest; `extra` labels are
/// added where a stream does not set them. Entries of a stream are put in
/// timestamp order (stable, so equal times keep their read order).
pub fn encode(entries: &mut [(Labels, Vec<(i64, String)>)], extra: &[(String, String)]) -> Vec<u8> {
    let mut req = proto::PushRequest { streams: Vec::with_capacity(entries.len()) };
    for (labels, lines) in entries.iter_mut() {
        let mut labels = labels.clone();
        for (k, v) in extra {
            if labels.get(k).is_none() {
                labels.set(k.clone(), v.clone());
            }
        }
        lines.sort_by_key(|(ts, _)| *ts);
        req.streams.push(proto::StreamAdapter {
            labels: selector(&labels),
            entries: lines
                .iter_mut()
                .map(|(ts, line)| proto::EntryAdapter {
                    timestamp: Some(proto::Timestamp::from_nanos(*ts)),
                    line: std::mem::take(line),
                })
                .collect(),
            hash: 0,
        });
    }
    let raw = req.encode_to_vec();
    snap::raw::Encoder::new().compress_vec(&raw).expect("snappy compression of an in-memory buffer")
}

/// How one push attempt ended.
enum Outcome {
    Ok,
    /// Network error, 5xx or 429: try again (after the receiver's
    /// Retry-After, when it gave one).
    Retry(String, Option<Duration>),
    /// 4xx other than 429: Loki will never take this batch.
    Reject(u16, String),
}

struct Pusher {
    cfg: LokiConfig,
    url: String,
    http: reqwest::Client,
    auth: Option<(String, crate::config::Secret)>,
    extra: Vec<(String, String)>,
    stats: Arc<LokiStats>,
    registry: Registry,
    shutdown: CancellationToken,
    failures: std::sync::Mutex<crate::failure_log::FailureLog>,
}

impl Pusher {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<(LogEntry, Receipt)>) {
        let mut pending = Pending::default();
        loop {
            let deadline = pending.first_at.map(|t| t + self.cfg.batch_wait);
            // Shutdown is seen as the intake closing: the fan-out forwards
            // what the sources had queued, then drops the sink.
            tokio::select! {
                biased;
                e = rx.recv() => match e {
                    Some((e, receipt)) => {
                        self.stats.pending_entries.fetch_add(1, Ordering::Relaxed);
                        self.stats.pending_bytes.fetch_add(e.cost() as i64, Ordering::Relaxed);
                        pending.add(e, Some(receipt));
                        if pending.bytes >= self.cfg.batch_size && !self.push(std::mem::take(&mut pending)).await {
                            return;
                        }
                    }
                    None => break,
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    if !self.push(std::mem::take(&mut pending)).await { return; }
                }
            }
        }
        // Shutdown: one last attempt within the grace period; whatever is not
        // acknowledged stays unacknowledged in the positions and is read again.
        while let Ok((e, receipt)) = rx.try_recv() {
            pending.add(e, Some(receipt));
        }
        if !pending.is_empty() {
            let _ = tokio::time::timeout(crate::SHUTDOWN_GRACE / 2, self.attempt_once(pending)).await;
        }
    }

    /// Sends `batch` until Loki takes or rejects it. False when shutdown
    /// interrupted the retries (the batch stays unacknowledged).
    async fn push(&self, mut batch: Pending) -> bool {
        let body = encode(&mut batch.entries, &self.extra);
        let mut backoff = self.cfg.min_backoff;
        loop {
            let started = Instant::now();
            match self.send(&body).await {
                Outcome::Ok => {
                    if let Some(r) = self.failures.lock().unwrap().succeeded() {
                        let down_for_s = r.down_for.as_secs();
                        tracing::info!(url = %self.url, failures = r.failures, down_for_s, "loki push works again");
                    }
                    self.done(&mut batch, body.len(), true);
                    tracing::debug!(entries = batch.count, bytes = body.len(), took = ?started.elapsed(), "loki: pushed");
                    return true;
                }
                Outcome::Reject(status, text) => {
                    if let Some(r) = self.failures.lock().unwrap().failed(&format!("HTTP {status}: {text}")) {
                        let (failures, since_last_line) = (r.failures, r.since_last_line);
                        tracing::error!(url = %self.url, status, response = %text, entries = batch.count, failures, since_last_line, "loki rejected a batch; it is dropped, not retried");
                    }
                    self.stats.entries_rejected.fetch_add(batch.count as u64, Ordering::Relaxed);
                    self.registry.update_sink("loki", |s| s.last_error = format!("HTTP {status}: {text}"));
                    self.done(&mut batch, 0, false);
                    return true;
                }
                Outcome::Retry(why, after) => {
                    self.stats.requests_failed.fetch_add(1, Ordering::Relaxed);
                    // Loki's Retry-After (on 429) is honoured, within reason.
                    let wait = after.map_or(backoff, |a| a.min(MAX_RETRY_AFTER));
                    if let Some(r) = self.failures.lock().unwrap().failed(&why) {
                        let (failures, since_last_line, down_for_s) =
                            (r.failures, r.since_last_line, r.down_for.as_secs());
                        tracing::warn!(url = %self.url, error = %why, retry_in = ?wait, entries = batch.count, failures, since_last_line, down_for_s, "loki push failed; retrying");
                    }
                    self.registry.update_sink("loki", |s| s.last_error = why);
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    backoff = (backoff * 2).min(self.cfg.max_backoff);
                }
            }
        }
    }

    async fn attempt_once(&self, mut batch: Pending) {
        let body = encode(&mut batch.entries, &self.extra);
        if let Outcome::Ok = self.send(&body).await {
            self.done(&mut batch, body.len(), true);
        }
    }

    /// Finishes a batch's receipts, in the order the entries came (the
    /// fan-out acknowledges and frees buffer space once every sink has).
    fn done(&self, batch: &mut Pending, bytes: usize, sent: bool) {
        batch.receipts.drain(..).for_each(Receipt::done);
        self.stats.pending_entries.fetch_sub(batch.items as i64, Ordering::Relaxed);
        self.stats.pending_bytes.fetch_sub(batch.cost as i64, Ordering::Relaxed);
        if sent {
            let now = now_ms();
            self.stats.entries_sent.fetch_add(batch.count as u64, Ordering::Relaxed);
            self.stats.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
            self.stats.last_send_ms.store(now, Ordering::Relaxed);
            let newest = batch.entries.iter().flat_map(|(_, l)| l.iter().map(|(ts, _)| *ts)).max().unwrap_or(0);
            let pending = self.stats.pending_entries.load(Ordering::Relaxed).max(0) as u64;
            self.registry.update_sink("loki", |s| {
                s.pending = pending;
                s.last_success_ms = now;
                s.last_error.clear();
                s.lag_seconds = if newest > 0 { (now as f64 / 1000.0 - newest as f64 / 1e9).max(0.0) } else { 0.0 };
            });
        }
    }

    async fn send(&self, body: &[u8]) -> Outcome {
        let mut req = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .body(body.to_vec());
        if !self.cfg.tenant.is_empty() {
            req = req.header("X-Scope-OrgID", &self.cfg.tenant);
        }
        if let Some((user, pass)) = &self.auth {
            req = req.basic_auth(user, Some(pass.expose()));
        }
        match req.send().await {
            Err(e) => {
                // The causes say what went wrong (refused, timed out, the
                // certificate): reqwest's own text does not.
                let e = e.without_url();
                let mut why = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    why.push_str(": ");
                    why.push_str(&cause.to_string());
                    source = cause.source();
                }
                Outcome::Retry(format!("POST {}: {why}", self.url), None)
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                if resp.status().is_success() {
                    return Outcome::Ok;
                }
                let after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = resp.text().await.unwrap_or_default();
                let text = text.trim().chars().take(1024).collect::<String>();
                if status == 429 || status >= 500 {
                    Outcome::Retry(format!("POST {}: HTTP {status}: {text}", self.url), after)
                } else {
                    Outcome::Reject(status, text)
                }
            }
        }
    }
}

/// The longest Retry-After honoured: a receiver asking for more is asked
/// again after this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_escapes_and_orders() {
        let l = Labels::from_pairs([("b", "x\"y"), ("a", "1\\2")]);
        assert_eq!(selector(&l), r#"{a="1\\2", b="x\"y"}"#);
    }

    #[test]
    fn encode_sorts_by_time_and_adds_external_labels() {
        let mut entries = vec![(
            Labels::from_pairs([("job", "app"), ("env", "own")]),
            vec![(3, "c".to_string()), (1, "a".to_string()), (1, "a2".to_string())],
        )];
        let extra = vec![("env".to_string(), "prod".to_string()), ("server_name".to_string(), "h1".to_string())];
        let body = encode(&mut entries, &extra);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let req = proto::PushRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(req.streams[0].labels, r#"{env="own", job="app", server_name="h1"}"#);
        let lines: Vec<&str> = req.streams[0].entries.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(lines, ["a", "a2", "c"]);
    }

    #[test]
    fn pending_groups_by_stream_past_the_linear_limit() {
        let mut p = Pending::default();
        for round in 0..3 {
            for s in 0..40 {
                let labels = Labels::from_pairs([("s", s.to_string())]);
                p.add(LogEntry { labels, timestamp_ns: round, line: Some(format!("{s}-{round}")), ack: None }, None);
            }
        }
        assert_eq!(p.entries.len(), 40);
        for (labels, lines) in &p.entries {
            let s = labels.get("s").unwrap();
            let want: Vec<String> = (0..3).map(|r| format!("{s}-{r}")).collect();
            assert_eq!(lines.iter().map(|(_, l)| l.clone()).collect::<Vec<_>>(), want);
        }
        assert_eq!((p.count, p.items), (120, 120));
    }

    #[test]
    fn push_url_accepts_base_or_full() {
        let mut c = LokiConfig { url: "http://l:3100/".into(), ..Default::default() };
        assert_eq!(c.push_url(), "http://l:3100/loki/api/v1/push");
        c.url = "http://l:3100/loki/api/v1/push".into();
        assert_eq!(c.push_url(), "http://l:3100/loki/api/v1/push");
    }
}
