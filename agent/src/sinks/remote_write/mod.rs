//! Prometheus remote_write: each `[[remote_write]]` endpoint gets its own
//! write-ahead log, queue of shards and HTTP client.
//!
//! `accept` (on the router's task) relabels, adds external labels, drops
//! out-of-order samples and appends one record to the endpoint's WAL; it
//! never waits on the network. The endpoint's queue task reads the WAL,
//! spreads series over shards by a hash of their labels (so one series is
//! always sent in order by one shard), sends, retries, and records what was
//! acknowledged so that a restart resends only what was not.
//!
//! Layout: [`proto`] wire messages, [`encode`] protobuf + snappy, [`wal`]
//! segments and acknowledgements, [`queue`] shards and retries, [`client`]
//! HTTP, auth and TLS.

pub mod client;
pub mod encode;
pub mod proto;
pub mod queue;
pub mod wal;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::common::{self, BasicAuth, Secret, TlsConfig};
use crate::relabel::{RelabelConfig, Relabeler};
use crate::sample::{now_ms, Batch, Family, Labels, MetricType};
use crate::selfmetrics as sm;
use crate::status::SelfMetrics;

/// Default cap of one endpoint's WAL on disk.
pub const DEFAULT_MAX_WAL_SIZE: u64 = 1 << 30;

/// One `[[remote_write]]` endpoint.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// Name in logs, self-metrics (`endpoint` label) and the WAL directory;
    /// derived from the URL when empty.
    #[serde(default)]
    pub name: String,
    /// Receiver URL; empty turns this endpoint off. Shown without userinfo.
    #[serde(default, serialize_with = "serialize_url")]
    pub url: String,
    /// "v1" (prometheus.WriteRequest) or "v2" (io.prometheus.write.v2.Request,
    /// falling back to v1 when the receiver answers 415).
    #[serde(default = "default_protobuf_message")]
    pub protobuf_message: String,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// Extra request headers; they cannot replace the protocol's headers.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Timeout of one request.
    #[serde(default = "default_timeout", with = "common::duration")]
    pub timeout: Duration,
    /// HTTP(S) proxy; it may carry credentials, so it is kept secret.
    #[serde(default)]
    pub proxy_url: Option<Secret>,
    #[serde(default)]
    pub tls: TlsConfig,
    /// Relabel rules applied to every sample before it enters the WAL.
    #[serde(default)]
    pub write_relabel_configs: Vec<RelabelConfig>,
    #[serde(default)]
    pub queue_config: QueueConfig,
    /// Disk cap of this endpoint's WAL: bytes, or "512MiB", "1GiB", "2GB".
    #[serde(default = "default_max_wal_size", with = "common::size")]
    pub max_wal_size: u64,
    /// Records held in memory while the WAL's disk refuses writes (full,
    /// quota, I/O error); past it the oldest are dropped and counted.
    #[serde(default = "default_memory_buffer_size", with = "common::size")]
    pub memory_buffer_size: u64,
    /// How long pending samples may still go out at shutdown; the rest
    /// stays in the WAL. Below the agent's 4 s shutdown grace.
    #[serde(default = "default_flush_deadline", with = "common::duration")]
    pub flush_deadline: Duration,
}

/// Batching, sharding and retry settings of one endpoint.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    #[serde(default = "default_max_samples_per_send")]
    pub max_samples_per_send: usize,
    /// A shard sends a partial batch once its oldest sample waited this long.
    #[serde(default = "default_batch_send_deadline", with = "common::duration")]
    pub batch_send_deadline: Duration,
    #[serde(default = "default_min_shards")]
    pub min_shards: usize,
    #[serde(default = "default_max_shards")]
    pub max_shards: usize,
    /// Samples read from the WAL and held in memory per shard.
    #[serde(default = "default_capacity")]
    pub capacity: usize,
    #[serde(default = "default_min_backoff", with = "common::duration")]
    pub min_backoff: Duration,
    #[serde(default = "default_max_backoff", with = "common::duration")]
    pub max_backoff: Duration,
}

fn serialize_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&client::display_url(url))
}

