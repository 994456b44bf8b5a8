//! Where samples and log lines go: Prometheus remote_write, Loki, and the
//! latest-values store behind `/metrics`.

pub mod latest;
pub mod loki;
pub mod remote_write;

use std::sync::Arc;

use crate::logline::{LogEntry, Receipt};
use crate::sample::Batch;

/// A destination for metric batches. `accept` must not wait on the
/// network: a sink writes to its WAL or memory and sends in its own task.
pub trait MetricSink: Send + Sync {
    fn accept(&self, batch: &Arc<Batch>);
}

/// A destination for log entries, the log side of [`MetricSink`]. `accept`
/// must not wait on the network: a sink queues the entry and sends in its
/// own task, then calls [`Receipt::done`] once it has the entry for good,
/// in the order it took them. The entry's position is committed once every
/// log sink has done so.
pub trait LogSink: Send + Sync {
    fn accept(&self, entry: LogEntry, receipt: Receipt);
}

impl MetricSink for latest::Latest {
    fn accept(&self, batch: &Arc<Batch>) {
        self.store(batch.clone());
    }
}
