//! The queue of one endpoint: reads records from the WAL, spreads their
//! series over shards, sends one request at a time per shard, retries, and
//! keeps the acknowledgement bookkeeping that lets the WAL delete segments
//! and a restart resend only what was not acknowledged.
//!
//! Ordering: a series always lands in bucket `hash % 64`, a bucket in shard
//! `bucket % shards`, and a shard has at most one request in flight, so a
//! series' samples reach the receiver in order. Resharding waits until no
//! request is in flight, then re-spreads the buffered entries stably.
//!
//! Acknowledgement: per record, the number of samples still unacknowledged
//! in each bucket. A bucket of a record is acknowledged when its count
//! reaches zero; the record when every bucket is. The `acked` file stores
//! the first unacknowledged record and the acknowledged buckets of later
//! ones, rewritten after every acknowledgement.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{Client, Outcome};
use super::encode::Encoder;
use super::proto::{split_record, RawSeries, TimeSeries};
use super::wal::{self, AckState, Pos, Read, Wal};
use super::{QueueConfig, Stats, DROP_REJECTED};
use crate::sample::now_ms;
use crate::status::Registry;

/// Series buckets; also the most shards an endpoint can have.
pub const BUCKETS: usize = 64;
/// Upper limit of `max_shards`.
pub const MAX_SHARDS: usize = BUCKETS;
/// How often shard counts are reconsidered.
const RESHARD_EVERY: Duration = Duration::from_secs(10);

/// The bucket of a series.
pub fn bucket(ts: &TimeSeries) -> usize {
    bucket_of(super::series_hash(ts.labels.iter().map(|l| (l.name.as_str(), l.value.as_str()))))
}

/// The bucket of a series hash.
pub fn bucket_of(h: u64) -> usize {
    ((h ^ (h >> 32)) % BUCKETS as u64) as usize
}

/// One series read from the WAL, waiting in a shard.
struct Entry {
    series: RawSeries,
    kind: u8,
    rec: Pos,
    bucket: u8,
}

#[derive(Default)]
struct Shard {
    buf: VecDeque<Entry>,
    samples: usize,
    /// When the oldest buffered entry arrived.
    since: Option<Instant>,
    busy: Option<JoinHandle<()>>,
}

/// Unacknowledged samples of one record, per bucket.
struct RecState {
    remaining: [u32; BUCKETS],
    /// Buckets done (acknowledged, dropped, or never holding a sample).
    acked: u64,
    /// Buckets holding samples of this record (before skipping any).
    present: u64,
}

/// What a sender task reports back.
struct Done {
    shard: usize,
    acks: Vec<(Pos, u8, u32)>,
}

/// Everything one endpoint's queue task needs.
pub struct Queue {
    pub name: String,
    /// The URL without credentials, for logs.
    pub url: String,
    pub cfg: QueueConfig,
    pub flush_deadline: Duration,
    pub wal: Arc<Wal>,
    pub client: Arc<Client>,
    pub stats: Arc<Stats>,
    /// Whether requests use protocol 2.0 (cleared on a 415).
    pub v2: Arc<AtomicBool>,
    pub notify: Arc<Notify>,
    pub shutdown: CancellationToken,
    pub registry: Registry,
    /// Whether the last save of the `acked` file failed.
    pub ack_save_failing: AtomicBool,
}

/// What sender tasks share.
struct SendCtx {
    name: String,
    url: String,
    client: Arc<Client>,
    stats: Arc<Stats>,
    v2: Arc<AtomicBool>,
    min_backoff: Duration,
    max_backoff: Duration,
    registry: Registry,
    /// One for the endpoint, whichever shard fails.
    failures: std::sync::Mutex<crate::failure_log::FailureLog>,
}