fn default_protobuf_message() -> String {
    "v1".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_wal_size() -> u64 {
    DEFAULT_MAX_WAL_SIZE
}
fn default_memory_buffer_size() -> u64 {
    wal::MEMORY_BUFFER_BYTES
}
fn default_flush_deadline() -> Duration {
    Duration::from_secs(3)
}
fn default_max_samples_per_send() -> usize {
    2000
}
fn default_batch_send_deadline() -> Duration {
    Duration::from_secs(5)
}
fn default_min_shards() -> usize {
    1
}
fn default_max_shards() -> usize {
    10
}
fn default_capacity() -> usize {
    10_000
}
fn default_min_backoff() -> Duration {
    Duration::from_millis(30)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(5)
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_samples_per_send: default_max_samples_per_send(),
            batch_send_deadline: default_batch_send_deadline(),
            min_shards: default_min_shards(),
            max_shards: default_max_shards(),
            capacity: default_capacity(),
            min_backoff: default_min_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

impl Default for RemoteWriteConfig {
    fn default() -> Self {
        RemoteWriteConfig {
            name: String::new(),
            url: String::new(),
            protobuf_message: default_protobuf_message(),
            basic_auth: None,
            bearer_token: None,
            bearer_token_file: None,
            headers: BTreeMap::new(),
            timeout: default_timeout(),
            proxy_url: None,
            tls: TlsConfig::default(),
            write_relabel_configs: Vec::new(),
            queue_config: QueueConfig::default(),
            max_wal_size: default_max_wal_size(),
            memory_buffer_size: default_memory_buffer_size(),
            flush_deadline: default_flush_deadline(),
        }
    }
}

impl RemoteWriteConfig {
    /// Adds this endpoint's problems to `problems`, prefixed with `at`.
    pub fn validate(&self, at: &str, problems: &mut Vec<String>) {
        if self.url.trim().is_empty() {
            return;
        }
        let mut bad = |p: String| problems.push(format!("{at}: {p}"));
        match reqwest::Url::parse(&self.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(_) => bad(format!("url {} must be http or https", client::display_url(&self.url))),
            Err(e) => bad(format!("url {}: {e}", client::display_url(&self.url))),
        }
        if !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
            bad(format!("name {:?} may hold only letters, digits, '_', '.' and '-'", self.name));
        }
        if self.v2_requested().is_none() {
            bad(format!("protobuf_message {:?} must be \"v1\" or \"v2\"", self.protobuf_message));
        }
        for name in self.headers.keys() {
            if client::RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                bad(format!("headers: {name} is set by the protocol and cannot be configured"));
            }
        }
        if let Some(ba) = &self.basic_auth {
            if let Err(e) = ba.credentials() {
                bad(format!("basic_auth: {e}"));
            }
        }
        if let Err(e) = Secret::resolve(&self.bearer_token, &self.bearer_token_file, "bearer_token") {
            bad(e);
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            bad("tls.cert_file and tls.key_file must be set together".into());
        }
        let q = &self.queue_config;
        if q.max_samples_per_send == 0 {
            bad("queue_config.max_samples_per_send must be at least 1".into());
        }
        if q.min_shards == 0 || q.min_shards > q.max_shards || q.max_shards > queue::MAX_SHARDS {
            bad(format!("queue_config: need 1 <= min_shards <= max_shards <= {}", queue::MAX_SHARDS));
        }
        if q.capacity < q.max_samples_per_send {
            bad("queue_config.capacity must be at least max_samples_per_send".into());
        }
        if q.min_backoff.is_zero() || q.min_backoff > q.max_backoff {
            bad("queue_config: need 0 < min_backoff <= max_backoff".into());
        }
        if self.flush_deadline >= crate::SHUTDOWN_GRACE {
            bad(format!("flush_deadline must be below the agent's shutdown grace of {:?}", crate::SHUTDOWN_GRACE));
        }
        if self.max_wal_size < 1 << 20 {
            bad("max_wal_size must be at least 1MiB".into());
        }
        if self.memory_buffer_size < 64 << 10 {
            bad("memory_buffer_size must be at least 64KiB".into());
        }
        if let Err(e) = Relabeler::new(&self.write_relabel_configs) {
            bad(format!("write_relabel_configs: {e}"));
        }
    }

    /// Whether 2.0 is requested; None for an unknown value.
    fn v2_requested(&self) -> Option<bool> {
        match self.protobuf_message.as_str() {
            "v1" | "" | "prometheus.WriteRequest" => Some(false),
            "v2" | "io.prometheus.write.v2.Request" => Some(true),
            _ => None,
        }
    }

    /// The endpoint's name: `name`, or one derived from the URL.
    pub fn endpoint_name(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        format!("rw-{:08x}", crate::hash::fnv1a(client::display_url(&self.url).as_bytes()) as u32)
    }

    /// One line for `vantage check`.
    pub fn describe(&self) -> String {
        let mut s =
            format!("{} -> {} ({})", self.endpoint_name(), client::display_url(&self.url), self.protobuf_message);
        if self.tls.insecure_skip_verify {
            s.push_str(", TLS VERIFICATION OFF");
        }
        s
    }
}

