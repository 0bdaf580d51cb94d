//! The API documents stay true to the code: `docs/openapi.json` is OpenAPI 3.1.0
//! with a path for every route of `linkloop::http::router` and the `Error`
//! envelope on every JSON error; the signing test vectors in `docs/conversions.md`
//! are exactly what `linkloop::conversion::auth` computes, and are accepted by it.

use linkloop::config::KeyConfig;
use linkloop::conversion::auth::{AuthError, MerchantConfig, Merchants, canonical_query, sign_body, sign_postback};
use linkloop::platform::Platform;
use secrecy::SecretString;
use serde_json::Value;

const OPENAPI_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
const CONVERSIONS_MD_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/conversions.md");
const ROUTER_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/mod.rs");

/// Every route of the public API (`src/http/mod.rs`) and its methods, as
/// documented in `docs/openapi.json`.
const ROUTES: [(&str, &[&str]); 10] = [
    ("/j/{link}", &["get", "head"]),
    ("/v1/links", &["post"]),
    ("/v1/conversions", &["post"]),
    ("/v1/conversions/batch", &["post"]),
    ("/v1/postback", &["get"]),
    ("/v1/stats/{dim}/{id}", &["get"]),
    ("/healthz", &["get"]),
    ("/readyz", &["get"]),
    ("/metrics", &["get"]),
    ("/v1/openapi.json", &["get"]),
];

/// Signing test vectors of `docs/conversions.md`.
const SECRET_1: &str = "merchant-secret-one-0123456789abcdef-0123";
const SECRET_2: &str = "merchant-secret-two-0123456789abcdef-0123";
const MERCHANT: &str = "tmall-shop";
const T: u64 = 1_796_018_486;
const PAID_BODY: &str = r#"{"click_token":"01a22b0b-3df4-779a-a659-5b093b29117d","order_id":"O-1","status":"paid","amount":12900,"currency":"CNY","occurred_at":"2026-11-30T12:00:00+08:00"}"#;
const REFUND_BODY: &str = r#"{"click_token":"01a22b0b-3df4-779a-a659-5b093b29117d","order_id":"O-1","status":"refunded","refund_id":"R-1","amount":3000,"currency":"CNY","occurred_at":"2026-12-02T09:30:00+08:00"}"#;

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn openapi() -> Value {
    serde_json::from_str(&read(OPENAPI_PATH)).unwrap_or_else(|e| panic!("docs/openapi.json is not valid JSON: {e}"))
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// The postback test vector's parameters (without `sig`), in the order a merchant might send them.
fn postback_params() -> Vec<(String, String)> {
    pairs(&[
        ("merchant", MERCHANT),
        ("click_token", "01a22b0b-3df4-779a-a659-5b093b29117d"),
        ("order_id", "O-1"),
        ("status", "paid"),
        ("amount", "12900"),
        ("currency", "CNY"),
        ("occurred_at", "2026-11-30T12:00:00+08:00"),
        ("t", "1796018486"),
        ("k", "1"),
    ])
}

/// The test merchant of the vectors: kid 1 and kid 2 active (rotation).
fn merchants() -> Merchants {
    let secret = |kid: u8, s: &str| KeyConfig { kid, secret: SecretString::from(s.to_owned()) };
    let config = MerchantConfig {
        id: MERCHANT.into(),
        platforms: vec![Platform::Taobao, Platform::Tmall],
        attribution_window_days: None,
        secrets: vec![secret(1, SECRET_1), secret(2, SECRET_2)],
    };
    Merchants::new(&[config], 7, 300).unwrap()
}

/// A path template with its parameter names blanked: `/v1/stats/{}/{}`.
fn shape(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut in_param = false;
    for c in template.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push('{');
            }
            '}' => {
                in_param = false;
                out.push('}');
            }
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

/// The path strings of every `.route("…", …)` call in `src/http/mod.rs`.
fn router_paths() -> Vec<String> {
    let source = read(ROUTER_PATH);
    source
        .split(".route(")
        .skip(1)
        .filter_map(|rest| {
            let rest = rest.trim_start().strip_prefix('"')?;
            rest.split_once('"').map(|(path, _)| path.to_owned())
        })
        .collect()
}

/// Follows a local `#/components/...` reference.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("non-local $ref {r}"));
            doc.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {r}"))
        }
        None => v,
    }
}

