//! Scraping Prometheus-format endpoints with Prometheus's semantics.
//!
//! - [`parser`]: the text formats (0.0.4 and OpenMetrics 1.0).
//! - [`ingest`]: a body to families, as Prometheus's scrape loop appends it.
//! - [`target`]: targets (static or from Docker), target relabeling, the
//!   HTTP client and one loop per target.

pub mod cache;
pub mod ingest;
pub mod parser;
pub mod target;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::common::{self, parse_size, BasicAuth, Secret, TlsConfig};
use crate::relabel::{is_valid_label_name, RelabelConfig, Relabeler};

/// A group of static targets sharing extra labels (Prometheus's
/// `static_configs`): `targets = ["kafka-1:7071"]`, `labels = {broker_id = "1"}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// `host:port` addresses; empty ones (an unset variable) are skipped.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Labels added to every series of these targets.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One `[[scrape]]` job.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    /// The `job` label of every series of this job.
    pub job_name: String,
    /// Shorthand for one static group without labels; empty addresses are
    /// skipped.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Static target groups with their own labels.
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
    /// Take targets from Docker discovery (`__meta_docker_*` labels).
    #[serde(default)]
    pub docker_sd: bool,
    /// HTTP path of the metrics; `/metrics` by default.
    #[serde(default)]
    pub metrics_path: Option<String>,
    /// `http` (default) or `https`.
    #[serde(default)]
    pub scheme: Option<String>,
    /// URL query parameters.
    #[serde(default)]
    pub params: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// HTTP(S) proxy for this job's targets, as Prometheus's `proxy_url`;
    /// unset: direct connections (proxy variables of the environment are
    /// not used). It may carry credentials, so it is kept secret.
    #[serde(default)]
    pub proxy_url: Option<Secret>,
    /// TLS settings for `https` targets.
    #[serde(default, alias = "tls_config")]
    pub tls: Option<TlsConfig>,
    /// Time between scrapes; the agent's scrape_interval when unset.
    #[serde(default, with = "common::opt_duration")]
    pub scrape_interval: Option<Duration>,
    /// Time allowed for one scrape; 10s (or the interval, if shorter) when
    /// unset.
    #[serde(default, with = "common::opt_duration")]
    pub scrape_timeout: Option<Duration>,
    /// Largest uncompressed body accepted ("10MB", "512KiB"); "0" or unset
    /// for no limit.
    #[serde(default)]
    pub body_size_limit: Option<String>,
    /// Most samples kept per scrape after relabeling; 0 for no limit.
    #[serde(default)]
    pub sample_limit: usize,
    /// Most labels per series; 0 for no limit.
    #[serde(default)]
    pub label_limit: usize,
    /// Keep the target's own job/instance/... labels on clashes.
    #[serde(default)]
    pub honor_labels: bool,
    /// Use timestamps the target exposes (default true).
    #[serde(default = "default_true")]
    pub honor_timestamps: bool,
    /// Ask for gzip-compressed bodies (default true, as Prometheus).
    #[serde(default = "default_true")]
    pub gzip: bool,
    /// Target relabeling, before the scrape.
    #[serde(default)]
    pub relabel_configs: Vec<RelabelConfig>,
    /// Metric relabeling, on every scraped sample.
    #[serde(default)]
    pub metric_relabel_configs: Vec<RelabelConfig>,
}

fn default_true() -> bool {
    true
}

