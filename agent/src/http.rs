//! The agent's HTTP server: `/-/healthy`, `/-/ready`, `/metrics` (own
//! metrics, plus the latest collected samples in pull mode), `/` (status
//! page), `/api/v1/status` and `POST /-/reload`.

use axum::extract::{Query, State as AxumState};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

use crate::sinks::latest::Latest;
use crate::status::Registry;

/// What the handlers read.
#[derive(Clone)]
pub struct State {
    pub registry: Registry,
    pub latest: Latest,
    /// `agent.serve_collected` of the configuration in effect (a reload may change it).
    pub serve_collected: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub reload: crate::runtime::ReloadHandle,
    /// The exporter-toolkit web configuration (TLS, basic auth, headers),
    /// read when the server starts.
    pub web_config_file: Option<std::path::PathBuf>,
}

/// The routes, on their own so tests can drive them.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/-/healthy", get(|| async { "Vantage is healthy.\n" }))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status_json))
        .route("/", get(status_page))
        .with_state(state)
}

/// Serves until `shutdown` is cancelled: plain HTTP, or TLS and basic auth
/// as the web configuration file says (`vantage check` and `run` refuse a
/// bad one before this is reached).
pub async fn serve(listener: tokio::net::TcpListener, state: State, shutdown: CancellationToken) {
    let web = match &state.web_config_file {
        None => crate::web::WebConfig::default(),
        Some(path) => match crate::web::WebConfig::load(path) {
            Ok(w) => w,
            Err(e) => return tracing::error!(error = %e, "HTTP server not started"),
        },
    };
    let mut app = router(state);
    if web.needs_auth() || !web.headers.is_empty() {
        app = app
            .layer(axum::middleware::from_fn_with_state(crate::web::auth::Guard::new(&web), crate::web::auth::guard));
    }
    if let Some(tls) = &web.tls {
        match crate::web::tls::server_config(tls) {
            Ok(config) => crate::web::tls::serve(listener, app, config, shutdown).await,
            Err(e) => tracing::error!(file = %web.file, error = %e, "HTTP server not started"),
        }
        return;
    }
    let result = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}

async fn ready(AxumState(state): AxumState<State>) -> Response {
    if state.registry.ready() {
        (StatusCode::OK, "Vantage is ready.\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Vantage is not ready: some sources have not completed a collection.\n")
            .into_response()
    }
}

/// As Prometheus answers it: 200 once applied, 500 with the reason when the
/// new configuration was refused.
async fn reload(AxumState(state): AxumState<State>) -> Response {
    match state.reload.reload().await {
        Ok(()) => (StatusCode::OK, "configuration reloaded\n").into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("failed to reload config: {e}\n")).into_response(),
    }
}

async fn metrics(AxumState(state): AxumState<State>) -> Response {
    let mut families = crate::selfmetrics::collect(&state.registry);
    let batches = if state.serve_collected.load(std::sync::atomic::Ordering::Relaxed) {
        state.latest.batches()
    } else {
        Vec::new()
    };
    for batch in &batches {
        families.extend(batch.families.iter().cloned());
    }
    let body = crate::exposition::render(&families, false);
    ([(header::CONTENT_TYPE, crate::exposition::CONTENT_TYPE)], body).into_response()
}

async fn status_json(AxumState(state): AxumState<State>) -> Response {
    let mut snap = state.registry.snapshot();
    crate::status_page::redact_url_credentials(&mut snap.config);
    Json(snap).into_response()
}

/// Query of the status page: `/?refresh=10` reloads it every 10 s.
#[derive(serde::Deserialize)]
struct PageQuery {
    refresh: Option<u32>,
}

async fn status_page(AxumState(state): AxumState<State>, Query(q): Query<PageQuery>) -> Response {
    // At least 2 s: a typo must not turn the page into a busy loop.
    let refresh = q.refresh.map(|s| s.max(2));
    let html = crate::status_page::render(&state.registry.snapshot(), crate::sample::now_ms(), refresh);
    ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

/// Why a readiness probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("{addr}: {source}")]
    Io { addr: String, source: std::io::Error },
    #[error("{addr} answered {status_line:?} on /-/ready")]
    NotReady { addr: String, status_line: String },
}

/// Asks the agent listening on `listen_addr` whether it is ready: what a
/// container healthcheck runs, since a `FROM scratch` image has no curl.
/// An unspecified address (0.0.0.0, [::]) is probed on loopback.
pub fn probe(
    listen_addr: &str,
    tls: Option<&crate::web::TlsSettings>,
    timeout: std::time::Duration,
) -> Result<(), ProbeError> {
    let (addr, status_line, _) = http_get(listen_addr, "/-/ready", tls, timeout)?;
    if status_line.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        Err(ProbeError::NotReady { addr, status_line })
    }
}

/// The short status `deploy.sh` prints, from the agent's /api/v1/status.
pub fn status_text(
    listen_addr: &str,
    tls: Option<&crate::web::TlsSettings>,
    timeout: std::time::Duration,
) -> Result<String, ProbeError> {
    let (addr, status_line, body) = http_get(listen_addr, "/api/v1/status", tls, timeout)?;
    let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| ProbeError::Io {
        addr: addr.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{status_line}: {e}")),
    })?;
    Ok(crate::status_page::text_summary(&json, crate::sample::now_ms()))
}

/// A plain or TLS stream, for the probe.
trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}

/// An HTTP/1.0 GET, over TLS when `tls` is set: the resolved address, the
/// status line and the body.
fn http_get(
    listen_addr: &str,
    path: &str,
    tls: Option<&crate::web::TlsSettings>,
    timeout: std::time::Duration,
) -> Result<(String, String, String), ProbeError> {
    use std::io::{Read as _, Write as _};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
    let connect_err = |source| ProbeError::Connect { addr: listen_addr.to_string(), source };
    let mut addr: SocketAddr = listen_addr.parse().map_err(|_| {
        connect_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an address like 127.0.0.1:12345"))
    })?;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { IpAddr::V6(Ipv6Addr::LOCALHOST) });
    }
    let io_err = |source| ProbeError::Io { addr: addr.to_string(), source };
    let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(connect_err)?;
    tcp.set_read_timeout(Some(timeout)).map_err(io_err)?;
    tcp.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let mut stream: Box<dyn ReadWrite> = match tls {
        None => Box::new(tcp),
        Some(s) => {
            let other = |e: String| io_err(std::io::Error::other(e));
            let config = crate::web::tls::probe_client(s).map_err(other)?;
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let conn =
                rustls::ClientConnection::new(std::sync::Arc::new(config), name).map_err(|e| other(e.to_string()))?;
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
    };
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(io_err)?;
    // The answers read here are small (a line, or the status JSON).
    let mut raw = Vec::new();
    let read = stream.take(16 << 20).read_to_end(&mut raw);
    // A TLS server may close without close_notify after answering.
    if let Err(e) = read {
        if raw.is_empty() || e.kind() != std::io::ErrorKind::UnexpectedEof {
            return Err(io_err(e));
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or("").trim().to_string();
    Ok((addr.to_string(), status_line, body.to_string()))
}
