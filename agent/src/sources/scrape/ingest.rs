//! Turns one scraped body into families the way Prometheus's scrape loop
//! appends it: target labels attached (with `exported_` renames unless
//! honor_labels), metric relabeling, label and sample limits, timestamps.

use std::collections::HashMap;

use super::cache::{Cache, Hit};
use super::parser::{self, Event, Format, Handler, Stream};
use crate::relabel::Relabeler;
use crate::sample::{name_cmp, Family, Labels, MetricType, Sample, METRIC_NAME};

/// How to turn a body into samples.
pub struct Options<'r> {
    pub format: Format,
    /// Scrape start, the timestamp of samples without their own.
    pub scrape_ms: i64,
    pub honor_timestamps: bool,
    pub honor_labels: bool,
    /// The target's labels (job, instance, static labels), sorted.
    pub target_labels: &'r Labels,
    pub metric_relabel: &'r Relabeler,
    /// Most samples kept after relabeling; 0 for no limit.
    pub sample_limit: usize,
    /// Most labels per series; 0 for no limit.
    pub label_limit: usize,
}

/// What came out of a body.
#[derive(Debug, Default)]
pub struct Ingested {
    pub families: Vec<Family>,
    /// Samples in the body (`scrape_samples_scraped`).
    pub scraped: usize,
    /// Samples kept after metric relabeling.
    pub kept: usize,
}

/// Why a body gave nothing: its samples are all discarded, as Prometheus
/// discards a scrape whose append fails.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{error}")]
    Parse { error: parser::ParseError, kept: usize },
    #[error("sample_limit exceeded: more than {limit} samples after relabeling")]
    SampleLimit { limit: usize, scraped: usize },
    #[error("label_limit exceeded: series {series} has {count} labels, limit {limit}")]
    LabelLimit { series: String, count: usize, limit: usize, scraped: usize },
}

impl IngestError {
    /// Samples read before the failure, for `scrape_samples_scraped`.
    pub fn scraped(&self) -> usize {
        match self {
            IngestError::Parse { error, .. } => error.samples_before,
            IngestError::SampleLimit { scraped, .. } | IngestError::LabelLimit { scraped, .. } => *scraped,
        }
    }
}

/// Suffixes a sample name may add to its family's name, by family type.
fn family_suffixes(kind: MetricType) -> &'static [&'static str] {
    match kind {
        MetricType::Counter => &["_total", "_created"],
        MetricType::Summary => &["_sum", "_count", "_created"],
        MetricType::Histogram => &["_bucket", "_sum", "_count", "_created"],
        MetricType::GaugeHistogram => &["_bucket", "_gsum", "_gcount"],
        MetricType::Info => &["_info"],
        _ => &[],
    }
}

/// Sets the target's labels on a sample's labels as Prometheus does: with
/// honor_labels the sample's own win; otherwise the target's win and a
/// clashing label of the sample is kept as `exported_<name>`.
pub fn attach_target_labels(labels: &mut Labels, target: &Labels, honor_labels: bool) {
    if honor_labels {
        for l in target.iter() {
            if labels.get(&l.name).is_none() {
                labels.set(l.name.as_str(), l.value.as_str());
            }
        }
        return;
    }
    let mut clashes: Vec<(String, String)> = Vec::new();
    for l in target.iter() {
        if let Some(v) = labels.get(&l.name) {
            clashes.push((l.name.to_string(), v.to_string()));
        }
        labels.set(l.name.as_str(), l.value.as_str());
    }
    // Shorter names first, as Prometheus resolves them.
    clashes.sort_by_key(|(name, _)| name.len());
    for (name, value) in clashes {
        let mut new = format!("exported_{name}");
        while labels.get(&new).is_some() || target.get(&new).is_some() {
            new.insert_str(0, "exported_");
        }
        labels.set(new, value);
    }
}

