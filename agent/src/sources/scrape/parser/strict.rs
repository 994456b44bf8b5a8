//! The OpenMetrics spec's rules on families, checked in strict mode: families
//! contiguous, sample names within their family's suffixes, counter and
//! histogram values, label groups together, timestamps not going back.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use super::openmetrics::om_number;
use crate::sample::MetricType;

/// What strict mode remembers while walking a body.
#[derive(Default)]
pub(super) struct Strict {
    /// Family names already finished: a family must be contiguous.
    closed: HashSet<String>,
    /// Sample names each declared family may produce, to find clashes.
    claimed: HashMap<String, String>,
    /// The family being read.
    family: String,
    kind: MetricType,
    pub(super) unit: bool,
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

    pub(super) fn metadata(&mut self, family: &str, what: char, kind: Option<MetricType>) -> Result<(), String> {
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

    pub(super) fn check_unit_type(&self) -> Result<(), String> {
        if self.unit && matches!(self.kind, MetricType::Info | MetricType::StateSet) {
            return Err(format!("{} of this type cannot have a unit", self.family));
        }
        Ok(())
    }

    pub(super) fn sample(
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
    pub(super) fn finish(&mut self) -> Result<(), String> {
        self.end_group()?;
        self.group = None;
        Ok(())
    }
}
