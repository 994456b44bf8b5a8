//! Log sources (files, container logs) and their processing stages.

use serde::{Deserialize, Serialize};

/// `[logs]`: log sources.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogsConfig {}

impl LogsConfig {
    /// Adds this section's problems to `problems`.
    pub fn validate(&self, _problems: &mut Vec<String>) {}

    /// Lines for `vantage check`.
    pub fn describe(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Starts the log sources and the Loki sink.
pub fn start(_ctx: &crate::Context) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    Ok(Vec::new())
}