/// Default scrape timeout, as Prometheus.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl ScrapeConfig {
    /// Adds this job's problems to `problems`, prefixed with `at`.
    pub fn validate(&self, at: &str, problems: &mut Vec<String>) {
        if self.job_name.is_empty() {
            problems.push(format!("{at}: job_name must not be empty"));
        }
        if let Some(s) = &self.scheme {
            if s != "http" && s != "https" {
                problems.push(format!("{at}: scheme must be http or https, not {s:?}"));
            }
        }
        if let Some(p) = &self.metrics_path {
            if !p.starts_with('/') {
                problems.push(format!("{at}: metrics_path {p:?} must start with '/'"));
            }
        }
        if let Err(e) = Relabeler::new(&self.relabel_configs) {
            problems.push(format!("{at}: relabel_configs: {e}"));
        }
        if let Err(e) = Relabeler::new(&self.metric_relabel_configs) {
            problems.push(format!("{at}: metric_relabel_configs: {e}"));
        }
        if let Some(limit) = &self.body_size_limit {
            if let Err(e) = parse_size(limit) {
                problems.push(format!("{at}: body_size_limit: {e}"));
            }
        }
        if let (Some(i), Some(t)) = (self.scrape_interval, self.scrape_timeout) {
            if t > i {
                problems.push(format!("{at}: scrape_timeout ({t:?}) is longer than scrape_interval ({i:?})"));
            }
        }
        if self.scrape_interval.is_some_and(|i| i.is_zero()) {
            problems.push(format!("{at}: scrape_interval must be above zero"));
        }
        let has_bearer = self.bearer_token.as_ref().is_some_and(|t| !t.is_empty())
            || self.bearer_token_file.as_ref().is_some_and(|f| !f.as_os_str().is_empty());
        if has_bearer && self.basic_auth.as_ref().is_some_and(|b| !b.username.is_empty()) {
            problems.push(format!("{at}: basic_auth and bearer_token are both set; keep one"));
        }
        if let Err(e) = Secret::resolve(&self.bearer_token, &self.bearer_token_file, "bearer_token") {
            problems.push(format!("{at}: {e}"));
        }
        for group in &self.static_configs {
            for name in group.labels.keys() {
                if !is_valid_label_name(name) {
                    problems.push(format!("{at}: static label name {name:?} is not a valid label name"));
                }
            }
        }
    }

    /// One line for `vantage check`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for t in self.targets.iter().filter(|t| !t.is_empty()) {
            parts.push(t.clone());
        }
        for g in &self.static_configs {
            let labels: Vec<String> = g.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            for t in g.targets.iter().filter(|t| !t.is_empty()) {
                if labels.is_empty() {
                    parts.push(t.clone());
                } else {
                    parts.push(format!("{t} ({})", labels.join(",")));
                }
            }
        }
        if self.docker_sd {
            parts.push("docker discovery".into());
        }
        format!(
            "targets {} path {}{}",
            parts.join(", "),
            self.metrics_path.as_deref().unwrap_or("/metrics"),
            if self.basic_auth.as_ref().is_some_and(|b| !b.username.is_empty()) { " with basic auth" } else { "" }
        )
    }

    /// The interval of this job, given the agent's default.
    pub fn interval(&self, default: Duration) -> Duration {
        self.scrape_interval.unwrap_or(default)
    }

    /// The timeout of this job: as set, else 10s capped at the interval.
    pub fn timeout(&self, default_interval: Duration) -> Duration {
        self.scrape_timeout.unwrap_or(DEFAULT_TIMEOUT.min(self.interval(default_interval)))
    }
}

/// Starts one loop per target of every job.
pub fn start(
    ctx: &crate::Context,
    docker: Option<tokio::sync::watch::Receiver<Vec<crate::sample::Labels>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for job in &ctx.config.scrape {
        match target::Job::new(job.clone(), ctx.config.agent.scrape_interval) {
            Ok(j) => tasks.push(tokio::spawn(target::run_job(j, ctx.clone(), docker.clone()))),
            Err(e) => tracing::error!(job = %job.job_name, error = %e, "scrape job not started"),
        }
    }
    tasks
}

/// Scrapes every static target once (for `vantage collect --once`).
pub async fn collect_once(config: &crate::config::Config) -> Vec<crate::sample::Family> {
    let mut set = tokio::task::JoinSet::new();
    for job in &config.scrape {
        let j = match target::Job::new(job.clone(), config.agent.scrape_interval) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(job = %job.job_name, error = %e, "scrape job skipped");
                continue;
            }
        };
        let job_limit = job.sample_limit;
        for (i, t) in j.static_targets().into_iter().enumerate() {
            let j = j.clone();
            set.spawn(async move {
                let mut cache = cache::Cache::new(job_limit);
                let (families, error) = j.scrape(&t, &mut cache).await;
                if let Some(e) = &error {
                    tracing::warn!(target = %t.name, error = %e, "scrape failed");
                }
                (i, families)
            });
        }
    }
    let mut out = Vec::new();
    while let Some(done) = set.join_next().await {
        if let Ok((_, families)) = done {
            out.extend(families);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("10MB"), Ok(10 << 20));
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("MB").is_err());
    }

    #[test]
    fn config_in_toml() {
        let text = r#"
            job_name = "kafka-brokers"
            metrics_path = "/metrics"
            scrape_interval = "30s"
            scrape_timeout = "40s"
            body_size_limit = "10MB"
            [[static_configs]]
            targets = ["k1:7071"]
            labels = { broker_id = "1" }
            [[metric_relabel_configs]]
            action = "nope"
        "#;
        let job: ScrapeConfig = toml::from_str(text).unwrap();
        assert_eq!(job.static_configs[0].labels["broker_id"], "1");
        assert!(job.honor_timestamps && job.gzip && !job.honor_labels);
        let mut problems = Vec::new();
        job.validate("scrape[0]", &mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("metric_relabel_configs: relabel rule 0: unknown action"), "{problems:?}");
        assert!(problems[1].contains("scrape_timeout"), "{problems:?}");
        assert_eq!(job.timeout(Duration::from_secs(15)), Duration::from_secs(40));
        let plain: ScrapeConfig = toml::from_str("job_name = \"a\"\nscrape_interval = \"5s\"").unwrap();
        assert_eq!(plain.timeout(Duration::from_secs(15)), Duration::from_secs(5));
    }
}