/// Hash of a label set (names and values with separators), for series
/// buckets: stable across runs and builds ([`crate::hash`]), which the
/// WAL's acknowledgement masks rely on.
pub fn series_hash<'a>(labels: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut h = crate::hash::Fnv1a::new();
    for (n, v) in labels {
        h.write(n.as_bytes());
        h.write_u8(0xff);
        h.write(v.as_bytes());
        h.write_u8(0xff);
    }
    h.finish()
}

/// Reasons of `vantage_remote_write_samples_dropped_total`.
pub const DROP_REASONS: [&str; 6] = ["wal_full", "out_of_order", "rejected", "invalid", "wal_error", "disk_full"];
const DROP_WAL_FULL: usize = 0;
const DROP_OUT_OF_ORDER: usize = 1;
const DROP_REJECTED: usize = 2;
const DROP_INVALID: usize = 3;
const DROP_WAL_ERROR: usize = 4;
const DROP_DISK_FULL: usize = 5;

/// Upper bounds of the request duration histogram, in seconds.
const DURATION_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Counters of one endpoint, shared by its sink, queue and sender tasks.
#[derive(Default)]
pub struct Stats {
    pub endpoint: String,
    pub sent: AtomicU64,
    pub retried: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: [AtomicU64; DROP_REASONS.len()],
    pub pending: AtomicI64,
    pub shards: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub last_send_ms: AtomicI64,
    pub highest_sent_ms: AtomicI64,
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    duration_sum_us: AtomicU64,
    duration_count: AtomicU64,
}

impl Stats {
    /// Records one request's duration.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.duration_sum_us.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.duration_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts dropped samples under `reason` (an index into DROP_REASONS).
    pub fn drop_samples(&self, reason: usize, n: u64) {
        self.dropped[reason].fetch_add(n, Ordering::Relaxed);
        self.pending.fetch_sub(n as i64, Ordering::Relaxed);
    }
}

/// The self-metrics of every endpoint (one provider, so each family is
/// rendered once with an `endpoint` label per endpoint).
struct Provider(Vec<(Arc<Stats>, Arc<wal::Wal>)>);

