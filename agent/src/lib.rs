//! Vantage: a host agent that collects node, eBPF, Docker, application and
//! log data and pushes it to Prometheus (remote_write) and Loki.
//!
//! # Layout
//!
//! - [`config`]: the TOML configuration, `${VAR}` interpolation, validation.
//! - [`sample`]: the sample model (labels, samples, families, batches).
//! - [`logline`]: the log model (entries, acknowledgements, the bounded
//!   sender log sources wait on, the receipts log sinks give back).
//! - [`sources`]: one module per metric source (`node`, `ebpf`, `docker`,
//!   `scrape`), each producing [`sample::Batch`]es on the interval it
//!   carries; `sources::ebpf::programs` describes every kernel program.
//! - [`relabel`]: Prometheus relabeling, used by scrape jobs and sinks.
//! - [`sinks`]: the `MetricSink` and `LogSink` traits; `remote_write` (WAL,
//!   shards, HTTP), `loki`, and `latest` (the newest samples, served on
//!   `/metrics` in pull mode).
//! - [`logs`]: log sources (files, container logs) and processing stages;
//!   container logs follow Docker discovery's inventory.
//! - [`http_client`]: every outgoing HTTP client (TLS, auth, proxy,
//!   timeouts, user agent), built one way.
//! - [`http`]: health, readiness, `/metrics`, the status page and API.
//! - [`status`] and [`selfmetrics`]: what the agent reports about itself.
//! - [`hash`] (the one stable hash, FNV-1a) and [`errors`] (error chains
//!   for logs): small helpers written once.
//! - [`memory`]: allocator tuning that keeps the agent's RSS small.
//! - [`runtime`]: the composition root: start order, the router, reloads
//!   (SIGHUP, `POST /-/reload`) and shutdown.
//!
//! Data flows one way, the same for both signals: sources -> one bounded
//! channel -> a router in [`runtime`] -> every sink of that signal (metric
//! sinks for batches, log sinks for log lines).

pub mod config;
pub mod errors;
pub mod exposition;
pub mod failure_log;
pub mod hash;
pub mod http;
pub mod http_client;
pub mod logline;
pub mod logs;
pub mod memory;
pub mod relabel;
pub mod runtime;
pub mod sample;
pub mod selfmetrics;
pub mod sinks;
pub mod sources;
pub mod stale;
pub mod status;
pub mod status_page;
pub mod web;

pub use runtime::{
    collect_once, hostname, run, run_with_log_sinks, Context, Reload, ReloadHandle, RunError, SHUTDOWN_GRACE,
};
