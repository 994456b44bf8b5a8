//! Parsers for the Prometheus text format 0.0.4 and OpenMetrics 1.0 text.
//!
//! The parser walks the body once and hands each sample to a callback with
//! its name and label values borrowed from the body (copied only where an
//! escape had to be undone), so memory stays bounded by the body and the
//! callback's own output. It never panics: every malformed input becomes a
//! [`ParseError`] naming the line.
//!
//! A [`Handler`] may know a series from an earlier body: the parser asks it
//! with the series' raw text (`name{labels}` as written) before reading the
//! labels, and for a known series reads only the value and timestamp. That
//! is the scrape cache's fast path. A body can also be fed in pieces of
//! whole lines as it arrives ([`Stream`]).
//!
//! OpenMetrics has two levels: the syntax (always checked, as Prometheus
//! does) and the spec's rules on families (counter values, histogram
//! buckets, grouping, metadata placement...), checked when `strict` is set.
//! Prometheus itself does not check the latter, so scraping uses the
//! syntax level to store exactly what Prometheus would.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use crate::sample::MetricType;

/// Which text format a body is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`, and anything not OpenMetrics.
    Prometheus,
    /// `application/openmetrics-text`.
    OpenMetrics,
}

/// The Accept header Prometheus 2.42 sends.
pub const ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

impl Format {
    /// The format of a response by its Content-Type, as Prometheus picks it:
    /// OpenMetrics for `application/openmetrics-text`, else the 0.0.4 text.
    pub fn from_content_type(content_type: &str) -> Format {
        let media = content_type.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}

/// A body that could not be parsed: the 1-based line and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("parse error at line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
    /// Samples read before the error (Prometheus reports them in
    /// `scrape_samples_scraped` of a failed scrape).
    pub samples_before: usize,
}

/// One item of a body, handed to the parse callback.
#[derive(Debug)]
pub enum Event<'a, 'b> {
    /// `# HELP <family> <text>`, text unescaped.
    Help { family: &'a str, text: Cow<'a, str> },
    /// `# TYPE <family> <type>`.
    Type { family: &'a str, kind: MetricType },
    /// `# UNIT <family> <unit>` (OpenMetrics).
    Unit { family: &'a str, unit: &'a str },
    /// A sample. `series` is its name and label set as written in the
    /// body (the scrape cache's key). `labels` may hold empty values (an
    /// empty value means the label is absent). `timestamp_ms` is set when
    /// the line carries one.
    Sample {
        name: &'a str,
        series: &'a [u8],
        labels: &'b [(&'a str, Cow<'a, str>)],
        value: f64,
        timestamp_ms: Option<i64>,
    },
    /// A sample of the series the handler just said it knows
    /// ([`Handler::known`]): its labels were not read.
    Known { name: &'a str, value: f64, timestamp_ms: Option<i64> },
}

/// What a parse hands its items to.
pub trait Handler<'a> {
    /// Whether the handler knows `series` (a sample's `name{labels}` as
    /// written) from an earlier body: then the parser skips its labels and
    /// reports the sample as [`Event::Known`]. Asked only for a series
    /// whose label set is closed; never in strict mode, whose checks need
    /// the labels.
    fn known(&mut self, _series: &'a [u8]) -> bool {
        false
    }

    /// Whether the handler wants nothing more of the body: the parse stops
    /// after the sample just handed over. Asked after every sample.
    fn stopped(&self) -> bool {
        false
    }

    /// One item of the body, in order.
    fn event(&mut self, event: Event<'a, '_>);
}

/// A closure as a handler that knows no series.
struct Closure<F>(F);

impl<'a, F: FnMut(Event<'a, '_>)> Handler<'a> for Closure<F> {
    fn event(&mut self, event: Event<'a, '_>) {
        (self.0)(event)
    }
}

/// Parses `body` in `format`, calling `on` for every item in order.
/// Returns the number of samples. With `strict`, OpenMetrics bodies must
/// also follow the spec's rules on families (see the module doc).
pub fn parse<'a>(
    body: &'a [u8],
    format: Format,
    strict: bool,
    on: impl FnMut(Event<'a, '_>),
) -> Result<usize, ParseError> {
    let mut stream = Stream::new(format, strict);
    stream.feed(body, &mut Closure(on))?;
    stream.finish()
}

