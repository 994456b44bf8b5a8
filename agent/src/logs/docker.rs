//! Container logs through the Docker API: every running container of the
//! agent's one inventory (Docker discovery's [`Feed`]) is followed (stdout
//! and stderr, with Docker's own nanosecond timestamps); containers are
//! followed as discovery's events report them, never by polling the list.
//! The positions keep, per container, the timestamp of the newest line
//! every log sink acknowledged; a follow resumes after it (Docker's `since` only takes
//! whole seconds, so the rest is filtered here), which is what keeps
//! `docker stop`/`start`/`restart` from re-sending history. Lines Docker
//! split at 16 KiB are joined back.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptionsBuilder;
use futures_util::StreamExt;
use regex::Regex;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::positions::{CursorKey, Positions};
use super::stages::{Multiline, MultilineState, Pipeline, Record, StageConfig};
use super::{repair_utf8, SourceStats};
use crate::config::common;
use crate::logline::{Ack, LogEntry, LogSender};
use crate::sample::Labels;
use crate::sources::docker::Feed;

/// `[logs.docker]`: container logs.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DockerLogsConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Docker Engine socket (`unix:///var/run/docker.sock`); empty takes
    /// `[docker].host`, then DOCKER_HOST, then the default socket.
    #[serde(default)]
    pub host: String,
    /// Only containers whose name matches this regex (empty: all).
    #[serde(default)]
    pub include: String,
    /// Containers whose name matches this regex are left out.
    #[serde(default)]
    pub exclude: String,
    /// Labels of every line (`job` defaults to "docker").
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// No longer used: containers are followed as Docker discovery's events
    /// report them. Still accepted so that existing files load.
    #[serde(default = "default_refresh", with = "common::duration")]
    pub refresh_interval: Duration,
    /// Longer lines are cut to this many bytes (and counted).
    #[serde(default = "default_max_line")]
    pub max_line_size: usize,
    #[serde(default)]
    pub stages: Vec<StageConfig>,
}

fn default_refresh() -> Duration {
    Duration::from_secs(5)
}
fn default_max_line() -> usize {
    256 * 1024
}

impl Default for DockerLogsConfig {
    fn default() -> Self {
        DockerLogsConfig {
            enabled: false,
            host: String::new(),
            include: String::new(),
            exclude: String::new(),
            labels: BTreeMap::new(),
            refresh_interval: default_refresh(),
            max_line_size: default_max_line(),
            stages: Vec::new(),
        }
    }
}

impl DockerLogsConfig {
    /// Adds this section's problems to `problems`.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if !self.enabled {
            return;
        }
        for (key, re) in [("include", &self.include), ("exclude", &self.exclude)] {
            if let Err(e) = Regex::new(re) {
                problems.push(format!("logs.docker.{key}: {e}"));
            }
        }
        if self.refresh_interval.is_zero() {
            problems.push("logs.docker.refresh_interval must be above zero".into());
        }
        if self.max_line_size < 16 {
            problems.push("logs.docker.max_line_size must be at least 16".into());
        }
        for k in self.labels.keys() {
            if !crate::relabel::is_valid_label_name(k) {
                problems.push(format!("logs.docker.labels: {k:?} is not a valid label name"));
            }
        }
        if let Err(e) = Pipeline::new(&self.stages, "logs.docker") {
            problems.extend(e);
        }
    }

    /// One line for `vantage check`.
    pub fn describe(&self) -> String {
        let host = if self.host.is_empty() { "default socket" } else { &self.host };
        format!("{host}, include {:?}, exclude {:?} ({} stages)", self.include, self.exclude, self.stages.len())
    }
}

/// What every follow shares.
struct Shared {
    docker: bollard::Docker,
    pipeline: Pipeline,
    multiline: Option<Multiline>,
    base: Labels,
    max_line: usize,
    positions: Arc<Positions>,
    sender: LogSender,
    stats: Arc<SourceStats>,
    shutdown: CancellationToken,
    /// Per container, the timestamp of the newest line read in this run:
    /// a follow that restarts (container restarted) resumes after it even
    /// when the sinks have not acknowledged it yet.
    read_up_to: Mutex<HashMap<String, u64>>,
}

/// The container log source.
pub struct DockerLogs {
    shared: Arc<Shared>,
    include: Option<Regex>,
    exclude: Option<Regex>,
    feed: Feed,
}

/// Wait after a follow ends before the inventory is looked at again, so a
/// container whose log stream keeps failing is not asked in a tight loop.
const REFOLLOW_DELAY: Duration = Duration::from_millis(500);

