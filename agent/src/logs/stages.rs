//! Processing stages: an ordered list per source that extracts fields from
//! a line (regex, json, logfmt), turns fields into labels, parses the
//! line's own timestamp, finds its level, rewrites or drops it. Stages never
//! fail a line: malformed input leaves the record as it was and is counted
//! per stage kind. Multiline joining is stateful and runs before the list
//! (see [`Multiline`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::config::common;
use crate::sample::Labels;

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

#[derive(Debug)]
enum Stage {
    Regex {
        re: Regex,
        names: Vec<String>,
        source: Option<String>,
    },
    Json {
        paths: Vec<(String, Vec<String>)>,
        source: Option<String>,
    },
    Logfmt {
        mapping: Vec<(String, String)>,
        source: Option<String>,
    },
    Labels(Vec<(String, String)>),
    Static(Vec<(String, String)>),
    Timestamp {
        source: String,
        formats: Vec<TsFormat>,
        zone: FixedOffset,
    },
    Output(String),
    Drop {
        source: Option<String>,
        re: Option<Regex>,
        value: Option<String>,
        older_than: Option<Duration>,
        longer_than: Option<usize>,
    },
    Match {
        selector: Selector,
        action: MatchAction,
        stages: Vec<Stage>,
    },
    Level {
        label: String,
        source: Option<String>,
        default: String,
    },
}

/// The compiled stage list of one source.
#[derive(Debug, Default)]
pub struct Pipeline {
    stages: Vec<Stage>,
}

