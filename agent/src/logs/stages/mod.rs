//! Processing stages: an ordered list per source that extracts fields from
//! a line (regex, json, logfmt), turns fields into labels, parses the
//! line's own timestamp, finds its level, rewrites or drops it. Stages never
//! fail a line: malformed input leaves the record as it was and is counted
//! per stage kind. Multiline joining is stateful and runs before the list
//! (see [`Multiline`]).
//!
//! This file holds what the kinds share: the configuration ([`StageConfig`]),
//! the [`Record`], the counters and the [`Pipeline`] that compiles a list and
//! dispatches to the kinds. Each kind lives in a file of its own (`regex`,
//! `json`, `logfmt`, `labels` with `static_labels`, `timestamp`, `output`,
//! `drop`, `selector` for `match`, `multiline`, `level`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

// `::` because the regex stage's module below shares the crate's name.
use ::regex::Regex;
use serde::{Deserialize, Serialize};

use crate::config::common;
use crate::sample::Labels;

mod drop;
mod json;
mod labels;
mod level;
mod logfmt;
mod multiline;
mod output;
mod regex;
mod selector;
mod timestamp;

use self::drop::DropStage;
use self::json::JsonStage;
use self::labels::{LabelsStage, StaticLabelsStage};
use self::level::LevelStage;
use self::logfmt::LogfmtStage;
use self::output::OutputStage;
use self::regex::RegexStage;
use self::selector::MatchStage;
use self::timestamp::TimestampStage;

pub use self::level::{find_level, normalize_level};
pub use self::logfmt::{parse_logfmt, visit_logfmt};
pub use self::multiline::{Joined, Multiline, MultilineState};
pub use self::selector::Selector;

/// One stage as written in the configuration (`type = "..."`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StageConfig {
    /// Named capture groups become fields.
    Regex {
        expression: String,
        /// Field to match instead of the line.
        #[serde(default)]
        source: Option<String>,
    },
    /// JSON fields become fields: `expressions = { field = "path.to.key" }`
    /// (an empty path means the same name); no expressions takes every
    /// top-level key.
    Json {
        #[serde(default)]
        expressions: BTreeMap<String, String>,
        #[serde(default)]
        source: Option<String>,
    },
    /// logfmt pairs become fields: `mapping = { field = "key" }`; no mapping
    /// takes every key.
    Logfmt {
        #[serde(default)]
        mapping: BTreeMap<String, String>,
        #[serde(default)]
        source: Option<String>,
    },
    /// Promotes fields to labels: `values = { label = "field" }` (an empty
    /// field name means the label's name).
    Labels { values: BTreeMap<String, String> },
    /// Adds fixed labels.
    StaticLabels { values: BTreeMap<String, String> },
    /// Sets the entry's time from a field; read time stays when it fails.
    Timestamp {
        source: String,
        /// RFC3339, RFC3339Nano, Unix, UnixMs, UnixUs, UnixNs or a strftime layout.
        format: String,
        #[serde(default)]
        fallback_formats: Vec<String>,
        /// Zone for layouts without one: "UTC" or an offset like "+02:00".
        #[serde(default)]
        location: Option<String>,
    },
    /// Replaces the line with a field.
    Output { source: String },
    /// Drops lines meeting every condition given.
    Drop {
        #[serde(default)]
        source: Option<String>,
        #[serde(default)]
        expression: Option<String>,
        #[serde(default)]
        value: Option<String>,
        #[serde(default, with = "common::opt_duration")]
        older_than: Option<Duration>,
        #[serde(default)]
        longer_than: Option<usize>,
    },
    /// Runs `stages` on lines whose labels match `selector`, or drops them
    /// with `action = "drop"`.
    Match {
        selector: String,
        #[serde(default)]
        action: MatchAction,
        #[serde(default)]
        stages: Vec<StageConfig>,
    },
    /// Joins continuation lines to the line before; must be first.
    Multiline {
        firstline: String,
        #[serde(default = "default_max_lines")]
        max_lines: usize,
        #[serde(default = "default_max_wait", with = "common::duration")]
        max_wait: Duration,
    },
    /// Finds the level (logfmt, JSON, `[LEVEL]` or a leading word) and sets
    /// it, normalised to debug/info/warn/error/fatal, as a label.
    Level {
        #[serde(default = "default_level_label")]
        label: String,
        /// Field holding the level; searched in the line when absent.
        #[serde(default)]
        source: Option<String>,
        /// Value when no level is found; empty adds no label.
        #[serde(default = "default_level_default")]
        default: String,
    },
}

/// What a match stage does with matching lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchAction {
    #[default]
    Keep,
    Drop,
}

fn default_max_lines() -> usize {
    128
}
fn default_max_wait() -> Duration {
    Duration::from_secs(3)
}
fn default_level_label() -> String {
    "level".into()
}
fn default_level_default() -> String {
    "unknown".into()
}

/// A line on its way through the stages.
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub line: String,
    pub labels: Labels,
    /// Fields extracted by earlier stages, in extraction order.
    pub fields: Vec<(String, String)>,
    /// Unix nanoseconds: read time until a timestamp stage sets it.
    pub timestamp_ns: i64,
}

impl Record {
    /// A record for `line` read at `timestamp_ns` with the source's labels.
    pub fn new(line: String, labels: Labels, timestamp_ns: i64) -> Record {
        Record { line, labels, fields: Vec::new(), timestamp_ns }
    }

