//! The agent's own metrics. Every `vantage_*` name is defined here so that
//! dashboards and alerts have one place to look, and so are the standard
//! `process_*` families every Prometheus client library exports about its
//! process (the names standard dashboards and alerts know).

use crate::sample::{now_ms, Family, MetricType};
use crate::status::{Health, Registry};

pub const BUILD_INFO: &str = "vantage_build_info";
pub const SOURCE_UP: &str = "vantage_source_up";
pub const SOURCE_COLLECTIONS: &str = "vantage_source_collections_total";
pub const SOURCE_DURATION: &str = "vantage_source_collection_duration_seconds";
pub const SOURCE_SERIES: &str = "vantage_source_series";
pub const SOURCE_LAST_COLLECTION: &str = "vantage_source_last_collection_timestamp_seconds";
pub const EBPF_PROGRAM_UP: &str = "vantage_ebpf_program_up";
pub const PROCESS_CPU: &str = "process_cpu_seconds_total";
pub const PROCESS_RSS: &str = "process_resident_memory_bytes";
pub const PROCESS_VSIZE: &str = "process_virtual_memory_bytes";
pub const PROCESS_VSIZE_MAX: &str = "process_virtual_memory_max_bytes";
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
pub const PROCESS_START_TIME: &str = "process_start_time_seconds";
pub const READY: &str = "vantage_ready";
// Prometheus's own names, so its reload alerts and dashboards apply as they are.
pub const CONFIG_RELOAD_OK: &str = "vantage_config_last_reload_successful";
pub const CONFIG_RELOAD_TIME: &str = "vantage_config_last_reload_success_timestamp_seconds";

// remote_write sink, per endpoint (label `endpoint`).
pub const RW_SAMPLES_SENT: &str = "vantage_remote_write_samples_sent_total";
pub const RW_SAMPLES_RETRIED: &str = "vantage_remote_write_samples_retried_total";
pub const RW_SAMPLES_DROPPED: &str = "vantage_remote_write_samples_dropped_total";
pub const RW_SAMPLES_FAILED: &str = "vantage_remote_write_samples_failed_total";
pub const RW_SAMPLES_PENDING: &str = "vantage_remote_write_samples_pending";
pub const RW_SHARDS: &str = "vantage_remote_write_shards";
pub const RW_WAL_BYTES: &str = "vantage_remote_write_wal_bytes";
pub const RW_WAL_SEGMENTS: &str = "vantage_remote_write_wal_segments";
pub const RW_WAL_MEMORY_BYTES: &str = "vantage_remote_write_wal_memory_bytes";
pub const WAL_CORRUPT_RECORDS: &str = "vantage_wal_corrupt_records_total";
pub const WAL_SEGMENTS_SKIPPED: &str = "vantage_wal_segments_skipped_total";
pub const RW_LAST_SEND: &str = "vantage_remote_write_last_send_timestamp_seconds";
pub const RW_HIGHEST_SENT: &str = "vantage_remote_write_highest_sent_timestamp_seconds";
pub const RW_REQUEST_DURATION: &str = "vantage_remote_write_request_duration_seconds";
pub const RW_BYTES_SENT: &str = "vantage_remote_write_bytes_sent_total";

