//! `[security]`: kernel security events as log entries. The security
//! object (`sources::ebpf::security`) sends what ran, connects, accepted
//! connections, listening sockets and credentials gained; this source
//! names the container of each (cgroup id -> Docker container, with its
//! image and labels from the one inventory), marks what its container's
//! expectations do not list, and hands JSON lines through the stages to
//! the log sinks, beside counters for alerting.
//!
//! Events wait in the kernel's ring buffer while the log path is full (a
//! sink down): the sender's backpressure reaches the kernel, which counts
//! what no longer fits (`vantage_security_events_dropped_total{reason=
//! "ring_full"}`) instead of the agent's memory growing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aya::maps::{MapData, RingBuf};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;

use super::stages::{Pipeline, Record, StageConfig};
use super::SourceStats;
use crate::logline::{LogEntry, LogSender};
use crate::sample::{now_ms, Family, Labels, MetricType};
use crate::selfmetrics as m;
use crate::sources::docker::{Container, Feed};
use crate::sources::ebpf::security::{self as kernel, Detail, Event, KIND_NAMES};
use crate::status::SelfMetrics;

/// `[security]`: kernel security events.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    #[serde(default)]
    pub enabled: bool,
    /// The kinds collected: exec, connect, accept, listen, credentials.
    #[serde(default = "all_kinds")]
    pub kinds: Vec<String>,
    /// Events per second one cgroup (a container, a service) may send;
    /// the rest are dropped in the kernel and counted. 0: no limit.
    #[serde(default = "default_rate_limit")]
    pub rate_limit: u32,
    /// Bytes of the kernel's ring buffer (a power of two, at least 4096).
    #[serde(default = "default_ring")]
    pub ring_buffer_size: u32,
    /// Labels of every entry (`job` defaults to "security").
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What each container is expected to do; see [`Expect`].
    #[serde(default)]
    pub expect: Vec<Expect>,
    #[serde(default)]
    pub stages: Vec<StageConfig>,
}

/// `[[security.expect]]`: the executables, destination ports and
/// listening ports of the containers it matches (by name regex and/or one
/// `key=value` label). The first entry that matches a container judges
/// its events: one of a kind whose list is given but does not hold it gets
/// `unexpected="true"`. Kinds without a list, and containers no entry
/// matches, are not judged.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Regex the container's name must match (anchored as written).
    #[serde(default)]
    pub container: Option<String>,
    /// `key=value`: a label the container must carry.
    #[serde(default)]
    pub label: Option<String>,
    /// Executables (`exec`): full paths, or bare names that match any
    /// path ending in them.
    #[serde(default)]
    pub executables: Option<Vec<String>>,
    /// Destination ports (`connect`).
    #[serde(default)]
    pub connect_ports: Option<Vec<u16>>,
    /// Local ports (`listen`, and `accept` on them).
    #[serde(default)]
    pub listen_ports: Option<Vec<u16>>,
    /// Whether credentials gained (`credentials`) are expected.
    #[serde(default)]
    pub credentials: Option<bool>,
}

fn all_kinds() -> Vec<String> {
    KIND_NAMES.iter().map(|k| k.to_string()).collect()
}
fn default_rate_limit() -> u32 {
    200
}
fn default_ring() -> u32 {
    512 * 1024
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            enabled: false,
            kinds: all_kinds(),
            rate_limit: default_rate_limit(),
            ring_buffer_size: default_ring(),
            labels: BTreeMap::new(),
            expect: Vec::new(),
            stages: Vec::new(),
        }
    }
}

impl SecurityConfig {
    /// Adds this section's problems to `problems`.
    pub fn validate(&self, problems: &mut Vec<String>) {
        if !self.enabled {
            return;
        }
        for k in &self.kinds {
            if !KIND_NAMES.contains(&k.as_str()) {
                problems.push(format!("security.kinds: unknown kind {k:?} (one of {})", KIND_NAMES.join(", ")));
            }
        }
        let size = self.ring_buffer_size;
        if size < 4096 || !size.is_power_of_two() {
            problems.push(format!("security.ring_buffer_size: {size} is not a power of two of at least 4096"));
        }
        for k in self.labels.keys() {
            if !crate::relabel::is_valid_label_name(k) {
                problems.push(format!("security.labels: {k:?} is not a valid label name"));
            }
        }
        for (i, e) in self.expect.iter().enumerate() {
            if let Err(p) = Matcher::new(e) {
                problems.push(format!("security.expect[{i}]: {p}"));
            }
        }
        if let Err(e) = Pipeline::new(&self.stages, "security") {
            problems.extend(e);
        }
    }

