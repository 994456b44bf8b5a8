//! The HTTP side of one endpoint: a reqwest client built from the endpoint's
//! auth, proxy and TLS settings, and one POST per request body, classified
//! into acknowledged / retry / reject. Nothing here logs a secret: errors
//! are printed without their URL, and the endpoint is shown without userinfo.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};

use super::RemoteWriteConfig;
pub use crate::http_client::display_url;
use crate::http_client::{self, Auth};

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

/// An HTTP client for one endpoint.
pub struct Client {
    http: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    auth: Auth,
}

impl Client {
    /// Builds the client; an error names the setting (file paths included,
    /// secrets never).
    pub fn new(cfg: &RemoteWriteConfig) -> Result<Client, String> {
        let built = http_client::build(&http_client::Settings {
            url: Some(&cfg.url),
            tls: Some(&cfg.tls),
            proxy_url: cfg.proxy_url.as_ref().map(|p| p.expose()),
            timeout: Some(cfg.timeout),
            connect_timeout: Some(cfg.timeout.min(Duration::from_secs(10))),
            pool_idle_timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        })?;
        let (http, url) = (built.client, built.url.expect("built with a url"));
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
        let auth = Auth::new(cfg.basic_auth.as_ref(), &cfg.bearer_token, &cfg.bearer_token_file)?;
        Ok(Client { http, url, headers, auth })
    }

    /// POSTs one compressed body (`v2` selects the 2.0 content type and
    /// version header) and classifies the answer.
    pub async fn send(&self, body: Vec<u8>, v2: bool) -> Outcome {
        let mut headers = self.headers.clone();
        let (ctype, version) = if v2 { (CONTENT_TYPE_V2, "2.0.0") } else { (CONTENT_TYPE_V1, "0.1.0") };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
        headers.insert("x-prometheus-remote-write-version", HeaderValue::from_static(version));
        // The user agent is the client's (crate::http_client::USER_AGENT).
        let req = self.auth.apply(self.http.post(self.url.clone()).headers(headers).body(body));
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
    fn long_bodies_are_truncated_on_a_char_boundary() {
        let s = "é".repeat(1000);
        let t = truncate(&s);
        assert!(t.len() < 1100 && t.ends_with("(2000 bytes in all)"), "{t}");
    }
}