// Loki sink and log sources.
pub const LOKI_ENTRIES_SENT: &str = "vantage_loki_entries_sent_total";
pub const LOKI_ENTRIES_DROPPED: &str = "vantage_loki_entries_dropped_total";
pub const LOKI_ENTRIES_PENDING: &str = "vantage_loki_entries_pending";
pub const LOKI_LAST_SEND: &str = "vantage_loki_last_send_timestamp_seconds";
pub const LOKI_REQUESTS_FAILED: &str = "vantage_loki_requests_failed_total";
pub const LOKI_BYTES_SENT: &str = "vantage_loki_bytes_sent_total";
pub const LOKI_BUFFER_BYTES: &str = "vantage_loki_buffer_bytes";
pub const LOG_STAGE_ERRORS: &str = "vantage_log_stage_errors_total";
pub const LOG_LINES_DROPPED: &str = "vantage_log_lines_dropped_total";
pub const LOG_ROTATIONS: &str = "vantage_log_rotations_total";
pub const LOG_CONTAINERS_FOLLOWED: &str = "vantage_log_containers_followed";
pub const LOG_LINES_READ: &str = "vantage_log_lines_read_total";
pub const LOG_LINES_TRUNCATED: &str = "vantage_log_lines_truncated_total";
pub const LOG_INVALID_UTF8: &str = "vantage_log_invalid_utf8_lines_total";
pub const LOG_FILES_WATCHED: &str = "vantage_log_files_watched";
pub const SECURITY_EVENTS: &str = "ebpf_security_events_total";
pub const SECURITY_UNEXPECTED: &str = "ebpf_security_unexpected_events_total";
pub const SECURITY_DROPPED: &str = "vantage_security_events_dropped_total";

/// Renders the agent's own families from the registry and the providers.
pub fn collect(registry: &Registry) -> Vec<Family> {
    let ts = now_ms();
    let snap = registry.snapshot();
    let mut out = Vec::new();

    let mut info = Family::new(BUILD_INFO, MetricType::Gauge, "Vantage build information.");
    info.push(&[("version", snap.version)], 1.0, ts);
    out.push(info);

    let mut ready = Family::new(READY, MetricType::Gauge, "1 once every enabled source has completed a collection.");
    ready.push(&[], if snap.ready { 1.0 } else { 0.0 }, ts);
    out.push(ready);

    let mut ok = Family::new(CONFIG_RELOAD_OK, MetricType::Gauge, "1 when the last configuration reload succeeded.");
    ok.push(&[], if snap.reload.last_successful { 1.0 } else { 0.0 }, ts);
    let mut at =
        Family::new(CONFIG_RELOAD_TIME, MetricType::Gauge, "Unix time of the last successful configuration reload.");
    at.push(&[], snap.reload.last_success_ms as f64 / 1000.0, ts);
    out.extend([ok, at]);

    let mut up = Family::new(SOURCE_UP, MetricType::Gauge, "1 when the source's last collection succeeded.");
    let mut collections = Family::new(SOURCE_COLLECTIONS, MetricType::Counter, "Collections finished per source.");
    let mut duration = Family::new(SOURCE_DURATION, MetricType::Gauge, "Duration of the source's last collection.");
    let mut series = Family::new(SOURCE_SERIES, MetricType::Gauge, "Series in the source's last collection.");
    let mut last = Family::new(SOURCE_LAST_COLLECTION, MetricType::Gauge, "Unix time of the source's last collection.");
    for (name, s) in &snap.sources {
        let labels = [("source", name.as_str()), ("kind", s.kind.as_str())];
        up.push(&labels, if s.health == Health::Up { 1.0 } else { 0.0 }, ts);
        collections.push(&labels, s.collections as f64, ts);
        duration.push(&labels, s.last_duration_seconds, ts);
        series.push(&labels, s.series as f64, ts);
        last.push(&labels, s.last_collection_ms as f64 / 1000.0, ts);
    }
    out.extend([up, collections, duration, series, last]);

    let mut programs =
        Family::new(EBPF_PROGRAM_UP, MetricType::Gauge, "1 when the eBPF program is loaded and attached.");
    for (name, p) in &snap.programs {
        programs.push(&[("program", name)], if p.attached { 1.0 } else { 0.0 }, ts);
    }
    out.push(programs);

    process_families(&mut out, ts);
    registry.provider_metrics(&mut out);
    out
}