    /// One line for `vantage check`.
    pub fn describe(&self) -> String {
        let limit = if self.rate_limit == 0 {
            "no rate limit".to_string()
        } else {
            format!("{}/s per cgroup", self.rate_limit)
        };
        format!("{}; {limit}; {} expectations ({} stages)", self.kinds.join(", "), self.expect.len(), self.stages.len())
    }

    /// The kernel's switch bits.
    fn kind_bits(&self) -> u32 {
        KIND_NAMES
            .iter()
            .enumerate()
            .filter(|(_, k)| self.kinds.iter().any(|w| w == *k))
            .fold(0, |b, (i, _)| b | 1 << i)
    }
}

/// An [`Expect`] with its regex compiled.
struct Matcher {
    name: Option<Regex>,
    label: Option<(String, String)>,
    expect: Expect,
}

impl Matcher {
    fn new(e: &Expect) -> Result<Matcher, String> {
        let name = e.container.as_deref().map(Regex::new).transpose().map_err(|e| format!("container: {e}"))?;
        let label = match e.label.as_deref() {
            None => None,
            Some(l) => {
                let (k, v) = l.split_once('=').ok_or_else(|| format!("label {l:?} is not key=value"))?;
                Some((k.to_string(), v.to_string()))
            }
        };
        if name.is_none() && label.is_none() {
            return Err("give `container` (a name regex) or `label` (key=value), or both".into());
        }
        Ok(Matcher { name, label, expect: e.clone() })
    }

    fn matches(&self, c: &Info) -> bool {
        self.name.as_ref().is_none_or(|r| r.is_match(&c.name))
            && self.label.as_ref().is_none_or(|(k, v)| c.labels.get(k) == Some(v))
    }
}

/// Whether `event` is outside what `expect` lists; None when it lists
/// nothing for the event's kind.
fn unexpected(expect: &Expect, event: &Event) -> Option<bool> {
    match &event.detail {
        Detail::Exec { filename, .. } => {
            let listed = expect.executables.as_ref()?;
            let base = filename.rsplit('/').next().unwrap_or(filename);
            Some(!listed.iter().any(|x| x == filename || (!x.contains('/') && x == base)))
        }
        Detail::Sock { source, destination, .. } => {
            let (list, port) = match KIND_NAMES[event.kind as usize] {
                "connect" => (expect.connect_ports.as_ref()?, destination.port()),
                _ => (expect.listen_ports.as_ref()?, source.port()),
            };
            Some(!list.contains(&port))
        }
        Detail::Credentials { .. } => expect.credentials.map(|ok| !ok),
    }
}

/// A container as events name it.
#[derive(Debug, PartialEq)]
struct Info {
    id: String,
    /// Without Docker's leading slash.
    name: String,
    image: String,
    labels: BTreeMap<String, String>,
}

impl Info {
    fn of(c: &Container) -> Info {
        Info {
            id: c.id.clone(),
            name: c.name.trim_start_matches('/').to_string(),
            image: c.image.clone(),
            labels: c.labels.clone(),
        }
    }
}

/// Cgroup ids to containers: the cgroup directories say which container
/// a cgroup is, the inventory what that container is called.
struct Containers {
    feed: Option<Feed>,
    /// None: a cgroup known to be no container's (a host service).
    by_cgroup: HashMap<u64, Option<Arc<Info>>>,
    scanned: Option<Instant>,
}

/// Most cgroups remembered before the map starts afresh.
const CGROUPS_KEPT: usize = 16_384;
/// How long an event of a container discovery has not listed yet waits
/// for it (the container's first processes run before `docker run`
/// returns).
const INVENTORY_WAIT: Duration = Duration::from_secs(2);
/// How often the ring buffer is read when the kernel has not woken us.
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// Least time between two scans of Docker's cgroup directories.
const RESCAN_EVERY: Duration = Duration::from_millis(200);

