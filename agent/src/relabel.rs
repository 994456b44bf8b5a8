//! Prometheus relabeling.

use serde::{Deserialize, Serialize};

use crate::sample::Labels;

/// Whether `name` is a valid Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One relabel rule as written in the config (Prometheus's field names).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    #[serde(default)]
    pub source_labels: Vec<String>,
    #[serde(default)]
    pub separator: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub modulus: Option<u64>,
    #[serde(default)]
    pub target_label: Option<String>,
    #[serde(default)]
    pub replacement: Option<String>,
    #[serde(default)]
    pub action: Option<String>,
}

/// Compiled rules, applied in order.
#[derive(Clone, Debug, Default)]
pub struct Relabeler {}

impl Relabeler {
    /// Compiles `rules`; an error names the rule (by index) and the problem.
    pub fn new(_rules: &[RelabelConfig]) -> Result<Relabeler, String> {
        Ok(Relabeler {})
    }

    /// Applies the rules to `labels`; false when the series is dropped.
    pub fn apply(&self, _labels: &mut Labels) -> bool {
        true
    }
}
