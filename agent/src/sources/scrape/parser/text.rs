//! The Prometheus text format 0.0.4: `# HELP`/`# TYPE` comments, samples
//! with optional labels and timestamp, whitespace tolerated around tokens.

use super::lex::{
    is_label_char, is_label_start, is_name_char, is_name_start, label_set_len, lossy_head, metric_type, name_len,
    parse_float, quoted, split_word, text, trim_end, trim_start, unescape_help,
};
use super::{Event, Handler, Parser};

impl<'a> Parser<'a, '_> {
    pub(super) fn parse_text(&mut self, body: &'a [u8], on: &mut impl Handler<'a>) -> Result<(), String> {
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
}
