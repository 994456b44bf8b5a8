//! The level stage: finds a line's level (a field, or a search of the line
//! for logfmt, JSON, `[LEVEL]` or a leading word) and sets it, normalised,
//! as a label.

use super::{Record, StageStats};

#[derive(Debug)]
pub(super) struct LevelStage {
    label: String,
    source: Option<String>,
    default: String,
}

impl LevelStage {
    pub(super) fn new(
        label: &str,
        source: &Option<String>,
        default: &str,
        here: &str,
    ) -> Result<LevelStage, Vec<String>> {
        if !crate::relabel::is_valid_label_name(label) {
            return Err(vec![format!("{here}: {label:?} is not a valid label name")]);
        }
        Ok(LevelStage { label: label.to_string(), source: source.clone(), default: default.to_string() })
    }

    pub(super) fn run(&self, rec: &mut Record, stats: &StageStats) {
        let found = match &self.source {
            Some(f) => rec.field(f).and_then(normalize_level),
            None => ["level", "lvl", "severity"]
                .iter()
                .find_map(|f| rec.field(f))
                .and_then(normalize_level)
                .or_else(|| find_level(&rec.line)),
        };
        match found {
            Some(l) => rec.labels.set(self.label.clone(), l),
            None => {
                stats.error(9);
                if !self.default.is_empty() {
                    rec.labels.set(self.label.clone(), self.default.clone());
                }
            }
        }
    }
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
