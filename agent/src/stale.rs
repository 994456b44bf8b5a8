//! Staleness markers: when a series present in the previous collection of a
//! source is missing from the current one, the series gets a sample with the
//! stale NaN, as Prometheus writes for a scrape that no longer exposes it.

use std::collections::HashSet;
use std::hash::BuildHasher;

use crate::sample::{stale_nan, Family, Labels, Sample};

/// Remembers the series of the previous collection of one source.
#[derive(Default)]
pub struct StaleTracker {
    /// Hashes of the previous collection's series, to find the missing ones
    /// without cloning every label set; the label sets are kept only for
    /// the series that went missing.
    previous: HashSet<u64>,
    labels: std::collections::HashMap<u64, Labels>,
    hasher: std::collections::hash_map::RandomState,
}

impl StaleTracker {
    /// Appends a family of stale markers (at `timestamp_ms`) for every series
    /// seen last time but absent from `families`, and remembers `families`.
    pub fn mark(&mut self, families: &mut Vec<Family>, timestamp_ms: i64) {
        let mut current = HashSet::with_capacity(self.previous.len());
        for sample in families.iter().flat_map(|f| f.samples.iter()) {
            let h = self.hash(&sample.labels);
            current.insert(h);
            if !self.previous.contains(&h) {
                self.labels.insert(h, sample.labels.clone());
            }
        }
        let mut stale = Family::new("", Default::default(), "");
        for gone in self.previous.difference(&current) {
            if let Some(labels) = self.labels.remove(gone) {
                stale.samples.push(Sample { labels, value: stale_nan(), timestamp_ms });
            }
        }
        if !stale.samples.is_empty() {
            stale.name = stale.samples[0].labels.metric_name().to_string();
            families.push(stale);
        }
        self.previous = current;
    }

    /// Stale markers for every series still remembered (the source is gone).
    pub fn mark_all(&mut self, timestamp_ms: i64) -> Vec<Family> {
        let mut families = Vec::new();
        self.mark(&mut families, timestamp_ms);
        families
    }

    fn hash(&self, labels: &Labels) -> u64 {
        self.hasher.hash_one(labels)
    }
}

/// Staleness state a source stopped by a reload hands to the source that
/// replaces it (see `runtime::Handover`): whatever it is, it can mark every
/// series it still knows stale, for when nothing replaces the source.
pub trait Carry: Send + 'static {
    /// Stale markers (at `timestamp_ms`) for every series still known.
    fn mark_all(&mut self, timestamp_ms: i64) -> Vec<Family>;
    /// The state itself, for the replacement to take back by type.
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send>;
}

impl Carry for StaleTracker {
    fn mark_all(&mut self, timestamp_ms: i64) -> Vec<Family> {
        StaleTracker::mark_all(self, timestamp_ms)
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{is_stale, MetricType};

    fn family(series: &[&str]) -> Vec<Family> {
        let mut f = Family::new("m", MetricType::Gauge, "");
        for s in series {
            f.push(&[("k", s)], 1.0, 1);
        }
        vec![f]
    }

    #[test]
    fn marks_only_what_disappeared() {
        let mut t = StaleTracker::default();
        let mut first = family(&["a", "b"]);
        t.mark(&mut first, 10);
        assert_eq!(first.len(), 1);
        let mut second = family(&["b", "c"]);
        t.mark(&mut second, 20);
        let stale: Vec<&Sample> = second[1].samples.iter().collect();
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].labels.get("k"), Some("a"));
        assert!(is_stale(stale[0].value) && stale[0].timestamp_ms == 20);
        let all = t.mark_all(30);
        assert_eq!(all[0].samples.len(), 2);
    }
}
