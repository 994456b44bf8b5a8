//! The HTTP side of one endpoint: a reqwest client built from the endpoint's
//! auth, proxy and TLS settings, and one POST per request body, classified
//! into acknowledged / retry / reject. Nothing here logs a secret: errors
//! are printed without their URL, and the endpoint is shown without userinfo.

use std::net::ToSocketAddrs;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, USER_AGENT};

use super::RemoteWriteConfig;
use crate::config::common::Secret;

/// Headers the protocol sets; a configured header cannot replace them.
pub const RESERVED_HEADERS: [&str; 5] =
    ["content-encoding", "content-type", "x-prometheus-remote-write-version", "user-agent", "content-length"];

const CONTENT_TYPE_V1: &str = "application/x-protobuf";
const CONTENT_TYPE_V2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
/// How much of a receiver's error body goes into the log.
const MAX_LOGGED_BODY: usize = 1024;

/// The outcome of one POST.
#[derive(Debug)]
pub enum Outcome {
    /// 2xx: the receiver has the samples.
    Acknowledged,
    /// Network error, timeout, 5xx or 429: send the same body again, after
    /// `after` when the receiver said so (Retry-After).
    Retry { after: Option<Duration>, reason: String },
    /// 415 to a 2.0 request: the receiver speaks 1.0 only.
    Unsupported,
    /// Any other 4xx: the receiver will never take this body.
    Rejected { status: u16, body: String },
}

enum Auth {
    None,
    Basic(String, Secret),
    Bearer(Secret),
}

/// An HTTP client for one endpoint.
pub struct Client {
    http: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    auth: Auth,
    user_agent: HeaderValue,
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

impl Client {
    /// Builds the client; an error names the setting (file paths included,
    /// secrets never).
    pub fn new(cfg: &RemoteWriteConfig) -> Result<Client, String> {
        let mut url = reqwest::Url::parse(&cfg.url).map_err(|e| format!("url {}: {e}", display_url(&cfg.url)))?;
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(30));
        match cfg.proxy_url.as_ref().map(|p| p.expose()).filter(|p| !p.is_empty()) {
            Some(p) => b = b.proxy(reqwest::Proxy::all(p).map_err(|e| format!("proxy_url {}: {e}", display_url(p)))?),
            None => b = b.no_proxy(),
        }
        let tls = &cfg.tls;
        if let Some(ca) = &tls.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("tls.ca_file {}: {e}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("tls.ca_file {}: {e}", ca.display()))?;
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
        if let Some(name) = tls.server_name.as_deref().filter(|n| !n.is_empty()) {
            // reqwest verifies the certificate against the URL's host, so
            // the URL names `server_name` and the resolver maps it to the
            // real address.
            let host = url.host_str().ok_or_else(|| format!("url {} has no host", display_url(&cfg.url)))?.to_string();
            let port = url.port_or_known_default().unwrap_or(443);
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            let addrs: Vec<_> = (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| format!("url host {host}: {e} (needed for tls.server_name)"))?
                .collect();
            b = b.resolve_to_addrs(name, &addrs);
            url.set_host(Some(name)).map_err(|e| format!("tls.server_name {name}: {e}"))?;
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name =
                HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("headers: {k:?} is not a header name"))?;
            let mut value = HeaderValue::from_str(v.expose())
                .map_err(|_| format!("headers: the value of {k:?} is not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        // Protocol headers last, so that nothing configured replaces them.
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("snappy"));
        let auth = if let Some(ba) = &cfg.basic_auth {
            match ba.credentials().map_err(|e| format!("basic_auth: {e}"))? {
                Some((user, pass)) => Auth::Basic(user, pass),
                None => Auth::None,
            }
        } else {
            Auth::None
        };
        let bearer = Secret::resolve(&cfg.bearer_token, &cfg.bearer_token_file, "bearer_token")?;
        let auth = match (auth, bearer.is_empty()) {
            (Auth::None, false) => Auth::Bearer(bearer),
            (Auth::Basic(..), false) => return Err("basic_auth and bearer_token are both set; keep one".into()),
            (a, _) => a,
        };
        let http = b.build().map_err(|e| format!("HTTP client: {e}"))?;
        let user_agent = HeaderValue::from_str(&format!("vantage/{}", env!("CARGO_PKG_VERSION"))).unwrap();
        Ok(Client { http, url, headers, auth, user_agent })
    }

    /// POSTs one compressed body (`v2` selects the 2.0 content type and
    /// version header) and classifies the answer.
    pub async fn send(&self, body: Vec<u8>, v2: bool) -> Outcome {
        let mut headers = self.headers.clone();
        let (ctype, version) = if v2 { (CONTENT_TYPE_V2, "2.0.0") } else { (CONTENT_TYPE_V1, "0.1.0") };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
        headers.insert("x-prometheus-remote-write-version", HeaderValue::from_static(version));
        headers.insert(USER_AGENT, self.user_agent.clone());
        let mut req = self.http.post(self.url.clone()).headers(headers).body(body);
        req = match &self.auth {
            Auth::None => req,
            Auth::Basic(u, p) => req.basic_auth(u, Some(p.expose())),
            Auth::Bearer(t) => req.bearer_auth(t.expose()),
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Outcome::Retry { after: None, reason: error_chain(e) },
        };
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            // Drain the body so that the connection is reused.
            let _ = resp.bytes().await;
            return Outcome::Acknowledged;
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.unwrap_or_default();
        let body = truncate(text.trim_end());
        match status {
            429 => Outcome::Retry { after: retry_after, reason: format!("HTTP 429: {body}") },
            s if s >= 500 => Outcome::Retry { after: None, reason: format!("HTTP {s}: {body}") },
            415 if v2 => Outcome::Unsupported,
            s => Outcome::Rejected { status: s, body },
        }
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_LOGGED_BODY {
        return s.to_string();
    }
    let mut end = MAX_LOGGED_BODY;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &s[..end], s.len())
}

/// The error and its causes, without the request URL.
fn error_chain(e: reqwest::Error) -> String {
    crate::errors::chain(&e.without_url())
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
    fn long_bodies_are_truncated_on_a_char_boundary() {
        let s = "é".repeat(1000);
        let t = truncate(&s);
        assert!(t.len() < 1100 && t.ends_with("(2000 bytes in all)"), "{t}");
    }
}