/// The label set of one sample: its name and labels merged with the
/// target's in one sorted pass (one allocation for the set, two per label).
/// Clashes between exposed and target labels take the general path.
/// `order` is scratch space. None when the sample has an invalid name.
fn build_labels(
    name: &str,
    exposed: &[(&str, std::borrow::Cow<'_, str>)],
    target: &Labels,
    honor_labels: bool,
    order: &mut Vec<usize>,
) -> Option<Labels> {
    order.clear();
    order.extend(0..exposed.len());
    order.sort_unstable_by(|a, b| name_cmp(exposed[*a].0, exposed[*b].0));
    let mut set = Labels::with_capacity(exposed.len() + target.len() + 1);
    let mut name_done = false;
    let mut t = target.iter().peekable();
    let mut clash = false;
    for &i in order.iter() {
        let (k, v) = (exposed[i].0, exposed[i].1.as_ref());
        if !name_done && name_cmp(METRIC_NAME, k).is_lt() {
            while let Some(tl) = t.next_if(|tl| name_cmp(&tl.name, METRIC_NAME).is_lt()) {
                set.push_sorted(tl.name.as_str(), tl.value.as_str());
            }
            set.push_sorted(METRIC_NAME, name);
            name_done = true;
        }
        while let Some(tl) = t.next_if(|tl| name_cmp(&tl.name, k).is_lt()) {
            set.push_sorted(tl.name.as_str(), tl.value.as_str());
        }
        if t.peek().is_some_and(|tl| tl.name == k) {
            clash = true;
            break;
        }
        set.push_sorted(k, v);
    }
    if clash {
        // Rare: build the exposed set first, then attach as Prometheus does.
        let mut set = Labels::with_capacity(exposed.len() + target.len() + 2);
        set.set(METRIC_NAME, name);
        for (k, v) in exposed {
            set.set(*k, v.as_ref());
        }
        attach_target_labels(&mut set, target, honor_labels);
        return Some(set);
    }
    for tl in t {
        if !name_done && name_cmp(METRIC_NAME, &tl.name).is_lt() {
            set.push_sorted(METRIC_NAME, name);
            name_done = true;
        }
        set.push_sorted(tl.name.as_str(), tl.value.as_str());
    }
    if !name_done {
        set.push_sorted(METRIC_NAME, name);
    }
    Some(set)
}

/// Parses `body` and builds the families to store, or the reason to store
/// nothing. `cache` is the target's (see [`Cache`]); the caller ends the
/// scrape with [`Cache::finish_good`] or [`Cache::finish_failed`].
pub fn ingest(body: &[u8], opts: &Options<'_>, cache: &mut Cache) -> Result<Ingested, IngestError> {
    let mut ingest = Ingest::new(opts, cache);
    ingest.feed(body)?;
    ingest.finish()
}

/// A body being ingested, fed in pieces of whole lines as it arrives: a
/// scrape holds one piece of the body at a time, and stops reading as soon
/// as a limit is passed.
pub struct Ingest<'o> {
    opts: &'o Options<'o>,
    cache: &'o mut Cache,
    stream: Stream,
    st: State,
}

/// What ingesting carries from one piece of the body to the next.
#[derive(Default)]
struct State {
    out: Ingested,
    types: HashMap<Box<[u8]>, MetricType>,
    helps: HashMap<String, String>,
    units: HashMap<String, String>,
    index: HashMap<String, usize>,
    /// The family of the previous sample name: consecutive samples of one
    /// metric skip the lookups.
    last_name: Vec<u8>,
    last_family: Option<usize>,
    /// Family of each sample name seen since the last TYPE line
    /// (histograms alternate between their _bucket, _sum and _count names).
    by_name: HashMap<Box<str>, usize>,
    failure: Option<IngestError>,
    order: Vec<usize>,
    /// What the cache said about the series the parser asked for.
    hit: Option<Hit>,
}

impl<'o> Ingest<'o> {
    /// Starts ingesting one body of the target whose cache is `cache`.
    pub fn new(opts: &'o Options<'o>, cache: &'o mut Cache) -> Ingest<'o> {
        use std::hash::{Hash, Hasher};
        // Everything a cached label set was built from besides the body.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (opts.metric_relabel.fingerprint(), opts.target_labels, opts.honor_labels, opts.label_limit).hash(&mut h);
        cache.begin(h.finish());
        Ingest { opts, cache, stream: Stream::new(opts.format, false), st: State::default() }
    }

    /// Ingests the next piece of the body: whole lines (only the body's
    /// last piece may end without a newline). An error ends the body: stop
    /// reading it.
    pub fn feed(&mut self, piece: &[u8]) -> Result<(), IngestError> {
        let mut handler = Piece { st: &mut self.st, cache: self.cache, opts: self.opts };
        let parsed = self.stream.feed(piece, &mut handler);
        if let Some(failure) = self.st.failure.take() {
            return Err(failure.read(self.stream.samples()));
        }
        parsed.map_err(|error| IngestError::Parse { error, kept: self.st.out.kept })
    }

    /// Ends the body: the families, or why the body gave nothing.
    pub fn finish(self) -> Result<Ingested, IngestError> {
        let Ingest { stream, mut st, .. } = self;
        let kept = st.out.kept;
        st.out.scraped = stream.finish().map_err(|error| IngestError::Parse { error, kept })?;
        for f in &mut st.out.families {
            if let Some(h) = st.helps.remove(&f.name) {
                f.help = h;
            }
            if let Some(u) = st.units.remove(&f.name) {
                f.unit = u;
            }
        }
        st.out.families.retain(|f| !f.samples.is_empty());
        Ok(st.out)
    }
}

impl IngestError {
    /// The error with the number of samples read when it stopped the body.
    fn read(self, n: usize) -> IngestError {
        match self {
            IngestError::SampleLimit { limit, .. } => IngestError::SampleLimit { limit, scraped: n },
            IngestError::LabelLimit { series, count, limit, .. } => {
                IngestError::LabelLimit { series, count, limit, scraped: n }
            }
            other => other,
        }
    }
}

/// The parse handler of one piece of the body.
struct Piece<'s, 'o> {
    st: &'s mut State,
    cache: &'s mut Cache,
    opts: &'s Options<'o>,
}

impl<'a> Handler<'a> for Piece<'_, '_> {
    fn known(&mut self, series: &'a [u8]) -> bool {
        self.st.hit = self.cache.get(series);
        self.st.hit.is_some()
    }

    // A limit passed ends the body: nothing after it is read (Prometheus
    // reads on to count the samples; a runaway target's body is what the
    // limit protects the agent from).
    fn stopped(&self) -> bool {
        self.st.failure.is_some()
    }

    fn event(&mut self, event: Event<'a, '_>) {
        let st = &mut *self.st;
        match event {
            Event::Help { family, text } => {
                st.helps.insert(family.to_string(), text.into_owned());
            }
            Event::Unit { family, unit } => {
                st.units.insert(family.to_string(), unit.to_string());
            }
            Event::Type { family, kind } => {
                st.types.insert(family.as_bytes().into(), kind);
                st.last_family = None;
                st.by_name.clear();
            }
            Event::Known { name, value, timestamp_ms } => {
                let fam = st.family(name);
                if let Some(hit) = st.hit.take() {
                    self.keep(fam, hit, value, timestamp_ms);
                }
            }
            Event::Sample { name, series, labels, value, timestamp_ms } => {
                let fam = st.family(name);
                let opts = self.opts;
                let Some(mut set) = build_labels(name, labels, opts.target_labels, opts.honor_labels, &mut st.order)
                else {
                    return;
                };
                let kept = (opts.metric_relabel.is_empty() || opts.metric_relabel.apply(&mut set))
                    && !set.metric_name().is_empty();
                if kept && opts.label_limit > 0 && set.len() > opts.label_limit {
                    st.failure = Some(IngestError::LabelLimit {
                        series: set.to_string(),
                        count: set.len(),
                        limit: opts.label_limit,
                        scraped: 0,
                    });
                    return;
                }
                let hit = self.cache.insert(series, kept.then_some(set));
                self.keep(fam, hit, value, timestamp_ms);
            }
        }
    }
}

impl Piece<'_, '_> {
    /// Adds a sample of the series `hit` to family `fam`, unless
    /// relabeling dropped the series or the sample limit is passed.
    fn keep(&mut self, fam: usize, hit: Hit, value: f64, timestamp_ms: Option<i64>) {
        let Some(labels) = hit.labels else { return };
        let (st, opts) = (&mut *self.st, self.opts);
        st.out.kept += 1;
        if opts.sample_limit > 0 && st.out.kept > opts.sample_limit {
            st.failure = Some(IngestError::SampleLimit { limit: opts.sample_limit, scraped: 0 });
            return;
        }
        self.cache.read(hit.hash, &labels);
        let ts = match timestamp_ms {
            Some(t) if opts.honor_timestamps => t,
            _ => opts.scrape_ms,
        };
        st.out.families[fam].samples.push(Sample { labels, value, timestamp_ms: ts });
    }
}

impl State {
    /// The index of the family of sample name `name`, created on first use.
    fn family(&mut self, name: &str) -> usize {
        if let Some(i) = self.last_family {
            if self.last_name == name.as_bytes() {
                return i;
            }
        }
        let i = match self.by_name.get(name) {
            Some(i) => *i,
            None => {
                let (fname, kind) = family_of(name, &self.types);
                let i = match self.index.get(fname) {
                    Some(i) => *i,
                    None => {
                        self.out.families.push(Family::new(fname, kind, ""));
                        self.index.insert(fname.to_string(), self.out.families.len() - 1);
                        self.out.families.len() - 1
                    }
                };
                self.by_name.insert(name.into(), i);
                i
            }
        };
        self.last_name.clear();
        self.last_name.extend_from_slice(name.as_bytes());
        self.last_family = Some(i);
        i
    }
}

/// The family a sample name belongs to, by the TYPE lines seen so far:
/// `x_bucket` belongs to histogram `x`, `x_total` to counter `x`...
fn family_of<'n>(name: &'n str, types: &HashMap<Box<[u8]>, MetricType>) -> (&'n str, MetricType) {
    if let Some(kind) = types.get(name.as_bytes()) {
        return (name, *kind);
    }
    for suffix in ["_bucket", "_sum", "_count", "_total", "_created", "_gsum", "_gcount", "_info"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some(kind) = types.get(base.as_bytes()) {
                if family_suffixes(*kind).contains(&suffix) {
                    return (base, *kind);
                }
            }
        }
    }
    (name, MetricType::Untyped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relabel::RelabelConfig;

    fn opts<'r>(target: &'r Labels, relabel: &'r Relabeler) -> Options<'r> {
        Options {
            format: Format::Prometheus,
            scrape_ms: 1000,
            honor_timestamps: true,
            honor_labels: false,
            target_labels: target,
            metric_relabel: relabel,
            sample_limit: 0,
            label_limit: 0,
        }
    }

    fn series(out: &Ingested) -> Vec<String> {
        out.families
            .iter()
            .flat_map(|f| f.samples.iter())
            .map(|s| format!("{} {} {}", s.labels, s.value, s.timestamp_ms))
            .collect()
    }

    #[test]
    fn target_labels_relabeling_families_and_timestamps() {
        let target = Labels::from_pairs([("job", "kafka"), ("instance", "k1:7071"), ("broker_id", "1")]);
        let relabel = Relabeler::new(&[RelabelConfig {
            source_labels: vec!["__name__".into()],
            regex: Some("drop_me.*".into()),
            action: Some("drop".into()),
            ..Default::default()
        }])
        .unwrap();
        let body = concat!(
            "# HELP h A histogram.\n# TYPE h histogram\n",
            "h_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 3\nh_sum 4.5\nh_count 3\n",
            "drop_me_total 5\n",
            "x{job=\"app\",instance=\"other\",exported_job=\"e\",v=\"\"} 7 5000\n",
        );
        let out = ingest(body.as_bytes(), &opts(&target, &relabel), &mut Cache::default()).unwrap();
        assert_eq!(out.scraped, 6);
        assert_eq!(out.kept, 5);
        assert_eq!(out.families[0].name, "h");
        assert_eq!(out.families[0].kind, MetricType::Histogram);
        assert_eq!(out.families[0].help, "A histogram.");
        assert_eq!(out.families[0].samples.len(), 4);
        assert_eq!(
            series(&out),
            [
                "h_bucket{broker_id=\"1\", instance=\"k1:7071\", job=\"kafka\", le=\"1\"} 2 1000",
                "h_bucket{broker_id=\"1\", instance=\"k1:7071\", job=\"kafka\", le=\"+Inf\"} 3 1000",
                "h_sum{broker_id=\"1\", instance=\"k1:7071\", job=\"kafka\"} 4.5 1000",
                "h_count{broker_id=\"1\", instance=\"k1:7071\", job=\"kafka\"} 3 1000",
                "x{broker_id=\"1\", exported_exported_job=\"app\", exported_instance=\"other\", exported_job=\"e\", instance=\"k1:7071\", job=\"kafka\"} 7 5000",
            ]
        );
        let mut honor = opts(&target, &relabel);
        honor.honor_labels = true;
        honor.honor_timestamps = false;
        let out = ingest(b"x{job=\"app\"} 7 5000\n", &honor, &mut Cache::default()).unwrap();
        assert_eq!(series(&out), ["x{broker_id=\"1\", instance=\"k1:7071\", job=\"app\"} 7 1000"]);
    }

    #[test]
    fn a_body_fed_line_by_line_is_the_whole_body() {
        let target = Labels::from_pairs([("job", "j")]);
        let none = Relabeler::default();
        let bodies = [
            (Format::Prometheus, "# HELP a Help.\n# TYPE a counter\na_total{x=\"1\"} 1\n\nb 2 5000\nc 3"),
            (Format::OpenMetrics, "# TYPE a counter\n# HELP a Help.\na_total{x=\"1\"} 1\nb 2\n# EOF\n"),
        ];
        for (format, body) in bodies {
            let mut o = opts(&target, &none);
            o.format = format;
            let whole = ingest(body.as_bytes(), &o, &mut Cache::default()).unwrap();
            let mut cache = Cache::default();
            let mut fed = Ingest::new(&o, &mut cache);
            for line in body.split_inclusive('\n') {
                fed.feed(line.as_bytes()).unwrap();
            }
            let fed = fed.finish().unwrap();
            assert_eq!(series(&fed), series(&whole), "{format:?}");
            assert_eq!((fed.scraped, fed.families[0].help.as_str()), (whole.scraped, "Help."));
        }
        // Errors name the line of the whole body; OpenMetrics still needs # EOF.
        let o = opts(&target, &none);
        let mut cache = Cache::default();
        let mut fed = Ingest::new(&o, &mut cache);
        fed.feed(b"a 1\n").unwrap();
        fed.feed(b"b 2\n").unwrap();
        let err = fed.feed(b"c{ 3\n").unwrap_err();
        assert!(err.to_string().starts_with("parse error at line 3"), "{err}");
        assert_eq!(err.scraped(), 2);
        let mut o = opts(&target, &none);
        o.format = Format::OpenMetrics;
        let mut fed = Ingest::new(&o, &mut cache);
        fed.feed(b"a 1\n").unwrap();
        let err = fed.finish().unwrap_err();
        assert_eq!(err.to_string(), "parse error at line 2: missing # EOF at the end");
    }

    #[test]
    fn limits_and_parse_errors_discard_the_body() {
        let target = Labels::from_pairs([("job", "j")]);
        let none = Relabeler::default();
        let mut o = opts(&target, &none);
        o.sample_limit = 2;
        let err = ingest(b"a 1\nb 2\nc 3\nd 4\n", &o, &mut Cache::default()).unwrap_err();
        // The body stops at the sample past the limit.
        assert!(matches!(err, IngestError::SampleLimit { limit: 2, scraped: 3 }), "{err:?}");
        let mut o = opts(&target, &none);
        o.label_limit = 2;
        let err = ingest(b"a{x=\"1\",y=\"2\"} 1\n", &o, &mut Cache::default()).unwrap_err();
        assert!(err.to_string().contains("label_limit"), "{err}");
        let err = ingest(b"a 1\nb 2\nc{ 3\n", &opts(&target, &none), &mut Cache::default()).unwrap_err();
        assert_eq!(err.scraped(), 2);
        assert!(err.to_string().starts_with("parse error at line 3"), "{err}");
    }
}
