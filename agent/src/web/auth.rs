//! Basic auth and response headers around every route but the health
//! probes: bcrypt is checked once per user and password and the outcome
//! kept, right or wrong, so a Prometheus scraping every second (with the
//! right password or a stale one) costs one hash, not one a scrape.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use super::WebConfig;

/// Paths open without a password: they say only "healthy" or "ready",
/// and the container healthcheck (`vantage probe`) has no password.
const OPEN: &[&str] = &["/-/healthy", "/-/ready"];

/// Checked (user, password) pairs kept at most; past that the cache
/// starts over (someone trying passwords does not grow memory).
const CACHE_MAX: usize = 64;

/// What the middleware needs.
pub struct Guard {
    users: BTreeMap<String, String>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
    /// (user, password) -> whether bcrypt said it matches.
    checked: Mutex<HashMap<(String, String), bool>>,
}

impl Guard {
    pub fn new(web: &WebConfig) -> Arc<Guard> {
        Arc::new(Guard { users: web.users.clone(), headers: web.headers.clone(), checked: Mutex::default() })
    }

    /// Whether the Authorization header holds a known user and password.
    async fn allowed(self: &Arc<Guard>, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(decode) else { return false };
        let Some(hash) = self.users.get(&user).cloned() else { return false };
        let key = (user, password);
        if let Some(ok) = self.checked.lock().unwrap().get(&key) {
            return *ok;
        }
        // bcrypt takes tens of milliseconds by design: off the async workers.
        // The result is kept from inside the blocking task, so a client
        // that gave up waiting (a scrape timeout) finds it next time.
        let guard = self.clone();
        tokio::task::spawn_blocking(move || {
            let ok = bcrypt::verify(&key.1, &hash).unwrap_or(false);
            let mut checked = guard.checked.lock().unwrap();
            if checked.len() >= CACHE_MAX {
                checked.clear();
            }
            checked.insert(key, ok);
            ok
        })
        .await
        .unwrap_or(false)
    }
}

/// `Basic base64(user:password)` -> (user, password).
fn decode(value: &HeaderValue) -> Option<(String, String)> {
    let b64 = value.to_str().ok()?.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The middleware: 401 without valid credentials, then the headers on
/// every answer.
pub async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let open = OPEN.contains(&request.uri().path());
    let mut response =
        if guard.users.is_empty() || open || guard.allowed(request.headers().get(header::AUTHORIZATION)).await {
            next.run(request).await
        } else {
            (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic")], "Unauthorized\n").into_response()
        };
    for (name, value) in &guard.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_decoded() {
        let v = HeaderValue::from_static("Basic cHJvbTpzM2NyM3Q6eA==");
        assert_eq!(decode(&v), Some(("prom".into(), "s3cr3t:x".into())));
        assert_eq!(decode(&HeaderValue::from_static("Bearer x")), None);
        assert_eq!(decode(&HeaderValue::from_static("Basic !!")), None);
    }
}