impl SelfMetrics for Provider {
    fn self_metrics(&self, out: &mut Vec<Family>) {
        let ts = now_ms();
        let fam = |name: &str, kind, help: &str| Family::new(name, kind, help);
        let mut sent = fam(sm::RW_SAMPLES_SENT, MetricType::Counter, "Samples acknowledged by the receiver.");
        let mut retried =
            fam(sm::RW_SAMPLES_RETRIED, MetricType::Counter, "Samples sent again after a recoverable failure.");
        let mut dropped =
            fam(sm::RW_SAMPLES_DROPPED, MetricType::Counter, "Samples that will never be sent, by reason.");
        let mut failed =
            fam(sm::RW_SAMPLES_FAILED, MetricType::Counter, "Samples the receiver rejected with a 4xx (not retried).");
        let mut pending = fam(sm::RW_SAMPLES_PENDING, MetricType::Gauge, "Samples in the WAL not yet acknowledged.");
        let mut shards = fam(sm::RW_SHARDS, MetricType::Gauge, "Parallel shards sending.");
        let mut wal_bytes = fam(sm::RW_WAL_BYTES, MetricType::Gauge, "Bytes of the endpoint's WAL on disk.");
        let mut wal_segs = fam(sm::RW_WAL_SEGMENTS, MetricType::Gauge, "Segment files of the endpoint's WAL.");
        let mut last = fam(sm::RW_LAST_SEND, MetricType::Gauge, "Unix time of the last acknowledged request.");
        let mut highest = fam(sm::RW_HIGHEST_SENT, MetricType::Gauge, "Timestamp of the newest acknowledged sample.");
        let mut bytes = fam(sm::RW_BYTES_SENT, MetricType::Counter, "Compressed bytes acknowledged.");
        let mut dur = fam(sm::RW_REQUEST_DURATION, MetricType::Histogram, "Duration of remote_write requests.");
        let mut wal_mem = fam(
            sm::RW_WAL_MEMORY_BYTES,
            MetricType::Gauge,
            "Bytes of WAL records held in memory while the disk refuses writes.",
        );
        let mut corrupt = fam(
            sm::WAL_CORRUPT_RECORDS,
            MetricType::Counter,
            "Damaged WAL records skipped (found at start or when read).",
        );
        let mut skipped = fam(
            sm::WAL_SEGMENTS_SKIPPED,
            MetricType::Counter,
            "WAL segments skipped at start: empty, unknown format or version, or missing from the middle.",
        );
        for (s, w) in &self.0 {
            let e = [("endpoint", s.endpoint.as_str())];
            let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
            sent.push(&e, get(&s.sent), ts);
            retried.push(&e, get(&s.retried), ts);
            failed.push(&e, get(&s.failed), ts);
            for (i, reason) in DROP_REASONS.iter().enumerate() {
                dropped.push(&[("endpoint", &s.endpoint), ("reason", reason)], get(&s.dropped[i]), ts);
            }
            pending.push(&e, s.pending.load(Ordering::Relaxed).max(0) as f64, ts);
            shards.push(&e, get(&s.shards), ts);
            let ws = w.stats();
            wal_bytes.push(&e, ws.bytes as f64, ts);
            wal_segs.push(&e, ws.segments as f64, ts);
            wal_mem.push(&e, ws.memory_bytes as f64, ts);
            corrupt.push(&e, ws.corrupt_records as f64, ts);
            skipped.push(&e, ws.segments_skipped as f64, ts);
            last.push(&e, s.last_send_ms.load(Ordering::Relaxed) as f64 / 1000.0, ts);
            highest.push(&e, s.highest_sent_ms.load(Ordering::Relaxed) as f64 / 1000.0, ts);
            bytes.push(&e, get(&s.bytes_sent), ts);
            let bucket_name = format!("{}_bucket", sm::RW_REQUEST_DURATION);
            let mut cumulative = 0;
            for (i, le) in DURATION_BUCKETS.iter().enumerate() {
                cumulative += s.buckets[i].load(Ordering::Relaxed);
                dur.push_named(
                    &bucket_name,
                    &[("endpoint", &s.endpoint), ("le", &le.to_string())],
                    cumulative as f64,
                    ts,
                );
            }
            let count = get(&s.duration_count);
            dur.push_named(&bucket_name, &[("endpoint", &s.endpoint), ("le", "+Inf")], count, ts);
            dur.push_named(&format!("{}_sum", sm::RW_REQUEST_DURATION), &e, get(&s.duration_sum_us) / 1e6, ts);
            dur.push_named(&format!("{}_count", sm::RW_REQUEST_DURATION), &e, count, ts);
        }
        out.extend([
            sent, retried, dropped, failed, pending, shards, wal_bytes, wal_segs, wal_mem, corrupt, skipped, last,
            highest, bytes, dur,
        ]);
    }
}

/// The sink side of one endpoint: turns batches into WAL records.
pub struct Sink {
    name: String,
    wal: Arc<wal::Wal>,
    relabeler: Option<Relabeler>,
    external: Vec<(String, String)>,
    last_ts: Mutex<LastTimestamps>,
    notify: Arc<tokio::sync::Notify>,
    stats: Arc<Stats>,
}