/// A parse fed a body in pieces as it arrives, each piece whole lines
/// (ending in a newline; only the last piece of a body may lack it). What
/// a piece's events borrow lives as long as the piece.
pub struct Stream {
    format: Format,
    state: State,
}

/// What a parse carries from one piece to the next.
struct State {
    line: usize,
    samples: usize,
    om: Option<Box<Strict>>,
    /// The OpenMetrics `# EOF` line was read.
    eof: bool,
}

impl Stream {
    /// A parse of one body in `format` (`strict`: see [`parse`]).
    pub fn new(format: Format, strict: bool) -> Stream {
        let om = (format == Format::OpenMetrics && strict).then(Box::default);
        Stream { format, state: State { line: 0, samples: 0, om, eof: false } }
    }

    /// Parses the next piece of the body.
    pub fn feed<'a>(&mut self, piece: &'a [u8], on: &mut impl Handler<'a>) -> Result<(), ParseError> {
        let mut p = Parser { st: &mut self.state, labels: Vec::new() };
        let result = match self.format {
            Format::Prometheus => p.parse_text(piece, on),
            Format::OpenMetrics => p.parse_openmetrics(piece, on),
        };
        result.map_err(|message| self.error(message))
    }

    /// Samples read so far.
    pub fn samples(&self) -> usize {
        self.state.samples
    }

    /// Ends the body; returns the number of samples.
    pub fn finish(mut self) -> Result<usize, ParseError> {
        if self.format == Format::OpenMetrics {
            if !self.state.eof {
                self.state.line += 1;
                return Err(self.error("missing # EOF at the end".into()));
            }
            if let Some(om) = self.state.om.as_mut() {
                if let Err(message) = om.finish() {
                    return Err(self.error(message));
                }
            }
        }
        Ok(self.state.samples)
    }

    fn error(&self, message: String) -> ParseError {
        ParseError { line: self.state.line, message, samples_before: self.state.samples }
    }
}

struct Parser<'a, 's> {
    st: &'s mut State,
    labels: Vec<(&'a str, Cow<'a, str>)>,
}

/// Length of the label set at the start of `s` (`{` through its `}`),
/// found without reading the labels: the first `}` outside quotes. Where
/// the labels are valid it is where their parse ends. None when no `}`
/// closes the set.
fn label_set_len(s: &[u8]) -> Option<usize> {
    let mut quoted = false;
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'}' if !quoted => return Some(i + 1),
            _ => {}
        }
        i += 1;
    }
    None
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

fn is_label_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_label_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The body between `start` and `end` as text; the parsers only slice at
/// ASCII bytes, so this fails only on invalid UTF-8.
fn text(line: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(line).map_err(|_| "invalid UTF-8".to_string())
}

/// Length of the name at the start of `s` (metric-name characters).
fn name_len(s: &[u8], start: fn(u8) -> bool, rest: fn(u8) -> bool) -> usize {
    match s.first() {
        Some(&c) if start(c) => 1 + s[1..].iter().take_while(|&&c| rest(c)).count(),
        _ => 0,
    }
}

