//! The latest collection of every source, served on `/metrics` in pull mode.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::sample::Batch;

/// Keeps the newest batch per source.
#[derive(Clone, Default)]
pub struct Latest {
    batches: Arc<RwLock<HashMap<Arc<str>, Arc<Batch>>>>,
}

impl Latest {
    /// Replaces the stored batch of `batch.source`.
    pub fn store(&self, batch: Arc<Batch>) {
        self.batches.write().unwrap().insert(batch.source.clone(), batch);
    }

    /// Forgets a source (a target that went away).
    pub fn forget(&self, source: &str) {
        self.batches.write().unwrap().remove(source);
    }

    /// The stored batches.
    pub fn batches(&self) -> Vec<Arc<Batch>> {
        self.batches.read().unwrap().values().cloned().collect()
    }
}
