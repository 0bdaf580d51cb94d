//! Conversion callbacks: `POST /v1/conversions`, `POST /v1/conversions/batch`,
//! and the postback form `GET /v1/postback`.
//!
//! Order of checks: body size (413), content type (415), merchant signature on
//! the raw bytes (401), per-merchant rate limit (429), JSON shape and fields
//! (400), then one atomic Redis script: idempotency (200 duplicate / 409
//! conflict), a currency without a minor unit (400), an event dated after the
//! server clock + tolerance (422), attribution of a new order (403/422), a refund
//! or cancel dated before its payment (422), order state and GMV (409), else 201.
//! Refunds and cancels of a known order use the order's stored attribution (and
//! its original click token), so they work after the click record has expired.
//! Redis unavailable: 503 + `Retry-After`, nothing written.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, RawBody, json_error, parse_json, require_json};
use crate::app::{App, AppState};
use crate::conversion::auth::{AuthError, MERCHANT_HEADER, Merchant, SIGNATURE_CHALLENGE, SIGNATURE_HEADER};
use crate::conversion::{ConversionInput, FieldError};
use crate::metrics::ReasonLabels;
use crate::store::conversions::{self, Outcome, Receipt};

/// Most conversions in one batch request.
pub const MAX_BATCH: usize = 500;

fn now_s() -> u64 {
    crate::click::now_ms() / 1000
}

/// `401` with the error's code and the `Linkloop-Signature` challenge (`docs/conversions.md`).
fn auth_error(e: AuthError) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string()).with_challenge(SIGNATURE_CHALLENGE)
}

fn authenticate(app: &App, headers: &HeaderMap, body: &[u8]) -> Result<Arc<Merchant>, ApiError> {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    app.merchants.authenticate(h(MERCHANT_HEADER), h(SIGNATURE_HEADER), body, now_s()).map_err(auth_error)
}

fn rate_limit(app: &App, merchant: &Merchant, n: u32) -> Result<(), ApiError> {
    let n = std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN);
    match app.merchant_limiter.check_key_n(&merchant.id, n) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(not_until)) => {
            use governor::clock::Clock as _;
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            Err(ApiError {
                retry_after_s: Some(wait.as_secs() + 1),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many callbacks; retry after the given delay",
                )
            })
        }
        Err(_) => Err(ApiError::field(
            "conversions",
            "batch_exceeds_rate_limit",
            "conversions: more items than this merchant's burst allowance; split the batch",
        )),
    }
}

fn field_error(e: &FieldError) -> ApiError {
    ApiError::field(e.field, "invalid_field", e.to_string())
}