    /// The value of field `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn set_field(&mut self, name: &str, value: String) {
        match self.fields.iter_mut().find(|(k, _)| k == name) {
            Some(f) => f.1 = value,
            None => self.fields.push((name.to_string(), value)),
        }
    }

    fn source(&self, source: &Option<String>) -> Option<&str> {
        match source {
            Some(f) => self.field(f),
            None => Some(&self.line),
        }
    }
}

/// Stage kinds, for the per-kind error counters.
pub const STAGE_KINDS: [&str; 10] =
    ["regex", "json", "logfmt", "labels", "timestamp", "output", "drop", "match", "multiline", "level"];

/// Counts malformed input per stage kind and dropped lines.
#[derive(Debug, Default)]
pub struct StageStats {
    pub errors: [AtomicU64; 10],
    pub dropped: AtomicU64,
}

impl StageStats {
    fn error(&self, kind: usize) {
        self.errors[kind].fetch_add(1, Ordering::Relaxed);
    }
}

/// A compiled stage; each kind lives in a file of its own.
#[derive(Debug)]
enum Stage {
    Regex(RegexStage),
    Json(JsonStage),
    Logfmt(LogfmtStage),
    Labels(LabelsStage),
    Static(StaticLabelsStage),
    Timestamp(TimestampStage),
    Output(OutputStage),
    Drop(DropStage),
    Match(MatchStage),
    Level(LevelStage),
}

/// The compiled stage list of one source.
#[derive(Debug, Default)]
pub struct Pipeline {
    stages: Vec<Stage>,
}

impl Pipeline {
    /// Compiles `configs`; `place` names the list in errors. The multiline
    /// stage, if any, is returned apart: it must come first.
    pub fn new(configs: &[StageConfig], place: &str) -> Result<(Pipeline, Option<Multiline>), Vec<String>> {
        let mut problems = Vec::new();
        let mut multiline = None;
        let mut stages = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let here = format!("{place}.stages[{i}]");
            if let StageConfig::Multiline { firstline, max_lines, max_wait } = c {
                if i != 0 {
                    problems.push(format!("{here}: multiline must be the first stage"));
                }
                match Regex::new(firstline) {
                    Ok(re) => {
                        multiline =
                            Some(Multiline { firstline: re, max_lines: (*max_lines).max(1), max_wait: *max_wait })
                    }
                    Err(e) => problems.push(format!("{here}: firstline: {e}")),
                }
                continue;
            }
            match compile(c, &here) {
                Ok(s) => stages.push(s),
                Err(e) => problems.extend(e),
            }
        }
        if problems.is_empty() {
            Ok((Pipeline { stages }, multiline))
        } else {
            Err(problems)
        }
    }

    /// Runs every stage on `rec`; false when a stage dropped it.
    pub fn run(&self, rec: &mut Record, stats: &StageStats) -> bool {
        run_stages(&self.stages, rec, stats)
    }
}

fn compile(c: &StageConfig, here: &str) -> Result<Stage, Vec<String>> {
    Ok(match c {
        StageConfig::Regex { expression, source } => Stage::Regex(RegexStage::new(expression, source, here)?),
        StageConfig::Json { expressions, source } => Stage::Json(JsonStage::new(expressions, source)),
        StageConfig::Logfmt { mapping, source } => Stage::Logfmt(LogfmtStage::new(mapping, source)),
        StageConfig::Labels { values } => Stage::Labels(LabelsStage::new(values, here)?),
        StageConfig::StaticLabels { values } => Stage::Static(StaticLabelsStage::new(values, here)?),
        StageConfig::Timestamp { source, format, fallback_formats, location } => {
            Stage::Timestamp(TimestampStage::new(source, format, fallback_formats, location, here)?)
        }
        StageConfig::Output { source } => Stage::Output(OutputStage::new(source)),
        StageConfig::Drop { source, expression, value, older_than, longer_than } => {
            Stage::Drop(DropStage::new(source, expression, value, *older_than, *longer_than, here)?)
        }
        StageConfig::Match { selector, action, stages } => {
            Stage::Match(MatchStage::new(selector, *action, stages, here)?)
        }
        StageConfig::Multiline { .. } => unreachable!("handled by Pipeline::new"),
        StageConfig::Level { label, source, default } => Stage::Level(LevelStage::new(label, source, default, here)?),
    })
}

fn run_stages(stages: &[Stage], rec: &mut Record, stats: &StageStats) -> bool {
    for s in stages {
        match s {
            Stage::Regex(s) => s.run(rec, stats),
            Stage::Json(s) => s.run(rec, stats),
            Stage::Logfmt(s) => s.run(rec, stats),
            Stage::Labels(s) => s.run(rec),
            Stage::Static(s) => s.run(rec),
            Stage::Timestamp(s) => s.run(rec, stats),
            Stage::Output(s) => s.run(rec, stats),
            Stage::Drop(s) => {
                if !s.run(rec, stats) {
                    return false;
                }
            }
            Stage::Match(s) => {
                if !s.run(rec, stats) {
                    return false;
                }
            }
            Stage::Level(s) => s.run(rec, stats),
        }
    }
    true
}

#[cfg(test)]
mod tests;