/// Settings of a multiline stage.
#[derive(Clone, Debug)]
pub struct Multiline {
    pub firstline: Regex,
    pub max_lines: usize,
    pub max_wait: Duration,
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
    let err = |m: String| vec![format!("{here}: {m}")];
    let label_names = |values: &BTreeMap<String, String>| -> Result<Vec<(String, String)>, Vec<String>> {
        let bad: Vec<String> = values
            .keys()
            .filter(|k| !crate::relabel::is_valid_label_name(k))
            .map(|k| format!("{here}: {k:?} is not a valid label name"))
            .collect();
        if !bad.is_empty() {
            return Err(bad);
        }
        Ok(values.iter().map(|(k, v)| (k.clone(), if v.is_empty() { k.clone() } else { v.clone() })).collect())
    };
    Ok(match c {
        StageConfig::Regex { expression, source } => {
            let re = Regex::new(expression).map_err(|e| err(format!("expression: {e}")))?;
            let names: Vec<String> = re.capture_names().flatten().map(String::from).collect();
            if names.is_empty() {
                return Err(err("expression has no named groups (?P<name>...)".into()));
            }
            Stage::Regex { re, names, source: source.clone() }
        }
        StageConfig::Json { expressions, source } => Stage::Json {
            paths: expressions
                .iter()
                .map(|(k, v)| {
                    let path = if v.is_empty() { k.as_str() } else { v.as_str() };
                    (k.clone(), path.split('.').map(String::from).collect())
                })
                .collect(),
            source: source.clone(),
        },
        StageConfig::Logfmt { mapping, source } => Stage::Logfmt {
            mapping: mapping
                .iter()
                .map(|(k, v)| (k.clone(), if v.is_empty() { k.clone() } else { v.clone() }))
                .collect(),
            source: source.clone(),
        },
        StageConfig::Labels { values } => Stage::Labels(label_names(values)?),
        StageConfig::StaticLabels { values } => {
            label_names(values)?;
            Stage::Static(values.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        }
        StageConfig::Timestamp { source, format, fallback_formats, location } => {
            let zone = match location.as_deref() {
                None | Some("") | Some("UTC") | Some("utc") | Some("Z") => FixedOffset::east_opt(0).unwrap(),
                Some(z) => parse_offset(z).ok_or_else(|| {
                    err(format!(
                        "location {z:?}: use \"UTC\" or a fixed offset like \"+02:00\" (zone names are not supported)"
                    ))
                })?,
            };
            let formats = std::iter::once(format).chain(fallback_formats).map(|f| TsFormat::from_name(f)).collect();
            Stage::Timestamp { source: source.clone(), formats, zone }
        }
        StageConfig::Output { source } => Stage::Output(source.clone()),
        StageConfig::Drop { source, expression, value, older_than, longer_than } => {
            let re = match expression {
                Some(e) => Some(Regex::new(e).map_err(|e| err(format!("expression: {e}")))?),
                None => None,
            };
            if re.is_none() && value.is_none() && older_than.is_none() && longer_than.is_none() {
                return Err(err("drop needs at least one of expression, value, older_than, longer_than".into()));
            }
            Stage::Drop {
                source: source.clone(),
                re,
                value: value.clone(),
                older_than: *older_than,
                longer_than: *longer_than,
            }
        }
        StageConfig::Match { selector, action, stages } => {
            let selector = Selector::parse(selector).map_err(|e| err(format!("selector: {e}")))?;
            let mut sub = Vec::new();
            let mut problems = Vec::new();
            for (i, s) in stages.iter().enumerate() {
                if matches!(s, StageConfig::Multiline { .. }) {
                    problems.push(format!("{here}.stages[{i}]: multiline cannot be inside match"));
                    continue;
                }
                match compile(s, &format!("{here}.stages[{i}]")) {
                    Ok(s) => sub.push(s),
                    Err(e) => problems.extend(e),
                }
            }
            if !problems.is_empty() {
                return Err(problems);
            }
            Stage::Match { selector, action: *action, stages: sub }
        }
        StageConfig::Multiline { .. } => unreachable!("handled by Pipeline::new"),
        StageConfig::Level { label, source, default } => {
            if !crate::relabel::is_valid_label_name(label) {
                return Err(err(format!("{label:?} is not a valid label name")));
            }
            Stage::Level { label: label.clone(), source: source.clone(), default: default.clone() }
        }
    })
}

fn run_stages(stages: &[Stage], rec: &mut Record, stats: &StageStats) -> bool {
    for s in stages {
        match s {
            Stage::Regex { re, names, source } => {
                let Some(text) = rec.source(source) else {
                    stats.error(0);
                    continue;
                };
                match re.captures(text) {
                    Some(caps) => {
                        let found: Vec<(String, String)> = names
                            .iter()
                            .filter_map(|n| caps.name(n).map(|m| (n.clone(), m.as_str().to_string())))
                            .collect();
                        for (k, v) in found {
                            rec.set_field(&k, v);
                        }
                    }
                    None => stats.error(0),
                }
            }
            Stage::Json { paths, source } => {
                let Some(text) = rec.source(source) else {
                    stats.error(1);
                    continue;
                };
                match serde_json::from_str::<serde_json::Value>(text) {
                    Ok(serde_json::Value::Object(map)) => {
                        if paths.is_empty() {
                            for (k, v) in &map {
                                rec.set_field(k, json_text(v));
                            }
                        } else {
                            for (name, path) in paths {
                                let mut v = map.get(&path[0]);
                                for key in &path[1..] {
                                    v = v.and_then(|v| v.get(key));
                                }
                                if let Some(v) = v {
                                    rec.set_field(name, json_text(v));
                                }
                            }
                        }
                    }
                    _ => stats.error(1),
                }
            }
            Stage::Logfmt { mapping, source } => {
                let Some(text) = rec.source(source) else {
                    stats.error(2);
                    continue;
                };
                let mut found: Vec<(String, String)> = Vec::new();
                let ok = visit_logfmt(text, &mut |k, v| {
                    if mapping.is_empty() {
                        found.push((k.to_string(), v.into_owned()));
                    } else {
                        for (name, key) in mapping {
                            if key == k {
                                found.push((name.clone(), v.to_string()));
                            }
                        }
                    }
                });
                if !ok {
                    stats.error(2);
                }
                for (k, v) in found {
                    rec.set_field(&k, v);
                }
            }
            Stage::Labels(values) => {
                for (label, field) in values {
                    if let Some(v) = rec.field(field).map(str::to_string) {
                        rec.labels.set(label.clone(), v);
                    }
                }
            }
            Stage::Static(values) => {
                for (k, v) in values {
                    rec.labels.set(k.clone(), v.clone());
                }
            }
            Stage::Timestamp { source, formats, zone } => {
                let parsed = rec.field(source).and_then(|v| formats.iter().find_map(|f| f.parse(v.trim(), zone)));
                match parsed {
                    Some(ns) => rec.timestamp_ns = ns,
                    None => stats.error(4),
                }
            }
            Stage::Output(source) => match rec.field(source) {
                Some(v) => rec.line = v.to_string(),
                None => stats.error(5),
            },
            Stage::Drop { source, re, value, older_than, longer_than } => {
                let Some(text) = rec.source(source) else { continue };
                let mut drop = true;
                if let Some(re) = re {
                    drop &= re.is_match(text);
                }
                if let Some(v) = value {
                    drop &= text == v;
                }
                if let Some(n) = longer_than {
                    drop &= text.len() > *n;
                }
                if let Some(age) = older_than {
                    let now = crate::sample::now_ms() as i128 * 1_000_000;
                    drop &= (rec.timestamp_ns as i128) < now - age.as_nanos() as i128;
                }
                if drop {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
            }
            Stage::Match { selector, action, stages } => {
                if selector.matches(&rec.labels) {
                    if *action == MatchAction::Drop {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                        return false;
                    }
                    if !run_stages(stages, rec, stats) {
                        return false;
                    }
                }
            }
            Stage::Level { label, source, default } => {
                let found = match source {
                    Some(f) => rec.field(f).and_then(normalize_level),
                    None => ["level", "lvl", "severity"]
                        .iter()
                        .find_map(|f| rec.field(f))
                        .and_then(normalize_level)
                        .or_else(|| find_level(&rec.line)),
                };
                match found {
                    Some(l) => rec.labels.set(label.clone(), l),
                    None => {
                        stats.error(9);
                        if !default.is_empty() {
                            rec.labels.set(label.clone(), default.clone());
                        }
                    }
                }
            }
        }
    }
    true
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Parses logfmt pairs; false when the input was malformed (an unclosed
/// quote or a key without a name), with the pairs read up to there.
pub fn parse_logfmt(text: &str) -> (Vec<(String, String)>, bool) {
    let mut out = Vec::new();
    let ok = visit_logfmt(text, &mut |k, v| out.push((k.to_string(), v.into_owned())));
    (out, ok)
}

/// Calls `f` with each logfmt pair without copying unquoted values; false
/// when the input was malformed.
pub fn visit_logfmt<'a>(text: &'a str, f: &mut dyn FnMut(&'a str, std::borrow::Cow<'a, str>)) -> bool {
    use std::borrow::Cow;
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b' ' {
            i += 1;
        }
        let key = &text[ks..i];
        if key.is_empty() {
            return false;
        }
        if i >= b.len() || b[i] == b' ' {
            f(key, Cow::Borrowed(""));
            continue;
        }
        i += 1; // '='
        if i < b.len() && b[i] == b'"' {
            i += 1;
            let vs = i;
            let mut owned: Option<String> = None;
            let mut chunk = i;
            let mut closed = false;
            while i < b.len() {
                match b[i] {
                    b'\\' if i + 1 < b.len() && b[i + 1].is_ascii() => {
                        let v = owned.get_or_insert_with(String::new);
                        v.push_str(&text[chunk..i]);
                        v.push(match b[i + 1] {
                            b'n' => '\n',
                            b't' => '\t',
                            c => c as char,
                        });
                        i += 2;
                        chunk = i;
                    }
                    b'"' => {
                        closed = true;
                        break;
                    }
                    _ => i += 1,
                }
            }
            if !closed {
                return false;
            }
            let value = match owned {
                Some(mut v) => {
                    v.push_str(&text[chunk..i]);
                    Cow::Owned(v)
                }
                None => Cow::Borrowed(&text[vs..i]),
            };
            i += 1; // closing quote
            f(key, value);
        } else {
            let vs = i;
            while i < b.len() && b[i] != b' ' {
                i += 1;
            }
            f(key, Cow::Borrowed(&text[vs..i]));
        }
    }
    true
}

/// Normalises a level word (or a pino/bunyan number) to debug, info, warn,
/// error or fatal.
pub fn normalize_level(word: &str) -> Option<&'static str> {
    let w = word.trim();
    if w.len() > 13 {
        return None;
    }
    let mut buf = [0u8; 13];
    for (i, c) in w.bytes().enumerate() {
        buf[i] = c.to_ascii_lowercase();
    }
    Some(match &buf[..w.len()] {
        b"trace" | b"debug" | b"dbg" | b"verbose" => "debug",
        b"info" | b"information" | b"informational" | b"notice" | b"inf" => "info",
        b"warn" | b"warning" | b"wrn" => "warn",
        b"error" | b"err" | b"eror" | b"severe" => "error",
        b"fatal" | b"critical" | b"crit" | b"panic" | b"dpanic" | b"emerg" | b"emergency" | b"alert" | b"ftl" => {
            "fatal"
        }
        // pino/bunyan numeric levels.
        b"10" | b"20" => "debug",
        b"30" => "info",
        b"40" => "warn",
        b"50" => "error",
        b"60" => "fatal",
        _ => return None,
    })
}

/// Finds the level in a line: a JSON `"level": "x"`, a logfmt `level=x`, a
/// bracketed `[ERROR]`, or one of the first words (`ERROR`, `WARN:`).
pub fn find_level(line: &str) -> Option<&'static str> {
    let head = &line[..floor_char_boundary(line, 512)];
    for (key, quoted) in [("level", "\"level\""), ("lvl", "\"lvl\""), ("severity", "\"severity\"")] {
        // JSON: "level" : "value"
        if let Some(p) = head.find(quoted) {
            let rest = head[p + quoted.len()..].trim_start();
            if let Some(rest) = rest.strip_prefix(':') {
                let rest = rest.trim_start();
                if let Some(rest) = rest.strip_prefix('"') {
                    if let Some(end) = rest.find('"') {
                        if let Some(l) = normalize_level(&rest[..end]) {
                            return Some(l);
                        }
                    }
                } else {
                    // pino and bunyan (Node.js) write numeric levels.
                    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
                    if let Some(l) = normalize_level(&rest[..end]) {
                        return Some(l);
                    }
                }
            }
        }
        // logfmt: level=value at the start or after a space.
        let mut from = 0;
        while let Some(p) = head[from..].find(key) {
            let at = from + p;
            from = at + key.len();
            if at > 0 && !matches!(head.as_bytes()[at - 1], b' ' | b'\t') {
                continue;
            }
            if let Some(rest) = head[from..].strip_prefix('=') {
                let rest = rest.trim_start_matches('"');
                let end = rest.find([' ', '"']).unwrap_or(rest.len());
                if let Some(l) = normalize_level(&rest[..end]) {
                    return Some(l);
                }
            }
        }
    }
    // [ERROR], [warn ], <info>
    let mut rest = head;
    while let Some(p) = rest.find('[') {
        rest = &rest[p + 1..];
        if let Some(end) = rest.find(']') {
            if let Some(l) = normalize_level(&rest[..end]) {
                return Some(l);
            }
        }
    }
    // A leading word among the first few: "2024-01-01 12:00:00 ERROR something".
    for word in head.split_ascii_whitespace().take(6) {
        let w = word.trim_end_matches([':', ',', '|']);
        if w.len() >= 3 && w.bytes().all(|c| c.is_ascii_uppercase()) {
            if let Some(l) = normalize_level(w) {
                return Some(l);
            }
        }
    }
    None
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn parse_offset(z: &str) -> Option<FixedOffset> {
    let (sign, rest) = match z.as_bytes().first()? {
        b'+' => (1, &z[1..]),
        b'-' => (-1, &z[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let h: i32 = digits[..2].parse().ok()?;
    let m: i32 = digits[2..].parse().ok()?;
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

/// A timestamp format.
#[derive(Debug, Clone)]
enum TsFormat {
    Rfc3339,
    Unix,
    UnixMs,
    UnixUs,
    UnixNs,
    Layout(String),
}

impl TsFormat {
    fn from_name(name: &str) -> TsFormat {
        match name {
            "RFC3339" | "RFC3339Nano" | "rfc3339" | "rfc3339nano" => TsFormat::Rfc3339,
            "Unix" | "unix" => TsFormat::Unix,
            "UnixMs" | "unix_ms" => TsFormat::UnixMs,
            "UnixUs" | "unix_us" => TsFormat::UnixUs,
            "UnixNs" | "unix_ns" => TsFormat::UnixNs,
            layout => TsFormat::Layout(layout.to_string()),
        }
    }

    /// Unix nanoseconds of `v`, or None when `v` is not in this format.
    fn parse(&self, v: &str, zone: &FixedOffset) -> Option<i64> {
        let int = |mult: i64| v.parse::<i64>().ok().and_then(|n| n.checked_mul(mult));
        match self {
            TsFormat::Rfc3339 => DateTime::parse_from_rfc3339(v).ok()?.timestamp_nanos_opt(),
            TsFormat::Unix => {
                let (s, frac) = v.split_once('.').unwrap_or((v, ""));
                let secs: i64 = s.parse().ok()?;
                if frac.len() > 9 || !frac.bytes().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                let nanos: i64 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().ok()? };
                secs.checked_mul(1_000_000_000)?.checked_add(if secs < 0 { -nanos } else { nanos })
            }
            TsFormat::UnixMs => int(1_000_000),
            TsFormat::UnixUs => int(1_000),
            TsFormat::UnixNs => int(1),
            TsFormat::Layout(layout) => {
                if let Ok(t) = DateTime::parse_from_str(v, layout) {
                    return t.timestamp_nanos_opt();
                }
                let naive = NaiveDateTime::parse_from_str(v, layout).ok()?;
                zone.from_local_datetime(&naive).single()?.timestamp_nanos_opt()
            }
        }
    }
}

/// A Loki-style label selector: `{a="b", c!="d", e=~"re", f!~"re"}`.
#[derive(Debug)]
pub struct Selector {
    matchers: Vec<(String, Op, String, Option<Regex>)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Re,
    Nre,
}

impl Selector {
    /// Parses a selector.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let t = text.trim();
        let inner = t
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .ok_or_else(|| format!("{text:?} is not a selector like {{app=\"x\"}}"))?;
        let mut matchers = Vec::new();
        let mut rest = inner.trim();
        while !rest.is_empty() {
            let name_end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            let name = &rest[..name_end];
            if name.is_empty() {
                return Err(format!("expected a label name at {rest:?}"));
            }
            rest = rest[name_end..].trim_start();
            let (op, len) = if rest.starts_with("=~") {
                (Op::Re, 2)
            } else if rest.starts_with("!~") {
                (Op::Nre, 2)
            } else if rest.starts_with("!=") {
                (Op::Ne, 2)
            } else if rest.starts_with('=') {
                (Op::Eq, 1)
            } else {
                return Err(format!("expected =, !=, =~ or !~ after {name:?}"));
            };
            rest = rest[len..].trim_start();
            let body = rest.strip_prefix('"').ok_or_else(|| format!("the value of {name:?} must be quoted"))?;
            let mut value = String::new();
            let mut chars = body.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or_else(|| format!("unclosed quote in the value of {name:?}"))?;
            rest = body[end + 1..].trim_start();
            rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
            let re = match op {
                Op::Re | Op::Nre => Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| format!("{name}: {e}"))?),
                _ => None,
            };
            matchers.push((name.to_string(), op, value, re));
        }
        if matchers.is_empty() {
            return Err("a selector needs at least one matcher".into());
        }
        Ok(Selector { matchers })
    }

    /// Whether `labels` satisfy every matcher (a missing label is "").
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matchers.iter().all(|(name, op, value, re)| {
            let v = labels.get(name).unwrap_or("");
            match op {
                Op::Eq => v == value,
                Op::Ne => v != value,
                Op::Re => re.as_ref().is_some_and(|r| r.is_match(v)),
                Op::Nre => re.as_ref().is_some_and(|r| !r.is_match(v)),
            }
        })
    }
}

