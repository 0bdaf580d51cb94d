//! Bearer-token check for the admin API, in constant time.

use axum::http::{HeaderMap, header};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::app::App;

/// Passes when `Authorization: Bearer <admin_token>` matches. Errors: `401 unauthorized`.
pub fn require_admin(headers: &HeaderMap, app: &App) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    let expected = app.admin_token.expose_secret().as_bytes();
    if bool::from(given.as_bytes().ct_eq(expected)) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("invalid bearer token"))
    }
}