/// Newest timestamp per series hash, to drop samples that are not newer.
#[derive(Default)]
struct LastTimestamps {
    map: HashMap<u64, i64>,
    prune_at: usize,
}

/// Series not seen for this long are forgotten by the order check.
const ORDER_MEMORY_MS: i64 = 2 * 3600 * 1000;

impl Sink {
    /// A sink appending to `wal`, relabeling with `relabeler` and adding
    /// `external` labels; `notify` wakes the endpoint's queue.
    pub fn new(
        name: &str,
        wal: Arc<wal::Wal>,
        relabeler: Option<Relabeler>,
        external: Vec<(String, String)>,
        notify: Arc<tokio::sync::Notify>,
        stats: Arc<Stats>,
    ) -> Sink {
        Sink {
            name: name.to_string(),
            wal,
            relabeler,
            external,
            last_ts: Mutex::new(LastTimestamps::default()),
            notify,
            stats,
        }
    }

    /// Encodes the WAL record of `batch` (a `WalRecord` protobuf) into
    /// `body`; returns the number of samples in it. Written by hand from
    /// borrowed strings: no label is copied on this path.
    // filter_map(|_| None) changes the borrowed lifetime of the scratch
    // Vec's items while keeping its allocation; `filter` cannot.
    #[allow(clippy::unnecessary_filter_map)]
    fn record(&self, batch: &Batch, body: &mut Vec<u8>) -> u32 {
        body.clear();
        let mut kinds = Vec::new();
        let mut last = self.last_ts.lock().unwrap();
        let (mut invalid, mut unordered) = (0, 0);
        // The merged label list of one sample, its allocation reused: an
        // empty Vec collected from an emptied one keeps the buffer.
        let mut spare: Vec<(&str, &str)> = Vec::with_capacity(16);
        for fam in &batch.families {
            let kind = proto::metric_type_v2(fam.kind);
            for s in &fam.samples {
                let relabeled;
                let labels = match &self.relabeler {
                    Some(r) => {
                        let mut l = s.labels.clone();
                        if !r.apply(&mut l) {
                            continue;
                        }
                        relabeled = l;
                        &relabeled
                    }
                    None => &s.labels,
                };
                let mut merged: Vec<(&str, &str)> = spare.into_iter().filter_map(|_| None).collect();
                merge_labels(labels, &self.external, &mut merged);
                if !merged.iter().any(|(n, v)| *n == crate::sample::METRIC_NAME && !v.is_empty()) {
                    invalid += 1;
                } else {
                    let h = series_hash(merged.iter().copied());
                    match last.map.get(&h) {
                        // Strictly increasing per series: an equal timestamp
                        // is a duplicate and an older one would be rejected.
                        Some(&t) if s.timestamp_ms <= t => unordered += 1,
                        _ => {
                            last.map.insert(h, s.timestamp_ms);
                            // Stale markers (the stale NaN) go out as they are.
                            encode_series(body, &merged, s.value, s.timestamp_ms);
                            kinds.push(kind);
                        }
                    }
                }
                spare = merged.into_iter().filter_map(|_| None).collect();
            }
        }
        if last.map.len() > last.prune_at {
            let horizon = now_ms() - ORDER_MEMORY_MS;
            last.map.retain(|_, t| *t >= horizon);
            last.prune_at = (last.map.len() * 2).max(100_000);
        }
        drop(last);
        if !kinds.is_empty() {
            prost::encoding::bytes::encode(2, &kinds, body);
        }
        if invalid > 0 {
            self.stats.dropped[DROP_INVALID].fetch_add(invalid, Ordering::Relaxed);
        }
        if unordered > 0 {
            self.stats.dropped[DROP_OUT_OF_ORDER].fetch_add(unordered, Ordering::Relaxed);
            tracing::debug!(endpoint = %self.name, source = %batch.source, samples = unordered, "dropped samples not newer than the last of their series");
        }
        kinds.len() as u32
    }
}

