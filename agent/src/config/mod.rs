//! The agent's configuration: TOML with `${VAR}` interpolation, unknown
//! keys rejected with their line, and a `validate()` that reports every
//! problem at once. Each source and sink owns its config struct (in its own
//! module); this module assembles them and holds the agent-wide settings.

pub mod common;
pub mod interpolate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use common::{parse_duration, BasicAuth, Secret, TlsConfig};
pub use interpolate::Vars;

use crate::logs::security::SecurityConfig;
use crate::logs::LogsConfig;
use crate::sinks::loki::LokiConfig;
use crate::sinks::remote_write::RemoteWriteConfig;
use crate::sources::docker::DockerConfig;
use crate::sources::ebpf::EbpfConfig;
use crate::sources::node::NodeConfig;
use crate::sources::scrape::ScrapeConfig;

/// The configuration compiled into the binary: what runs without `--config`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../config/local.toml");

/// Name shown for the embedded default in messages.
pub const EMBEDDED_NAME: &str = "<embedded config/local.toml>";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {file}: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: {}", unset_message(.vars))]
    UnsetVars { file: String, vars: Vec<interpolate::UnsetVar> },
    #[error("{file}:{line}:{column}: {message}")]
    Syntax { file: String, line: usize, column: usize, message: String },
    #[error("{file}: invalid configuration:\n  - {}", .problems.join("\n  - "))]
    Invalid { file: String, problems: Vec<String> },
    #[error("{0}")]
    EnvFile(String),
}

fn unset_message(vars: &[interpolate::UnsetVar]) -> String {
    let list: Vec<String> =
        vars.iter().map(|v| format!("${{{}}} at line {}, column {}", v.name, v.line, v.column)).collect();
    format!(
        "variable{} used but not set and without a default: {} (set it in the environment or the --env-file, or write ${{NAME:-default}})",
        if vars.len() == 1 { "" } else { "s" },
        list.join(", ")
    )
}

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub agent: AgentConfig,
    #[serde(default)]
    pub node: NodeConfig,
    #[serde(default)]
    pub ebpf: EbpfConfig,
    #[serde(default)]
    pub docker: DockerConfig,
    #[serde(default)]
    pub scrape: Vec<ScrapeConfig>,
    #[serde(default)]
    pub remote_write: Vec<RemoteWriteConfig>,
    #[serde(default)]
    pub loki: LokiConfig,
    #[serde(default)]
    pub logs: LogsConfig,
    #[serde(default)]
    pub security: SecurityConfig,
    /// Where this configuration came from (a path or the embedded name).
    #[serde(skip)]
    pub origin: String,
}

/// Agent-wide settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Address of the HTTP server (health, readiness, /metrics, status).
    #[serde(default = "default_listen_addr")]
    pub listen_addr: String,
    /// Directory for the WAL and the log positions.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Default collection and scrape interval.
    #[serde(default = "default_interval", with = "common::duration")]
    pub scrape_interval: Duration,
    /// Labels added to everything that leaves the host (remote_write, Loki).
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    /// Serve the latest collected samples on /metrics (pull mode).
    #[serde(default)]
    pub serve_collected: bool,
    /// How often a scrape target or sink that keeps failing is logged again.
    #[serde(default = "default_log_repeat_interval", with = "common::duration")]
    pub log_repeat_interval: Duration,
    /// An exporter-toolkit web configuration (TLS, basic auth, headers) for
    /// the HTTP server; `--web.config.file` overrides it.
    #[serde(default)]
    pub web_config_file: Option<PathBuf>,
}

fn default_listen_addr() -> String {
    "127.0.0.1:12345".into()
}
fn default_data_dir() -> PathBuf {
    "/var/lib/vantage".into()
}
fn default_interval() -> Duration {
    Duration::from_secs(15)
}
fn default_log_repeat_interval() -> Duration {
    crate::failure_log::DEFAULT_REPEAT
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            listen_addr: default_listen_addr(),
            data_dir: default_data_dir(),
            scrape_interval: default_interval(),
            external_labels: BTreeMap::new(),
            serve_collected: false,
            log_repeat_interval: default_log_repeat_interval(),
            web_config_file: None,
        }
    }
}