impl Queue {
    /// Runs until shutdown (plus at most `flush_deadline`).
    pub async fn run(self) {
        let wal = self.wal.clone();
        let mut acks = wal.load_acks();
        wal.remove_before(acks.watermark.segment);
        let first = wal.first_segment();
        let mut reader =
            if acks.watermark.segment < first { Pos { segment: first, offset: 0 } } else { acks.watermark };
        // Records from an earlier run count as pending when read.
        let replay_end = wal.replay_end();
        let mut partial = std::mem::take(&mut acks.partial);

        let ctx = Arc::new(SendCtx {
            name: self.name.clone(),
            url: self.url.clone(),
            client: self.client.clone(),
            stats: self.stats.clone(),
            v2: self.v2.clone(),
            min_backoff: self.cfg.min_backoff,
            max_backoff: self.cfg.max_backoff,
            registry: self.registry.clone(),
            failures: Default::default(),
        });
        let sink_key = format!("remote_write/{}", self.name);
        self.registry.update_sink(&sink_key, |s| {
            s.kind = "remote_write".into();
            s.endpoint = self.url.clone();
        });

        let mut n = self.cfg.min_shards;
        let mut target = n;
        let mut shards: Vec<Shard> = (0..n).map(|_| Shard::default()).collect();
        self.stats.shards.store(n as u64, Ordering::Relaxed);
        let mut outstanding: BTreeMap<Pos, RecState> = BTreeMap::new();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut file = None;
        let mut at_end = false;
        let mut buffered = 0usize;
        let mut flush_until: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u32;
        let (mut saturated, mut progress) = (0u32, 0u64);

        loop {
            // Read while there is room and shards are stable.
            while target == n && buffered < self.cfg.capacity * n {
                match wal::read_record(&wal, &mut file, reader) {
                    Read::Record { samples, body, next } => {
                        let pos = reader;
                        wal.note_read(pos.segment, samples as u64);
                        reader = next;
                        at_end = false;
                        let (series, kinds) = match split_record(&bytes::Bytes::from(body)) {
                            Ok(r) => r,
                            Err(e) => {
                                wal.note_corrupt();
                                tracing::warn!(endpoint = %self.name, segment = pos.segment, offset = pos.offset, error = %e, "undecodable WAL record skipped");
                                continue;
                            }
                        };
                        let skip = partial.remove(&pos).unwrap_or(0);
                        let mut st = RecState { remaining: [0; BUCKETS], acked: 0, present: 0 };
                        let mut count = 0u64;
                        for (i, series) in series.into_iter().enumerate() {
                            let b = bucket_of(series.hash);
                            st.present |= 1 << b;
                            if skip & (1 << b) != 0 {
                                continue;
                            }
                            let k = series.samples as usize;
                            st.remaining[b] += k as u32;
                            count += k as u64;
                            let sh = &mut shards[b % n];
                            sh.samples += k;
                            sh.since.get_or_insert_with(Instant::now);
                            sh.buf.push_back(Entry {
                                series,
                                kind: kinds.get(i).copied().unwrap_or(0),
                                rec: pos,
                                bucket: b as u8,
                            });
                            buffered += k;
                        }
                        st.acked = (0..BUCKETS).filter(|&b| st.remaining[b] == 0).fold(0u64, |m, b| m | (1 << b));
                        if pos < replay_end {
                            self.stats.pending.fetch_add(count as i64, Ordering::Relaxed);
                        }
                        if st.acked != u64::MAX {
                            outstanding.insert(pos, st);
                        }
                    }
                    Read::Skip(p) => {
                        reader = p;
                        self.delete_done_segments(reader, &outstanding);
                    }
                    Read::End => {
                        at_end = true;
                        break;
                    }
                }
            }

            // Reshard once nothing is in flight.
            if target != n && shards.iter().all(|s| s.busy.is_none()) {
                let mut all: Vec<Entry> = Vec::with_capacity(buffered);
                for s in &mut shards {
                    all.extend(s.buf.drain(..));
                }
                shards = (0..target).map(|_| Shard::default()).collect();
                for e in all {
                    let sh = &mut shards[e.bucket as usize % target];
                    sh.samples += e.series.samples as usize;
                    sh.since.get_or_insert_with(Instant::now);
                    sh.buf.push_back(e);
                }
                tracing::info!(endpoint = %self.name, from = n, to = target, "resharded");
                n = target;
                self.stats.shards.store(n as u64, Ordering::Relaxed);
            }

            // Dispatch full or overdue batches to idle shards.
            let now = Instant::now();
            if target == n {
                for (i, sh) in shards.iter_mut().enumerate() {
                    let due = sh.samples >= self.cfg.max_samples_per_send
                        || flush_until.is_some()
                        || sh.since.is_some_and(|t| now >= t + self.cfg.batch_send_deadline);
                    if sh.busy.is_none() && sh.samples > 0 && due {
                        let mut batch = Vec::new();
                        let mut k = 0;
                        while k < self.cfg.max_samples_per_send {
                            let Some(e) = sh.buf.pop_front() else { break };
                            k += e.series.samples as usize;
                            batch.push(e);
                        }
                        sh.samples -= k;
                        buffered -= k;
                        sh.since = if sh.buf.is_empty() { None } else { Some(now) };
                        sh.busy = Some(tokio::spawn(send(ctx.clone(), i, batch, done_tx.clone())));
                    }
                }
            }

            if flush_until.is_some() && at_end && buffered == 0 && shards.iter().all(|s| s.busy.is_none()) {
                break;
            }

            let next_due = shards
                .iter()
                .filter(|s| s.busy.is_none())
                .filter_map(|s| s.since.map(|t| t + self.cfg.batch_send_deadline))
                .min()
                .unwrap_or(now + Duration::from_secs(3600));
            tokio::select! {
                biased;
                Some(done) = done_rx.recv() => {
                    shards[done.shard].busy = None;
                    progress += self.apply_acks(&done.acks, &mut outstanding);
                    self.save_acks(reader, &outstanding);
                    self.delete_done_segments(reader, &outstanding);
                }
                _ = self.shutdown.cancelled(), if flush_until.is_none() => {
                    flush_until = Some(Instant::now() + self.flush_deadline);
                }
                _ = sleep_until_opt(flush_until) => {
                    let pending = buffered + shards.iter().filter(|s| s.busy.is_some()).count();
                    tracing::warn!(endpoint = %self.name, "flush_deadline reached with {pending} unsent batches/samples: they stay in the WAL for the next start");
                    break;
                }
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep_until(next_due) => {}
                _ = tick.tick() => {
                    ticks += 1;
                    if !at_end && buffered >= self.cfg.capacity * n {
                        saturated += 1;
                    }
                    self.report(&sink_key);
                    if ticks.is_multiple_of(RESHARD_EVERY.as_secs() as u32) && target == n {
                        if saturated >= 5 && progress > 0 && n < self.cfg.max_shards {
                            target = (n * 2).min(self.cfg.max_shards);
                        } else if saturated == 0 && at_end && n > self.cfg.min_shards
                            && shards.iter().filter(|s| s.busy.is_none()).count() > n / 2 {
                            target = n - 1;
                        }
                        saturated = 0;
                        progress = 0;
                    }
                }
            }
        }
        for s in &mut shards {
            if let Some(h) = s.busy.take() {
                h.abort();
            }
        }
        // Acknowledgements that arrived while stopping still count.
        while let Ok(done) = done_rx.try_recv() {
            self.apply_acks(&done.acks, &mut outstanding);
        }
        self.save_acks(reader, &outstanding);
        wal.sync();
        self.report(&sink_key);
    }

