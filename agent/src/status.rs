//! What every part of the running agent reports about itself: sources and
//! scrape targets, sinks, eBPF programs. The HTTP server reads it for
//! readiness, the status page and the agent's own metrics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::sample::Family;

/// Health of a source or target after its last collection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    #[default]
    Unknown,
    Up,
    Down,
}

/// State of one source (or one scrape target).
#[derive(Clone, Debug, Default, Serialize)]
pub struct SourceState {
    /// "node", "ebpf", "docker", "scrape".
    pub kind: String,
    pub health: Health,
    /// Unix milliseconds of the last finished collection, 0 before.
    pub last_collection_ms: i64,
    pub last_duration_seconds: f64,
    pub series: usize,
    pub last_error: String,
    pub collections: u64,
    /// Whether this source counts for readiness.
    pub required_for_ready: bool,
    /// Batches that have passed every sink (the WAL, the store behind
    /// /metrics): readiness waits for the first, not only for the
    /// collection, so a probe that sees 200 finds the samples on /metrics.
    #[serde(skip)]
    pub routed: u64,
    /// Parts of the source that fail while the rest works (node's
    /// collectors), by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub failing_parts: BTreeMap<String, PartFailure>,
}

/// A part of a source that fails: its error and since when.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PartFailure {
    pub error: String,
    /// Unix milliseconds of the first collection in a row that failed.
    pub since_ms: i64,
}

/// State of one sink endpoint.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SinkState {
    /// "remote_write", "loki".
    pub kind: String,
    /// The endpoint, without credentials.
    pub endpoint: String,
    pub pending: u64,
    pub wal_bytes: u64,
    /// Unix ms of the last acknowledged push, 0 before.
    pub last_success_ms: i64,
    /// Seconds between now and the newest acknowledged sample.
    pub lag_seconds: f64,
    pub last_error: String,
}

/// State of one eBPF program.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProgramState {
    pub attached: bool,
    /// The kernel's reason when loading or attaching failed.
    pub error: String,
}

/// Outcome of the last configuration reload (or of the start).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReloadState {
    /// Whether the last reload (or the start) applied the configuration.
    pub last_successful: bool,
    /// Unix ms of the last successful reload, or of the start.
    pub last_success_ms: i64,
    /// Unix ms of the last reload attempt, 0 before the first.
    pub last_attempt_ms: i64,
    /// Why the last reload was refused; empty when it was applied.
    pub last_error: String,
    /// Reloads tried since the start (deploy.sh waits for this to move).
    pub reloads: u64,
}

/// Something that adds its own `vantage_*` families to /metrics.
pub trait SelfMetrics: Send + Sync {
    fn self_metrics(&self, out: &mut Vec<Family>);
}

/// The shared registry. Cheap to clone (an Arc inside).
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    sources: Mutex<BTreeMap<String, SourceState>>,
    sinks: Mutex<BTreeMap<String, SinkState>>,
    programs: Mutex<BTreeMap<String, ProgramState>>,
    providers: Mutex<Vec<Arc<dyn SelfMetrics>>>,
    config: Mutex<serde_json::Value>,
    reload: Mutex<ReloadState>,
}

/// A snapshot of everything, as served at /api/v1/status.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub version: &'static str,
    pub ready: bool,
    pub sources: BTreeMap<String, SourceState>,
    pub sinks: BTreeMap<String, SinkState>,
    pub programs: BTreeMap<String, ProgramState>,
    pub config: serde_json::Value,
    pub reload: ReloadState,
}

impl Registry {
    /// Declares a source; `required` ones must collect once before /-/ready.
    pub fn register_source(&self, name: &str, kind: &str, required: bool) {
        let mut sources = self.inner.sources.lock().unwrap();
        let state = sources.entry(name.to_string()).or_default();
        state.kind = kind.to_string();
        state.required_for_ready = required;
    }

    /// Forgets a source (a scrape target that went away).
    pub fn remove_source(&self, name: &str) {
        self.inner.sources.lock().unwrap().remove(name);
    }

    /// Records the outcome of one collection.
    pub fn record_collection(&self, name: &str, at_ms: i64, seconds: f64, series: usize, error: Option<String>) {
        let mut sources = self.inner.sources.lock().unwrap();
        let state = sources.entry(name.to_string()).or_default();
        state.last_collection_ms = at_ms;
        state.last_duration_seconds = seconds;
        state.series = series;
        state.collections += 1;
        match error {
            Some(e) => {
                state.health = Health::Down;
                state.last_error = e;
            }
            None => {
                state.health = Health::Up;
                state.last_error.clear();
            }
        }
    }

    /// Records that a batch of `name` has been handed to every sink. A
    /// source removed meanwhile stays removed.
    pub fn record_routed(&self, name: &str) {
        if let Some(state) = self.inner.sources.lock().unwrap().get_mut(name) {
            state.routed += 1;
        }
    }

    /// Records which parts of a source failed in the collection at `at_ms`
    /// (all others work): a part keeps the time it started failing.
    pub fn record_failing_parts(&self, name: &str, at_ms: i64, failing: Vec<(String, String)>) {
        let mut sources = self.inner.sources.lock().unwrap();
        let state = sources.entry(name.to_string()).or_default();
        let mut parts = BTreeMap::new();
        for (part, error) in failing {
            let since_ms = state.failing_parts.get(&part).map_or(at_ms, |p| p.since_ms);
            parts.insert(part, PartFailure { error, since_ms });
        }
        state.failing_parts = parts;
    }

    /// Updates a sink's state in place.
    pub fn update_sink(&self, name: &str, update: impl FnOnce(&mut SinkState)) {
        update(self.inner.sinks.lock().unwrap().entry(name.to_string()).or_default());
    }