impl Containers {
    async fn get(&mut self, cgroup: u64) -> Option<Arc<Info>> {
        if cgroup == 0 {
            return None;
        }
        if let Some(known) = self.by_cgroup.get(&cgroup) {
            return known.clone();
        }
        // At most one rescan per 200 ms: a storm of events from new cgroups
        // must not turn into directory listings. The event waits out the
        // rest of the window rather than go without its container.
        if let Some(wait) = self.scanned.and_then(|t| RESCAN_EVERY.checked_sub(t.elapsed())) {
            tokio::time::sleep(wait).await;
        }
        self.scanned = Some(Instant::now());
        let ids = crate::sources::ebpf::containers::scan_ids();
        if self.by_cgroup.len() > CGROUPS_KEPT {
            self.by_cgroup.clear();
        }
        let id = ids.get(&cgroup).cloned();
        for (ino, cid) in ids {
            if let Some(c) = self.lookup(&cid) {
                self.by_cgroup.insert(ino, Some(c));
            }
        }
        let Some(id) = id else {
            self.by_cgroup.insert(cgroup, None);
            return None;
        };
        if let Some(c) = self.by_cgroup.get(&cgroup) {
            return c.clone();
        }
        // A container discovery has not listed yet: wait for it a little.
        let deadline = tokio::time::Instant::now() + INVENTORY_WAIT;
        if let Some(feed) = &mut self.feed {
            while tokio::time::timeout_at(deadline, feed.inventory.changed()).await.is_ok_and(|r| r.is_ok()) {
                if feed.inventory.borrow().iter().any(|c| c.id == id) {
                    break;
                }
            }
        }
        let info = self.lookup(&id).unwrap_or_else(|| {
            Arc::new(Info { name: id[..12].to_string(), id, image: String::new(), labels: BTreeMap::new() })
        });
        self.by_cgroup.insert(cgroup, Some(info.clone()));
        Some(info)
    }

    fn lookup(&self, id: &str) -> Option<Arc<Info>> {
        let feed = self.feed.as_ref()?;
        let inventory = feed.inventory.borrow();
        inventory.iter().find(|c| c.id == id).map(|c| Arc::new(Info::of(c)))
    }

    /// Forgets the containers' mappings when the inventory changed (a
    /// container renamed, relabeled or gone). A cgroup found to be no
    /// container's stays so: its id is the inode of a directory that
    /// existed, outside Docker's, when its event was resolved.
    fn refresh_if_changed(&mut self) {
        if let Some(feed) = &mut self.feed {
            if feed.inventory.has_changed().unwrap_or(false) {
                feed.inventory.mark_unchanged();
                self.by_cgroup.retain(|_, c| c.is_none());
                self.scanned = None;
            }
        }
    }
}

/// The counters: events by kind and container, unexpected ones, and the
/// kernel's drops.
#[derive(Default)]
struct Counters {
    events: Mutex<BTreeMap<(usize, String), (u64, u64)>>,
    drops: Mutex<Vec<(usize, usize, u64)>>,
}

impl SelfMetrics for Counters {
    fn self_metrics(&self, out: &mut Vec<Family>) {
        let ts = now_ms();
        let mut events =
            Family::new(m::SECURITY_EVENTS, MetricType::Counter, "Security events collected, by kind and container.");
        let mut unexpected = Family::new(
            m::SECURITY_UNEXPECTED,
            MetricType::Counter,
            "Security events outside their container's [[security.expect]] lists.",
        );
        for ((kind, container), (n, u)) in self.events.lock().unwrap().iter() {
            let l = [("kind", KIND_NAMES[*kind]), ("container", container.as_str())];
            events.push(&l, *n as f64, ts);
            unexpected.push(&l, *u as f64, ts);
        }
        let mut dropped = Family::new(
            m::SECURITY_DROPPED,
            MetricType::Counter,
            "Security events the kernel did not send: over the per-cgroup rate limit, or the ring buffer full.",
        );
        for (kind, reason, n) in self.drops.lock().unwrap().iter() {
            dropped.push(&[("kind", KIND_NAMES[*kind]), ("reason", kernel::DROP_REASONS[*reason])], *n as f64, ts);
        }
        out.extend([events, unexpected, dropped]);
    }
}

