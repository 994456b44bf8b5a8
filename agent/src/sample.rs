//! The sample model every source produces and every sink consumes.
//!
//! A [`Sample`] carries its full label set, `__name__` included, so that
//! relabeling treats the name like any other label (as Prometheus does).
//! Samples travel grouped in [`Family`]s, which keep the type and help text
//! that the exposition format and remote_write metadata need.

use std::fmt;
use std::sync::Arc;

/// Label holding the metric name.
pub const METRIC_NAME: &str = "__name__";

/// The NaN bit pattern Prometheus uses as a staleness marker.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// A staleness marker value: the series ended at this sample's timestamp.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Whether `value` is exactly the staleness marker (not any other NaN).
pub fn is_stale(value: f64) -> bool {
    value.to_bits() == STALE_NAN_BITS
}

/// Milliseconds since the Unix epoch, the timestamp unit of remote_write.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    now.as_millis() as i64
}

/// Text of a label name or value. Names and most values are short: up to
/// 24 bytes live inline, so a label set costs one allocation (its Vec), not
/// two per label. A scrape of 100,000 series builds over a million labels.
pub type Text = compact_str::CompactString;

/// Label name order: bytewise, as `str` orders, but decided on the first
/// byte inline when it differs, as it mostly does between label names. A
/// scrape compares names millions of times to keep label sets sorted; a
/// call into the C library's memcmp for each was a sixth of the scrape's
/// time with glibc and more with musl's byte-by-byte memcmp.
#[inline]
pub fn name_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.as_bytes().first(), b.as_bytes().first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

/// One label pair.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    pub name: Text,
    pub value: Text,
}

/// A label set, kept sorted by name with unique names and no empty values:
/// the form remote_write requires and Prometheus stores.
///
/// A set is owned (a `Vec`, built and changed in place) or shared (frozen
/// behind an `Arc` by [`Labels::share`]): cloning a shared set costs a
/// reference count, not an allocation. The scrape cache keeps each known
/// series' set shared, so a steady-state scrape hands the same sets to the
/// sinks again without building them. Changing a shared set copies it first.
#[derive(Clone, Default)]
pub struct Labels(Repr);

#[derive(Clone)]
enum Repr {
    Owned(Vec<Label>),
    Shared(Arc<[Label]>),
}

impl Default for Repr {
    fn default() -> Self {
        Repr::Owned(Vec::new())
    }
}

impl Labels {
    /// An empty label set.
    pub fn new() -> Self {
        Labels(Repr::Owned(Vec::new()))
    }

    /// An empty label set with room for `n` labels (builders that know the
    /// count avoid regrowing).
    pub fn with_capacity(n: usize) -> Self {
        Labels(Repr::Owned(Vec::with_capacity(n)))
    }

    /// Builds a label set from pairs; a later pair wins over an earlier one
    /// with the same name, and empty values are dropped.
    pub fn from_pairs<N: Into<Text>, V: Into<Text>>(pairs: impl IntoIterator<Item = (N, V)>) -> Self {
        let mut labels = Labels::new();
        for (name, value) in pairs {
            labels.set(name, value);
        }
        labels
    }

    /// Freezes the set so that its clones share it (one allocation now,
    /// none per clone).
    pub fn share(&mut self) {
        if let Repr::Owned(v) = &mut self.0 {
            self.0 = Repr::Shared(Arc::from(std::mem::take(v)));
        }
    }

    /// Whether clones of this set share it.
    pub fn is_shared(&self) -> bool {
        matches!(self.0, Repr::Shared(_))
    }

    /// The labels in name order.
    pub fn as_slice(&self) -> &[Label] {
        match &self.0 {
            Repr::Owned(v) => v,
            Repr::Shared(a) => a,
        }
    }

    /// The owned form, copying a shared set first.
    fn owned(&mut self) -> &mut Vec<Label> {
        if let Repr::Shared(a) = &self.0 {
            self.0 = Repr::Owned(a.to_vec());
        }
        match &mut self.0 {
            Repr::Owned(v) => v,
            Repr::Shared(_) => unreachable!("made owned above"),
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.position(name).ok().map(|i| self.as_slice()[i].value.as_str())
    }

    /// Sets `name` to `value`; an empty value removes the label.
    pub fn set(&mut self, name: impl Into<Text>, value: impl Into<Text>) {
        let (name, value) = (name.into(), value.into());
        match self.position(&name) {
            Ok(i) if value.is_empty() => {
                self.owned().remove(i);
            }
            Ok(i) => self.owned()[i].value = value,
            Err(_) if value.is_empty() => {}
            Err(i) => self.owned().insert(i, Label { name, value }),
        }
    }

    /// Removes `name` and returns its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let i = self.position(name).ok()?;
        Some(self.owned().remove(i).value.into_string())
    }

