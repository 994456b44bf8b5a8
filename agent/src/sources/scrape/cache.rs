//! The scrape cache of one target, as Prometheus and vmagent keep one: the
//! raw text of each series in the last body (`name{labels}` as written)
//! maps to the label set it became after target labels and metric
//! relabeling, and to that set's hash. A known series costs a lookup and
//! its value's parse; its label set is shared with the sinks, not rebuilt.
//!
//! The cache also holds the target's series for staleness and
//! `scrape_series_added`, by label-set hash: a series of the last good
//! scrape missing from this one gets a stale marker, whatever raw text
//! produced it.
//!
//! Bounds: entries and series not seen in a good scrape are dropped at its
//! end, and a scrape adds at most [`Cache::capacity`] entries (series past
//! it are processed, uncached).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use crate::sample::{stale_nan, Family, Labels, Sample};

/// Most entries of a target without a sample_limit.
pub const MAX_ENTRIES: usize = 1 << 20;

/// Hasher of the series map, whose keys are already hashes.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// What one raw series text became.
struct Entry {
    /// The series' labels (shared); None when relabeling dropped it.
    labels: Option<Labels>,
    hash: u64,
    /// Generation of the last scrape that read it.
    seen: u32,
}

/// One series the target exposed.
struct Series {
    labels: Labels,
    seen: u32,
    /// First read by the scrape under way.
    fresh: bool,
    /// Its stale marker went out (a failed scrape); it is sent again
    /// without one if it comes back.
    marked: bool,
}

/// A known series, as a lookup returns it.
pub struct Hit {
    /// None when relabeling drops the series.
    pub labels: Option<Labels>,
    pub hash: u64,
}

/// The cache of one target. See the module doc.
pub struct Cache {
    entries: HashMap<Box<[u8]>, Entry, foldhash::fast::RandomState>,
    series: HashMap<u64, Series, BuildHasherDefault<Identity>>,
    hasher: foldhash::fast::RandomState,
    /// Generation of the scrape under way.
    generation: u32,
    /// Fingerprint of what the entries were built with (relabel rules,
    /// target labels, honor_labels, label_limit).
    built_with: u64,
    capacity: usize,
    /// Series first seen in the scrape under way.
    added: usize,
}

impl Default for Cache {
    fn default() -> Self {
        Cache::new(0)
    }
}

impl Cache {
    /// A cache for a target with this sample_limit (0: none). It holds
    /// twice the limit, as series that relabeling drops are cached too.
    pub fn new(sample_limit: usize) -> Cache {
        let capacity = if sample_limit == 0 { MAX_ENTRIES } else { sample_limit.saturating_mul(2).max(1024) };
        Cache {
            entries: HashMap::default(),
            series: HashMap::default(),
            hasher: foldhash::fast::RandomState::default(),
            generation: 0,
            built_with: 0,
            capacity,
            added: 0,
        }
    }

    /// Most entries one scrape adds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Starts a scrape whose series are built from what `fingerprint`
    /// stands for: entries built from something else are forgotten.
    pub fn begin(&mut self, fingerprint: u64) {
        if fingerprint != self.built_with {
            self.entries.clear();
            self.built_with = fingerprint;
        }
        self.generation = self.generation.wrapping_add(1);
        self.added = 0;
    }

    /// What `series` (raw text) became, if it is known; marks it read.
    pub fn get(&mut self, series: &[u8]) -> Option<Hit> {
        let e = self.entries.get_mut(series)?;
        e.seen = self.generation;
        Some(Hit { labels: e.labels.clone(), hash: e.hash })
    }

    /// Remembers what `series` (raw text) became (`labels` None: dropped
    /// by relabeling) unless the scrape reached the capacity. Returns the
    /// label set's hash and the set, shared.
    pub fn insert(&mut self, series: &[u8], labels: Option<Labels>) -> Hit {
        let mut labels = labels;
        if let Some(l) = labels.as_mut() {
            l.share();
        }
        let hash = labels.as_ref().map_or(0, |l| self.hasher.hash_one(l));
        if self.entries.len() < self.capacity {
            let entry = Entry { labels: labels.clone(), hash, seen: self.generation };
            self.entries.insert(series.into(), entry);
        }
        Hit { labels, hash }
    }

    /// Records that the scrape under way read the series `labels` (with
    /// its hash from [`Cache::get`] or [`Cache::insert`]).
    pub fn read(&mut self, hash: u64, labels: &Labels) {
        let generation = self.generation;
        match self.series.get_mut(&hash) {
            Some(s) => s.seen = generation,
            None => {
                self.added += 1;
                self.series
                    .insert(hash, Series { labels: labels.clone(), seen: generation, fresh: true, marked: false });
            }
        }
    }

    /// Series of the scrape under way that the last good one did not have.
    pub fn added(&self) -> usize {
        self.added
    }

    /// Ends a good scrape: stale markers (at `timestamp_ms`) for the series
    /// it no longer has, appended to `families`; entries it did not read
    /// are dropped.
    pub fn finish_good(&mut self, families: &mut Vec<Family>, timestamp_ms: i64) {
        let generation = self.generation;
        let mut stale = Vec::new();
        self.series.retain(|_, s| {
            if s.seen == generation {
                s.fresh = false;
                s.marked = false;
                return true;
            }
            if !s.marked {
                stale.push(Sample { labels: s.labels.clone(), value: stale_nan(), timestamp_ms });
            }
            false
        });
        self.entries.retain(|_, e| e.seen == generation);
        push_stale(families, stale);
    }

    /// Ends a failed scrape, whose samples are not sent: every series of the
    /// last good scrape gets its stale marker now. Entries stay, so the
    /// target's recovery costs no rebuild.
    pub fn finish_failed(&mut self, families: &mut Vec<Family>, timestamp_ms: i64) {
        let mut stale = Vec::new();
        self.series.retain(|_, s| {
            if s.fresh {
                return false;
            }
            if !s.marked {
                s.marked = true;
                stale.push(Sample { labels: s.labels.clone(), value: stale_nan(), timestamp_ms });
            }
            true
        });
        self.added = 0;
        push_stale(families, stale);
    }

    /// Stale markers for every series still live (the target went away).
    pub fn mark_all(&mut self, timestamp_ms: i64) -> Vec<Family> {
        let mut families = Vec::new();
        // A scrape that read nothing: every series has gone.
        self.generation = self.generation.wrapping_add(1);
        self.finish_good(&mut families, timestamp_ms);
        families
    }

    /// Known raw series texts.
    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    /// Live series (of the last good scrape).
    pub fn series(&self) -> usize {
        self.series.len()
    }
}

fn push_stale(families: &mut Vec<Family>, samples: Vec<Sample>) {
    if samples.is_empty() {
        return;
    }
    let mut f = Family::new(samples[0].labels.metric_name(), Default::default(), "");
    f.samples = samples;
    families.push(f);
}
