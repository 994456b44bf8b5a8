//! Prometheus remote_write: each `[[remote_write]]` endpoint gets its own
//! write-ahead log, queue of shards and HTTP client.
//!
//! `accept` (on the router's task) relabels, adds external labels, drops
//! out-of-order samples and appends one record to the endpoint's WAL; it
//! never waits on the network. The endpoint's queue task reads the WAL,
//! spreads series over shards by a hash of their labels (so one series is
//! always sent in order by one shard), sends, retries, and records what was
//! acknowledged so that a restart resends only what was not.
//!
//! Layout: [`config`] the settings, [`sink`] accepting batches into the WAL
//! and starting an endpoint, [`stats`] its counters and self-metrics,
//! [`proto`] wire messages, [`encode`] protobuf + snappy, [`wal`] segments
//! and acknowledgements, [`queue`] shards and retries, [`client`] the HTTP
//! side.

pub mod client;
pub mod config;
pub mod encode;
pub mod proto;
pub mod queue;
pub mod sink;
pub mod stats;
pub mod wal;

pub use config::{QueueConfig, RemoteWriteConfig, DEFAULT_MAX_WAL_SIZE};
pub use sink::{encode_series, series_hash, start_one, Sink, Started};
pub use stats::{Stats, DROP_REASONS};
use stats::{DROP_DISK_FULL, DROP_INVALID, DROP_OUT_OF_ORDER, DROP_REJECTED, DROP_WAL_ERROR, DROP_WAL_FULL};