/// Validates, records (with one catch-up of the click aggregator when the click
/// is not found yet), and turns the outcome into a status and JSON body.
async fn process(app: &App, merchant: &Merchant, input: ConversionInput) -> Result<(StatusCode, Accepted), ApiError> {
    let conv = input.validate().map_err(|e| field_error(&e))?;
    let day = crate::store::aggregator::day_of(conv.occurred_at_ms, app.tz);
    let conn = app.store.connection();
    let maxlen = app.config.conversion_stream_maxlen;
    // An order event may be dated up to the callback tolerance (the clock skew a signature
    // may have) after the server's clock, no later.
    let latest_ms = crate::click::now_ms().saturating_add(app.merchants.tolerance_s.saturating_mul(1000));
    let run = |mut conn: redis::aio::ConnectionManager| {
        let (script, conv, day) = (&app.conversion_script, &conv, &day);
        async move { conversions::record(&mut conn, script, conv, merchant, day, maxlen, latest_ms).await }
    };
    let mut outcome = run(conn.clone()).await.map_err(|_| ApiError::unavailable())?;
    if outcome == Outcome::UnknownClick {
        // The click may still be on its way from the stream to its record.
        if app.aggregator.catch_up().await.is_ok() {
            outcome = run(conn.clone()).await.map_err(|_| ApiError::unavailable())?;
        }
    }
    let result = |code: &'static str| app.metrics.conversions.get_or_create(&ReasonLabels { reason: code }).inc();
    let unattributed = |reason: &'static str| {
        app.metrics.conversions_unattributed.get_or_create(&ReasonLabels { reason }).inc();
    };
    let (status, code, body) = match outcome {
        Outcome::Attributed(receipt) => (StatusCode::CREATED, "attributed", Accepted { receipt, duplicate: false }),
        Outcome::Duplicate(receipt) => (StatusCode::OK, "duplicate", Accepted { receipt, duplicate: true }),
        other => {
            let e = match other {
                Outcome::Conflict => ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    "this order_id/sub_order_id/status was already reported with different content",
                ),
                Outcome::UnknownClick => {
                    unattributed("click_not_found");
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "click_not_found",
                        "unknown or expired click token: the conversion is not attributed",
                    )
                }
                Outcome::OutsideWindow => {
                    unattributed("outside_attribution_window");
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "outside_attribution_window",
                        "occurred_at is before the click or after the attribution window",
                    )
                }
                Outcome::NoMinorUnit => ApiError::field(
                    "currency",
                    "invalid_field",
                    "currency: must be an ISO 4217 currency with a minor unit, such as CNY",
                ),
                Outcome::InFuture => ApiError::field(
                    "occurred_at",
                    "occurred_in_future",
                    format!(
                        "occurred_at: later than the server's clock plus {} s (callback_tolerance_seconds)",
                        app.merchants.tolerance_s
                    ),
                )
                .with_status(StatusCode::UNPROCESSABLE_ENTITY),
                Outcome::BeforePayment => ApiError::field(
                    "occurred_at",
                    "before_payment",
                    "occurred_at: before the order line's payment (a refund or cancel follows it)",
                )
                .with_status(StatusCode::UNPROCESSABLE_ENTITY),
                Outcome::ItemMismatch => {
                    ApiError::field("item_id", "item_mismatch", "item_id: differs from the clicked item")
                        .with_status(StatusCode::UNPROCESSABLE_ENTITY)
                }
                Outcome::PlatformNotAllowed(p) => ApiError::new(
                    StatusCode::FORBIDDEN,
                    "platform_not_allowed",
                    format!("merchant may not report on {p} clicks"),
                ),
                Outcome::InvalidTransition(state) => ApiError::new(
                    StatusCode::CONFLICT,
                    "invalid_transition",
                    if state == "none" {
                        "no payment recorded for this order line: report it paid first".to_owned()
                    } else {
                        format!("order is {state}: this status is not allowed")
                    },
                ),
                Outcome::RefundExceedsPaid => {
                    ApiError::new(StatusCode::CONFLICT, "refund_exceeds_paid", "refunds would exceed the paid amount")
                }
                Outcome::CurrencyMismatch => {
                    ApiError::field("currency", "currency_mismatch", "currency: differs from the payment's currency")
                        .with_status(StatusCode::CONFLICT)
                }
                Outcome::Attributed(_) | Outcome::Duplicate(_) => ApiError::internal(&"unreachable outcome"),
            };
            result(e.code);
            return Err(e);
        }
    };
    result(code);
    Ok((status, body))
}

/// An accepted report: the store's result and whether this delivery was a duplicate.
struct Accepted {
    receipt: Receipt,
    duplicate: bool,
}

impl Accepted {
    /// The response body as text. A result stored as JSON by an earlier version gets
    /// `"duplicate"` spliced in without parsing it; one that is not an object (never
    /// written) gives `{"duplicate":…}`.
    fn into_body(self) -> String {
        let flag = if self.duplicate { "true" } else { "false" };
        let res = match self.receipt {
            Receipt::Current(r) => {
                return serde_json::to_string(&r).unwrap_or_else(|_| format!("{{\"duplicate\":{flag}}}"));
            }
            Receipt::Stored(res) => res,
        };
        let res = res.trim();
        match res.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
            Some(inner) if inner.trim().is_empty() => format!("{{\"duplicate\":{flag}}}"),
            Some(inner) => format!("{{{inner},\"duplicate\":{flag}}}"),
            None => format!("{{\"duplicate\":{flag}}}"),
        }
    }

    /// The response body as a JSON value (batch results add fields to it).
    fn into_value(self) -> Value {
        let duplicate = self.duplicate;
        let mut v: Value = match self.receipt {
            Receipt::Current(r) => serde_json::to_value(*r).unwrap_or_else(|_| json!({})),
            Receipt::Stored(res) => serde_json::from_str(&res).unwrap_or_else(|_| json!({})),
        };
        if let Some(o) = v.as_object_mut() {
            o.insert("duplicate".into(), Value::Bool(duplicate));
        }
        v
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut res = (status, axum::Json(body)).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// An accepted report's response: its body text as `application/json`, `no-store`.
fn accepted_response(status: StatusCode, body: Accepted) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    (status, headers, body.into_body()).into_response()
}