/// Nanoseconds to add to CLOCK_BOOTTIME for Unix time.
fn boot_to_unix_ns() -> i64 {
    let clock = |id| {
        let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes the struct we pass.
        unsafe { libc::clock_gettime(id, &mut t) };
        t.tv_sec * 1_000_000_000 + t.tv_nsec
    };
    clock(libc::CLOCK_REALTIME) - clock(libc::CLOCK_BOOTTIME)
}

/// The JSON line of `event`.
fn line(event: &Event, container: Option<&Info>, unexpected: bool, time_ns: i64) -> String {
    let mut o = Map::new();
    o.insert("kind".into(), json!(KIND_NAMES[event.kind as usize]));
    o.insert("time_unix_nano".into(), json!(time_ns));
    if event.pid != 0 {
        o.insert("pid".into(), json!(event.pid));
        o.insert("uid".into(), json!(event.uid));
        o.insert("gid".into(), json!(event.gid));
        o.insert("comm".into(), json!(event.comm));
    }
    if event.ppid != 0 {
        o.insert("ppid".into(), json!(event.ppid));
    }
    match &event.detail {
        Detail::Exec { filename, args, args_truncated } => {
            o.insert("executable".into(), json!(filename));
            o.insert("args".into(), json!(args));
            if *args_truncated {
                o.insert("args_truncated".into(), json!(true));
            }
        }
        Detail::Sock { source, destination, closed } => {
            o.insert("source".into(), json!(source.to_string()));
            if event.kind != agent_common::SECURITY_LISTEN {
                o.insert("destination".into(), json!(destination.to_string()));
                o.insert("destination_port".into(), json!(destination.port()));
            } else {
                o.insert("port".into(), json!(source.port()));
                o.insert("state".into(), json!(if *closed { "closed" } else { "listening" }));
            }
        }
        Detail::Credentials {
            old_euid,
            old_egid,
            new_uid,
            new_euid,
            new_gid,
            new_egid,
            old_caps,
            new_caps,
            at_exec,
        } => {
            if *at_exec {
                // Exec keeps the real ids; what came before them is gone.
                o.insert("via".into(), json!("exec"));
                o.insert("old".into(), json!({"uid": event.uid, "gid": event.gid}));
            } else {
                o.insert("via".into(), json!("commit_creds"));
                o.insert("old".into(), json!({"uid": event.uid, "euid": old_euid, "gid": event.gid, "egid": old_egid, "cap_effective": format!("{old_caps:#x}")}));
            }
            o.insert("new".into(), json!({"uid": new_uid, "euid": new_euid, "gid": new_gid, "egid": new_egid, "cap_effective": format!("{new_caps:#x}")}));
        }
    }
    o.insert("cgroup_id".into(), json!(event.cgroup));
    if let Some(c) = container {
        o.insert("container".into(), json!({"id": c.id, "name": c.name, "image": c.image, "labels": c.labels}));
    }
    if unexpected {
        o.insert("unexpected".into(), json!(true));
    }
    Value::Object(o).to_string()
}

/// The running source.
pub struct SecuritySource {
    config: SecurityConfig,
    matchers: Vec<Matcher>,
    pipeline: Pipeline,
    base: BTreeMap<String, String>,
    containers: Containers,
    counters: Arc<Counters>,
    sender: LogSender,
    stats: Arc<SourceStats>,
    shutdown: CancellationToken,
    registry: crate::status::Registry,
}

