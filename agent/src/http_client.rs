//! Every outgoing HTTP client (remote_write, Loki, scrape targets) is built
//! here, so that all of them behave alike:
//!
//! - TLS with rustls: `ca_file` (added to the built-in roots), a client
//!   certificate (`cert_file` + `key_file`), `insecure_skip_verify`, and
//!   `server_name`, honoured by connecting to the URL's address while the
//!   request (SNI, certificate check, Host) names `server_name`;
//! - proxies: never from the environment (`HTTP_PROXY`, `HTTPS_PROXY`), only
//!   an explicit `proxy_url` where the section has one: an agent on every
//!   host must not change its route because a shell exported a variable;
//! - the user agent `vantage/<version>`;
//! - timeouts and connection pooling as the caller asks;
//! - basic auth or a bearer token ([`Auth`]), never both.
//!
//! Errors name the setting and the file; secrets (passwords, tokens, proxy
//! credentials) never appear in them.

use std::net::ToSocketAddrs;
use std::time::Duration;

use crate::config::common::{BasicAuth, Secret, TlsConfig};

/// The user agent of every request.
pub const USER_AGENT: &str = concat!("vantage/", env!("CARGO_PKG_VERSION"));

/// What a client needs; unset fields keep reqwest's defaults.
#[derive(Clone, Debug, Default)]
pub struct Settings<'a> {
    /// The one endpoint this client talks to, when there is one: needed to
    /// honour `tls.server_name`. Without it (scrape jobs, many targets),
    /// [`for_url`] builds a client per target host.
    pub url: Option<&'a str>,
    pub tls: Option<&'a TlsConfig>,
    /// An explicit proxy; None or empty: direct connections.
    pub proxy_url: Option<&'a str>,
    /// Limit of one whole request.
    pub timeout: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub pool_idle_timeout: Option<Duration>,
    pub pool_max_idle_per_host: Option<usize>,
    /// Ask for gzip bodies and decode them (reqwest's default: on).
    pub no_gzip: bool,
}

/// A client and the URL to send to: the configured one, or with its host
/// replaced by `tls.server_name`.
pub struct Built {
    pub client: reqwest::Client,
    pub url: Option<reqwest::Url>,
}

/// `url` without userinfo, query or fragment: safe to log and to show.
pub fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "<invalid url>".into(),
    }
}

/// The `tls.server_name` to honour, if any.
pub fn server_name(tls: Option<&TlsConfig>) -> Option<&str> {
    tls.and_then(|t| t.server_name.as_deref()).filter(|n| !n.is_empty())
}

/// Builds the client for `s`. Resolves the URL's host when `server_name`
/// is set (a blocking lookup: call it at start, or off the runtime).
pub fn build(s: &Settings) -> Result<Built, String> {
    let mut b = reqwest::Client::builder().use_rustls_tls().user_agent(USER_AGENT);
    if let Some(t) = s.timeout {
        b = b.timeout(t);
    }
    if let Some(t) = s.connect_timeout {
        b = b.connect_timeout(t);
    }
    if let Some(t) = s.pool_idle_timeout {
        b = b.pool_idle_timeout(t);
    }
    if let Some(n) = s.pool_max_idle_per_host {
        b = b.pool_max_idle_per_host(n);
    }
    if s.no_gzip {
        b = b.no_gzip();
    }
    match s.proxy_url.filter(|p| !p.is_empty()) {
        Some(p) => b = b.proxy(reqwest::Proxy::all(p).map_err(|e| format!("proxy_url {}: {e}", display_url(p)))?),
        None => b = b.no_proxy(),
    }
    let mut url = match s.url {
        Some(u) => Some(reqwest::Url::parse(u).map_err(|e| format!("url {}: {e}", display_url(u)))?),
        None => None,
    };
    if let Some(tls) = s.tls {
        b = add_tls(b, tls)?;
        if let (Some(name), Some(u)) = (server_name(s.tls), url.as_mut()) {
            // reqwest verifies the certificate against the URL's host, so
            // the URL names `server_name` and the resolver maps it to the
            // real address.
            let host = u.host_str().ok_or_else(|| format!("url {} has no host", display_url(u.as_str())))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            let port = u.port_or_known_default().unwrap_or(443);
            let addrs: Vec<_> = (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| format!("url host {host}: {e} (needed for tls.server_name)"))?
                .collect();
            b = b.resolve_to_addrs(name, &addrs);
            u.set_host(Some(name)).map_err(|e| format!("tls.server_name {name}: {e}"))?;
        }
    }
    let client = b.build().map_err(|e| format!("HTTP client: {e}"))?;
    Ok(Built { client, url })
}

