//! The timestamp stage: sets the entry's time from a field, trying each
//! format in turn; the read time stays when none fits.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone};

use super::{Record, StageStats};

#[derive(Debug)]
pub(super) struct TimestampStage {
    source: String,
    formats: Vec<TsFormat>,
    zone: FixedOffset,
}

impl TimestampStage {
    pub(super) fn new(
        source: &str,
        format: &String,
        fallback_formats: &[String],
        location: &Option<String>,
        here: &str,
    ) -> Result<TimestampStage, Vec<String>> {
        let zone = match location.as_deref() {
            None | Some("") | Some("UTC") | Some("utc") | Some("Z") => FixedOffset::east_opt(0).unwrap(),
            Some(z) => parse_offset(z).ok_or_else(|| {
                vec![format!(
                    "{here}: location {z:?}: use \"UTC\" or a fixed offset like \"+02:00\" (zone names are not supported)"
                )]
            })?,
        };
        let formats = std::iter::once(format).chain(fallback_formats).map(|f| TsFormat::from_name(f)).collect();
        Ok(TimestampStage { source: source.to_string(), formats, zone })
    }

    pub(super) fn run(&self, rec: &mut Record, stats: &StageStats) {
        let parsed =
            rec.field(&self.source).and_then(|v| self.formats.iter().find_map(|f| f.parse(v.trim(), &self.zone)));
        match parsed {
            Some(ns) => rec.timestamp_ns = ns,
            None => stats.error(4),
        }
    }
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
