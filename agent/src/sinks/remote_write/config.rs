//! `[[remote_write]]` settings: the endpoint, its queue, defaults and
//! validation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::*;
use crate::config::common::{self, BasicAuth, Secret, TlsConfig};
use crate::relabel::{RelabelConfig, Relabeler};

/// Default cap of one endpoint's WAL on disk.
pub const DEFAULT_MAX_WAL_SIZE: u64 = 1 << 30;

/// One `[[remote_write]]` endpoint.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// Name in logs, self-metrics (`endpoint` label) and the WAL directory;
    /// derived from the URL when empty.
    #[serde(default)]
    pub name: String,
    /// Receiver URL; empty turns this endpoint off. Shown without userinfo.
    #[serde(default, serialize_with = "serialize_url")]
    pub url: String,
    /// "v1" (prometheus.WriteRequest) or "v2" (io.prometheus.write.v2.Request,
    /// falling back to v1 when the receiver answers 415).
    #[serde(default = "default_protobuf_message")]
    pub protobuf_message: String,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// Extra request headers; they cannot replace the protocol's headers.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Timeout of one request.
    #[serde(default = "default_timeout", with = "common::duration")]
    pub timeout: Duration,
    /// HTTP(S) proxy; it may carry credentials, so it is kept secret.
    #[serde(default)]
    pub proxy_url: Option<Secret>,
    #[serde(default)]
    pub tls: TlsConfig,
    /// Relabel rules applied to every sample before it enters the WAL.
    #[serde(default)]
    pub write_relabel_configs: Vec<RelabelConfig>,
    #[serde(default)]
    pub queue_config: QueueConfig,
    /// Disk cap of this endpoint's WAL: bytes, or "512MiB", "1GiB", "2GB".
    #[serde(default = "default_max_wal_size", with = "common::size")]
    pub max_wal_size: u64,
    /// Records held in memory while the WAL's disk refuses writes (full,
    /// quota, I/O error); past it the oldest are dropped and counted.
    #[serde(default = "default_memory_buffer_size", with = "common::size")]
    pub memory_buffer_size: u64,
    /// How long pending samples may still go out at shutdown; the rest
    /// stays in the WAL. Below the agent's 4 s shutdown grace.
    #[serde(default = "default_flush_deadline", with = "common::duration")]
    pub flush_deadline: Duration,
}

/// Batching, sharding and retry settings of one endpoint.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    #[serde(default = "default_max_samples_per_send")]
    pub max_samples_per_send: usize,
    /// A shard sends a partial batch once its oldest sample waited this long.
    #[serde(default = "default_batch_send_deadline", with = "common::duration")]
    pub batch_send_deadline: Duration,
    #[serde(default = "default_min_shards")]
    pub min_shards: usize,
    #[serde(default = "default_max_shards")]
    pub max_shards: usize,
    /// Samples read from the WAL and held in memory per shard.
    #[serde(default = "default_capacity")]
    pub capacity: usize,
    #[serde(default = "default_min_backoff", with = "common::duration")]
    pub min_backoff: Duration,
    #[serde(default = "default_max_backoff", with = "common::duration")]
    pub max_backoff: Duration,
}

fn serialize_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&client::display_url(url))
}

