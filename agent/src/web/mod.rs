//! The agent's own endpoint secured the way Prometheus exporters are: a
//! web configuration file in the exporter-toolkit format (`web-config.yml`
//! of node_exporter works unchanged) with TLS, client certificates, basic
//! auth users with bcrypt hashes and extra response headers.
//!
//! - this file: the file's format, loading and validation;
//! - [`tls`]: the rustls server, certificates re-read when they change;
//! - [`auth`]: basic auth and headers around every route.

pub mod auth;
pub mod tls;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a web configuration file cannot be used; always names the file and,
/// where there is one, the key.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("{file}: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: {}", problems.join("; "))]
    Invalid { file: String, problems: Vec<String> },
}

/// The file as written (exporter-toolkit's field names).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    http_server_config: HttpFile,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    client_allowed_sans: Vec<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    #[serde(default)]
    cipher_suites: Vec<String>,
    prefer_server_cipher_suites: Option<bool>,
    #[serde(default)]
    curve_preferences: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// A PEM source: a file (re-read when it changes) or inline text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pem {
    File(PathBuf),
    Inline(String),
}

/// How client certificates are asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// NoClientCert.
    None,
    /// VerifyClientCertIfGiven: a certificate, when sent, must verify.
    VerifyIfGiven,
    /// RequireAndVerifyClientCert.
    Require,
}

/// The TLS part, checked.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    pub cert: Pem,
    pub key: Pem,
    pub client_auth: ClientAuth,
    pub client_ca: Option<Pem>,
    /// TLS 1.2 and/or 1.3.
    pub versions: Vec<&'static rustls::SupportedProtocolVersion>,
    /// TLS 1.2 suites allowed (empty: rustls's defaults).
    pub cipher_suites: Vec<rustls::SupportedCipherSuite>,
    /// Key exchange groups in preference order (empty: rustls's defaults).
    pub curves: Vec<&'static dyn rustls::crypto::SupportedKxGroup>,
    /// Choose the server's preferred suite, as Go does by default.
    pub prefer_server_cipher_suites: bool,
}

/// A checked web configuration.
#[derive(Clone, Debug, Default)]
pub struct WebConfig {
    /// The file it came from, for messages.
    pub file: String,
    pub tls: Option<TlsSettings>,
    /// User name -> bcrypt hash.
    pub users: BTreeMap<String, String>,
    /// Response headers, as written.
    pub headers: Vec<(axum::http::HeaderName, axum::http::HeaderValue)>,
}

/// The headers exporter-toolkit allows, with the values it accepts (None:
/// any value).
const HEADERS: &[(&str, Option<&[&str]>)] = &[
    ("Content-Security-Policy", None),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-XSS-Protection", None),
    ("Strict-Transport-Security", None),
];

impl WebConfig {
    /// Reads and checks `path`: every problem at once, each with its key.
    /// Relative file names inside are relative to the file's folder, as
    /// exporter-toolkit does.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let file = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| WebConfigError::Read { file: file.clone(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_text(&text, &file, base)
    }

    /// Parses `text` as the file `file`, resolving names against `base`.
    pub fn from_text(text: &str, file: &str, base: &Path) -> Result<WebConfig, WebConfigError> {
        // An empty file is a valid configuration that changes nothing.
        let parsed: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_yaml_ng::from_str(text)
                .map_err(|e| WebConfigError::Parse { file: file.to_string(), message: e.to_string() })?
        };
        let mut problems = Vec::new();
        let tls = parsed.tls_server_config.and_then(|t| tls_settings(t, base, &mut problems));
        for (user, hash) in &parsed.basic_auth_users {
            // bcrypt hashes: $2a$, $2b$, $2x$ or $2y$, a cost, 53 characters.
            if !(hash.len() == 60 && hash.starts_with("$2") && bcrypt_parts_ok(hash)) {
                problems.push(format!("basic_auth_users.{user}: not a bcrypt hash (htpasswd -nBC 10 \"\" makes one)"));
            }
        }
        if parsed.http_server_config.http2 == Some(true) {
            // Accepted: exporter-toolkit's default is true; Vantage answers
            // HTTP/1.1, which every Prometheus speaks.
        }
        let mut headers = Vec::new();
        for (name, value) in &parsed.http_server_config.headers {
            let Some((_, allowed)) = HEADERS.iter().find(|(h, _)| h.eq_ignore_ascii_case(name)) else {
                problems.push(format!(
                    "http_server_config.headers.{name}: not one of {}",
                    HEADERS.iter().map(|(h, _)| *h).collect::<Vec<_>>().join(", ")
                ));
                continue;
            };
            if value.is_empty() {
                continue;
            }
            if let Some(allowed) = allowed {
                if !allowed.iter().any(|a| a.eq_ignore_ascii_case(value)) {
                    problems.push(format!("http_server_config.headers.{name}: {value:?} is not one of {allowed:?}"));
                    continue;
                }
            }
            match (axum::http::HeaderName::try_from(name.as_str()), axum::http::HeaderValue::try_from(value.as_str())) {
                (Ok(n), Ok(v)) => headers.push((n, v)),
                _ => problems.push(format!("http_server_config.headers.{name}: not a valid header value")),
            }
        }
        if !problems.is_empty() {
            return Err(WebConfigError::Invalid { file: file.to_string(), problems });
        }
        Ok(WebConfig { file: file.to_string(), tls, users: parsed.basic_auth_users, headers })
    }

    /// Whether requests need a user and password.
    pub fn needs_auth(&self) -> bool {
        !self.users.is_empty()
    }
}

