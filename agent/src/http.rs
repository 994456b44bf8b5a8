//! The agent's HTTP server: `/-/healthy`, `/-/ready`, `/metrics` (own
//! metrics, plus the latest collected samples in pull mode), `/` (status
//! page) and `/api/v1/status`.

use axum::extract::State as AxumState;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

use crate::sinks::latest::Latest;
use crate::status::Registry;

/// What the handlers read.
#[derive(Clone)]
pub struct State {
    pub registry: Registry,
    pub latest: Latest,
    pub serve_collected: bool,
}

/// The routes, on their own so tests can drive them.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/-/healthy", get(|| async { "Vantage is healthy.\n" }))
        .route("/-/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status_json))
        .route("/", get(status_page))
        .with_state(state)
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(listener: tokio::net::TcpListener, state: State, shutdown: CancellationToken) {
    let result = axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await;
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

async fn metrics(AxumState(state): AxumState<State>) -> Response {
    let mut families = crate::selfmetrics::collect(&state.registry);
    let batches = if state.serve_collected { state.latest.batches() } else { Vec::new() };
    for batch in &batches {
        families.extend(batch.families.iter().cloned());
    }
    let body = crate::exposition::render(&families, false);
    ([(header::CONTENT_TYPE, crate::exposition::CONTENT_TYPE)], body).into_response()
}

async fn status_json(AxumState(state): AxumState<State>) -> Response {
    Json(state.registry.snapshot()).into_response()
}

async fn status_page(AxumState(state): AxumState<State>) -> Html<String> {
    Html(crate::status_page::render(&state.registry.snapshot()))
}