/// A client for one `url` of a many-target caller (scrape): `s` with its
/// `url` set. Only needed when `server_name` is set.
pub fn for_url(s: &Settings, url: &reqwest::Url) -> Result<Built, String> {
    build(&Settings { url: Some(url.as_str()), ..s.clone() })
}

fn add_tls(mut b: reqwest::ClientBuilder, tls: &TlsConfig) -> Result<reqwest::ClientBuilder, String> {
    if let Some(ca) = &tls.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("tls.ca_file {}: {e}", ca.display()))?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("tls.ca_file {}: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!("tls.ca_file {}: no PEM certificate in it", ca.display()));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let mut pem = std::fs::read(cert).map_err(|e| format!("tls.cert_file {}: {e}", cert.display()))?;
            pem.push(b'\n');
            pem.extend(std::fs::read(key).map_err(|e| format!("tls.key_file {}: {e}", key.display()))?);
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("tls.cert_file {} / key_file {}: {e}", cert.display(), key.display()))?;
            b = b.identity(id);
        }
        (None, None) => {}
        _ => return Err("tls.cert_file and tls.key_file must be set together".into()),
    }
    if tls.insecure_skip_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    Ok(b)
}

/// How requests authenticate.
#[derive(Clone, Debug, Default)]
pub enum Auth {
    #[default]
    None,
    Basic(String, Secret),
    Bearer(Secret),
}

impl Auth {
    /// From a section's `basic_auth` and `bearer_token` / `bearer_token_file`;
    /// both set is an error (as in Prometheus). An empty username or token
    /// turns that kind off.
    pub fn new(
        basic: Option<&BasicAuth>,
        bearer_token: &Option<Secret>,
        bearer_token_file: &Option<std::path::PathBuf>,
    ) -> Result<Auth, String> {
        let basic = basic.map(|b| b.credentials()).transpose().map_err(|e| format!("basic_auth: {e}"))?.flatten();
        let bearer = Secret::resolve(bearer_token, bearer_token_file, "bearer_token")?;
        match (basic, bearer.is_empty()) {
            (Some(_), false) => Err("basic_auth and bearer_token are both set; keep one".into()),
            (Some((user, pass)), true) => Ok(Auth::Basic(user, pass)),
            (None, false) => Ok(Auth::Bearer(bearer)),
            (None, true) => Ok(Auth::None),
        }
    }

    /// Adds the credentials to `req`.
    pub fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::None => req,
            Auth::Basic(u, p) => req.basic_auth(u, Some(p.expose())),
            Auth::Bearer(t) => req.bearer_auth(t.expose()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_url_hides_userinfo_and_query() {
        assert_eq!(
            display_url("https://u:hunter2@example.com/api/v1/write?token=x"),
            "https://example.com/api/v1/write"
        );
    }

    #[test]
    fn server_name_renames_the_url() {
        let tls = TlsConfig { server_name: Some("metrics.internal".into()), ..Default::default() };
        let built =
            build(&Settings { url: Some("https://127.0.0.1:9443/x"), tls: Some(&tls), ..Default::default() }).unwrap();
        assert_eq!(built.url.unwrap().as_str(), "https://metrics.internal:9443/x");
    }

    #[test]
    fn errors_name_the_setting_and_hide_secrets() {
        let e = build(&Settings { proxy_url: Some("::nope"), ..Default::default() }).err().unwrap();
        assert!(e.starts_with("proxy_url"), "{e}");
        let tls = TlsConfig { ca_file: Some("/nonexistent/ca.pem".into()), ..Default::default() };
        let e = build(&Settings { tls: Some(&tls), ..Default::default() }).err().unwrap();
        assert!(e.contains("tls.ca_file /nonexistent/ca.pem"), "{e}");
        let basic = BasicAuth { username: "u".into(), password: Some(Secret::new("p")), password_file: None };
        let e = Auth::new(Some(&basic), &Some(Secret::new("t")), &None).unwrap_err();
        assert!(e.contains("both set"), "{e}");
    }
}