/// `POST /v1/conversions`: one conversion. See the module doc for the status codes.
pub async fn create_conversion(
    State(app): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let merchant = authenticate(&app, &headers, &body)?;
    rate_limit(&app, &merchant, 1)?;
    let input: ConversionInput = parse_json(&body)?;
    let (status, body) = process(&app, &merchant, input).await?;
    Ok(accepted_response(status, body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    conversions: Vec<Value>,
}

/// `POST /v1/conversions/batch`: `{"conversions": [...]}`, up to 500, signed as
/// one body. `200 {"results": [{index, status, code, ...}]}`, one per item, each
/// with the status code and body the single form would have given.
pub async fn create_conversion_batch(
    State(app): State<AppState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let merchant = authenticate(&app, &headers, &body)?;
    let batch: Batch = parse_json(&body)?;
    if batch.conversions.is_empty() || batch.conversions.len() > MAX_BATCH {
        return Err(ApiError::field("conversions", "invalid_field", format!("conversions: 1 to {MAX_BATCH} items")));
    }
    rate_limit(&app, &merchant, u32::try_from(batch.conversions.len()).unwrap_or(u32::MAX))?;
    let mut results = Vec::with_capacity(batch.conversions.len());
    for (index, item) in batch.conversions.into_iter().enumerate() {
        let outcome = if item.is_object() {
            match ConversionInput::deserialize(&item) {
                Ok(input) => process(&app, &merchant, input).await,
                Err(e) => {
                    // Only on failure: again, tracking where, to name the field at fault.
                    let path = serde_path_to_error::deserialize::<_, ConversionInput>(&item).err();
                    Err(super::error::json_error(e, path.map(|p| p.path().to_string())))
                }
            }
        } else {
            Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", "each conversion must be a JSON object"))
        };
        let entry = match outcome {
            Ok((status, accepted)) => {
                let mut body = accepted.into_value();
                if let Some(o) = body.as_object_mut() {
                    o.insert("index".into(), json!(index));
                    o.insert("status_code".into(), json!(status.as_u16()));
                    let code = if status == StatusCode::CREATED { "attributed" } else { "duplicate" };
                    o.insert("code".into(), json!(code));
                }
                body
            }
            Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => return Err(e),
            Err(e) => {
                let mut v =
                    json!({"index": index, "status_code": e.status.as_u16(), "code": e.code, "message": e.message});
                if let (Some(f), Some(o)) = (e.field.as_deref(), v.as_object_mut()) {
                    o.insert("field".into(), json!(f));
                }
                v
            }
        };
        results.push(entry);
    }
    Ok(json_response(StatusCode::OK, &json!({ "results": results })))
}

/// Query parameters of the postback besides the conversion fields.
const POSTBACK_AUTH: [&str; 4] = ["merchant", "t", "k", "sig"];
const POSTBACK_FIELDS: [&str; 10] = [
    "click_token",
    "order_id",
    "sub_order_id",
    "status",
    "raw_status",
    "refund_id",
    "amount",
    "currency",
    "occurred_at",
    "item_id",
];

/// `GET /v1/postback?merchant=…&click_token=…&…&t=…&k=…&sig=…`: the same
/// conversion as query parameters, signed over the canonical query
/// (`crate::conversion::auth::canonical_query`). Same answers as `POST /v1/conversions`.
pub async fn get_postback(State(app): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let query = query.unwrap_or_default();
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let merchant = app.merchants.authenticate_postback(&params, now_s()).map_err(auth_error)?;
    rate_limit(&app, &merchant, 1)?;
    let mut obj = serde_json::Map::new();
    for (k, v) in &params {
        if POSTBACK_AUTH.contains(&k.as_str()) {
            continue;
        }
        if !POSTBACK_FIELDS.contains(&k.as_str()) {
            return Err(ApiError::named(k, "invalid_body", "unknown parameter"));
        }
        if obj.contains_key(k) {
            return Err(ApiError::named(k, "invalid_body", "given more than once"));
        }
        let value = if k == "amount" {
            // Canonical decimal only, as the JSON form: no sign, no leading zero, so one
            // amount has one spelling (`+5` or `05` would otherwise pass as 5).
            let canonical = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) && (v == "0" || !v.starts_with('0'));
            match v.parse::<i64>() {
                Ok(n) if canonical => json!(n),
                _ => {
                    return Err(ApiError::field(
                        "amount",
                        "invalid_field",
                        "amount: must be an integer from 0 to 10^12 (minor units)",
                    ));
                }
            }
        } else {
            json!(v)
        };
        obj.insert(k.clone(), value);
    }
    // The same field-naming errors as the JSON form (`missing field` names `field`).
    let input: ConversionInput = serde_path_to_error::deserialize(Value::Object(obj)).map_err(|e| {
        let path = e.path().to_string();
        json_error(e.into_inner(), Some(path))
    })?;
    let (status, body) = process(&app, &merchant, input).await?;
    Ok(accepted_response(status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spliced_body_equals_the_parsed_one() {
        let res = r#"{"click_token":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","amount":12900,"gmv_delta":-100,"sub_order_id":""}"#;
        let stored = |duplicate| Accepted { receipt: Receipt::Stored(res.to_owned()), duplicate };
        for duplicate in [false, true] {
            let text = stored(duplicate).into_body();
            let parsed: Value = serde_json::from_str(&text).expect("valid JSON");
            assert_eq!(parsed, stored(duplicate).into_value());
            assert_eq!(parsed["duplicate"], duplicate);
            assert_eq!(parsed["amount"], 12900);
        }
        // Not an object (never written by the script): only the flag.
        for res in ["", "[]", "{}", " { } "] {
            let text = Accepted { receipt: Receipt::Stored(res.to_owned()), duplicate: true }.into_body();
            assert_eq!(
                serde_json::from_str::<Value>(&text).expect("valid JSON"),
                json!({"duplicate": true}),
                "{res:?}"
            );
        }
    }

    #[test]
    fn current_results_render_every_documented_field() {
        let input: crate::conversion::ConversionInput = serde_json::from_str(
            r#"{"click_token":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","order_id":"O-1","sub_order_id":"L-2",
                "status":"refunded","amount":3000,"occurred_at":"2026-11-30T12:00:00+08:00"}"#,
        )
        .expect("valid input");
        let c = input.validate().expect("valid conversion");
        let stored = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b|65682d4500000000380339a5|creator_01|taobao|567873872517|CNY|paid|12900|3000|0|3000";
        let r = conversions::ConversionResult::from_stored(stored, &c, "tmall-shop", true).expect("well-formed");
        let body = Accepted { receipt: Receipt::Current(Box::new(r)), duplicate: true }.into_body();
        let v: Value = serde_json::from_str(&body).expect("valid JSON");
        assert_eq!(
            v,
            json!({
                "click_token": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "merchant_id": "tmall-shop",
                "order_id": "O-1", "sub_order_id": "L-2", "status": "refunded", "amount": 3000,
                "currency": "CNY", "note_id": "65682d4500000000380339a5", "creator_id": "creator_01",
                "platform": "taobao", "item_id": "567873872517", "order_state": "paid",
                "paid_total": 12900, "refunded_total": 3000, "gmv_delta": -3000, "duplicate": true
            })
        );
        for bad in ["", "a|b", "t|n|c|p|i|CNY|paid|x|0|0|0", "t|n|c|p|i|CNY|paid|1|0|0|0|extra"] {
            assert_eq!(conversions::ConversionResult::from_stored(bad, &c, "m", false), None, "{bad}");
        }
    }
}