#[test]
fn openapi_is_3_1_and_documents_every_route() {
    let doc = openapi();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let paths = doc["paths"].as_object().expect("paths object");
    for (route, methods) in ROUTES {
        let item = paths.get(route).unwrap_or_else(|| panic!("docs/openapi.json: no path {route}"));
        for method in methods {
            let op = &item[*method];
            assert!(op.is_object(), "docs/openapi.json: no {method} {route}");
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "docs/openapi.json: {method} {route} has no responses"
            );
        }
    }
    // Every route the router serves is in the list above (parameter names aside).
    let listed: Vec<String> = ROUTES.iter().map(|(r, _)| shape(r)).collect();
    let served = router_paths();
    assert!(served.len() >= 8, "found too few routes in src/http/mod.rs: {served:?}");
    for path in served {
        assert!(
            listed.contains(&shape(&path)),
            "route {path} of src/http/mod.rs is missing from ROUTES and docs/openapi.json"
        );
    }
}

#[test]
fn openapi_errors_use_the_error_envelope() {
    let doc = openapi();
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(error["required"], serde_json::json!(["code", "message"]));
    for p in ["code", "message", "field"] {
        assert_eq!(error["properties"][p]["type"], "string", "Error.{p}");
    }
    let error_ref = serde_json::json!({"$ref": "#/components/schemas/Error"});
    let mut checked = 0;
    for (route, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(responses) = op.get("responses").and_then(Value::as_object) else { continue };
            for (status, response) in responses {
                if !status.starts_with('4') && !status.starts_with('5') {
                    continue;
                }
                let response = resolve(&doc, response);
                let Some(schema) = response.pointer("/content/application~1json/schema") else { continue };
                let ok =
                    *schema == error_ref || schema["anyOf"].as_array().is_some_and(|alts| alts.contains(&error_ref));
                assert!(ok, "{method} {route} {status}: JSON error body is not the Error schema");
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "only {checked} error responses found");
}

#[test]
fn conversions_md_signing_vectors_are_what_the_code_computes() {
    let md = read(CONVERSIONS_MD_PATH);
    let m = merchants();
    for (secret, kid, body) in [(SECRET_1, 1, PAID_BODY), (SECRET_2, 2, PAID_BODY), (SECRET_1, 1, REFUND_BODY)] {
        assert!(md.contains(body), "docs/conversions.md lacks the vector body {body}");
        let header = sign_body(secret.as_bytes(), kid, T, body.as_bytes());
        assert!(md.contains(&header), "docs/conversions.md lacks the signature {header}");
        assert!(m.authenticate(Some(MERCHANT), Some(&header), body.as_bytes(), T).is_ok(), "{header}");
    }

    // Postback: the canonical query, its signature, and the whole URL query.
    let params = postback_params();
    let canonical = canonical_query(&params);
    let sig = sign_postback(SECRET_1.as_bytes(), &params);
    let query = format!("{canonical}&sig={sig}");
    for s in [&canonical, &sig, &query] {
        assert!(md.contains(s.as_str()), "docs/conversions.md lacks {s}");
    }
    // The documented URL query, decoded the way the gateway decodes it, authenticates.
    let decoded: Vec<(String, String)> =
        url::form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    assert!(m.authenticate_postback(&decoded, T).is_ok());
    // The pitfall the page warns about: a literal '+' decodes to a space.
    let plus = query.replace("%2B", "+");
    let decoded: Vec<(String, String)> =
        url::form_urlencoded::parse(plus.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    assert_eq!(m.authenticate_postback(&decoded, T).unwrap_err(), AuthError::Mismatch);

    // Encoding vector: space, '/', and UTF-8.
    let params = pairs(&[("t", "1796000000"), ("merchant", "m1"), ("k", "1"), ("order_id", "A B/é")]);
    let canonical = canonical_query(&params);
    assert_eq!(canonical, "k=1&merchant=m1&order_id=A%20B%2F%C3%A9&t=1796000000");
    let sig = sign_postback(SECRET_1.as_bytes(), &params);
    for s in [&canonical, &sig] {
        assert!(md.contains(s.as_str()), "docs/conversions.md lacks {s}");
    }
}

#[test]
fn conversions_md_names_every_error_code() {
    let md = read(CONVERSIONS_MD_PATH);
    let auth =
        [AuthError::Missing, AuthError::UnknownMerchant, AuthError::Malformed, AuthError::Stale, AuthError::Mismatch];
    let codes = auth.iter().map(|e| e.code()).chain([
        "attributed",
        "duplicate",
        "invalid_field",
        "invalid_body",
        "malformed_json",
        "platform_not_allowed",
        "conflict",
        "invalid_transition",
        "refund_exceeds_paid",
        "currency_mismatch",
        "body_too_large",
        "unsupported_media_type",
        "click_not_found",
        "outside_attribution_window",
        "item_mismatch",
        "occurred_in_future",
        "before_payment",
        "rate_limited",
        "store_unavailable",
    ]);
    for code in codes {
        assert!(md.contains(&format!("`{code}`")), "docs/conversions.md does not name `{code}`");
    }
}