    /// Applies a sender's acknowledgements; returns the samples acknowledged.
    fn apply_acks(&self, acks: &[(Pos, u8, u32)], outstanding: &mut BTreeMap<Pos, RecState>) -> u64 {
        let mut total = 0u64;
        let mut per_segment: HashMap<u64, u64> = HashMap::new();
        for &(pos, b, k) in acks {
            total += k as u64;
            *per_segment.entry(pos.segment).or_default() += k as u64;
            if let Some(st) = outstanding.get_mut(&pos) {
                let r = &mut st.remaining[b as usize];
                *r = r.saturating_sub(k);
                if *r == 0 {
                    st.acked |= 1 << b;
                }
                if st.acked == u64::MAX {
                    outstanding.remove(&pos);
                }
            }
        }
        for (seg, k) in per_segment {
            self.wal.note_acked(seg, k);
        }
        self.stats.pending.fetch_sub(total as i64, Ordering::Relaxed);
        total
    }

    fn save_acks(&self, reader: Pos, outstanding: &BTreeMap<Pos, RecState>) {
        let watermark = outstanding.keys().next().copied().unwrap_or(reader);
        // Only records with an acknowledged bucket that held samples need
        // a mask; the rest are resent whole.
        let partial =
            outstanding.iter().filter(|(_, s)| s.acked & s.present != 0).map(|(p, s)| (*p, s.acked)).collect();
        match self.wal.save_acks(&AckState { watermark, partial }) {
            // Said once per failure spell: on a full disk this fails on
            // every acknowledgement.
            Err(e) if !self.ack_save_failing.swap(true, Ordering::Relaxed) => {
                tracing::error!(endpoint = %self.name, wal = %self.wal.dir().display(), error = %e, "cannot save WAL acknowledgements (the previous ones stay): a restart may send some samples twice");
            }
            Err(_) => {}
            Ok(()) => {
                if self.ack_save_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(endpoint = %self.name, wal = %self.wal.dir().display(), "WAL acknowledgements saved again");
                }
            }
        }
    }

    /// Deletes segments that the reader has left and that hold no
    /// unacknowledged record.
    fn delete_done_segments(&self, reader: Pos, outstanding: &BTreeMap<Pos, RecState>) {
        let safe = outstanding.keys().next().map_or(reader.segment, |p| p.segment.min(reader.segment));
        self.wal.remove_before(safe);
    }

    fn report(&self, key: &str) {
        let ws = self.wal.stats();
        let fault = self.wal.fault();
        let pending = self.stats.pending.load(Ordering::Relaxed).max(0) as u64;
        let last = self.stats.last_send_ms.load(Ordering::Relaxed);
        let highest = self.stats.highest_sent_ms.load(Ordering::Relaxed);
        self.registry.update_sink(key, |s| {
            s.pending = pending;
            s.wal_bytes = ws.bytes;
            s.last_success_ms = last;
            s.lag_seconds = if highest > 0 { (now_ms() - highest).max(0) as f64 / 1000.0 } else { 0.0 };
            // The WAL's trouble shows until it is over; a push error (set
            // by the senders) takes its place meanwhile only if there is none.
            match fault {
                Some(f) => s.last_error = f,
                None if s.last_error.starts_with("WAL ") => s.last_error.clear(),
                None => {}
            }
        });
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// A jittered wait in [d/2, d].
fn jitter(d: Duration) -> Duration {
    use std::cell::Cell;
    thread_local!(static STATE: Cell<u64> = Cell::new(now_ms() as u64 ^ 0x9e37_79b9_7f4a_7c15));
    let r = STATE.with(|s| {
        let mut x = s.get() | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    });
    let half = d / 2;
    half + Duration::from_nanos(r % (half.as_nanos() as u64 + 1))
}

/// Sends one batch until it is acknowledged or rejected, then reports.
async fn send(ctx: Arc<SendCtx>, shard: usize, batch: Vec<Entry>, done: mpsc::UnboundedSender<Done>) {
    let samples: u64 = batch.iter().map(|e| e.series.samples as u64).sum();
    let max_ts = batch.iter().map(|e| e.series.max_ts).max().unwrap_or(0);
    let mut encoder = Encoder::new();
    let mut body = Vec::new();
    let mut encoded_v2 = None;
    let mut backoff = ctx.min_backoff;
    let mut attempt = 0u32;
    let sink_key = format!("remote_write/{}", ctx.name);
    loop {
        let v2 = ctx.v2.load(Ordering::Relaxed);
        if encoded_v2 != Some(v2) {
            if v2 {
                // 2.0 re-encodes labels into a symbols table, so it needs
                // the series decoded (their bytes were CRC-checked).
                let decoded: Vec<(TimeSeries, u8)> = batch
                    .iter()
                    .map(|e| (TimeSeries::decode(e.series.bytes.clone()).unwrap_or_default(), e.kind))
                    .collect();
                encoder.v2(decoded.iter().map(|(t, k)| (t, *k)), &mut body);
            } else {
                encoder.v1_raw(batch.iter().map(|e| &e.series.bytes[..]), &mut body);
            }
            encoded_v2 = Some(v2);
        }
        let started = std::time::Instant::now();
        let outcome = ctx.client.send(body.clone(), v2).await;
        ctx.stats.observe(started.elapsed());
        match outcome {
            Outcome::Acknowledged => {
                ctx.stats.sent.fetch_add(samples, Ordering::Relaxed);
                ctx.stats.bytes_sent.fetch_add(body.len() as u64, Ordering::Relaxed);
                ctx.stats.last_send_ms.store(now_ms(), Ordering::Relaxed);
                ctx.stats.highest_sent_ms.fetch_max(max_ts, Ordering::Relaxed);
                if let Some(r) = ctx.failures.lock().unwrap().succeeded() {
                    let down_for_s = r.down_for.as_secs();
                    tracing::info!(endpoint = %ctx.name, url = %ctx.url, failures = r.failures, down_for_s, "remote_write works again");
                }
                if attempt > 0 {
                    // A WAL problem (disk full) is the WAL's to clear, not the network's.
                    ctx.registry.update_sink(&sink_key, |s| {
                        if !s.last_error.starts_with("WAL ") {
                            s.last_error.clear()
                        }
                    });
                }
                break;
            }
            Outcome::Unsupported => {
                if ctx.v2.swap(false, Ordering::Relaxed) {
                    tracing::warn!(endpoint = %ctx.name, url = %ctx.url, "receiver answered 415 to remote_write 2.0: falling back to 1.0");
                }
            }
            Outcome::Rejected { status, body } => {
                ctx.stats.failed.fetch_add(samples, Ordering::Relaxed);
                ctx.stats.drop_samples(DROP_REJECTED, samples);
                // The acks below would subtract pending again.
                ctx.stats.pending.fetch_add(samples as i64, Ordering::Relaxed);
                let msg = format!("HTTP {status}: {body}");
                if let Some(r) = ctx.failures.lock().unwrap().failed(&msg) {
                    let (failures, since_last_line) = (r.failures, r.since_last_line);
                    tracing::error!(endpoint = %ctx.name, url = %ctx.url, status, samples, failures, since_last_line, "receiver rejected the request (HTTP {status}); dropping {samples} samples, not retrying. Receiver said: {body}");
                }
                ctx.registry.update_sink(&sink_key, |s| s.last_error = msg);
                break;
            }
            Outcome::Retry { after, reason } => {
                attempt += 1;
                ctx.stats.retried.fetch_add(samples, Ordering::Relaxed);
                let wait = after.unwrap_or_else(|| jitter(backoff));
                backoff = (backoff * 2).min(ctx.max_backoff);
                if let Some(r) = ctx.failures.lock().unwrap().failed(&reason) {
                    let (failures, since_last_line, down_for_s) = (r.failures, r.since_last_line, r.down_for.as_secs());
                    let retry_in_ms = wait.as_millis() as u64;
                    tracing::warn!(endpoint = %ctx.name, url = %ctx.url, failures, since_last_line, down_for_s, retry_in_ms, "push failed, will retry: {reason}");
                }
                // A WAL fault (full disk) stays shown until it is over.
                ctx.registry.update_sink(&sink_key, |s| {
                    if !s.last_error.starts_with("WAL ") {
                        s.last_error = reason
                    }
                });
                tokio::time::sleep(wait).await;
            }
        }
    }
    let mut acks: Vec<(Pos, u8, u32)> = Vec::new();
    for e in &batch {
        let k = e.series.samples;
        match acks.last_mut() {
            Some((p, b, n)) if *p == e.rec && *b == e.bucket => *n += k,
            _ => acks.push((e.rec, e.bucket, k)),
        }
    }
    let _ = done.send(Done { shard, acks });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::remote_write::RemoteWriteConfig;

    fn queue(dir: &std::path::Path) -> Queue {
        let (wal, _) = Wal::open(dir, 1 << 30).unwrap();
        let cfg = RemoteWriteConfig { url: "http://127.0.0.1:9/api/v1/write".into(), ..Default::default() };
        Queue {
            name: "t".into(),
            url: cfg.url.clone(),
            cfg: cfg.queue_config.clone(),
            flush_deadline: cfg.flush_deadline,
            wal: Arc::new(wal),
            client: Arc::new(Client::new(&cfg).unwrap()),
            stats: Arc::new(Stats::default()),
            v2: Arc::new(AtomicBool::new(false)),
            notify: Arc::new(Notify::new()),
            shutdown: CancellationToken::new(),
            registry: Registry::default(),
            ack_save_failing: AtomicBool::new(false),
        }
    }

    fn state(buckets: &[(usize, u32)]) -> RecState {
        let mut st = RecState { remaining: [0; BUCKETS], acked: 0, present: 0 };
        for &(b, k) in buckets {
            st.remaining[b] = k;
            st.present |= 1 << b;
        }
        st.acked = !st.present;
        st
    }

    #[test]
    fn acknowledgements_out_of_order_keep_the_watermark_and_masks_exact() {
        let dir = std::env::temp_dir().join(format!("vantage-rw-acks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let q = queue(&dir);
        let (a, b) = (Pos { segment: 0, offset: 0 }, Pos { segment: 0, offset: 100 });
        let reader = Pos { segment: 0, offset: 200 };
        let mut out = BTreeMap::new();
        out.insert(a, state(&[(3, 2), (7, 1)]));
        out.insert(b, state(&[(3, 1)]));
        q.save_acks(reader, &out);
        assert_eq!(q.wal.load_acks(), AckState { watermark: a, partial: HashMap::new() });

        // The later record completes first: the watermark stays at `a`.
        assert_eq!(q.apply_acks(&[(b, 3, 1)], &mut out), 1);
        assert!(!out.contains_key(&b));
        q.save_acks(reader, &out);
        assert_eq!(q.wal.load_acks(), AckState { watermark: a, partial: HashMap::new() });

        // Bucket 7 of `a` is done, bucket 3 only half: the mask says 7.
        q.apply_acks(&[(a, 7, 1), (a, 3, 1)], &mut out);
        q.save_acks(reader, &out);
        let saved = q.wal.load_acks();
        assert_eq!(saved.watermark, a);
        let mask = saved.partial[&a];
        assert!(mask & (1 << 7) != 0 && mask & (1 << 3) == 0);

        // Everything acknowledged: the watermark moves to the reader.
        q.apply_acks(&[(a, 3, 1)], &mut out);
        assert!(out.is_empty());
        q.save_acks(reader, &out);
        assert_eq!(q.wal.load_acks(), AckState { watermark: reader, partial: HashMap::new() });
        assert_eq!(q.stats.pending.load(Ordering::Relaxed), -4);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn jitter_stays_within_half_and_full() {
        for _ in 0..1000 {
            let j = jitter(Duration::from_millis(100));
            assert!(j >= Duration::from_millis(50) && j <= Duration::from_millis(100), "{j:?}");
        }
    }
}
