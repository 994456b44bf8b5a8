//! The drop stage: drops lines meeting every condition given (a regex, a
//! value, a length, an age).

use std::sync::atomic::Ordering;
use std::time::Duration;

use regex::Regex;

use super::{Record, StageStats};

#[derive(Debug)]
pub(super) struct DropStage {
    source: Option<String>,
    re: Option<Regex>,
    value: Option<String>,
    older_than: Option<Duration>,
    longer_than: Option<usize>,
}

impl DropStage {
    pub(super) fn new(
        source: &Option<String>,
        expression: &Option<String>,
        value: &Option<String>,
        older_than: Option<Duration>,
        longer_than: Option<usize>,
        here: &str,
    ) -> Result<DropStage, Vec<String>> {
        let err = |m: String| vec![format!("{here}: {m}")];
        let re = match expression {
            Some(e) => Some(Regex::new(e).map_err(|e| err(format!("expression: {e}")))?),
            None => None,
        };
        if re.is_none() && value.is_none() && older_than.is_none() && longer_than.is_none() {
            return Err(err("drop needs at least one of expression, value, older_than, longer_than".into()));
        }
        Ok(DropStage { source: source.clone(), re, value: value.clone(), older_than, longer_than })
    }

    /// False when the record is dropped.
    pub(super) fn run(&self, rec: &mut Record, stats: &StageStats) -> bool {
        let Some(text) = rec.source(&self.source) else { return true };
        let mut drop = true;
        if let Some(re) = &self.re {
            drop &= re.is_match(text);
        }
        if let Some(v) = &self.value {
            drop &= text == v;
        }
        if let Some(n) = self.longer_than {
            drop &= text.len() > n;
        }
        if let Some(age) = self.older_than {
            let now = crate::sample::now_ms() as i128 * 1_000_000;
            drop &= (rec.timestamp_ns as i128) < now - age.as_nanos() as i128;
        }
        if drop {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}
