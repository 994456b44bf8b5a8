//! Log sources (files, container logs) and their processing stages. Lines
//! go through the stages and on, as [`crate::logline`] entries, to every
//! log sink (the composition root wires them); the positions file keeps,
//! per file and per container, what every sink has acknowledged.
//!
//! - [`file`]: tailing with globs, rotation, truncation, fingerprints.
//! - [`docker`]: container logs through the Docker API.
//! - [`stages`]: regex, json, logfmt, labels, timestamp, level, ...
//! - [`positions`]: the acknowledged offsets, written atomically.

pub mod docker;
pub mod file;
pub mod positions;
pub mod security;
pub mod stages;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::common;
use crate::logline::LogSender;
use crate::sample::{now_ms, Family, MetricType};
use crate::selfmetrics as m;
use crate::status::SelfMetrics;

pub use docker::DockerLogsConfig;
pub use file::FileSourceConfig;

/// `[logs]`: log sources.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogsConfig {
    /// Positions file; `<agent.data_dir>/positions.json` when unset.
    #[serde(default)]
    pub positions_file: Option<PathBuf>,
    /// How often acknowledged positions are written.
    #[serde(default = "default_sync", with = "common::duration")]
    pub positions_sync_period: Duration,
    /// `[[logs.files]]`: tailed files.
    #[serde(default)]
    pub files: Vec<FileSourceConfig>,
    /// `[logs.docker]`: container logs.
    #[serde(default)]
    pub docker: DockerLogsConfig,
}

fn default_sync() -> Duration {
    Duration::from_secs(1)
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            positions_file: None,
            positions_sync_period: default_sync(),
            files: Vec::new(),
            docker: DockerLogsConfig::default(),
        }
    }
}

impl LogsConfig {
    /// Adds this section's problems to `problems`.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if self.positions_sync_period.is_zero() {
            problems.push("logs.positions_sync_period must be above zero".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, f) in self.files.iter().enumerate() {
            let place = format!("logs.files[{i}] ({})", f.name);
            if !names.insert(f.name.as_str()) {
                problems.push(format!("{place}: name {:?} is used twice", f.name));
            }
            f.validate(&place, problems);
        }
        self.docker.validate(problems);
    }

    /// Lines for `vantage check`.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> =
            self.files.iter().map(|f| format!("logs file {}: {}", f.name, f.describe())).collect();
        if self.docker.enabled {
            out.push(format!("logs docker: {}", self.docker.describe()));
        }
        out
    }

    pub(crate) fn any_source(&self) -> bool {
        !self.files.is_empty() || self.docker.enabled
    }
}

/// Counters of one log source, exported with a `source` label.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub name: String,
    pub lines_read: AtomicU64,
    pub lines_truncated: AtomicU64,
    pub invalid_utf8: AtomicU64,
    pub files_watched: AtomicU64,
    pub rotations: AtomicU64,
    pub containers: AtomicU64,
    pub stages: stages::StageStats,
}

/// Every log source's counters.
#[derive(Default)]
pub struct LogStats {
    sources: Mutex<Vec<Arc<SourceStats>>>,
}

impl LogStats {
    /// Registers a source's counters.
    pub fn source(&self, name: &str) -> Arc<SourceStats> {
        let s = Arc::new(SourceStats { name: name.to_string(), ..Default::default() });
        self.sources.lock().unwrap().push(s.clone());
        s
    }
}

