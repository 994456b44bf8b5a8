//! The agent's own metrics. Every `vantage_*` name is defined here so that
//! dashboards and alerts have one place to look.

use crate::sample::{now_ms, Family, MetricType};
use crate::status::{Health, Registry};

pub const BUILD_INFO: &str = "vantage_build_info";
pub const SOURCE_UP: &str = "vantage_source_up";
pub const SOURCE_COLLECTIONS: &str = "vantage_source_collections_total";
pub const SOURCE_DURATION: &str = "vantage_source_collection_duration_seconds";
pub const SOURCE_SERIES: &str = "vantage_source_series";
pub const SOURCE_LAST_COLLECTION: &str = "vantage_source_last_collection_timestamp_seconds";
pub const EBPF_PROGRAM_UP: &str = "vantage_ebpf_program_up";
pub const PROCESS_CPU: &str = "vantage_process_cpu_seconds_total";
pub const PROCESS_RSS: &str = "vantage_process_resident_memory_bytes";
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

    if let Some((cpu, rss)) = process_usage() {
        let mut f = Family::new(PROCESS_CPU, MetricType::Counter, "CPU time used by the agent (user + system).");
        f.push(&[], cpu, ts);
        out.push(f);
        let mut f = Family::new(PROCESS_RSS, MetricType::Gauge, "Resident memory of the agent.");
        f.push(&[], rss, ts);
        out.push(f);
    }
    registry.provider_metrics(&mut out);
    out
}

/// CPU seconds and resident bytes of this process, from /proc/self/stat.
fn process_usage() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let rss: f64 = fields.get(21)?.parse().ok()?;
    Some(((utime + stime) / ticks, rss * page))
}