/// Joins continuation lines (those not matching `firstline`) to the record
/// before them. Each record carries the acknowledgement value of its last
/// line, so positions never move past a record still being assembled.
#[derive(Debug, Default)]
pub struct MultilineState {
    buf: String,
    lines: usize,
    started: Option<Instant>,
    read_ns: i64,
    ack: u64,
}

/// A finished multiline record: text, read time, acknowledgement value.
pub type Joined = (String, i64, u64);

impl MultilineState {
    /// Adds a line; returns the record it completed, if any.
    pub fn push(&mut self, cfg: &Multiline, line: String, read_ns: i64, ack: u64) -> Option<Joined> {
        if cfg.firstline.is_match(&line) || self.started.is_none() {
            let done = self.take();
            self.buf = line;
            self.lines = 1;
            self.started = Some(Instant::now());
            self.read_ns = read_ns;
            self.ack = ack;
            return done;
        }
        self.buf.push('\n');
        self.buf.push_str(&line);
        self.lines += 1;
        self.ack = ack;
        if self.lines >= cfg.max_lines {
            return self.take();
        }
        None
    }

    /// The pending record if it has waited `max_wait`.
    pub fn due(&mut self, cfg: &Multiline, now: Instant) -> Option<Joined> {
        match self.started {
            Some(t) if now.duration_since(t) >= cfg.max_wait => self.take(),
            _ => None,
        }
    }

    /// The pending record, whatever its age.
    pub fn take(&mut self) -> Option<Joined> {
        self.started.take()?;
        self.lines = 0;
        Some((std::mem::take(&mut self.buf), self.read_ns, self.ack))
    }
}

#[cfg(test)]
mod tests;
