//! Bearer-token check for the admin API, in constant time.

use axum::http::{HeaderMap, header};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::app::App;

/// Passes when `Authorization: Bearer <admin_token>` matches and the admin rate
/// limit allows. Errors: `401 unauthorized`, `429 rate_limited` with `Retry-After`.
pub fn require_admin(headers: &HeaderMap, app: &App) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    let expected = app.admin_token.expose_secret().as_bytes();
    if !bool::from(given.as_bytes().ct_eq(expected)) {
        return Err(ApiError::unauthorized("invalid bearer token"));
    }
    if app.admin_limiter.check().is_err() {
        return Err(ApiError {
            retry_after_s: Some(1),
            ..ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "admin API rate limit; retry shortly",
            )
        });
    }
    Ok(())
}