impl SelfMetrics for LogStats {
    fn self_metrics(&self, out: &mut Vec<Family>) {
        let ts = now_ms();
        let sources = self.sources.lock().unwrap().clone();
        let mut read = Family::new(m::LOG_LINES_READ, MetricType::Counter, "Lines read per log source.");
        let mut trunc = Family::new(m::LOG_LINES_TRUNCATED, MetricType::Counter, "Lines cut at max_line_size.");
        let mut utf8 =
            Family::new(m::LOG_INVALID_UTF8, MetricType::Counter, "Lines with invalid UTF-8 or NUL bytes, repaired.");
        let mut watched = Family::new(m::LOG_FILES_WATCHED, MetricType::Gauge, "Files being tailed.");
        let mut rot = Family::new(m::LOG_ROTATIONS, MetricType::Counter, "Rotations and truncations seen.");
        let mut cont =
            Family::new(m::LOG_CONTAINERS_FOLLOWED, MetricType::Gauge, "Containers whose logs are followed.");
        let mut dropped =
            Family::new(m::LOG_LINES_DROPPED, MetricType::Counter, "Lines dropped by drop or match stages.");
        let mut errors =
            Family::new(m::LOG_STAGE_ERRORS, MetricType::Counter, "Lines a stage could not process (left unchanged).");
        for s in &sources {
            let l = [("source", s.name.as_str())];
            let g = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
            read.push(&l, g(&s.lines_read), ts);
            trunc.push(&l, g(&s.lines_truncated), ts);
            utf8.push(&l, g(&s.invalid_utf8), ts);
            watched.push(&l, g(&s.files_watched), ts);
            rot.push(&l, g(&s.rotations), ts);
            cont.push(&l, g(&s.containers), ts);
            dropped.push(&l, g(&s.stages.dropped), ts);
            for (i, kind) in stages::STAGE_KINDS.iter().enumerate() {
                errors.push(&[("source", s.name.as_str()), ("stage", kind)], g(&s.stages.errors[i]), ts);
            }
        }
        out.extend([read, trunc, utf8, watched, rot, cont, dropped, errors]);
    }
}

/// Unix nanoseconds now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// Turns raw bytes into a valid UTF-8 line: invalid sequences and NUL bytes
/// become U+FFFD. The flag says whether anything was replaced.
pub fn repair_utf8(bytes: Vec<u8>) -> (String, bool) {
    let (mut s, mut bad) = match String::from_utf8(bytes) {
        Ok(s) => (s, false),
        Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), true),
    };
    if s.as_bytes().contains(&0) {
        s = s.replace('\0', "\u{FFFD}");
        bad = true;
    }
    (s, bad)
}

/// Starts the log sources, sending to `sender`, and the positions writer.
/// `feed` is the Docker inventory and its socket (for container logs),
/// `sinks_done` ends once the log sinks have made their last
/// acknowledgements: the positions are saved one last time after it.
pub fn start(
    ctx: &crate::Context,
    sender: &LogSender,
    feed: Option<(&str, crate::sources::docker::Feed)>,
    sinks_done: tokio::task::JoinHandle<()>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let cfg = &ctx.config.logs;
    let pos_file = cfg.positions_file.clone().unwrap_or_else(|| ctx.config.agent.data_dir.join("positions.json"));
    let positions = Arc::new(positions::Positions::load(&pos_file).map_err(|e| e.to_string())?);
    let stats = Arc::new(LogStats::default());
    ctx.registry.add_provider(stats.clone());
    let mut tasks = Vec::new();
    for f in &cfg.files {
        let source =
            file::FileSource::new(f, positions.clone(), sender.clone(), stats.source(&f.name), ctx.shutdown.clone())?;
        tasks.push(tokio::spawn(source.run()));
    }
    if ctx.config.security.enabled {
        let inventory = feed.as_ref().map(|(_, f)| f.clone());
        let source = security::SecuritySource::new(
            &ctx.config.security,
            inventory,
            sender.clone(),
            stats.source("security"),
            ctx,
        )?;
        tasks.push(tokio::spawn(source.run()));
    }
    if cfg.docker.enabled {
        let (host, feed) = feed.ok_or("logs.docker: no Docker inventory to follow")?;
        let d = docker::DockerLogs::new(
            &cfg.docker,
            host,
            feed,
            positions.clone(),
            sender.clone(),
            stats.source("docker"),
            ctx.shutdown.clone(),
        )?;
        tasks.push(tokio::spawn(d.run()));
    }
    tasks.push(tokio::spawn(positions.clone().run_writer(cfg.positions_sync_period, ctx.shutdown.clone(), sinks_done)));
    Ok(tasks)
}