    /// Records whether an eBPF program is attached and why not.
    pub fn set_program(&self, name: &str, attached: bool, error: String) {
        self.inner.programs.lock().unwrap().insert(name.to_string(), ProgramState { attached, error });
    }

    /// Forgets a sink endpoint (removed by a reload).
    pub fn remove_sink(&self, name: &str) {
        self.inner.sinks.lock().unwrap().remove(name);
    }

    /// Forgets every eBPF program (the eBPF source stopped on a reload).
    pub fn clear_programs(&self) {
        self.inner.programs.lock().unwrap().clear();
    }

    /// Adds a provider of self-metrics.
    pub fn add_provider(&self, provider: Arc<dyn SelfMetrics>) {
        self.inner.providers.lock().unwrap().push(provider);
    }

    /// How many providers there are: what a component adds while it starts
    /// is what [`Registry::providers_since`] returns afterwards.
    pub fn provider_count(&self) -> usize {
        self.inner.providers.lock().unwrap().len()
    }

    /// The providers added after the first `count`.
    pub fn providers_since(&self, count: usize) -> Vec<Arc<dyn SelfMetrics>> {
        self.inner.providers.lock().unwrap().get(count..).map(<[_]>::to_vec).unwrap_or_default()
    }

    /// Removes these providers (their component stopped).
    pub fn remove_providers(&self, gone: &[Arc<dyn SelfMetrics>]) {
        self.inner.providers.lock().unwrap().retain(|p| !gone.iter().any(|g| Arc::ptr_eq(p, g)));
    }

    /// Records that the configuration of the start is in effect.
    pub fn record_start(&self, at_ms: i64) {
        let mut r = self.inner.reload.lock().unwrap();
        r.last_successful = true;
        r.last_success_ms = at_ms;
    }

    /// Records the outcome of a reload.
    pub fn record_reload(&self, at_ms: i64, error: Option<String>) {
        let mut r = self.inner.reload.lock().unwrap();
        r.reloads += 1;
        match error {
            Some(e) => {
                r.last_successful = false;
                r.last_attempt_ms = at_ms;
                r.last_error = e;
            }
            None => {
                r.last_successful = true;
                r.last_success_ms = at_ms;
                r.last_attempt_ms = at_ms;
                r.last_error.clear();
            }
        }
    }

    /// Stores the configuration in effect (secrets already redacted).
    pub fn set_config(&self, config: serde_json::Value) {
        *self.inner.config.lock().unwrap() = config;
    }

    /// True once every required source has finished a collection and its
    /// samples have reached the sinks (or the collection failed, which
    /// has nothing to route).
    pub fn ready(&self) -> bool {
        self.inner
            .sources
            .lock()
            .unwrap()
            .values()
            .all(|s| !s.required_for_ready || (s.collections > 0 && (s.routed > 0 || s.health == Health::Down)))
    }

    /// A copy of everything.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            ready: self.ready(),
            sources: self.inner.sources.lock().unwrap().clone(),
            sinks: self.inner.sinks.lock().unwrap().clone(),
            programs: self.inner.programs.lock().unwrap().clone(),
            config: self.inner.config.lock().unwrap().clone(),
            reload: self.inner.reload.lock().unwrap().clone(),
        }
    }

    /// Families from every registered provider.
    pub fn provider_metrics(&self, out: &mut Vec<Family>) {
        let providers = self.inner.providers.lock().unwrap().clone();
        for p in providers {
            p.self_metrics(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_after_every_required_source_collected() {
        let r = Registry::default();
        assert!(r.ready(), "nothing registered yet");
        r.register_source("node", "node", true);
        r.register_source("scrape/app", "scrape", false);
        assert!(!r.ready());
        r.record_collection("node", 1, 0.001, 10, Some("boom".into()));
        assert!(r.ready(), "a finished collection counts even when it failed");
        assert_eq!(r.snapshot().sources["node"].health, Health::Down);
        assert_eq!(r.snapshot().sources["node"].last_error, "boom");
    }

    #[test]
    fn ready_waits_until_the_first_batch_has_reached_the_sinks() {
        let r = Registry::default();
        r.register_source("node", "node", true);
        r.register_source("ebpf", "ebpf", true);
        r.record_collection("node", 1, 0.001, 10, None);
        r.record_collection("ebpf", 1, 0.001, 10, None);
        assert!(!r.ready(), "collected, but /metrics and the WAL do not have the samples yet");
        r.record_routed("node");
        assert!(!r.ready(), "ebpf's batch is still on its way");
        r.record_routed("ebpf");
        assert!(r.ready());
        // A source removed (a reload) and declared again starts over.
        r.remove_source("ebpf");
        r.record_routed("ebpf");
        r.register_source("ebpf", "ebpf", true);
        r.record_collection("ebpf", 2, 0.001, 10, None);
        assert!(!r.ready());
    }

    #[test]
    fn a_failing_part_keeps_the_time_it_started_failing() {
        let r = Registry::default();
        let fail = |what: &str| vec![("schedstat".to_string(), what.to_string())];
        r.record_failing_parts("node", 1000, fail("no /proc/schedstat"));
        r.record_failing_parts("node", 2000, fail("still no /proc/schedstat"));
        let parts = r.snapshot().sources["node"].failing_parts.clone();
        assert_eq!(parts["schedstat"], PartFailure { error: "still no /proc/schedstat".into(), since_ms: 1000 });
        r.record_failing_parts("node", 3000, Vec::new());
        assert!(r.snapshot().sources["node"].failing_parts.is_empty());
        r.record_failing_parts("node", 4000, fail("again"));
        assert_eq!(r.snapshot().sources["node"].failing_parts["schedstat"].since_ms, 4000);
    }
}
