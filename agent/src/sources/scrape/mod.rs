//! Scraping Prometheus-format endpoints with Prometheus's semantics.

pub mod parser;

use serde::{Deserialize, Serialize};

/// One `[[scrape]]` job.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    pub job_name: String,
    /// Static targets (`host:port`); empty addresses are skipped.
    #[serde(default)]
    pub targets: Vec<String>,
}

impl ScrapeConfig {
    /// Adds this job's problems to `problems`, prefixed with `at`.
    pub fn validate(&self, at: &str, problems: &mut Vec<String>) {
        if self.job_name.is_empty() {
            problems.push(format!("{at}: job_name must not be empty"));
        }
    }

    /// One line for `vantage check`.
    pub fn describe(&self) -> String {
        let targets: Vec<&str> = self.targets.iter().map(String::as_str).filter(|t| !t.is_empty()).collect();
        format!("targets {}", targets.join(", "))
    }
}

/// Starts one loop per target of every job.
pub fn start(_ctx: &crate::Context) -> Vec<tokio::task::JoinHandle<()>> {
    Vec::new()
}

/// Scrapes every static target once (for `vantage collect --once`).
pub async fn collect_once(_config: &crate::config::Config) -> Vec<crate::sample::Family> {
    Vec::new()
}
