//! Lexing helpers both text formats share: names, label sets, quoted values,
//! escapes, floats and metric types.

use std::borrow::Cow;

use crate::sample::MetricType;

/// Length of the label set at the start of `s` (`{` through its `}`),
/// found without reading the labels: the first `}` outside quotes. Where
/// the labels are valid it is where their parse ends. None when no `}`
/// closes the set.
pub(super) fn label_set_len(s: &[u8]) -> Option<usize> {
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

pub(super) fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

pub(super) fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

pub(super) fn is_label_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

pub(super) fn is_label_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The body between `start` and `end` as text; the parsers only slice at
/// ASCII bytes, so this fails only on invalid UTF-8.
pub(super) fn text(line: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(line).map_err(|_| "invalid UTF-8".to_string())
}

/// Length of the name at the start of `s` (metric-name characters).
pub(super) fn name_len(s: &[u8], start: fn(u8) -> bool, rest: fn(u8) -> bool) -> usize {
    match s.first() {
        Some(&c) if start(c) => 1 + s[1..].iter().take_while(|&&c| rest(c)).count(),
        _ => 0,
    }
}

/// Undoes label-value escapes: `\\`, `\"`, `\n`; other backslashes stay.
/// The same three escapes as an OpenMetrics HELP text.
pub(super) fn unescape_label(raw: &str) -> Cow<'_, str> {
    unescape_help(raw, true)
}

/// Undoes HELP escapes: `\\` and `\n` (and `\"` in OpenMetrics).
pub(super) fn unescape_help(raw: &str, quotes: bool) -> Cow<'_, str> {
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
pub(super) fn parse_float(s: &str) -> Option<f64> {
    // Rust's parser takes exactly these forms; guard only against the
    // empty string and forms with whitespace, which it also rejects.
    s.parse::<f64>().ok()
}

pub(super) fn metric_type(s: &str, openmetrics: bool) -> Option<MetricType> {
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

/// A quoted label value at the start of `s`: the raw (still escaped) bytes
/// between the quotes and what follows the closing quote.
pub(super) fn quoted(s: &[u8]) -> Option<(&[u8], &[u8])> {
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

pub(super) fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&c| c == b' ' || c == b'\t').count();
    &s[n..]
}

pub(super) fn trim_end(s: &[u8]) -> &[u8] {
    let n = s.iter().rev().take_while(|&&c| c == b' ' || c == b'\t' || c == b'\r').count();
    &s[..s.len() - n]
}

/// The word at the start of `s` (up to a space or tab) and what follows.
pub(super) fn split_word(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s.iter().position(|&c| c == b' ' || c == b'\t').unwrap_or(s.len());
    (&s[..n], &s[n..])
}

/// Up to the next space only (OpenMetrics separates with single spaces).
pub(super) fn split_at_space(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s.iter().position(|&c| c == b' ').unwrap_or(s.len());
    (&s[..n], &s[n..])
}

pub(super) fn lossy_head(s: &[u8]) -> String {
    String::from_utf8_lossy(&s[..s.len().min(40)]).into_owned()
}
