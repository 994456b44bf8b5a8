//! Vantage: a host agent that collects node, eBPF, Docker, application and
//! log data and pushes it to Prometheus (remote_write) and Loki.
//!
//! # Layout
//!
//! - [`config`]: the TOML configuration, `${VAR}` interpolation, validation.
//! - [`sample`]: the sample model (labels, samples, families, batches).
//! - [`sources`]: one module per metric source (`node`, `ebpf`, `docker`,
//!   `scrape`), each producing [`sample::Batch`]es on the interval it
//!   carries; `sources::ebpf::programs` describes every kernel program.
//! - [`relabel`]: Prometheus relabeling, used by scrape jobs and sinks.
//! - [`sinks`]: `remote_write` (WAL, shards, HTTP), `loki`, and `latest`
//!   (the newest samples, served on `/metrics` in pull mode).
//! - [`logs`]: log sources (files, container logs) and processing stages.
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
//! Data flows one way: sources -> one bounded channel -> the router in
//! [`runtime`] -> every metric sink. Logs have their own path to Loki.

pub mod config;
pub mod errors;
pub mod exposition;
pub mod failure_log;
pub mod hash;
pub mod http;
pub mod http_client;
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

pub use runtime::{collect_once, hostname, run, Context, Reload, ReloadHandle, RunError, SHUTDOWN_GRACE};
