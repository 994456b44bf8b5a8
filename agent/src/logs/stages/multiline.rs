//! The multiline stage: joins continuation lines to the line before. It is
//! stateful, so it runs before the stage list, in the source's reader.

use std::time::{Duration, Instant};

use regex::Regex;

/// Settings of a multiline stage.
#[derive(Clone, Debug)]
pub struct Multiline {
    pub firstline: Regex,
    pub max_lines: usize,
    pub max_wait: Duration,
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