/// Merges a sample's sorted labels with the sorted external labels (the
/// sample's own value wins), skipping empty names and values.
fn merge_labels<'a>(labels: &'a Labels, external: &'a [(String, String)], out: &mut Vec<(&'a str, &'a str)>) {
    let mut ext = external.iter().map(|(n, v)| (n.as_str(), v.as_str())).peekable();
    for l in labels.iter() {
        while let Some(&(n, v)) = ext.peek() {
            if n < l.name.as_str() {
                out.push((n, v));
                ext.next();
            } else {
                if n == l.name {
                    ext.next();
                }
                break;
            }
        }
        out.push((l.name.as_str(), l.value.as_str()));
    }
    out.extend(ext);
    out.retain(|(n, v)| !n.is_empty() && !v.is_empty());
}

/// Appends one `WalRecord.series` entry (a 1.0 `TimeSeries` with one
/// sample) to `buf`, as prost would encode it. The same bytes are a
/// `WriteRequest.timeseries` entry (field 1 in both), which the queue
/// sends as they are.
pub fn encode_series(buf: &mut Vec<u8>, labels: &[(&str, &str)], value: f64, ts: i64) {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
    let str_len = |s: &str| 1 + encoded_len_varint(s.len() as u64) + s.len();
    let label_len = |n: &str, v: &str| str_len(n) + str_len(v);
    let sample_len = 9 + 1 + encoded_len_varint(ts as u64);
    let mut len = 1 + encoded_len_varint(sample_len as u64) + sample_len;
    for (n, v) in labels {
        let l = label_len(n, v);
        len += 1 + encoded_len_varint(l as u64) + l;
    }
    encode_key(1, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
    for (n, v) in labels {
        encode_key(1, WireType::LengthDelimited, buf);
        encode_varint(label_len(n, v) as u64, buf);
        for (tag, s) in [(1, n), (2, v)] {
            encode_key(tag, WireType::LengthDelimited, buf);
            encode_varint(s.len() as u64, buf);
            buf.extend_from_slice(s.as_bytes());
        }
    }
    encode_key(2, WireType::LengthDelimited, buf);
    encode_varint(sample_len as u64, buf);
    encode_key(1, WireType::SixtyFourBit, buf);
    buf.extend_from_slice(&value.to_le_bytes());
    encode_key(2, WireType::Varint, buf);
    encode_varint(ts as u64, buf);
}

impl super::MetricSink for Sink {
    fn accept(&self, batch: &Arc<Batch>) {
        let mut body = Vec::with_capacity(batch.len() * 128);
        let n = self.record(batch, &mut body);
        if n == 0 {
            return;
        }
        // Never fails: a disk that refuses the record sends it to the WAL's
        // memory buffer, which says so itself (log and status page).
        let done = self.wal.append(n, &body);
        self.stats.pending.fetch_add(n as i64, Ordering::Relaxed);
        for (reason, k) in [
            (DROP_WAL_FULL, done.dropped_wal_full),
            (DROP_DISK_FULL, done.dropped_disk_full),
            (DROP_WAL_ERROR, done.dropped_wal_error),
        ] {
            if k > 0 {
                self.stats.drop_samples(reason, k);
            }
        }
        self.notify.notify_one();
    }
}

/// A started endpoint: its sink and its queue task.
pub type Started = (Arc<dyn super::MetricSink>, tokio::task::JoinHandle<()>);

/// Starts the queue of one endpoint, with its WAL under the agent's
/// data_dir; returns its sink, its queue task and its counters. `carried`
/// are the counters of the queue this one replaces on a reload, so the
/// endpoint's `_total` series go on instead of starting over.
pub fn start_one(
    ctx: &crate::Context,
    cfg: &RemoteWriteConfig,
    carried: Option<Arc<Stats>>,
) -> Result<(Started, Arc<Stats>), String> {
    let name = cfg.endpoint_name();
    let external: Vec<(String, String)> =
        ctx.config.agent.external_labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let shown = client::display_url(&cfg.url);
    let err = |e: String| format!("remote_write {name} ({shown}): {e}");
    let client = client::Client::new(cfg).map_err(err)?;
    if cfg.tls.insecure_skip_verify {
        tracing::warn!(endpoint = %name, url = %shown, "TLS CERTIFICATE VERIFICATION IS OFF for this endpoint (insecure_skip_verify = true): anyone on the path can read and change what is sent");
    }
    let relabeler = if cfg.write_relabel_configs.is_empty() {
        None
    } else {
        Some(Relabeler::new(&cfg.write_relabel_configs).map_err(|e| err(format!("write_relabel_configs: {e}")))?)
    };
    let dir = ctx.config.agent.data_dir.join("remote_write").join(&name);
    let (mut wal, report) = wal::Wal::open(&dir, cfg.max_wal_size).map_err(|e| err(e.to_string()))?;
    wal.set_memory_buffer(cfg.memory_buffer_size);
    if report.corrupt_records > 0 || report.segments_skipped > 0 {
        tracing::warn!(endpoint = %name, wal = %dir.display(), corrupt_records = report.corrupt_records, segments_skipped = report.segments_skipped, "WAL damaged: the damaged records and segments are skipped and counted, the rest is sent in order");
    }
    if report.records > 0 {
        tracing::info!(endpoint = %name, wal = %dir.display(), segments = report.segments, records = report.records, samples = report.samples, "WAL found: unacknowledged samples will be sent");
    }
    let wal = Arc::new(wal);
    let stats = match carried {
        Some(stats) => {
            // The new queue counts everything in the WAL it opened as
            // pending, the old queue's unacknowledged samples included.
            stats.pending.store(0, Ordering::Relaxed);
            stats
        }
        None => Arc::new(Stats { endpoint: name.clone(), ..Default::default() }),
    };
    let notify = Arc::new(tokio::sync::Notify::new());
    let sink = Arc::new(Sink::new(&name, wal.clone(), relabeler, external, notify.clone(), stats.clone()));
    let q = queue::Queue {
        name: name.clone(),
        url: shown,
        cfg: cfg.queue_config.clone(),
        flush_deadline: cfg.flush_deadline,
        wal: wal.clone(),
        client: Arc::new(client),
        stats: stats.clone(),
        v2: Arc::new(AtomicBool::new(cfg.v2_requested().unwrap_or(false))),
        notify,
        shutdown: ctx.shutdown.clone(),
        registry: ctx.registry.clone(),
        ack_save_failing: AtomicBool::new(false),
    };
    let task = tokio::spawn(q.run());
    ctx.registry.add_provider(Arc::new(Provider(vec![(stats.clone(), wal)])));
    Ok(((sink, task), stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::stale_nan;
    use prost::Message;

    fn sink(dir: &std::path::Path) -> Sink {
        let (wal, _) = wal::Wal::open(dir, 1 << 30).unwrap();
        Sink {
            name: "t".into(),
            wal: Arc::new(wal),
            relabeler: None,
            external: vec![("env".into(), "prod".into()), ("job".into(), "ignored".into())],
            last_ts: Mutex::new(LastTimestamps::default()),
            notify: Arc::new(tokio::sync::Notify::new()),
            stats: Arc::new(Stats::default()),
        }
    }

    #[test]
    fn records_carry_external_labels_drop_unordered_and_keep_stale_markers() {
        let dir = std::env::temp_dir().join(format!("vantage-rw-sink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = sink(&dir);
        let t = now_ms();
        let mut f = Family::new("up", MetricType::Gauge, "");
        f.push(&[("job", "node")], 1.0, t);
        f.push(&[("job", "other")], stale_nan(), t);
        let mut batch = Batch { source: "t".into(), families: vec![f] };
        let mut body = Vec::new();
        let n = s.record(&batch, &mut body);
        assert_eq!(n, 2);
        let rec = proto::WalRecord::decode(body.as_slice()).unwrap();
        let names: Vec<_> = rec.series[0].labels.iter().map(|l| format!("{}={}", l.name, l.value)).collect();
        assert_eq!(names, ["__name__=up", "env=prod", "job=node"]);
        assert_eq!(rec.series[1].samples[0].value.to_bits(), crate::sample::STALE_NAN_BITS);
        assert_eq!(rec.kinds, [2, 2]);
        // The same timestamps again: duplicates, dropped and counted.
        assert_eq!(s.record(&batch, &mut body), 0);
        assert_eq!(s.stats.dropped[DROP_OUT_OF_ORDER].load(Ordering::Relaxed), 2);
        batch.families[0].samples[0].timestamp_ms = t + 1000;
        assert_eq!(s.record(&batch, &mut body), 1);
        assert_eq!(proto::WalRecord::decode(body.as_slice()).unwrap().series[0].samples[0].timestamp, t + 1000);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn stale_markers_survive_wal_and_encoding_bit_for_bit() {
        use crate::sinks::MetricSink;
        let dir = std::env::temp_dir().join(format!("vantage-rw-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = sink(&dir);
        let mut f = Family::new("up", MetricType::Gauge, "");
        f.push(&[("job", "gone")], stale_nan(), now_ms());
        s.accept(&Arc::new(Batch { source: "t".into(), families: vec![f] }));
        assert_eq!(s.stats.pending.load(Ordering::Relaxed), 1);
        let wal::Read::Record { samples, body, .. } =
            wal::read_record(&s.wal, &mut None, wal::Pos { segment: 0, offset: wal::SEG_HEADER })
        else {
            panic!("no record in the WAL")
        };
        assert_eq!(samples, 1);
        let rec = proto::WalRecord::decode(body.as_slice()).unwrap();
        let mut out = Vec::new();
        encode::Encoder::new().v1(rec.series.iter(), &mut out);
        let req = encode::decode_v1(&out).unwrap();
        assert_eq!(req.timeseries[0].samples[0].value.to_bits(), crate::sample::STALE_NAN_BITS);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn hand_encoded_series_equal_prost_encoding() {
        let labels = Labels::from_pairs([("__name__", "x"), ("b", "2"), ("m", "own"), ("z", "9")]);
        let external = vec![
            ("a".to_string(), "1".to_string()),
            ("m".to_string(), "ext".to_string()),
            ("zz".to_string(), "e".to_string()),
        ];
        let mut merged = Vec::new();
        merge_labels(&labels, &external, &mut merged);
        assert_eq!(merged, [("__name__", "x"), ("a", "1"), ("b", "2"), ("m", "own"), ("z", "9"), ("zz", "e")]);
        for (value, ts) in [(1.5, 1_764_000_000_123i64), (-2.0, -5), (f64::NAN, 1)] {
            let mut mine = Vec::new();
            encode_series(&mut mine, &merged, value, ts);
            let ts_struct = proto::TimeSeries {
                labels: merged
                    .iter()
                    .map(|(n, v)| proto::Label { name: n.to_string(), value: v.to_string() })
                    .collect(),
                samples: vec![proto::Sample { value, timestamp: ts }],
            };
            let theirs = proto::WalRecord { series: vec![ts_struct], kinds: vec![] }.encode_to_vec();
            assert_eq!(mine, theirs);
        }
    }

    #[test]
    fn config_defaults_and_sizes() {
        let c: RemoteWriteConfig =
            toml::from_str("url = \"http://x/api/v1/write\"\nmax_wal_size = \"512MiB\"").unwrap();
        assert_eq!(c.max_wal_size, 512 << 20);
        assert_eq!(c.queue_config.max_samples_per_send, 2000);
        assert_eq!(c.queue_config.batch_send_deadline, Duration::from_secs(5));
        assert_eq!(c.flush_deadline, Duration::from_secs(3));
        let mut p = Vec::new();
        c.validate("rw", &mut p);
        assert!(p.is_empty(), "{p:?}");
        let c: RemoteWriteConfig = toml::from_str(
            "url = \"ftp://x\"\nprotobuf_message = \"v3\"\nheaders = { \"Content-Type\" = \"text/plain\" }",
        )
        .unwrap();
        c.validate("rw", &mut p);
        assert_eq!(p.len(), 3, "{p:?}");
        // Prometheus's meanings: every unit is a power of 1024.
        assert!(common::parse_size("1GiB").unwrap() == 1 << 30 && common::parse_size("2GB").unwrap() == 2 << 30);
    }
}