/// The standard process families with the Prometheus client libraries'
/// names, types and help texts. Each is left out when its source cannot be
/// read, as the client libraries do.
fn process_families(out: &mut Vec<Family>, ts: i64) {
    let mut gauge = |name: &str, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            let mut f = Family::new(name, MetricType::Gauge, help);
            f.push(&[], v, ts);
            out.push(f);
        }
    };
    let stat = ProcessStat::read();
    gauge(PROCESS_VSIZE, "Virtual memory size in bytes.", stat.as_ref().map(|s| s.vsize));
    gauge(PROCESS_VSIZE_MAX, "Maximum amount of virtual memory available in bytes.", soft_limit(libc::RLIMIT_AS));
    gauge(PROCESS_RSS, "Resident memory size in bytes.", stat.as_ref().map(|s| s.rss_bytes));
    gauge(PROCESS_OPEN_FDS, "Number of open file descriptors.", open_fds());
    gauge(PROCESS_MAX_FDS, "Maximum number of open file descriptors.", soft_limit(libc::RLIMIT_NOFILE));
    gauge(PROCESS_START_TIME, "Start time of the process since unix epoch in seconds.", start_time());
    if let Some(s) = &stat {
        let mut f = Family::new(PROCESS_CPU, MetricType::Counter, "Total user and system CPU time spent in seconds.");
        f.push(&[], s.cpu_seconds, ts);
        out.push(f);
    }
}

/// What /proc/self/stat says about this process.
struct ProcessStat {
    cpu_seconds: f64,
    /// Start time in clock ticks after boot.
    start_ticks: f64,
    vsize: f64,
    rss_bytes: f64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

impl ProcessStat {
    fn read() -> Option<ProcessStat> {
        Self::parse(&std::fs::read_to_string("/proc/self/stat").ok()?)
    }

    /// Parses a `/proc/<pid>/stat` line (proc(5)).
    fn parse(stat: &str) -> Option<ProcessStat> {
        // Fields after the command name, which is in parentheses and may
        // hold spaces and parentheses: index 0 is field 3 (state).
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
        Some(ProcessStat {
            cpu_seconds: (field(14)? + field(15)?) / clock_ticks(),
            start_ticks: field(22)?,
            vsize: field(23)?,
            rss_bytes: field(24)? * page,
        })
    }
}

/// getrlimit's resource type: glibc's own enum type, musl's plain int (the
/// static binary).
#[cfg(target_env = "gnu")]
type RlimitResource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type RlimitResource = libc::c_int;

/// The soft limit of `resource`; "unlimited" is u64::MAX, as the client
/// libraries report it (1.8446744073709552e+19).
fn soft_limit(resource: RlimitResource) -> Option<f64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    (unsafe { libc::getrlimit(resource, &mut lim) } == 0).then_some(lim.rlim_cur as f64)
}

/// Entries of /proc/self/fd, less the one the listing itself holds open.
fn open_fds() -> Option<f64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count();
    Some(n.saturating_sub(1) as f64)
}

/// Boot time (`btime` of /proc/stat) plus the start ticks: fixed for the
/// life of the process, so computed once.
fn start_time() -> Option<f64> {
    static START: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let btime: f64 = stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
        Some(btime + ProcessStat::read()?.start_ticks / clock_ticks())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_command_with_spaces_and_parentheses() {
        let line = "42 (a b) (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 3 0 777 123456789 1000 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let s = ProcessStat::parse(line).unwrap();
        assert_eq!(s.cpu_seconds, 400.0 / clock_ticks());
        assert_eq!(s.start_ticks, 777.0);
        assert_eq!(s.vsize, 123456789.0);
        // SAFETY: sysconf has no preconditions.
        assert_eq!(s.rss_bytes, 1000.0 * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64);
    }

    #[test]
    fn process_families_have_the_client_library_names() {
        let mut out = Vec::new();
        process_families(&mut out, 1);
        let names: Vec<&str> = out.iter().map(|f| f.name.as_str()).collect();
        for name in [
            PROCESS_CPU,
            PROCESS_RSS,
            PROCESS_VSIZE,
            PROCESS_VSIZE_MAX,
            PROCESS_OPEN_FDS,
            PROCESS_MAX_FDS,
            PROCESS_START_TIME,
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        let open = out.iter().find(|f| f.name == PROCESS_OPEN_FDS).unwrap().samples[0].value;
        assert!(open >= 3.0, "stdin, stdout and stderr at least: {open}");
    }
}