impl DockerLogs {
    /// Prepares the source: `host` is the socket of the inventory `feed`
    /// comes from (the one the logs are read from too).
    pub fn new(
        cfg: &DockerLogsConfig,
        host: &str,
        feed: Feed,
        positions: Arc<Positions>,
        sender: LogSender,
        stats: Arc<SourceStats>,
        shutdown: CancellationToken,
    ) -> Result<DockerLogs, String> {
        let (pipeline, multiline) = Pipeline::new(&cfg.stages, "logs.docker").map_err(|e| e.join("; "))?;
        let docker = crate::sources::docker::connect(host).map_err(|e| format!("docker logs: {e}"))?;
        let opt_re = |s: &str| -> Result<Option<Regex>, String> {
            if s.is_empty() {
                Ok(None)
            } else {
                Regex::new(s).map(Some).map_err(|e| format!("logs.docker: {e}"))
            }
        };
        let mut base = Labels::from_pairs(cfg.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if base.get("job").is_none() {
            base.set("job", "docker");
        }
        Ok(DockerLogs {
            include: opt_re(&cfg.include)?,
            exclude: opt_re(&cfg.exclude)?,
            feed,
            shared: Arc::new(Shared {
                docker,
                pipeline,
                multiline,
                base,
                max_line: cfg.max_line_size,
                positions,
                sender,
                stats,
                shutdown,
                read_up_to: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Follows the inventory's running containers until shutdown: looked
    /// at again when discovery publishes and when a follow ends (a
    /// container that restarted before its old stream ended is followed
    /// anew).
    pub async fn run(mut self) {
        let mut follows: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel::<()>();
        loop {
            // Both marked seen on every turn, or a change would wake the loop forever.
            let inventory = self.feed.inventory.borrow_and_update().clone();
            if *self.feed.listed.borrow_and_update() {
                follows.retain(|_, t| !t.is_finished());
                // What `docker ps` lists (paused and restarting included), as the
                // container list this source once polled did.
                let listed = |c: &&crate::sources::docker::Container| {
                    matches!(c.state.as_str(), "running" | "paused" | "restarting")
                };
                for c in inventory.iter().filter(listed) {
                    let name = c.name.trim_start_matches('/').to_string();
                    if self.include.as_ref().is_some_and(|r| !r.is_match(&name))
                        || self.exclude.as_ref().is_some_and(|r| r.is_match(&name))
                        || follows.contains_key(&c.id)
                    {
                        continue;
                    }
                    let (shared, ended_tx) = (self.shared.clone(), ended_tx.clone());
                    let (id, image) = (c.id.clone(), c.image.clone());
                    follows.insert(
                        c.id.clone(),
                        tokio::spawn(async move {
                            follow(shared.clone(), id, name, image).await;
                            tokio::select! {
                                _ = shared.shutdown.cancelled() => {}
                                _ = tokio::time::sleep(REFOLLOW_DELAY) => { let _ = ended_tx.send(()); }
                            }
                        }),
                    );
                }
                self.shared.stats.containers.store(follows.len() as u64, Ordering::Relaxed);
                self.prune_removed(&inventory);
            }
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => break,
                r = self.feed.inventory.changed() => if r.is_err() { break },
                r = self.feed.listed.changed() => if r.is_err() { break },
                _ = ended.recv() => {}
            }
        }
        for (_, t) in follows {
            let _ = t.await;
        }
    }
}

impl DockerLogs {
    /// Drops the positions of removed containers (stopped ones keep theirs:
    /// a restart continues after them), so the file does not grow forever.
    fn prune_removed(&self, inventory: &crate::sources::docker::Inventory) {
        let ids: std::collections::HashSet<&str> = inventory.iter().map(|c| c.id.as_str()).collect();
        let read = self.shared.read_up_to.lock().unwrap().clone();
        let n = self.shared.positions.prune_containers(|id| ids.contains(id), |id| read.get(id).copied());
        if n > 0 {
            tracing::debug!(containers = n, "positions of removed containers dropped");
            let mut r = self.shared.read_up_to.lock().unwrap();
            r.retain(|id, _| ids.contains(id.as_str()));
        }
    }
}

/// Parses Docker's RFC3339Nano timestamp prefix into Unix nanoseconds.
fn parse_docker_ts(text: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(text).ok()?;
    let ns = chrono::DateTime::parse_from_rfc3339(s).ok()?.timestamp_nanos_opt()?;
    u64::try_from(ns).ok()
}

/// A line being assembled from Docker's partial chunks, per stream.
#[derive(Default)]
struct Partial {
    bytes: Vec<u8>,
    first_ts: u64,
    cut: bool,
    multiline: MultilineState,
}

async fn follow(sh: Arc<Shared>, id: String, name: String, image: String) {
    let cursor = match sh.positions.container_cursor(&id) {
        Some(c) => c,
        None => {
            let saved = sh.positions.claim_container(&id).unwrap_or(0);
            sh.positions.track(CursorKey::Container { id: id.clone(), name: name.clone() }, saved)
        }
    };
    let resume = cursor.acked.load(Ordering::Acquire).max(sh.read_up_to.lock().unwrap().get(&id).copied().unwrap_or(0));
    let since = (resume / 1_000_000_000) as i32;
    tracing::debug!(container = %name, resume, "following container logs");
    let opts = LogsOptionsBuilder::new().follow(true).stdout(true).stderr(true).timestamps(true).since(since).build();
    let mut stream = sh.docker.logs(&id, Some(opts));
    let mut base = sh.base.clone();
    base.set("container_name", name.clone());
    base.set("container_id", id.clone());
    base.set("image", image);
    let mut out_labels = base.clone();
    out_labels.set("stream", "stdout");
    let mut err_labels = base;
    err_labels.set("stream", "stderr");
    let mut parts: [Partial; 2] = Default::default();
    loop {
        let item = tokio::select! {
            _ = sh.shutdown.cancelled() => return,
            item = stream.next() => item,
        };
        let (which, msg) = match item {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(container = %name, error = %e, "container log stream ended");
                break;
            }
            Some(Ok(LogOutput::StdOut { message })) | Some(Ok(LogOutput::Console { message })) => (0, message),
            Some(Ok(LogOutput::StdErr { message })) => (1, message),
            Some(Ok(LogOutput::StdIn { .. })) => continue,
        };
        let (ts_text, content) = match msg.iter().position(|&b| b == b' ') {
            Some(p) => (&msg[..p], &msg[p + 1..]),
            None => (&msg[..], &msg[msg.len()..]),
        };
        let Some(ts) = parse_docker_ts(ts_text) else {
            tracing::debug!(container = %name, "log chunk without a timestamp");
            continue;
        };
        if ts <= resume {
            continue; // sent before (Docker's `since` has one-second steps)
        }
        let p = &mut parts[which];
        if p.bytes.is_empty() && !p.cut {
            p.first_ts = ts;
        }
        let (body, complete) = match content.strip_suffix(b"\n") {
            Some(b) => (b, true),
            None => (content, false),
        };
        if !p.cut {
            let room = sh.max_line.saturating_sub(p.bytes.len());
            p.bytes.extend_from_slice(&body[..body.len().min(room)]);
            if body.len() > room {
                p.cut = true;
                sh.stats.lines_truncated.fetch_add(1, Ordering::Relaxed);
            }
        }
        sh.read_up_to.lock().unwrap().insert(id.clone(), ts);
        if !complete {
            continue; // Docker split a long line: the rest follows
        }
        let mut bytes = std::mem::take(&mut p.bytes);
        p.cut = false;
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let (text, repaired) = repair_utf8(bytes);
        if repaired {
            sh.stats.invalid_utf8.fetch_add(1, Ordering::Relaxed);
        }
        sh.stats.lines_read.fetch_add(1, Ordering::Relaxed);
        let (text, line_ts, ack) = match &sh.multiline {
            Some(ml) => match p.multiline.push(ml, text, p.first_ts as i64, ts) {
                Some(j) => j,
                None => continue,
            },
            None => (text, p.first_ts as i64, ts),
        };
        let labels = if which == 0 { out_labels.clone() } else { err_labels.clone() };
        let mut rec = Record::new(text, labels, line_ts);
        let keep = sh.pipeline.run(&mut rec, &sh.stats.stages);
        let entry = LogEntry {
            labels: rec.labels,
            timestamp_ns: rec.timestamp_ns,
            line: keep.then_some(rec.line),
            ack: Some(Ack { cursor: cursor.acked.clone(), value: ack }),
        };
        tokio::select! {
            _ = sh.shutdown.cancelled() => return,
            r = sh.sender.send(entry) => if r.is_err() { return },
        }
    }
    // The container stopped: flush what multiline still holds.
    for (which, p) in parts.iter_mut().enumerate() {
        if let Some((text, ts, ack)) = p.multiline.take() {
            let labels = if which == 0 { out_labels.clone() } else { err_labels.clone() };
            let mut rec = Record::new(text, labels, ts);
            let keep = sh.pipeline.run(&mut rec, &sh.stats.stages);
            let entry = LogEntry {
                labels: rec.labels,
                timestamp_ns: rec.timestamp_ns,
                line: keep.then_some(rec.line),
                ack: Some(Ack { cursor: cursor.acked.clone(), value: ack }),
            };
            let _ = sh.sender.send(entry).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_timestamps_keep_nanoseconds() {
        assert_eq!(parse_docker_ts(b"2024-03-01T10:00:00.123456789Z"), Some(1_709_287_200_123_456_789));
        assert_eq!(parse_docker_ts(b"garbage"), None);
    }
}
