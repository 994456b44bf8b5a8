//! OpenMetrics 1.0 text: the syntax (single spaces, `# EOF`, `# UNIT`,
//! exemplars, timestamps in seconds), with the family rules of strict mode
//! called into (see `strict`).

use super::lex::{
    is_label_char, is_label_start, is_name_char, is_name_start, label_set_len, lossy_head, metric_type, name_len,
    parse_float, quoted, split_at_space, text, unescape_help, unescape_label,
};
use super::{Event, Handler, Parser};

impl<'a> Parser<'a, '_> {
    pub(super) fn parse_openmetrics(&mut self, body: &'a [u8], on: &mut impl Handler<'a>) -> Result<(), String> {
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
pub(super) fn om_number(s: &str) -> Option<f64> {
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
