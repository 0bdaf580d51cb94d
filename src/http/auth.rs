//! Bearer-token check for the admin API, in constant time.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::app::{App, AppState};

/// Extractor form of [`require_admin`]: as a request-parts extractor it runs before the
/// body is read, so a request without the admin token is refused at once (`401`), even
/// when its body is slow or never comes.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        require_admin(&parts.headers, app).map(|()| Admin)
    }
}

/// Passes when `Authorization: Bearer <admin_token>` matches (the scheme name is
/// case-insensitive, RFC 9110 §11.1) and the admin rate limit allows.
/// Errors: `401 unauthorized`, `429 rate_limited` with `Retry-After`.
pub fn require_admin(headers: &HeaderMap, app: &App) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token)
        .ok_or_else(|| ApiError::unauthorized("expected the header `Authorization: Bearer <admin token>`"))?;
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