impl SecuritySource {
    pub fn new(
        config: &SecurityConfig,
        feed: Option<Feed>,
        sender: LogSender,
        stats: Arc<SourceStats>,
        ctx: &crate::Context,
    ) -> Result<SecuritySource, String> {
        let matchers = config.expect.iter().map(Matcher::new).collect::<Result<Vec<_>, _>>()?;
        let (pipeline, _) = Pipeline::new(&config.stages, "security").map_err(|e| e.join("; "))?;
        let mut base = config.labels.clone();
        base.entry("job".into()).or_insert_with(|| "security".into());
        let counters = Arc::new(Counters::default());
        ctx.registry.add_provider(counters.clone());
        Ok(SecuritySource {
            config: config.clone(),
            matchers,
            pipeline,
            base,
            containers: Containers { feed, by_cgroup: HashMap::new(), scanned: None },
            counters,
            sender,
            stats,
            shutdown: ctx.shutdown.clone(),
            registry: ctx.registry.clone(),
        })
    }

    /// Loads the programs and forwards events until shutdown.
    pub async fn run(mut self) {
        let settings = kernel::Settings {
            kinds: self.config.kind_bits(),
            rate_limit: self.config.rate_limit,
            ring_buffer_size: self.config.ring_buffer_size,
        };
        let registry = self.registry.clone();
        let loaded = tokio::task::spawn_blocking(move || kernel::load(&settings, &registry)).await;
        let loaded = match loaded {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "security: cannot load the security programs (needs CAP_BPF and CAP_PERFMON, or root, and a kernel with BTF); no security events");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "security: the loader failed");
                return;
            }
        };
        crate::memory::release_freed();
        let kernel::Loaded { ebpf, events, drops } = loaded;
        let _programs = ebpf;
        // SAFETY: the ring buffer's fd belongs to `events`, which the
        // AsyncFd owns for its whole life and never replaces.
        let registered = unsafe { AsyncFd::register_with_interest(events, tokio::io::Interest::READABLE) };
        let mut ring = match registered {
            Ok(fd) => fd,
            Err(e) => {
                tracing::error!(error = %e, "security: cannot poll the ring buffer");
                return;
            }
        };
        let mut offset = boot_to_unix_ns();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // The kernel wakes the agent only once a quarter of the ring
        // waits; below that, events are read on this timer.
        let mut drain = tokio::time::interval(DRAIN_EVERY);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tick.tick() => {
                    *self.counters.drops.lock().unwrap() = kernel::read_drops(&drops);
                    // The wall clock may be stepped (NTP): follow it.
                    offset = boot_to_unix_ns();
                }
                _ = drain.tick() => {
                    if !self.drain(ring.get_mut(), offset).await {
                        return;
                    }
                }
                ready = ring.readable_mut() => {
                    let Ok(mut ready) = ready else { break };
                    if !self.drain(ready.get_inner_mut(), offset).await {
                        return;
                    }
                    ready.clear_ready();
                }
            }
        }
    }

    /// Sends on every record waiting in `ring`; false once the log path is
    /// gone.
    async fn drain(&mut self, ring: &mut RingBuf<MapData>, offset: i64) -> bool {
        loop {
            // Decoded into an owned event at once: the record's space goes
            // back to the kernel before we wait on the log path.
            let event = match ring.next() {
                Some(item) => kernel::decode(&item),
                None => return true,
            };
            let Some(event) = event else { continue };
            if !self.forward(event, offset).await {
                return false;
            }
        }
    }

    /// Sends one event on; false once the log path is gone.
    async fn forward(&mut self, event: Event, offset: i64) -> bool {
        self.containers.refresh_if_changed();
        let container = self.containers.get(event.cgroup).await;
        let judged = container
            .as_deref()
            .and_then(|c| self.matchers.iter().find(|m| m.matches(c)))
            .and_then(|m| unexpected(&m.expect, &event));
        let is_unexpected = judged == Some(true);
        let kind = KIND_NAMES[event.kind as usize];
        let name = container.as_ref().map_or(String::new(), |c| c.name.clone());
        {
            let mut counts = self.counters.events.lock().unwrap();
            let c = counts.entry((event.kind as usize, name.clone())).or_default();
            c.0 += 1;
            c.1 += is_unexpected as u64;
        }
        let time_ns = event.boot_ns as i64 + offset;
        let mut labels: Vec<(&str, &str)> = self.base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        labels.push(("kind", kind));
        if !name.is_empty() {
            labels.push(("container", &name));
        }
        if is_unexpected {
            labels.push(("unexpected", "true"));
        }
        let text = line(&event, container.as_deref(), is_unexpected, time_ns);
        self.stats.lines_read.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut rec = Record::new(text, Labels::from_pairs(labels), time_ns);
        let keep = self.pipeline.run(&mut rec, &self.stats.stages);
        let entry =
            LogEntry { labels: rec.labels, timestamp_ns: rec.timestamp_ns, line: keep.then_some(rec.line), ack: None };
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            r = self.sender.send(entry) => r.is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(filename: &str) -> Event {
        Event {
            kind: agent_common::SECURITY_EXEC,
            pid: 10,
            ppid: 1,
            uid: 0,
            gid: 0,
            cgroup: 5,
            boot_ns: 1,
            comm: "sh".into(),
            detail: Detail::Exec { filename: filename.into(), args: vec![], args_truncated: false },
        }
    }

    fn sock(kind: u32, local: u16, remote: u16) -> Event {
        let a = |p| std::net::SocketAddr::from(([127, 0, 0, 1], p));
        Event { kind, detail: Detail::Sock { source: a(local), destination: a(remote), closed: false }, ..exec("") }
    }

    #[test]
    fn only_listed_kinds_are_judged() {
        let e = Expect {
            container: Some("^wallet$".into()),
            executables: Some(vec!["/usr/bin/node".into(), "sh".into()]),
            connect_ports: Some(vec![5432]),
            ..Default::default()
        };
        assert_eq!(unexpected(&e, &exec("/usr/bin/node")), Some(false));
        assert_eq!(unexpected(&e, &exec("/bin/sh")), Some(false), "a bare name matches any path");
        assert_eq!(unexpected(&e, &exec("/bin/nc")), Some(true));
        assert_eq!(unexpected(&e, &sock(agent_common::SECURITY_CONNECT, 0, 5432)), Some(false));
        assert_eq!(unexpected(&e, &sock(agent_common::SECURITY_CONNECT, 0, 22)), Some(true));
        assert_eq!(unexpected(&e, &sock(agent_common::SECURITY_LISTEN, 8080, 0)), None, "no listen_ports: not judged");
        let m = Matcher::new(&e).unwrap();
        let info =
            |name: &str| Info { id: "x".into(), name: name.into(), image: String::new(), labels: BTreeMap::new() };
        assert!(m.matches(&info("wallet")) && !m.matches(&info("wallet-2")));
        let by_label = Matcher::new(&Expect { label: Some("role=wallet".into()), ..Default::default() }).unwrap();
        let mut labeled = info("a");
        assert!(!by_label.matches(&labeled));
        labeled.labels.insert("role".into(), "wallet".into());
        assert!(by_label.matches(&labeled));
        assert!(Matcher::new(&Expect::default()).is_err(), "an entry that matches nothing named is refused");
    }

    #[test]
    fn bad_settings_are_named() {
        let mut c = SecurityConfig { enabled: true, ..Default::default() };
        c.kinds.push("open".into());
        c.ring_buffer_size = 5000;
        c.expect.push(Expect { container: Some("(".into()), ..Default::default() });
        let mut problems = Vec::new();
        c.validate(&mut problems);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("unknown kind \"open\""));
        assert!(problems[1].contains("security.ring_buffer_size: 5000"));
        assert!(problems[2].starts_with("security.expect[0]: container:"));
        assert_eq!(SecurityConfig::default().kind_bits(), 0b11111);
    }

    #[test]
    fn the_line_names_the_event_and_its_container() {
        let c = Info { id: "ab".repeat(32), name: "wallet".into(), image: "busybox".into(), labels: BTreeMap::new() };
        let mut e = exec("/bin/sh");
        e.detail = Detail::Exec {
            filename: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), "id".into()],
            args_truncated: false,
        };
        let v: Value = serde_json::from_str(&line(&e, Some(&c), true, 7)).unwrap();
        assert_eq!(v["kind"], "exec");
        assert_eq!(v["executable"], "/bin/sh");
        assert_eq!(v["args"], json!(["sh", "-c", "id"]));
        assert_eq!(v["container"]["name"], "wallet");
        assert_eq!(v["unexpected"], true);
        assert_eq!(v["time_unix_nano"], 7);
    }
}