fn bcrypt_parts_ok(hash: &str) -> bool {
    let parts: Vec<&str> = hash.split('$').collect();
    parts.len() == 4
        && ["2a", "2b", "2x", "2y"].contains(&parts[1])
        && parts[2].parse::<u32>().is_ok_and(|c| (4..=31).contains(&c))
        && parts[3].len() == 53
}

fn tls_settings(t: TlsFile, base: &Path, problems: &mut Vec<String>) -> Option<TlsSettings> {
    let k = |key: &str| format!("tls_server_config.{key}");
    let pem =
        |inline: Option<String>, file: Option<PathBuf>, key: &str, file_key: &str, problems: &mut Vec<String>| match (
            inline, file,
        ) {
            (Some(_), Some(_)) => {
                problems.push(format!("{} and {}: set one, not both", k(key), k(file_key)));
                None
            }
            (Some(text), None) => Some(Pem::Inline(text)),
            (None, Some(f)) => {
                let path = if f.is_absolute() { f } else { base.join(f) };
                Some(Pem::File(path))
            }
            (None, None) => None,
        };
    let cert = pem(t.cert, t.cert_file, "cert", "cert_file", problems);
    let key = pem(t.key, t.key_file, "key", "key_file", problems);
    let client_ca = pem(t.client_ca, t.client_ca_file, "client_ca", "client_ca_file", problems);
    if cert.is_none() {
        problems.push(format!("{}: missing (the server certificate)", k("cert_file")));
    }
    if key.is_none() {
        problems.push(format!("{}: missing (the server key)", k("key_file")));
    }
    let client_auth = match t.client_auth_type.as_deref().unwrap_or("NoClientCert") {
        "NoClientCert" => ClientAuth::None,
        "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
        "RequireAndVerifyClientCert" => ClientAuth::Require,
        v @ ("RequestClientCert" | "RequireAnyClientCert") => {
            problems.push(format!(
                "{}: {v} accepts certificates nobody verified and is not supported; use RequireAndVerifyClientCert",
                k("client_auth_type")
            ));
            ClientAuth::None
        }
        other => {
            problems.push(format!(
                "{}: unknown value {other:?} (NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)",
                k("client_auth_type")
            ));
            ClientAuth::None
        }
    };
    if client_auth != ClientAuth::None && client_ca.is_none() {
        problems.push(format!("{}: needed when client_auth_type is {client_auth:?}", k("client_ca_file")));
    }
    if client_auth == ClientAuth::None && client_ca.is_some() {
        problems.push(format!("{}: set, but client_auth_type does not ask for certificates", k("client_ca_file")));
    }
    if !t.client_allowed_sans.is_empty() {
        problems.push(format!("{}: not supported by Vantage yet", k("client_allowed_sans")));
    }
    let version = |v: Option<&str>, key: &str, default: u8, problems: &mut Vec<String>| match v {
        None => default,
        Some("TLS12") => 12,
        Some("TLS13") => 13,
        Some(other) => {
            problems
                .push(format!("{}: {other:?} is not supported (TLS12 or TLS13; rustls has no TLS 1.0/1.1)", k(key)));
            default
        }
    };
    let (min, max) = (
        version(t.min_version.as_deref(), "min_version", 12, problems),
        version(t.max_version.as_deref(), "max_version", 13, problems),
    );
    if min > max {
        problems.push(format!("{}: above max_version", k("min_version")));
    }
    let mut versions = Vec::new();
    if min <= 12 && max >= 12 {
        versions.push(&rustls::version::TLS12);
    }
    if max >= 13 {
        versions.push(&rustls::version::TLS13);
    }
    let provider = rustls::crypto::ring::default_provider();
    let mut cipher_suites = Vec::new();
    for name in &t.cipher_suites {
        // Go's names are the IANA names rustls uses, except that Go writes
        // the CHACHA20 suites without "_SHA256" too.
        let want = match name.as_str() {
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            n => n,
        };
        match provider
            .cipher_suites
            .iter()
            .find(|s| s.version() == &rustls::version::TLS12 && format!("{:?}", s.suite()) == want)
        {
            Some(s) => cipher_suites.push(*s),
            None => problems.push(format!("{}: {name} is not a TLS 1.2 suite rustls has", k("cipher_suites"))),
        }
    }
    let mut curves = Vec::new();
    for name in &t.curve_preferences {
        let want = match name.as_str() {
            "X25519" => "X25519",
            "CurveP256" => "secp256r1",
            "CurveP384" => "secp384r1",
            _ => "",
        };
        match provider.kx_groups.iter().find(|g| format!("{:?}", g.name()) == want) {
            Some(g) => curves.push(*g),
            None => problems
                .push(format!("{}: {name} is not supported (X25519, CurveP256, CurveP384)", k("curve_preferences"))),
        }
    }
    let settings = TlsSettings {
        cert: cert?,
        key: key?,
        client_auth,
        client_ca,
        versions,
        cipher_suites,
        curves,
        prefer_server_cipher_suites: t.prefer_server_cipher_suites.unwrap_or(true),
    };
    // Read the files now so that `vantage check` refuses what would not serve.
    if let Err(e) = tls::server_config(&settings) {
        problems.push(e);
    }
    Some(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        WebConfig::from_text(text, "web.yml", Path::new("/nonexistent")).unwrap_err().to_string()
    }

    #[test]
    fn empty_and_auth_only_files() {
        let w = WebConfig::from_text("", "web.yml", Path::new(".")).unwrap();
        assert!(w.tls.is_none() && !w.needs_auth());
        let hash = "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG";
        let w = WebConfig::from_text(
            &format!("basic_auth_users:\n  prom: {hash}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n"),
            "web.yml",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(w.users["prom"], hash);
        assert_eq!(w.headers[0].0.as_str(), "x-frame-options");
    }

    #[test]
    fn every_problem_is_named_with_file_and_key() {
        assert!(err("tls_server_config:\n  cert_fil: a\n").starts_with("web.yml: "), "{}", err("x: 1"));
        assert!(err("tls_server_config:\n  cert_fil: a\n").contains("cert_fil"));
        let e = err("basic_auth_users:\n  prom: hunter2\nhttp_server_config:\n  headers:\n    X-Frame-Options: allow\n    Server: x\n");
        assert!(e.contains("basic_auth_users.prom: not a bcrypt hash"), "{e}");
        assert!(!e.contains("hunter2"), "the secret is not repeated: {e}");
        assert!(e.contains("http_server_config.headers.X-Frame-Options"), "{e}");
        assert!(e.contains("http_server_config.headers.Server"), "{e}");
        let e = err("tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  client_auth_type: RequireAndVerifyClientCert\n  min_version: TLS10\n  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n");
        assert!(e.contains("tls_server_config.client_ca_file: needed"), "{e}");
        assert!(e.contains("tls_server_config.min_version: \"TLS10\""), "{e}");
        assert!(e.contains("tls_server_config.cipher_suites: TLS_RSA_WITH_RC4_128_SHA"), "{e}");
        assert!(e.contains("tls_server_config.cert_file: /nonexistent/c.pem"), "{e}");
    }

    #[test]
    fn go_suite_and_curve_names_map_to_rustls() {
        let mut problems = Vec::new();
        let t = TlsFile {
            cert: Some("x".into()),
            key: Some("y".into()),
            cipher_suites: vec![
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into(),
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305".into(),
            ],
            curve_preferences: vec!["X25519".into(), "CurveP256".into()],
            ..Default::default()
        };
        let s = tls_settings(t, Path::new("."), &mut problems).unwrap();
        assert_eq!(s.cipher_suites.len(), 2, "{problems:?}");
        assert_eq!(s.curves.len(), 2, "{problems:?}");
        // The inline PEM is not a certificate: that is the only problem.
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("tls_server_config.cert:"), "{problems:?}");
    }
}
