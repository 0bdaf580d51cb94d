//! `GET /healthz` (process up), `GET /readyz` (Redis reachable), `GET /metrics`.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::AppState;

/// Always `200 {"status":"ok"}` while the process serves requests.
pub async fn get_healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// `200 {"status":"ready","redis":"up"}` when Redis answers `PING` within the
/// bounded wait, else `503 {"status":"unavailable","redis":"down"}`.
///
/// While the spool holds clicks not yet replayed, the status is `degraded`
/// (`200` if Redis is up, as clicks are still recorded; `spool_records` says how many).
pub async fn get_readyz(State(app): State<AppState>) -> Response {
    let spooled = app.spool.pending();
    let redis_up = app.store.ping().await;
    let status = match (redis_up, spooled) {
        (true, 0) => "ready",
        (true, _) => "degraded",
        (false, _) => "unavailable",
    };
    let body = json!({"status": status, "redis": if redis_up { "up" } else { "down" }, "spool_records": spooled});
    let code = if redis_up { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(body)).into_response()
}

/// The OpenAPI 3.1 document of the public HTTP API (`docs/openapi.json`).
pub async fn get_openapi() -> Response {
    let mut res = include_str!("../../docs/openapi.json").into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// Prometheus text exposition of every metric.
pub async fn get_metrics(State(app): State<AppState>) -> Response {
    app.metrics.observe_spool(&app.spool.stats);
    let keys = app.ip_soft_limiter.len() + app.ip_hard_limiter.len();
    app.metrics.rate_limiter_keys.set(i64::try_from(keys).unwrap_or(i64::MAX));
    let mut res = app.metrics.encode().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    res
}
