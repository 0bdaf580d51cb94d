//! `GET /v1/stats/{dim}/{id}`: per-day funnel statistics (admin bearer token).
//!
//! Query: `from`, `to` (`YYYY-MM-DD` in the configured time zone; `to` defaults to
//! today, `from` to `to`; at most 92 days), `format` (`json`, the default, or `csv`).
//! Without `format`, `Accept: text/csv` selects CSV. Answers are never cached
//! (`Cache-Control: no-store`).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::require_admin;
use super::error::ApiError;
use crate::app::AppState;
use crate::stats::{DateRange, Dimension, StatsError};

/// Query string of `GET /v1/stats/{dim}/{id}`.
#[derive(Debug, Default, Deserialize)]
pub struct StatsQuery {
    /// First day, `YYYY-MM-DD`. Default: `to`.
    pub from: Option<String>,
    /// Last day (included), `YYYY-MM-DD`. Default: today in the configured zone.
    pub to: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// Response format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

/// `200` JSON [`crate::stats::Report`] or CSV ([`crate::stats::Report::to_csv`]);
/// `400` naming the field (`dimension`, `id`, `from`, `to`, `format`); `401` without
/// the admin token; `503 store_unavailable` (with `Retry-After`) when Redis fails.
pub async fn get_stats(
    State(app): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<StatsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_admin(&headers, &app)?;
    let Path((dim, id)) = path.map_err(|e| ApiError::field("id", "invalid_id", format!("id: {}", e.body_text())))?;
    let Query(q) = query.map_err(|e| query_error(&e))?;
    let dimension = Dimension::parse(&dim, &id).map_err(field_error)?;
    let format = choose_format(q.format.as_deref(), &headers)?;
    let tz = app.tz;
    let today = crate::stats::today(crate::click::now_ms(), tz);
    let range = DateRange::parse(q.from.as_deref(), q.to.as_deref(), today).map_err(field_error)?;
    let mut conn = app.store.connection();
    let report = crate::store::stats::read_report(&mut conn, &dimension, &range, tz).await.map_err(|e| {
        tracing::warn!(error = %e, "stats: redis read failed");
        ApiError::unavailable()
    })?;
    let mut res = match format {
        Format::Json => axum::Json(report).into_response(),
        Format::Csv => {
            let mut res = report.to_csv().into_response();
            res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
            res
        }
    };
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// `400 invalid_query`; a parameter given twice (`?from=…&from=…`) is named in `field`.
fn query_error(e: &QueryRejection) -> ApiError {
    let text = e.body_text();
    let repeated = text.split_once("duplicate field `").and_then(|(_, rest)| rest.split_once('`')).map(|(n, _)| n);
    match repeated {
        Some(f) => ApiError::named(f, "invalid_query", "given more than once"),
        None => ApiError::new(axum::http::StatusCode::BAD_REQUEST, "invalid_query", format!("query: {text}")),
    }
}

fn field_error(e: StatsError) -> ApiError {
    ApiError::field(e.field, e.code, e.message)
}

/// `format` wins; without it, `Accept: text/csv` (any parameters, any case) selects CSV.
fn choose_format(format: Option<&str>, headers: &HeaderMap) -> Result<Format, ApiError> {
    match format {
        Some("json") => Ok(Format::Json),
        Some("csv") => Ok(Format::Csv),
        Some(_) => Err(ApiError::field("format", "invalid_format", "format: must be json or csv")),
        None => {
            let wants_csv = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| {
                v.split(',').any(|m| m.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("text/csv")))
            });
            Ok(if wants_csv { Format::Csv } else { Format::Json })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn format_selection() {
        let none = HeaderMap::new();
        assert_eq!(choose_format(None, &none).unwrap(), Format::Json);
        assert_eq!(choose_format(Some("csv"), &none).unwrap(), Format::Csv);
        assert_eq!(choose_format(None, &accept("text/csv")).unwrap(), Format::Csv);
        assert_eq!(choose_format(None, &accept("application/json, Text/CSV; q=0.5")).unwrap(), Format::Csv);
        assert_eq!(choose_format(None, &accept("application/json, */*")).unwrap(), Format::Json);
        assert_eq!(choose_format(Some("json"), &accept("text/csv")).unwrap(), Format::Json);
        assert_eq!(choose_format(Some("xml"), &none).unwrap_err().field.as_deref(), Some("format"));
    }
}
