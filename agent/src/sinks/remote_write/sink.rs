//! The sink side of an endpoint: relabeling, external labels, the order
//! check and the WAL record of every accepted batch; and the start of an
//! endpoint (its WAL and queue task).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::stats::Provider;
use super::*;
use crate::relabel::Relabeler;
use crate::sample::{now_ms, Batch, Labels};

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

impl crate::sinks::MetricSink for Sink {
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
pub type Started = (Arc<dyn crate::sinks::MetricSink>, tokio::task::JoinHandle<()>);

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
    use crate::sample::{Family, MetricType};
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
}
