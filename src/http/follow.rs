//! `GET /j/{link}`: the redirect (the hot path).
//!
//! Verify the link (no Redis read), mint a click token, make the click durable
//! (one `XADD`, bounded wait), answer `302` to the signed jump URL. `HEAD`, bots and
//! soft-rate-limited clients get the same `302`, recorded in `ll:nonbillable` with their
//! reason, never as a click. An invalid link gets a short `404` page
//! and writes nothing. `Location` is built only from the verified link's
//! `(platform, item_id, sku_id)`: nothing from the request is copied into it.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::client_ip::client_ip;
use crate::app::AppState;
use crate::click::{self, Click, Durability, UaClass};
use crate::jump;
use crate::link;
use crate::metrics::ReasonLabels;

/// `Referrer-Policy` on the redirect: `no-referrer`, so the marketplace does not
/// receive the tracked-link URL (the click token in the jump URL is what it needs).
const REFERRER_POLICY: &str = "no-referrer";

/// The short page a shopper sees for a broken or forged link.
const INVALID_LINK_PAGE: &str = "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>链接无效 · Link not valid</title></head>\
<body><h1>链接无效 · This link is not valid</h1><p>链接可能被截断或修改。请回到笔记重新点击。</p>\
<p>The link may have been cut off or changed. Go back to the note and tap it again.</p></body></html>";

const TOO_MANY_REQUESTS_PAGE: &str = "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
<title>请稍后再试 · Too many requests</title></head>\
<body><h1>请稍后再试 · Too many requests</h1><p>Please wait a minute and tap the link again.</p></body></html>";

const METHOD_NOT_ALLOWED_PAGE: &str = "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>请在浏览器中打开 · Open in a browser</title></head>\
<body><h1>请在浏览器中打开 · Open this link in a browser</h1><p>请直接点击链接，或把它粘贴到浏览器地址栏。</p>\
<p>Tap the link, or paste it into a browser's address bar: it only opens that way (GET).</p></body></html>";

/// Handles `GET`/`HEAD /j/{link}`.
pub async fn follow_link(State(app): State<AppState>, req: Request) -> Response {
    let raw = req.uri().path().strip_prefix("/j/").unwrap_or("");
    let claims = match link::verify(raw, &app.link_keys) {
        Ok(c) => c,
        Err(link::InvalidLink(reason)) => {
            app.metrics.links_rejected.get_or_create(&ReasonLabels { reason: reason.as_str() }).inc();
            return invalid_link_page();
        }
    };
    let headers = req.headers();
    let peer =
        req.extensions().get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let ip = client_ip(peer, headers, &app.config.trusted_proxies);
    if app.ip_hard_limiter.check_key(&ip).is_err() {
        app.metrics.clicks_rate_limited.inc();
        return too_many_requests_page();
    }
    // A User-Agent with non-ASCII bytes (e.g. an app name in Chinese) is still a User-Agent:
    // classify its UTF-8 reading rather than treating it as absent.
    // (`from_utf8` first: its ASCII fast path is several times quicker than the lossy scan.)
    let ua_header = headers.get(header::USER_AGENT).map(|v| {
        let bytes = v.as_bytes();
        std::str::from_utf8(bytes).map_or_else(|_| String::from_utf8_lossy(bytes), Cow::Borrowed)
    });
    let (ua, bot) = UaClass::classify_with_reason(ua_header.as_deref());
    let token = click::mint_token();
    let ts_ms = token_ms(&token);
    let location = jump::build(&claims.product, ua.is_mobile(), &token, ts_ms, &app.jump_keys);
    let referrer_host = headers.get(header::REFERER).and_then(|v| v.to_str().ok()).and_then(click::referrer_host);
    let nonbillable = if req.method() == Method::HEAD {
        Some("head")
    } else if bot.is_some() {
        bot
    } else if app.ip_soft_limiter.check_key(&ip).is_err() {
        Some("rate_limited")
    } else {
        None
    };
    let click = Click { token, ts_ms, link: claims, ip_hash: app.visitor.ip_hash(ip), ua, referrer_host };
    match nonbillable {
        Some(reason) => app.record_nonbillable(&click, reason).await,
        // Durable (Redis or spool) before the 302; a drop is counted and logged inside.
        None => {
            let _: Durability = app.record_click(&click).await;
        }
    }
    redirect(&location)
}

fn token_ms(token: &uuid::Uuid) -> u64 {
    token.get_timestamp().map_or_else(click::now_ms, |ts| {
        let (s, ns) = ts.to_unix();
        s * 1000 + u64::from(ns) / 1_000_000
    })
}

fn redirect(location: &str) -> Response {
    let Ok(location) = HeaderValue::from_str(location) else {
        // Jump URLs are ASCII built by us; this is unreachable, but never panic.
        return invalid_link_page();
    };
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::FOUND;
    let h = res.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static(REFERRER_POLICY));
    res
}

/// `429` for a client past the hard per-IP limit: a short page and `Retry-After`.
fn too_many_requests_page() -> Response {
    let mut res = page(StatusCode::TOO_MANY_REQUESTS, TOO_MANY_REQUESTS_PAGE);
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    res
}

/// The `405` answer to a method other than `GET`/`HEAD` on a jump link: a short page
/// saying the link opens in a browser, with `Allow: GET, HEAD` (RFC 9110 §15.5.6).
pub fn method_not_allowed_page() -> Response {
    let mut res = page(StatusCode::METHOD_NOT_ALLOWED, METHOD_NOT_ALLOWED_PAGE);
    res.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    res
}

/// The `404` page a shopper sees for a broken, forged or unknown link.
pub fn invalid_link_page() -> Response {
    page(StatusCode::NOT_FOUND, INVALID_LINK_PAGE)
}

/// A shopper-facing page: `html` with `status`, never cached, not sniffed, no referrer.
fn page(status: StatusCode, html: &'static str) -> Response {
    let mut res = (status, html).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static(REFERRER_POLICY));
    res
}