    /// Keeps only the labels for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&Label) -> bool) {
        if self.as_slice().iter().all(&mut keep) {
            return;
        }
        self.owned().retain(|l| keep(l));
    }

    /// The metric name (`__name__`), or "" when absent.
    pub fn metric_name(&self) -> &str {
        self.get(METRIC_NAME).unwrap_or("")
    }

    /// Iterates over the labels in name order.
    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.as_slice().iter()
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// Appends a label known to sort after every label present and to have
    /// a non-empty value: the fast path for builders that add in order.
    /// Falls back to [`Labels::set`] when that does not hold.
    pub fn push_sorted(&mut self, name: impl Into<Text>, value: impl Into<Text>) {
        let (name, value) = (name.into(), value.into());
        match self.as_slice().last() {
            Some(last) if name_cmp(&last.name, &name).is_ge() => self.set(name, value),
            _ if value.is_empty() => {}
            _ => self.owned().push(Label { name, value }),
        }
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.as_slice().binary_search_by(|l| name_cmp(&l.name, name))
    }
}

// Equality, order, hash and debug output are those of the labels
// themselves, whichever form holds them (as when the set was a plain Vec).
impl PartialEq for Labels {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Labels {}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Labels {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl std::hash::Hash for Labels {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Labels").field(&self.as_slice()).finish()
    }
}

impl fmt::Display for Labels {
    /// Prometheus's selector form: `name{a="b", c="d"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.metric_name())?;
        f.write_str("{")?;
        let mut first = true;
        for l in self.iter().filter(|l| l.name != METRIC_NAME) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{}=\"{}\"", l.name, crate::exposition::escape_label_value(&l.value))?;
        }
        f.write_str("}")
    }
}

/// One value of one series at one time.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// The metric types of the Prometheus and OpenMetrics formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    #[default]
    Untyped,
}

impl MetricType {
    /// The name used in a `# TYPE` line of the Prometheus 0.0.4 text format.
    pub fn as_text(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge | MetricType::Info | MetricType::StateSet => "gauge",
            MetricType::Histogram | MetricType::GaugeHistogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Untyped => "untyped",
        }
    }
}

/// Samples of one metric family with their shared metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// Family name: for histograms and summaries the name without
    /// `_bucket`, `_sum` or `_count`.
    pub name: String,
    pub kind: MetricType,
    pub help: String,
    pub unit: String,
    pub samples: Vec<Sample>,
}

impl Family {
    /// An empty family.
    pub fn new(name: impl Into<String>, kind: MetricType, help: impl Into<String>) -> Self {
        Family { name: name.into(), kind, help: help.into(), unit: String::new(), samples: Vec::new() }
    }

    /// Adds a sample of this family named after it, with `labels` (any
    /// order) and the given value and timestamp.
    pub fn push(&mut self, labels: &[(&str, &str)], value: f64, timestamp_ms: i64) {
        let name = self.name.clone();
        self.push_named(&name, labels, value, timestamp_ms);
    }

    /// Adds a sample under a series name of its own (`<family>_bucket` ...).
    pub fn push_named(&mut self, name: &str, labels: &[(&str, &str)], value: f64, timestamp_ms: i64) {
        let mut set = Labels::from_pairs(labels.iter().copied());
        set.set(METRIC_NAME, name);
        self.samples.push(Sample { labels: set, value, timestamp_ms });
    }
}

/// What one collection of one source produced.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// The source that produced it ("node", "ebpf", "scrape/<job>/<target>").
    pub source: Arc<str>,
    pub families: Vec<Family>,
}

impl Batch {
    /// Number of samples in the batch.
    pub fn len(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }

    /// Whether the batch holds no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every sample of every family.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.families.iter().flat_map(|f| f.samples.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_sorted_unique_and_non_empty() {
        let mut l = Labels::from_pairs([("b", "2"), ("a", "1"), ("b", "3"), ("c", "")]);
        assert_eq!(l.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect::<Vec<_>>(), [("a", "1"), ("b", "3")]);
        l.set("a", "");
        assert_eq!(l.get("a"), None);
        l.push_sorted("z", "9");
        l.push_sorted("c", "4");
        assert_eq!(l.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["b", "c", "z"]);
    }

    #[test]
    fn shared_sets_compare_equal_and_copy_on_change() {
        let owned = Labels::from_pairs([("__name__", "m"), ("a", "1")]);
        let mut shared = owned.clone();
        shared.share();
        assert!(shared.is_shared() && !owned.is_shared());
        assert_eq!(shared, owned);
        let state = std::hash::RandomState::new();
        assert_eq!(std::hash::BuildHasher::hash_one(&state, &shared), std::hash::BuildHasher::hash_one(&state, &owned));
        let clone = shared.clone();
        let mut changed = shared.clone();
        changed.set("b", "2");
        assert!(!changed.is_shared());
        assert_eq!(clone, owned, "a change to one clone leaves the others");
        assert_eq!(changed.to_string(), "m{a=\"1\", b=\"2\"}");
        assert_eq!(format!("{shared:?}"), format!("{owned:?}"));
    }

    #[test]
    fn stale_marker_is_the_exact_bit_pattern() {
        assert!(is_stale(stale_nan()));
        assert!(!is_stale(f64::NAN));
        assert_eq!(stale_nan().to_bits(), 0x7ff0000000000002);
    }

    #[test]
    fn display_is_selector_form() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a\"b")]);
        assert_eq!(l.to_string(), "up{job=\"a\\\"b\"}");
    }
}