fn default_protobuf_message() -> String {
    "v1".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_wal_size() -> u64 {
    DEFAULT_MAX_WAL_SIZE
}
fn default_memory_buffer_size() -> u64 {
    wal::MEMORY_BUFFER_BYTES
}
fn default_flush_deadline() -> Duration {
    Duration::from_secs(3)
}
fn default_max_samples_per_send() -> usize {
    2000
}
fn default_batch_send_deadline() -> Duration {
    Duration::from_secs(5)
}
fn default_min_shards() -> usize {
    1
}
fn default_max_shards() -> usize {
    10
}
fn default_capacity() -> usize {
    10_000
}
fn default_min_backoff() -> Duration {
    Duration::from_millis(30)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(5)
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_samples_per_send: default_max_samples_per_send(),
            batch_send_deadline: default_batch_send_deadline(),
            min_shards: default_min_shards(),
            max_shards: default_max_shards(),
            capacity: default_capacity(),
            min_backoff: default_min_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

impl Default for RemoteWriteConfig {
    fn default() -> Self {
        RemoteWriteConfig {
            name: String::new(),
            url: String::new(),
            protobuf_message: default_protobuf_message(),
            basic_auth: None,
            bearer_token: None,
            bearer_token_file: None,
            headers: BTreeMap::new(),
            timeout: default_timeout(),
            proxy_url: None,
            tls: TlsConfig::default(),
            write_relabel_configs: Vec::new(),
            queue_config: QueueConfig::default(),
            max_wal_size: default_max_wal_size(),
            memory_buffer_size: default_memory_buffer_size(),
            flush_deadline: default_flush_deadline(),
        }
    }
}

impl RemoteWriteConfig {
    /// Adds this endpoint's problems to `problems`, prefixed with `at`.
    pub fn validate(&self, at: &str, problems: &mut Vec<String>) {
        if self.url.trim().is_empty() {
            return;
        }
        let mut bad = |p: String| problems.push(format!("{at}: {p}"));
        match reqwest::Url::parse(&self.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(_) => bad(format!("url {} must be http or https", client::display_url(&self.url))),
            Err(e) => bad(format!("url {}: {e}", client::display_url(&self.url))),
        }
        if !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
            bad(format!("name {:?} may hold only letters, digits, '_', '.' and '-'", self.name));
        }
        if self.v2_requested().is_none() {
            bad(format!("protobuf_message {:?} must be \"v1\" or \"v2\"", self.protobuf_message));
        }
        for name in self.headers.keys() {
            if client::RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                bad(format!("headers: {name} is set by the protocol and cannot be configured"));
            }
        }
        if let Some(ba) = &self.basic_auth {
            if let Err(e) = ba.credentials() {
                bad(format!("basic_auth: {e}"));
            }
        }
        if let Err(e) = Secret::resolve(&self.bearer_token, &self.bearer_token_file, "bearer_token") {
            bad(e);
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            bad("tls.cert_file and tls.key_file must be set together".into());
        }
        let q = &self.queue_config;
        if q.max_samples_per_send == 0 {
            bad("queue_config.max_samples_per_send must be at least 1".into());
        }
        if q.min_shards == 0 || q.min_shards > q.max_shards || q.max_shards > queue::MAX_SHARDS {
            bad(format!("queue_config: need 1 <= min_shards <= max_shards <= {}", queue::MAX_SHARDS));
        }
        if q.capacity < q.max_samples_per_send {
            bad("queue_config.capacity must be at least max_samples_per_send".into());
        }
        if q.min_backoff.is_zero() || q.min_backoff > q.max_backoff {
            bad("queue_config: need 0 < min_backoff <= max_backoff".into());
        }
        if self.flush_deadline >= crate::SHUTDOWN_GRACE {
            bad(format!("flush_deadline must be below the agent's shutdown grace of {:?}", crate::SHUTDOWN_GRACE));
        }
        if self.max_wal_size < 1 << 20 {
            bad("max_wal_size must be at least 1MiB".into());
        }
        if self.memory_buffer_size < 64 << 10 {
            bad("memory_buffer_size must be at least 64KiB".into());
        }
        if let Err(e) = Relabeler::new(&self.write_relabel_configs) {
            bad(format!("write_relabel_configs: {e}"));
        }
    }

    /// Whether 2.0 is requested; None for an unknown value.
    pub(super) fn v2_requested(&self) -> Option<bool> {
        match self.protobuf_message.as_str() {
            "v1" | "" | "prometheus.WriteRequest" => Some(false),
            "v2" | "io.prometheus.write.v2.Request" => Some(true),
            _ => None,
        }
    }

    /// The endpoint's name: `name`, or one derived from the URL.
    pub fn endpoint_name(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        format!("rw-{:08x}", crate::hash::fnv1a(client::display_url(&self.url).as_bytes()) as u32)
    }

    /// One line for `vantage check`.
    pub fn describe(&self) -> String {
        let mut s =
            format!("{} -> {} ({})", self.endpoint_name(), client::display_url(&self.url), self.protobuf_message);
        if self.tls.insecure_skip_verify {
            s.push_str(", TLS VERIFICATION OFF");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_sizes() {
        let c: RemoteWriteConfig =
            toml::from_str("url = \"http://x/api/v1/write\"\nmax_wal_size = \"512MiB\"").unwrap();
        assert_eq!(c.max_wal_size, 512 << 20);
        assert_eq!(c.queue_config.max_samples_per_send, 2000);
        assert_eq!(c.queue_config.batch_send_deadline, Duration::from_secs(5));
        assert_eq!(c.flush_deadline, Duration::from_secs(3));
        let mut p = Vec::new();
        c.validate("rw", &mut p);
        assert!(p.is_empty(), "{p:?}");
        let c: RemoteWriteConfig = toml::from_str(
            "url = \"ftp://x\"\nprotobuf_message = \"v3\"\nheaders = { \"Content-Type\" = \"text/plain\" }",
        )
        .unwrap();
        c.validate("rw", &mut p);
        assert_eq!(p.len(), 3, "{p:?}");
        // Prometheus's meanings: every unit is a power of 1024.
        assert!(common::parse_size("1GiB").unwrap() == 1 << 30 && common::parse_size("2GB").unwrap() == 2 << 30);
    }
}
