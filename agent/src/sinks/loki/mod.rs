//! Loki push API sink.

use serde::{Deserialize, Serialize};

/// `[loki]`: where log lines go.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LokiConfig {
    /// Loki base or push URL; empty turns the sink off.
    #[serde(default)]
    pub url: String,
}

impl LokiConfig {
    /// Adds this section's problems to `problems`.
    pub fn validate(&self, _problems: &mut Vec<String>) {}

    /// One line for `vantage check`.
    pub fn describe(&self) -> String {
        self.url.clone()
    }
}
