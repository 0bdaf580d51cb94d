//! HTTP: routes and the middleware stack. Turns requests into calls on the
//! domain modules and results into responses; holds no business rules.
//!
//! | route | handler |
//! |---|---|
//! | `GET`/`HEAD /j/{link}` | [`follow::follow_link`] |
//! | `POST /v1/links` | [`links::create_link`] |
//! | `POST /v1/conversions`, `/v1/conversions/batch`, `GET /v1/postback` | [`conversions`] |
//! | `GET /v1/stats/{dim}/{id}` | [`stats::get_stats`] |
//! | `GET /healthz`, `/readyz`, `/metrics`, `/v1/openapi.json` | [`health`] |

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tower::{ServiceBuilder, ServiceExt};

use crate::app::AppState;
use crate::metrics::{RequestLabels, RouteLabels};

pub mod auth;
pub mod client_ip;
pub mod conversions;
pub mod error;
pub mod follow;
pub mod health;
pub mod links;
pub mod server;
pub mod stats;

use error::ApiError;

/// Largest request body accepted, bytes (64 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest body of `POST /v1/conversions/batch`, bytes (1 MiB: 500 conversions).
pub const MAX_BATCH_BODY_BYTES: usize = 1024 * 1024;

/// What the accept loop serves: every request, dispatched by route.
///
/// `GET`/`HEAD /j/…` (the redirect, the hot path) goes straight to
/// [`follow::follow_link`] with the same guarantees the router's layers give other
/// routes, at a fraction of their cost: it is counted in the request metrics (route
/// `/j/{link}`), shed with `503 overloaded` past `max_concurrent_requests` redirects in
/// flight, and answered `503 timeout` after `request_timeout_ms`. Everything else goes
/// through [`router`].
#[derive(Clone)]
pub struct Gateway {
    state: AppState,
    router: Router,
    redirect: Arc<RedirectPath>,
}

/// The redirect's own load-shedding counter and pre-resolved metric handles
/// (a label lookup per request would cost a lock and a hash).
struct RedirectPath {
    in_flight: AtomicUsize,
    max_in_flight: usize,
    timeout: Duration,
    found_get: Counter,
    found_head: Counter,
    duration: Histogram,
}

impl Gateway {
    /// Builds the router and the redirect's fast path over `state`.
    pub fn new(state: AppState) -> Self {
        let m = &state.metrics;
        let found =
            |method| m.requests.get_or_create(&RequestLabels { route: REDIRECT_ROUTE, method, status: 302 }).clone();
        let redirect = Arc::new(RedirectPath {
            in_flight: AtomicUsize::new(0),
            max_in_flight: state.config.max_concurrent_requests,
            timeout: Duration::from_millis(state.config.request_timeout_ms),
            found_get: found("GET"),
            found_head: found("HEAD"),
            duration: m.request_duration.get_or_create(&RouteLabels { route: REDIRECT_ROUTE }).clone(),
        });
        Self { router: router(state.clone()), state, redirect }
    }

    /// Answers one request. Never fails: errors are responses.
    pub async fn serve(self, req: Request) -> Response {
        let is_redirect = req.uri().path().starts_with("/j/") && matches!(*req.method(), Method::GET | Method::HEAD);
        if !is_redirect {
            return match self.router.oneshot(req).await {
                Ok(res) => res,
                Err(never) => match never {},
            };
        }
        let start = Instant::now();
        let head = req.method() == Method::HEAD;
        let r = &self.redirect;
        // Released on drop too: a client that disconnects mid-request drops this future.
        let slot = InFlight::enter(&r.in_flight);
        let res = if slot.before >= r.max_in_flight {
            overload_error(&tower::load_shed::error::Overloaded::new().into())
        } else {
            let res = tokio::time::timeout(r.timeout, follow::follow_link(State(self.state.clone()), req)).await;
            res.unwrap_or_else(|_| overload_error(&tower::timeout::error::Elapsed::new().into()))
        };
        drop(slot);
        match (res.status(), head) {
            (StatusCode::FOUND, false) => r.found_get.inc(),
            (StatusCode::FOUND, true) => r.found_head.inc(),
            (status, _) => {
                let method = if head { "HEAD" } else { "GET" };
                let labels = RequestLabels { route: REDIRECT_ROUTE, method, status: status.as_u16() };
                self.state.metrics.requests.get_or_create(&labels).inc()
            }
        };
        r.duration.observe(start.elapsed().as_secs_f64());
        res
    }
}

