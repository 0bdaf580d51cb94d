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
pub async fn get_readyz(State(app): State<AppState>) -> Response {
    if app.store.ping().await {
        axum::Json(json!({"status": "ready", "redis": "up"})).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"status": "unavailable", "redis": "down"}))).into_response()
    }
}

/// Prometheus text exposition of every metric.
pub async fn get_metrics(State(app): State<AppState>) -> Response {
    let mut res = app.metrics.encode().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    res
}