/// Undoes label-value escapes: `\\`, `\"`, `\n`; other backslashes stay.
fn unescape_label(raw: &str) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('n') => out.push('\n'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

/// Undoes HELP escapes: `\\` and `\n` (and `\"` in OpenMetrics).
fn unescape_help(raw: &str, quotes: bool) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quotes => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

/// A float as Prometheus reads it (Go's ParseFloat without hex forms):
/// decimals, exponents, `NaN`, `Inf`, `+Inf`, `-Inf`, `Infinity`, any case.
fn parse_float(s: &str) -> Option<f64> {
    // Rust's parser takes exactly these forms; guard only against the
    // empty string and forms with whitespace, which it also rejects.
    s.parse::<f64>().ok()
}

fn metric_type(s: &str, openmetrics: bool) -> Option<MetricType> {
    Some(match s {
        "counter" => MetricType::Counter,
        "gauge" => MetricType::Gauge,
        "histogram" => MetricType::Histogram,
        "summary" => MetricType::Summary,
        "untyped" if !openmetrics => MetricType::Untyped,
        "unknown" => MetricType::Untyped,
        "gaugehistogram" if openmetrics => MetricType::GaugeHistogram,
        "info" if openmetrics => MetricType::Info,
        "stateset" if openmetrics => MetricType::StateSet,
        _ => return None,
    })
}

impl<'a> Parser<'a, '_> {
    // ----- Prometheus text format 0.0.4 ------------------------------------

    fn parse_text(&mut self, body: &'a [u8], on: &mut impl Handler<'a>) -> Result<(), String> {
        // A piece ends with its last line's newline: no empty line after it.
        let body = body.strip_suffix(b"\n").unwrap_or(body);
        for raw in body.split(|&b| b == b'\n') {
            self.st.line += 1;
            let line = trim_start(raw);
            if line.is_empty() {
                continue;
            }
            if line[0] == b'#' {
                self.text_comment(&line[1..], on)?;
            } else if line.len() != raw.len() {
                // Prometheus keeps leading blanks in the metric name, which
                // then fails as invalid: the whole scrape does. It counts
                // as a scraped sample there.
                self.st.samples += 1;
                return Err(format!("invalid metric name {:?} (leading whitespace)", lossy_head(raw)));
            } else {
                self.text_sample(line, on)?;
                if on.stopped() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// `# HELP`, `# TYPE`, or any other comment (ignored).
    fn text_comment(&mut self, rest: &'a [u8], on: &mut impl Handler<'a>) -> Result<(), String> {
        let rest = trim_start(rest);
        let (keyword, rest) = split_word(rest);
        if keyword != b"HELP" && keyword != b"TYPE" {
            return Ok(());
        }
        // "# HELP" alone, or followed by something not a name, is a comment
        // only if there is nothing after the keyword at all.
        let rest = trim_start(rest);
        let n = name_len(rest, is_name_start, is_name_char);
        if n == 0 {
            return Err(format!("expected a metric name after # {}", String::from_utf8_lossy(keyword)));
        }
        let family = text(&rest[..n])?;
        let after = &rest[n..];
        if !after.is_empty() && after[0] != b' ' && after[0] != b'\t' {
            return Err(format!("invalid metric name in # {} line", String::from_utf8_lossy(keyword)));
        }
        let after = trim_start(after);
        if keyword == b"HELP" {
            let help = text(after)?;
            on.event(Event::Help { family, text: unescape_help(help, false) });
        } else {
            let t = text(trim_end(after))?;
            let kind = metric_type(t, false).ok_or_else(|| format!("unknown metric type {t:?}"))?;
            on.event(Event::Type { family, kind });
        }
        Ok(())
    }

    fn text_sample(&mut self, line: &'a [u8], on: &mut impl Handler<'a>) -> Result<(), String> {
        let n = name_len(line, is_name_start, is_name_char);
        if n == 0 {
            return Err(format!("invalid metric name at {:?}", lossy_head(line)));
        }
        let name = text(&line[..n])?;
        let mut rest = trim_start(&line[n..]);
        let has_labels = rest.first() == Some(&b'{');
        if !has_labels && rest.len() == line.len() - n {
            return Err("expected a space or '{' after the metric name".into());
        }
        let scanned = if has_labels { label_set_len(rest).map(|l| line.len() - rest.len() + l) } else { Some(n) };
        let known = match scanned {
            Some(end) if self.st.om.is_none() => on.known(&line[..end]),
            _ => false,
        };
        let series_end = match scanned {
            Some(end) if known => {
                rest = &line[end..];
                end
            }
            _ if has_labels => {
                self.labels.clear();
                rest = self.text_labels(&rest[1..])?;
                line.len() - rest.len()
            }
            _ => {
                self.labels.clear();
                n
            }
        };
        let rest = trim_start(rest);
        let (value, rest) = split_word(rest);
        if value.is_empty() {
            return Err(format!("missing value for {name}"));
        }
        let value_text = text(value)?;
        let value = parse_float(value_text).ok_or_else(|| format!("invalid value {value_text:?} for {name}"))?;
        let rest = trim_start(rest);
        let timestamp_ms = if rest.is_empty() {
            None
        } else {
            let (ts, rest) = split_word(rest);
            if !trim_start(rest).is_empty() {
                return Err(format!("unexpected text after the timestamp of {name}"));
            }
            let ts_text = text(ts)?;
            Some(ts_text.parse::<i64>().map_err(|_| format!("invalid timestamp {ts_text:?} for {name}"))?)
        };
        self.st.samples += 1;
        if known {
            on.event(Event::Known { name, value, timestamp_ms });
        } else {
            on.event(Event::Sample { name, series: &line[..series_end], labels: &self.labels, value, timestamp_ms });
        }
        Ok(())
    }

    /// Labels after `{`, 0.0.4 style: whitespace allowed around tokens, a
    /// trailing comma allowed. Returns what follows the `}`.
    fn text_labels(&mut self, mut s: &'a [u8]) -> Result<&'a [u8], String> {
        loop {
            s = trim_start(s);
            match s.first() {
                None => return Err("unterminated label set".into()),
                Some(b'}') => return Ok(&s[1..]),
                _ => {}
            }
            let n = name_len(s, is_label_start, is_label_char);
            if n == 0 {
                return Err(format!("invalid label name at {:?}", lossy_head(s)));
            }
            let lname = text(&s[..n])?;
            s = trim_start(&s[n..]);
            if s.first() != Some(&b'=') {
                return Err(format!("expected '=' after label name {lname}"));
            }
            s = trim_start(&s[1..]);
            let (value, after) = quoted(s).ok_or_else(|| format!("expected a quoted value for label {lname}"))?;
            self.push_label(lname, value)?;
            s = trim_start(after);
            match s.first() {
                Some(b',') => s = &s[1..],
                Some(b'}') => return Ok(&s[1..]),
                _ => return Err(format!("expected ',' or '}}' after the value of label {lname}")),
            }
        }
    }

    fn push_label(&mut self, name: &'a str, raw: &'a [u8]) -> Result<(), String> {
        let raw = text(raw).map_err(|_| format!("invalid UTF-8 in the value of label {name}"))?;
        if self.labels.iter().any(|(n, _)| *n == name) {
            return Err(format!("label {name} appears twice"));
        }
        self.labels.push((name, unescape_label(raw)));
        Ok(())
    }

    // ----- OpenMetrics 1.0 text ---------------------------------------------

    fn parse_openmetrics(&mut self, body: &'a [u8], on: &mut impl Handler<'a>) -> Result<(), String> {
        let mut rest = body;
        while !rest.is_empty() {
            if self.st.eof {
                // The error names the # EOF line.
                return Err("text after # EOF".into());
            }
            self.st.line += 1;
            let (line, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            rest = next;
            if line == b"# EOF" {
                // Strict checks of the last family wait for the end of the
                // body: text after # EOF is reported first.
                self.st.eof = true;
                continue;
            }
            if line.is_empty() {
                return Err("blank line".into());
            }
            if line[0] == b'#' {
                self.om_metadata(line, on)?;
            } else {
                self.om_sample(line, on)?;
                if on.stopped() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn om_metadata(&mut self, line: &'a [u8], on: &mut impl Handler<'a>) -> Result<(), String> {
        let (keyword, rest) = if let Some(r) = line.strip_prefix(b"# HELP ") {
            ("HELP", r)
        } else if let Some(r) = line.strip_prefix(b"# TYPE ") {
            ("TYPE", r)
        } else if let Some(r) = line.strip_prefix(b"# UNIT ") {
            ("UNIT", r)
        } else {
            return Err(format!(
                "invalid line {:?}: '#' starts only # HELP, # TYPE, # UNIT or # EOF",
                lossy_head(line)
            ));
        };
        let n = name_len(rest, is_name_start, is_name_char);
        if n == 0 {
            return Err(format!("expected a metric name after # {keyword}"));
        }
        let family = text(&rest[..n])?;
        let after = &rest[n..];
        if after.first() != Some(&b' ') {
            return Err(format!("expected a space after the name in # {keyword} {family}"));
        }
        let after = text(&after[1..])?;
        match keyword {
            "HELP" => {
                if let Some(om) = self.st.om.as_mut() {
                    om.metadata(family, 'h', None)?;
                }
                on.event(Event::Help { family, text: unescape_help(after, true) });
            }
            "TYPE" => {
                let kind = metric_type(after, true).ok_or_else(|| format!("unknown metric type {after:?}"))?;
                if let Some(om) = self.st.om.as_mut() {
                    om.metadata(family, 't', Some(kind))?;
                }
                on.event(Event::Type { family, kind });
            }
            _ => {
                if after.bytes().any(|c| !is_label_char(c)) {
                    return Err(format!("invalid unit {after:?}"));
                }
                if let Some(om) = self.st.om.as_mut() {
                    om.metadata(family, 'u', None)?;
                    if !after.is_empty() && !family.ends_with(&format!("_{after}")) {
                        return Err(format!("metric {family} must end in _{after} to have unit {after}"));
                    }
                    om.unit = !after.is_empty();
                    om.check_unit_type()?;
                }
                on.event(Event::Unit { family, unit: after });
            }
        }
        Ok(())
    }

    fn om_sample(&mut self, line: &'a [u8], on: &mut impl Handler<'a>) -> Result<(), String> {
        let n = name_len(line, is_name_start, is_name_char);
        if n == 0 {
            return Err(format!("invalid metric name at {:?}", lossy_head(line)));
        }
        let name = text(&line[..n])?;
        let mut rest = &line[n..];
        let has_labels = rest.first() == Some(&b'{');
        let scanned = if has_labels { label_set_len(rest).map(|l| n + l) } else { Some(n) };
        let known = match scanned {
            Some(end) if self.st.om.is_none() => on.known(&line[..end]),
            _ => false,
        };
        let series_end = match scanned {
            Some(end) if known => {
                rest = &line[end..];
                end
            }
            _ => {
                self.labels.clear();
                if has_labels {
                    rest = self.om_labels(&rest[1..], false)?;
                }
                line.len() - rest.len()
            }
        };
        let rest = rest.strip_prefix(b" ").ok_or_else(|| format!("expected one space before the value of {name}"))?;
        let (value_b, rest) = split_at_space(rest);
        let value_text = text(value_b)?;
        let value = om_number(value_text).ok_or_else(|| format!("invalid value {value_text:?} for {name}"))?;
        let mut timestamp_ms = None;
        let mut exemplar = None;
        let mut rest = rest;
        if let Some(r) = rest.strip_prefix(b" ") {
            if r.starts_with(b"#") {
                exemplar = Some(r);
                rest = b"";
            } else {
                let (ts, after) = split_at_space(r);
                timestamp_ms = Some(om_timestamp(text(ts)?)?);
                rest = after;
                if let Some(r) = rest.strip_prefix(b" ") {
                    exemplar = Some(r);
                    rest = b"";
                }
            }
        }
        if !rest.is_empty() {
            return Err(format!("unexpected text after the value of {name}"));
        }
        if let Some(ex) = exemplar {
            self.om_exemplar(ex, name)?;
        }
        if let Some(om) = self.st.om.as_mut() {
            om.sample(name, &self.labels, value, timestamp_ms, exemplar.is_some())?;
        }
        self.st.samples += 1;
        if known {
            on.event(Event::Known { name, value, timestamp_ms });
        } else {
            on.event(Event::Sample { name, series: &line[..series_end], labels: &self.labels, value, timestamp_ms });
        }
        Ok(())
    }

    /// Labels after `{`, OpenMetrics style: `a="1",b="2"` with no spaces and
    /// no trailing comma. Returns what follows the `}`. Exemplar labels go
    /// to a scratch list when `exemplar` is set (they are not forwarded).
    fn om_labels(&mut self, mut s: &'a [u8], exemplar: bool) -> Result<&'a [u8], String> {
        if let Some(r) = s.strip_prefix(b"}") {
            return Ok(r);
        }
        let mut exemplar_chars = 0usize;
        let mut seen: Vec<&str> = Vec::new();
        loop {
            let n = name_len(s, is_label_start, is_label_char);
            if n == 0 {
                return Err(format!("invalid label name at {:?}", lossy_head(s)));
            }
            let lname = text(&s[..n])?;
            s = s[n..].strip_prefix(b"=").ok_or_else(|| format!("expected '=' after label name {lname}"))?;
            let (value, after) = quoted(s).ok_or_else(|| format!("expected a quoted value for label {lname}"))?;
            if exemplar {
                let v = text(value)?;
                if seen.contains(&lname) {
                    return Err(format!("exemplar label {lname} appears twice"));
                }
                seen.push(lname);
                exemplar_chars += lname.chars().count() + unescape_label(v).chars().count();
            } else {
                self.push_label(lname, value)?;
            }
            s = after;
            match s.first() {
                Some(b',') => s = &s[1..],
                Some(b'}') => {
                    if exemplar && exemplar_chars > 128 && self.st.om.is_some() {
                        return Err("exemplar labels longer than 128 characters".into());
                    }
                    return Ok(&s[1..]);
                }
                _ => return Err(format!("expected ',' or '}}' after the value of label {lname}")),
            }
        }
    }

    /// `# {labels} value [timestamp]`: checked, then dropped.
    fn om_exemplar(&mut self, s: &'a [u8], name: &str) -> Result<(), String> {
        let s = s.strip_prefix(b"# {").ok_or_else(|| format!("invalid exemplar on {name}"))?;
        let rest = self.om_labels(s, true)?;
        let rest = rest.strip_prefix(b" ").ok_or_else(|| format!("expected a value in the exemplar of {name}"))?;
        let (v, rest) = split_at_space(rest);
        om_number(text(v)?).ok_or_else(|| format!("invalid exemplar value on {name}"))?;
        if rest.is_empty() {
            return Ok(());
        }
        let rest = rest.strip_prefix(b" ").unwrap_or(rest);
        let (ts, rest) = split_at_space(rest);
        om_timestamp(text(ts)?).map_err(|e| format!("exemplar of {name}: {e}"))?;
        if !rest.is_empty() {
            return Err(format!("unexpected text after the exemplar of {name}"));
        }
        Ok(())
    }
}

/// An OpenMetrics number: a decimal (no hex, no underscores) or one of the
/// NaN/Inf spellings.
fn om_number(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let digits_start = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let body = &b[digits_start..];
    if body.first().is_some_and(|c| c.is_ascii_digit() || *c == b'.') {
        if body.iter().any(|c| !(c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))) {
            return None;
        }
    } else if !(body.eq_ignore_ascii_case(b"inf")
        || body.eq_ignore_ascii_case(b"infinity")
        || body.eq_ignore_ascii_case(b"nan"))
    {
        return None;
    }
    parse_float(s)
}

/// An OpenMetrics timestamp: seconds (with fraction) to milliseconds.
fn om_timestamp(s: &str) -> Result<i64, String> {
    match om_number(s) {
        Some(t) if t.is_finite() => Ok((t * 1000.0) as i64),
        _ => Err(format!("invalid timestamp {s:?}")),
    }
}

/// A quoted label value at the start of `s`: the raw (still escaped) bytes
/// between the quotes and what follows the closing quote.
fn quoted(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let s = s.strip_prefix(b"\"")?;
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some((&s[..i], &s[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&c| c == b' ' || c == b'\t').count();
    &s[n..]
}

fn trim_end(s: &[u8]) -> &[u8] {
    let n = s.iter().rev().take_while(|&&c| c == b' ' || c == b'\t' || c == b'\r').count();
    &s[..s.len() - n]
}

/// The word at the start of `s` (up to a space or tab) and what follows.
fn split_word(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s.iter().position(|&c| c == b' ' || c == b'\t').unwrap_or(s.len());
    (&s[..n], &s[n..])
}

/// Up to the next space only (OpenMetrics separates with single spaces).
fn split_at_space(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s.iter().position(|&c| c == b' ').unwrap_or(s.len());
    (&s[..n], &s[n..])
}

fn lossy_head(s: &[u8]) -> String {
    String::from_utf8_lossy(&s[..s.len().min(40)]).into_owned()
}

// ----- The OpenMetrics spec's rules on families (strict mode) ------------

/// What strict mode remembers while walking a body.
#[derive(Default)]
struct Strict {
    /// Family names already finished: a family must be contiguous.
    closed: HashSet<String>,
    /// Sample names each declared family may produce, to find clashes.
    claimed: HashMap<String, String>,
    /// The family being read.
    family: String,
    kind: MetricType,
    unit: bool,
    /// Metadata seen for the current family: 'h', 't', 'u'.
    meta: Vec<char>,
    has_samples: bool,
    /// The label group (labels without le/quantile) being read, and the
    /// groups of this family already finished.
    group: Option<String>,
    groups_done: HashSet<String>,
    hist: HistGroup,
    /// Last series (name and labels) and its timestamp, for ordering.
    last_series: String,
    last_ts: Option<Option<i64>>,
}

/// Histogram (and gauge histogram) facts of one label group.
#[derive(Default)]
struct HistGroup {
    last_le: Option<f64>,
    last_bucket: f64,
    inf_bucket: Option<f64>,
    negative_bucket: bool,
    any: bool,
    sum: Option<f64>,
    count: Option<f64>,
}

fn suffixes(kind: MetricType) -> &'static [&'static str] {
    match kind {
        MetricType::Counter => &["_total", "_created"],
        MetricType::Summary => &["", "_sum", "_count", "_created"],
        MetricType::Histogram => &["_bucket", "_sum", "_count", "_created"],
        MetricType::GaugeHistogram => &["_bucket", "_gsum", "_gcount"],
        MetricType::Info => &["_info"],
        MetricType::StateSet | MetricType::Gauge | MetricType::Untyped => &[""],
    }
}

impl Strict {
    /// Starts family `name` (closing the current one).
    fn open(&mut self, name: &str, kind: MetricType) -> Result<(), String> {
        if name == self.family {
            return Err(format!("{name} is not a valid sample name for a family of this type"));
        }
        self.finish()?;
        if self.closed.contains(name) {
            return Err(format!("metric family {name} appears in two places; its lines must be together"));
        }
        if !self.family.is_empty() {
            self.closed.insert(std::mem::take(&mut self.family));
        }
        self.family = name.to_string();
        self.kind = kind;
        self.unit = false;
        self.meta.clear();
        self.has_samples = false;
        self.groups_done.clear();
        self.group = None;
        self.claim()
    }

    /// Records the sample names the current family may produce.
    fn claim(&mut self) -> Result<(), String> {
        let mut names: Vec<String> = suffixes(self.kind).iter().map(|s| format!("{}{s}", self.family)).collect();
        names.push(self.family.clone());
        for n in names {
            match self.claimed.get(&n) {
                Some(owner) if *owner != self.family => {
                    return Err(format!("metric family {} clashes with family {owner} on the name {n}", self.family));
                }
                _ => {
                    self.claimed.insert(n, self.family.clone());
                }
            }
        }
        Ok(())
    }

    fn metadata(&mut self, family: &str, what: char, kind: Option<MetricType>) -> Result<(), String> {
        if family != self.family {
            self.open(family, MetricType::Untyped)?;
        } else if self.has_samples {
            return Err(format!("metadata for {family} after its samples"));
        }
        if self.meta.contains(&what) {
            return Err(format!("repeated metadata for {family}"));
        }
        self.meta.push(what);
        if let Some(kind) = kind {
            self.kind = kind;
            self.claim()?;
            self.check_unit_type()?;
        }
        Ok(())
    }

    fn check_unit_type(&self) -> Result<(), String> {
        if self.unit && matches!(self.kind, MetricType::Info | MetricType::StateSet) {
            return Err(format!("{} of this type cannot have a unit", self.family));
        }
        Ok(())
    }

    fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, Cow<'_, str>)],
        value: f64,
        ts: Option<i64>,
        exemplar: bool,
    ) -> Result<(), String> {
        let suffix = name
            .strip_prefix(self.family.as_str())
            .filter(|s| !self.family.is_empty() && suffixes(self.kind).contains(s));
        let suffix = match suffix {
            Some(s) => s.to_string(),
            None => {
                // A sample outside the current family starts a family of
                // its own with no metadata.
                self.open(name, MetricType::Untyped)?;
                String::new()
            }
        };
        self.has_samples = true;
        let get = |k: &str| labels.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_ref());
        let bad_count = |v: f64| v.is_nan() || v < 0.0;
        let kind = self.kind;
        let fam = self.family.clone();
        match (kind, suffix.as_str()) {
            (MetricType::Counter, "_total") if bad_count(value) => {
                return Err(format!("counter {fam} has value {value}"))
            }
            (MetricType::Summary, "_sum" | "_count") if bad_count(value) => {
                return Err(format!("summary {fam} has {suffix} {value}"))
            }
            (MetricType::Summary, "") => {
                let q = get("quantile").ok_or_else(|| format!("summary {fam} sample without quantile"))?;
                match om_number(q) {
                    Some(q) if (0.0..=1.0).contains(&q) => {}
                    _ => return Err(format!("summary {fam} has invalid quantile {q:?}")),
                }
                if value < 0.0 {
                    return Err(format!("summary {fam} has negative quantile value"));
                }
            }
            (MetricType::Info, _) if value != 1.0 => return Err(format!("info {fam} has value {value}, must be 1")),
            (MetricType::StateSet, _) => {
                if value != 0.0 && value != 1.0 {
                    return Err(format!("stateset {fam} has value {value}, must be 0 or 1"));
                }
                if get(&fam).is_none() {
                    return Err(format!("stateset {fam} sample without a {fam} label"));
                }
            }
            _ => {}
        }
        let allows_exemplar = matches!(
            (kind, suffix.as_str()),
            (MetricType::Counter, "_total") | (MetricType::Histogram | MetricType::GaugeHistogram, "_bucket")
        );
        if exemplar && !allows_exemplar {
            return Err(format!("exemplar not allowed on {name}"));
        }

        // Label groups must be contiguous in histograms and summaries.
        let mut group = String::new();
        for (k, v) in labels {
            if *k != "le" && *k != "quantile" {
                group.push_str(k);
                group.push('=');
                group.push_str(v);
                group.push('\u{0}');
            }
        }
        if self.group.as_deref() != Some(group.as_str()) {
            self.end_group()?;
            if !self.groups_done.insert(group.clone()) {
                return Err(format!("samples of {fam}{{{}}} are not together", group.replace('\u{0}', ",")));
            }
            self.group = Some(group.clone());
        }

        if matches!(kind, MetricType::Histogram | MetricType::GaugeHistogram) {
            let h = &mut self.hist;
            let (sum, count) = if kind == MetricType::Histogram { ("_sum", "_count") } else { ("_gsum", "_gcount") };
            if suffix == "_bucket" {
                let le_text = get("le").ok_or_else(|| format!("histogram bucket {name} without le"))?;
                let le = om_number(le_text).ok_or_else(|| format!("invalid le {le_text:?}"))?;
                if bad_count(value) {
                    return Err(format!("histogram bucket {name} has value {value}"));
                }
                if h.last_le.is_some_and(|last| le <= last) {
                    return Err(format!("histogram {fam} buckets out of order"));
                }
                if h.any && value < h.last_bucket {
                    return Err(format!("histogram {fam} buckets are not cumulative"));
                }
                h.last_le = Some(le);
                h.last_bucket = value;
                h.any = true;
                h.negative_bucket |= le < 0.0;
                if le_text == "+Inf" {
                    h.inf_bucket = Some(value);
                }
            } else if suffix == sum {
                if value.is_nan() || (kind == MetricType::Histogram && value < 0.0) {
                    return Err(format!("histogram {fam} has {sum} {value}"));
                }
                h.sum = Some(value);
            } else if suffix == count {
                if bad_count(value) {
                    return Err(format!("histogram {fam} has {count} {value}"));
                }
                h.count = Some(value);
            }
        }

        // Timestamps of a series must not go back, and a series has them
        // on every line or on none.
        let mut series = String::with_capacity(name.len() + 32);
        series.push_str(name);
        series.push_str(&group);
        for (k, v) in labels.iter().filter(|(k, _)| *k == "le" || *k == "quantile") {
            series.push_str(k);
            series.push_str(v);
        }
        if series == self.last_series {
            match self.last_ts {
                Some(Some(prev)) => match ts {
                    Some(t) if t >= prev => {}
                    _ => return Err(format!("timestamps of {name} go back or are missing")),
                },
                Some(None) => return Err(format!("{name} appears twice")),
                None => {}
            }
        }
        self.last_series = series;
        self.last_ts = Some(ts);
        Ok(())
    }

    /// Checks the histogram facts of the label group just finished.
    fn end_group(&mut self) -> Result<(), String> {
        let h = std::mem::take(&mut self.hist);
        if self.group.is_none() || !matches!(self.kind, MetricType::Histogram | MetricType::GaugeHistogram) {
            return Ok(());
        }
        let fam = &self.family;
        let Some(inf) = h.inf_bucket else {
            return Err(format!("histogram {fam} has no +Inf bucket"));
        };
        if h.sum.is_some() != h.count.is_some() {
            return Err(format!("histogram {fam} needs both a sum and a count, or neither"));
        }
        if h.count.is_some_and(|c| c != inf) {
            return Err(format!("histogram {fam}: count differs from the +Inf bucket"));
        }
        if self.kind == MetricType::Histogram && h.negative_bucket && h.sum.is_some() {
            return Err(format!("histogram {fam} with negative buckets cannot have a sum"));
        }
        if self.kind == MetricType::GaugeHistogram && !h.negative_bucket && h.sum.is_some_and(|s| s < 0.0) {
            return Err(format!("gauge histogram {fam} has a negative sum without negative buckets"));
        }
        Ok(())
    }

    /// Checks what is still open at the end of a family or the body.
    fn finish(&mut self) -> Result<(), String> {
        self.end_group()?;
        self.group = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
