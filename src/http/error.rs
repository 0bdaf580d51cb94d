//! The API error envelope: every API error is `{"code", "message"}` (plus
//! `"field"` when one input field is at fault), with a stable `code`.
//!
//! Handlers return [`ApiError`]; bodies are read with [`RawBody`] and parsed
//! with [`parse_json`], so axum's plain-text rejections never reach a client. 5xx bodies are opaque; the cause
//! is logged once, here.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::borrow::Cow;

/// An API error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
    /// Input field at fault, if one (a path such as `conversions[2].amount` for a nested one).
    pub field: Option<Cow<'static, str>>,
    /// Seconds for `Retry-After` (429/503).
    pub retry_after_s: Option<u64>,
    /// The `WWW-Authenticate` challenge of a `401` (RFC 9110 §11.6.1: a 401 names one).
    pub challenge: Option<&'static str>,
}

/// The admin API's challenge: a bearer token (RFC 6750 §3).
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"linkloop\"";

#[derive(Serialize)]
struct Envelope<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None, retry_after_s: None, challenge: None }
    }

    /// `400` naming `field`.
    pub fn field(field: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self { field: Some(Cow::Borrowed(field)), ..Self::new(StatusCode::BAD_REQUEST, code, message) }
    }

    /// `400` naming an input given by the client (a query parameter's name), with the
    /// message `{field}: {what}`.
    pub fn named(field: &str, code: &'static str, what: &str) -> Self {
        Self {
            field: Some(Cow::Owned(field.to_owned())),
            ..Self::new(StatusCode::BAD_REQUEST, code, format!("{field}: {what}"))
        }
    }

    /// The same error with another status.
    pub fn with_status(self, status: StatusCode) -> Self {
        Self { status, ..self }
    }

    /// The same error with the `WWW-Authenticate` challenge `challenge`.
    pub fn with_challenge(self, challenge: &'static str) -> Self {
        Self { challenge: Some(challenge), ..self }
    }

    /// `401 unauthorized` with the admin API's challenge ([`BEARER_CHALLENGE`]).
    pub fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message).with_challenge(BEARER_CHALLENGE)
    }

    /// `503 store_unavailable` with `Retry-After`.
    pub fn unavailable() -> Self {
        Self {
            retry_after_s: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "store unavailable, retry later")
        }
    }

    /// `500 internal` with an opaque body; `cause` is logged, never sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            serde_json::to_vec(&Envelope { code: self.code, message: &self.message, field: self.field.as_deref() })
                .unwrap_or_else(|_| b"{\"code\":\"internal\",\"message\":\"internal error\"}".to_vec());
        let mut res = (self.status, body).into_response();
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(s) = self.retry_after_s {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(c) = self.challenge {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        res
    }
}

/// The raw body as bytes, with our envelope for a body over the limit (413).
#[derive(Debug)]
pub struct RawBody(pub Bytes);

/// Longest time a request body may take to arrive, after its head: past it `408
/// body_timeout` (RFC 9110 §15.5.9), a client fault, not the `503` of a slow server.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // A declared length over the route's limit is refused before waiting for the body.
        let limit = if req.uri().path() == "/v1/conversions/batch" {
            super::MAX_BATCH_BODY_BYTES
        } else {
            super::MAX_BODY_BYTES
        };
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let read = tokio::time::timeout(BODY_READ_TIMEOUT, Bytes::from_request(req, state)).await;
        let Ok(read) = read else {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body did not arrive in time (5 s)",
            ));
        };
        read.map(RawBody).map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", "could not read the body")
            }
        })
    }
}

fn too_large() -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "body is over this route's size limit")
}

/// Passes when `Content-Type` is `application/json` (parameters allowed). Errors: `415`.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send a JSON body with Content-Type: application/json",
        ))
    }
}

/// Parses a JSON object body into `T`: `400 malformed_json` for a body that is not JSON
/// (bad syntax, or text such as `hello`), `400 invalid_body` with `field` naming the input
/// at fault for the wrong shape (see [`json_error`]), including any top-level JSON value
/// that is not an object (serde would otherwise read a struct from a positional array,
/// `["…", …]`).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let object = matches!(body.iter().find(|b| !b.is_ascii_whitespace()), Some(b'{') | None);
    let typed = if object { Some(serde_json::from_slice::<T>(body)) } else { None };
    let e = match typed {
        Some(Ok(v)) => return Ok(v),
        Some(Err(e)) => Some(e),
        None => None,
    };
    // Only on failure. Syntax first: a broken body is `malformed_json`, whichever field
    // serde met before the break (`{"amount":"x"` is not JSON).
    if let Err(syntax) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        return Err(json_error(syntax, None));
    }
    let Some(e) = e else {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", "body must be a JSON object"));
    };
    // JSON of the wrong shape: parse again, tracking where, to name the field at fault.
    let mut de = serde_json::Deserializer::from_slice(body);
    let path = serde_path_to_error::deserialize::<_, T>(&mut de).err().map(|e| e.path().to_string());
    Err(json_error(e, path))
}

/// Maps a serde_json error to our envelope. A data error is `400 invalid_body` with `field`
/// when one input is at fault: `path`, as `serde_path_to_error` reports it (`amount`,
/// `conversions[2].amount`; the root `.` names nothing), or else the name in serde's
/// "missing field `x`" or "unknown field `x`"; the message then starts with `{field}: `, as
/// every field error's does. A syntax error is `400 malformed_json`.
pub fn json_error(e: serde_json::Error, path: Option<String>) -> ApiError {
    if e.is_data() {
        // serde names our Rust types in some messages ("expected struct CreateLink"): say
        // what the client must send instead.
        let text = e.to_string();
        if text.contains("expected struct") || text.contains("expected a map") {
            return ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", "body must be a JSON object");
        }
        let field = path.filter(|p| p != "." && !p.contains('?')).or_else(|| named_field(&text));
        // Like every field error's message: `{field}: …`.
        let message = match &field {
            Some(f) => format!("{f}: {text}"),
            None => text,
        };
        ApiError { field: field.map(Cow::Owned), ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", message) }
    } else {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", "body is not valid JSON")
    }
}

/// `amount` from serde's "missing field `amount` at line 1 column 52" (or "unknown field
/// `amount`, expected …").
fn named_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `").or_else(|| message.strip_prefix("unknown field `"))?;
    rest.split_once('`').map(|(name, _)| name.to_owned())
}