impl Config {
    /// Loads `path`, or the embedded default when `path` is None.
    pub fn load(path: Option<&Path>, env_file: Option<&Path>) -> Result<Config, ConfigError> {
        let vars = match env_file {
            Some(f) => Vars::with_env_file(f).map_err(ConfigError::EnvFile)?,
            None => Vars::from_env(),
        };
        match path {
            Some(p) => {
                let file = p.display().to_string();
                let text =
                    std::fs::read_to_string(p).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
                Config::from_text(&text, &file, &vars)
            }
            None => Config::from_text(EMBEDDED_DEFAULT, EMBEDDED_NAME, &vars),
        }
    }

    /// Parses and validates configuration text; `file` names it in errors.
    pub fn from_text(text: &str, file: &str, vars: &Vars) -> Result<Config, ConfigError> {
        let (text, unset) = interpolate::interpolate(text, vars);
        if !unset.is_empty() {
            return Err(ConfigError::UnsetVars { file: file.into(), vars: unset });
        }
        let mut config: Config = toml::from_str(&text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |s| interpolate::line_column(&text, s.start));
            ConfigError::Syntax { file: file.into(), line, column, message: e.message().trim().to_string() }
        })?;
        config.origin = file.into();
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid { file: file.into(), problems });
        }
        Ok(config)
    }

    /// Every problem of the configuration, each naming where it is.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.agent.listen_addr.parse::<std::net::SocketAddr>().is_err() {
            problems
                .push(format!("agent.listen_addr {:?} is not an address like 127.0.0.1:12345", self.agent.listen_addr));
        }
        if self.agent.scrape_interval.is_zero() {
            problems.push("agent.scrape_interval must be above zero".into());
        }
        for name in self.agent.external_labels.keys() {
            if !crate::relabel::is_valid_label_name(name) {
                problems.push(format!("agent.external_labels: {name:?} is not a valid label name"));
            }
        }
        self.node.validate(&mut problems);
        self.ebpf.validate(&mut problems);
        self.docker.validate(&mut problems);
        let mut jobs = std::collections::HashSet::new();
        for (i, job) in self.scrape.iter().enumerate() {
            if !jobs.insert(job.job_name.as_str()) {
                problems.push(format!("scrape[{i}]: job_name {:?} is used twice", job.job_name));
            }
            job.validate(&format!("scrape[{i}] ({})", job.job_name), &mut problems);
        }
        for (i, rw) in self.remote_write.iter().enumerate() {
            rw.validate(&format!("remote_write[{i}]"), &mut problems);
        }
        self.loki.validate(&mut problems);
        self.logs.validate(&mut problems);
        self.security.validate(&mut problems);
        if self.docker.enabled && self.logs.docker.enabled {
            let (discovery, logs) = (
                crate::sources::docker::socket_url(&self.docker.host),
                crate::sources::docker::socket_url(self.docker_socket()),
            );
            if discovery != logs {
                problems.push(format!(
                    "logs.docker.host ({logs}) and docker.host ({discovery}) name different Docker sockets; \
                     the agent keeps one container inventory: set them to the same socket or leave logs.docker.host empty"
                ));
            }
        }
        problems
    }

    /// The Docker socket of the agent's one container inventory (discovery,
    /// container metrics and container logs): `logs.docker.host` when
    /// container logs set it, else `docker.host` (validation refuses two
    /// different ones while both are enabled).
    pub fn docker_socket(&self) -> &str {
        if self.logs.docker.enabled && !self.logs.docker.host.is_empty() {
            &self.logs.docker.host
        } else {
            &self.docker.host
        }
    }

    /// The remote_write endpoints that are on (an empty url turns one off).
    pub fn active_remote_writes(&self) -> impl Iterator<Item = &RemoteWriteConfig> {
        self.remote_write.iter().filter(|rw| !rw.url.trim().is_empty())
    }

    /// Human-readable lines describing what would run, for `vantage check`.
    /// Secrets are never part of it.
    pub fn summary(&self) -> Vec<String> {
        let mut lines = vec![format!("config: {}", self.origin)];
        lines.push(format!(
            "agent: listen {}, data_dir {}, interval {}",
            self.agent.listen_addr,
            self.agent.data_dir.display(),
            common::format_duration(self.agent.scrape_interval)
        ));
        if !self.agent.external_labels.is_empty() {
            let labels: Vec<String> = self.agent.external_labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            lines.push(format!("external labels: {}", labels.join(", ")));
        }
        lines.push(format!("source node: {}", if self.node.enabled { self.node.describe() } else { "off".into() }));
        lines.push(format!("source ebpf: {}", if self.ebpf.enabled { self.ebpf.describe() } else { "off".into() }));
        lines.push(format!(
            "source docker: {}",
            if self.docker.enabled { self.docker.describe() } else { "off".into() }
        ));
        for job in &self.scrape {
            lines.push(format!("scrape job {}: {}", job.job_name, job.describe()));
        }
        for rw in &self.remote_write {
            if rw.url.trim().is_empty() {
                lines.push("sink remote_write: off (empty url)".into());
            } else {
                lines.push(format!("sink remote_write: {}", rw.describe()));
            }
        }
        lines.push(format!(
            "sink loki: {}",
            if self.loki.url.trim().is_empty() { "off (empty url)".into() } else { self.loki.describe() }
        ));
        lines.extend(self.logs.describe());
        if self.security.enabled {
            lines.push(format!("security: {}", self.security.describe()));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars::from_map(Default::default())
    }

    #[test]
    fn logs_and_discovery_on_two_sockets_are_refused() {
        let mut c = Config::default();
        c.docker.enabled = true;
        c.docker.host = "unix:///run/a.sock".into();
        c.logs.docker.enabled = true;
        c.logs.docker.host = "unix:///run/b.sock".into();
        let problems = c.validate();
        let p = problems.iter().find(|p| p.contains("logs.docker.host")).expect("refused");
        assert!(p.contains("docker.host") && p.contains("/run/a.sock") && p.contains("/run/b.sock"), "{p}");
        assert_eq!(c.docker_socket(), "unix:///run/b.sock");

        c.logs.docker.host = "unix:///run/a.sock".into();
        assert!(!c.validate().iter().any(|p| p.contains("logs.docker.host")), "one socket named twice is fine");
        c.logs.docker.host.clear();
        assert!(!c.validate().iter().any(|p| p.contains("logs.docker.host")), "empty takes docker.host");
        assert_eq!(c.docker_socket(), "unix:///run/a.sock");
        c.docker.enabled = false;
        c.logs.docker.host = "unix:///run/b.sock".into();
        assert!(!c.validate().iter().any(|p| p.contains("logs.docker.host")), "discovery off: no conflict");
    }

    #[test]
    fn unknown_key_names_its_line() {
        let err =
            Config::from_text("[agent]\nlisten_addr = \"127.0.0.1:1\"\nbogus = 1\n", "x.toml", &vars()).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("x.toml:3:1:"), "{text}");
        assert!(text.contains("bogus"), "{text}");
    }

    #[test]
    fn unset_variable_is_named_with_its_place() {
        let err =
            Config::from_text("[agent]\nlisten_addr = \"${VANTAGE_T_UNSET_X}\"\n", "y.toml", &vars()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("${VANTAGE_T_UNSET_X} at line 2, column 16"), "{text}");
    }

    #[test]
    fn every_problem_is_reported() {
        let err =
            Config::from_text("[agent]\nlisten_addr = \"nowhere\"\nscrape_interval = \"0s\"\n", "z.toml", &vars())
                .unwrap_err();
        match err {
            ConfigError::Invalid { problems, .. } => assert_eq!(problems.len(), 2, "{problems:?}"),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn bad_duration_is_a_syntax_error_with_place() {
        let err = Config::from_text("[agent]\nscrape_interval = \"15\"\n", "d.toml", &vars()).unwrap_err();
        assert!(err.to_string().starts_with("d.toml:2:"), "{err}");
    }

    #[test]
    fn embedded_default_loads() {
        let config = Config::from_text(EMBEDDED_DEFAULT, EMBEDDED_NAME, &vars()).unwrap();
        assert!(config.node.enabled && config.ebpf.enabled && config.agent.serve_collected);
        assert!(config.remote_write.is_empty());
    }
}
