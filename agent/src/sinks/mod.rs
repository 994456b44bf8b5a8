//! Where samples and log lines go: Prometheus remote_write, Loki, and the
//! latest-values store behind `/metrics`.

pub mod latest;
pub mod loki;
pub mod remote_write;

use std::sync::Arc;

use crate::sample::Batch;

/// A destination for metric batches. `accept` must not wait on the
/// network: a sink writes to its WAL or memory and sends in its own task.
pub trait MetricSink: Send + Sync {
    fn accept(&self, batch: &Arc<Batch>);
}

impl MetricSink for latest::Latest {
    fn accept(&self, batch: &Arc<Batch>) {
        self.store(batch.clone());
    }
}
