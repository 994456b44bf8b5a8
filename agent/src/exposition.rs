//! Writes families in the Prometheus text format 0.0.4, for `/metrics` and
//! `vantage collect --once`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::sample::{is_stale, Family, METRIC_NAME};

/// Content-Type of what [`render`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders families as exposition text. Families of the same name coming
/// from different batches are merged under one HELP/TYPE header, as the
/// format requires; staleness markers are not exposed.
pub fn render<'a>(families: impl IntoIterator<Item = &'a Family>, with_timestamps: bool) -> String {
    let mut merged: BTreeMap<&str, Vec<&Family>> = BTreeMap::new();
    for family in families {
        merged.entry(family.name.as_str()).or_default().push(family);
    }
    let mut out = String::with_capacity(merged.len() * 128);
    for (name, parts) in merged {
        // A family whose series all ended has nothing to show, not even a header.
        if parts.iter().flat_map(|f| f.samples.iter()).all(|s| is_stale(s.value)) {
            continue;
        }
        let help = parts.iter().map(|f| f.help.as_str()).find(|h| !h.is_empty()).unwrap_or("");
        let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(out, "# TYPE {name} {}", parts[0].kind.as_text());
        for sample in parts.iter().flat_map(|f| f.samples.iter()).filter(|s| !is_stale(s.value)) {
            out.push_str(sample.labels.metric_name());
            let mut first = true;
            for label in sample.labels.iter().filter(|l| l.name != METRIC_NAME) {
                out.push(if first { '{' } else { ',' });
                first = false;
                let _ = write!(out, "{}=\"{}\"", label.name, escape_label_value(&label.value));
            }
            if !first {
                out.push('}');
            }
            out.push(' ');
            write_value(&mut out, sample.value);
            if with_timestamps {
                let _ = write!(out, " {}", sample.timestamp_ms);
            }
            out.push('\n');
        }
    }
    out
}

/// Writes a float the way Prometheus does: `NaN`, `+Inf`, `-Inf` or the
/// shortest decimal that reads back as the same value.
pub fn write_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{value}");
    }
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label_value(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").into()
}

/// Escapes HELP text: backslash and newline.
pub fn escape_help(help: &str) -> std::borrow::Cow<'_, str> {
    if !help.contains(['\\', '\n']) {
        return help.into();
    }
    help.replace('\\', "\\\\").replace('\n', "\\n").into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{stale_nan, MetricType};

    #[test]
    fn merges_families_and_escapes() {
        let mut a = Family::new("x_total", MetricType::Counter, "Line\none \\ two");
        a.push(&[("k", "v\"q")], 1.5, 0);
        let mut b = Family::new("x_total", MetricType::Counter, "");
        b.push(&[], f64::INFINITY, 0);
        b.push(&[("gone", "1")], stale_nan(), 0);
        let text = render([&a, &b], false);
        assert_eq!(
            text,
            "# HELP x_total Line\\none \\\\ two\n# TYPE x_total counter\nx_total{k=\"v\\\"q\"} 1.5\nx_total +Inf\n"
        );
    }
}
