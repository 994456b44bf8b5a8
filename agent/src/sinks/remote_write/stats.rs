//! Counters of an endpoint and the self-metrics that render them.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::sample::{now_ms, Family, MetricType};
use crate::selfmetrics as sm;
use crate::status::SelfMetrics;

/// Reasons of `vantage_remote_write_samples_dropped_total`.
pub const DROP_REASONS: [&str; 6] = ["wal_full", "out_of_order", "rejected", "invalid", "wal_error", "disk_full"];
pub(super) const DROP_WAL_FULL: usize = 0;
pub(super) const DROP_OUT_OF_ORDER: usize = 1;
pub(super) const DROP_REJECTED: usize = 2;
pub(super) const DROP_INVALID: usize = 3;
pub(super) const DROP_WAL_ERROR: usize = 4;
pub(super) const DROP_DISK_FULL: usize = 5;

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
    pub(super) buckets: [AtomicU64; DURATION_BUCKETS.len()],
    pub(super) duration_sum_us: AtomicU64,
    pub(super) duration_count: AtomicU64,
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
pub(super) struct Provider(pub(super) Vec<(Arc<Stats>, Arc<wal::Wal>)>);

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