/// One redirect counted in flight until dropped.
struct InFlight<'a> {
    count: &'a AtomicUsize,
    /// Redirects in flight before this one.
    before: usize,
}

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        Self { count, before: count.fetch_add(1, Ordering::AcqRel) }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Route label of the redirect in request metrics.
const REDIRECT_ROUTE: &str = "/j/{link}";

/// Builds the router with its whole middleware stack. Layers, outermost first:
/// 1. request metrics (route = matched path, so every answer is counted, sheds included);
/// 2. load shedding: past `max_concurrent_requests` in flight, `503 overloaded` at once;
/// 3. request timeout: `503 timeout` after `request_timeout_ms`;
/// 4. body limit: 64 KiB (`413`).
pub fn router(state: AppState) -> Router {
    let timeout = Duration::from_millis(state.config.request_timeout_ms);
    let overload = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|e: tower::BoxError| async move { overload_error(&e) }))
        .load_shed()
        .concurrency_limit(state.config.max_concurrent_requests)
        .timeout(timeout);
    Router::new()
        .route("/j/{link}", get(follow::follow_link))
        .route("/v1/links", post(links::create_link))
        .route("/v1/stats/{dim}/{id}", get(stats::get_stats))
        .route("/v1/conversions", post(conversions::create_conversion))
        .route(
            "/v1/conversions/batch",
            post(conversions::create_conversion_batch).layer(DefaultBodyLimit::max(MAX_BATCH_BODY_BYTES)),
        )
        .route("/v1/postback", get(conversions::get_postback))
        .route("/v1/openapi.json", get(health::get_openapi))
        .route("/healthz", get(health::get_healthz))
        .route("/readyz", get(health::get_readyz))
        .route("/metrics", get(health::get_metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(overload)
        .layer(middleware::from_fn_with_state(state.clone(), record_request))
        .with_state(state)
}

fn overload_error(e: &tower::BoxError) -> Response {
    if e.is::<tower::timeout::error::Elapsed>() {
        ApiError {
            retry_after_s: Some(1),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", "request took too long")
        }
        .into_response()
    } else if e.is::<tower::load_shed::error::Overloaded>() {
        ApiError {
            retry_after_s: Some(1),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "server busy, retry")
        }
        .into_response()
    } else {
        ApiError::internal(e).into_response()
    }
}

/// Whether `path` looks like a shopper's jump link (`/j…`, also `//j…` or `/J…`, as a
/// mangled copy of a link may arrive): such paths get the short HTML page, never JSON.
fn is_shopper_path(path: &str) -> bool {
    path.trim_start_matches('/').starts_with(['j', 'J'])
}

/// Unknown routes: shoppers (`/j…`) get the short invalid-link page (`404`), API clients
/// JSON `404 not_found`.
async fn not_found(uri: axum::http::Uri) -> Response {
    if is_shopper_path(uri.path()) {
        follow::invalid_link_page()
    } else {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route").into_response()
    }
}

/// A method a route does not take: on a jump link the short page with `405` and `Allow:
/// GET, HEAD`; elsewhere JSON `405 method_not_allowed`.
async fn method_not_allowed(uri: axum::http::Uri) -> Response {
    if is_shopper_path(uri.path()) {
        follow::method_not_allowed_page()
    } else {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
            .into_response()
    }
}

/// Static route label for metrics (bounded cardinality).
fn route_label(path: Option<&MatchedPath>) -> &'static str {
    match path.map(MatchedPath::as_str) {
        Some(REDIRECT_ROUTE) => REDIRECT_ROUTE,
        Some("/v1/links") => "/v1/links",
        Some("/v1/stats/{dim}/{id}") => "/v1/stats/{dim}/{id}",
        Some("/v1/conversions") => "/v1/conversions",
        Some("/v1/conversions/batch") => "/v1/conversions/batch",
        Some("/v1/postback") => "/v1/postback",
        Some("/healthz") => "/healthz",
        Some("/v1/openapi.json") => "/v1/openapi.json",
        Some("/readyz") => "/readyz",
        Some("/metrics") => "/metrics",
        Some(_) => "other",
        None => "unmatched",
    }
}

fn method_label(m: &axum::http::Method) -> &'static str {
    match *m {
        axum::http::Method::GET => "GET",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::POST => "POST",
        _ => "other",
    }
}

async fn record_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = route_label(req.extensions().get::<MatchedPath>());
    let method = method_label(req.method());
    let res = next.run(req).await;
    let m = &state.metrics;
    m.requests.get_or_create(&RequestLabels { route, method, status: res.status().as_u16() }).inc();
    m.request_duration.get_or_create(&RouteLabels { route }).observe(start.elapsed().as_secs_f64());
    res
}
