//! Pooled HTTP client for everything but the click hot path: minting, conversion
//! callbacks, the stats API and `/metrics` (hyper-util's legacy client, keep-alive pool).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::histo::ErrorKind;

/// Tries of an admin call answered `429` before its answer is taken as it is.
pub const ADMIN_RETRIES: u32 = 60;

/// An answer: status, `Retry-After` seconds when given, the whole body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// `Retry-After`, seconds.
    pub retry_after: Option<u64>,
    /// Body.
    pub body: Bytes,
}

/// A request that got no answer.
#[derive(Debug, Clone)]
pub struct CallError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// A short sentence naming the gateway and the cause, e.g. `gateway unreachable at
    /// http://127.0.0.1:8080 (connection refused)`.
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CallError {}

impl CallError {
    /// Whether the gateway could not be reached at all (no connection).
    pub fn unreachable(&self) -> bool {
        self.kind == ErrorKind::Connect
    }
}

/// The cause of a failed call in a few words (`connection refused`, `connection timed out`,
/// `DNS lookup failed: …`), from the innermost error that says something.
pub fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut dns = false;
    let mut last = e.to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            let what = match io.kind() {
                K::ConnectionRefused => "connection refused".to_owned(),
                K::TimedOut => "connection timed out".to_owned(),
                K::ConnectionReset => "connection reset".to_owned(),
                K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => "connection closed".to_owned(),
                K::AddrNotAvailable | K::HostUnreachable | K::NetworkUnreachable => format!("unreachable: {io}"),
                _ => io.to_string(),
            };
            return if dns { format!("DNS lookup failed: {what}") } else { what };
        }
        let text = err.to_string();
        dns |= text.starts_with("dns error");
        if !text.is_empty() {
            last = text;
        }
        cur = err.source();
    }
    if dns { format!("DNS lookup failed: {last}") } else { last }
}

/// The control client of one gateway.
#[derive(Debug, Clone)]
pub struct Control {
    client: Client<HttpConnector, Full<Bytes>>,
    /// `scheme://authority`, no trailing slash.
    origin: String,
    bearer: Option<String>,
    timeout: Duration,
}

impl Control {
    /// A client of `base` (`http://host:port`), authenticating admin calls with `admin_token`.
    ///
    /// # Errors
    /// `base` is not an `http://host[:port]` URL.
    pub fn new(base: &Uri, admin_token: Option<&str>, timeout: Duration) -> anyhow::Result<Control> {
        anyhow::ensure!(base.scheme_str() == Some("http"), "only http:// targets are supported, got {base}");
        let authority = base.authority().ok_or_else(|| anyhow::anyhow!("{base}: no host"))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Control {
            client,
            origin: format!("http://{authority}"),
            bearer: admin_token.map(|t| format!("Bearer {t}")),
            timeout,
        })
    }

    /// `POST {path}` with a JSON body and the admin bearer token. A `429` (the admin
    /// API's rate limit: nothing was done) is retried after its `Retry-After`.
    ///
    /// # Errors
    /// No answer ([`CallError`]).
    pub async fn post_json(&self, path: &str, body: &str) -> Result<(u16, Bytes), CallError> {
        let body = Bytes::from(body.to_owned());
        self.admin(
            || {
                Request::builder()
                    .method(Method::POST)
                    .uri(format!("{}{path}", self.origin))
                    .header(header::CONTENT_TYPE, "application/json")
            },
            body,
        )
        .await
    }

    /// `GET {path_and_query}` with the admin bearer token; `429` retried as in [`Control::post_json`].
    ///
    /// # Errors
    /// No answer ([`CallError`]).
    pub async fn get(&self, path_and_query: &str) -> Result<(u16, Bytes), CallError> {
        self.admin(
            || Request::builder().method(Method::GET).uri(format!("{}{path_and_query}", self.origin)),
            Bytes::new(),
        )
        .await
    }

    /// `GET {path}` without credentials and without retries (`/metrics`).
    ///
    /// # Errors
    /// No answer ([`CallError`]).
    pub async fn get_public(&self, path: &str) -> Result<Answer, CallError> {
        self.send(Request::builder().method(Method::GET).uri(format!("{}{path}", self.origin)), Bytes::new()).await
    }

    /// An admin call, retried on `429` up to [`ADMIN_RETRIES`] times.
    async fn admin(&self, make: impl Fn() -> http::request::Builder, body: Bytes) -> Result<(u16, Bytes), CallError> {
        let mut tries = 0;
        loop {
            let mut b = make();
            if let Some(t) = &self.bearer {
                b = b.header(header::AUTHORIZATION, t);
            }
            let a = self.send(b, body.clone()).await?;
            tries += 1;
            if a.status != 429 || tries >= ADMIN_RETRIES {
                return Ok((a.status, a.body));
            }
            let wait = a.retry_after.map_or(Duration::from_millis(200), |s| Duration::from_secs(s.clamp(1, 5)));
            tokio::time::sleep(wait).await;
        }
    }

    /// `POST /v1/conversions` with the merchant headers (no bearer token).
    ///
    /// # Errors
    /// No answer ([`CallError`]).
    pub async fn post_conversion(&self, body: Bytes, merchant: &str, signature: &str) -> Result<Answer, CallError> {
        let b = Request::builder()
            .method(Method::POST)
            .uri(format!("{}/v1/conversions", self.origin))
            .header(header::CONTENT_TYPE, "application/json")
            .header("linkloop-merchant", merchant)
            .header("linkloop-signature", signature);
        self.send(b, body).await
    }

    async fn send(&self, b: http::request::Builder, body: Bytes) -> Result<Answer, CallError> {
        let req = b.body(Full::new(body)).map_err(|e| CallError { kind: ErrorKind::Io, message: e.to_string() })?;
        let fut = async {
            let res = self.client.request(req).await.map_err(|e| self.call_error(&e))?;
            let status = res.status().as_u16();
            let retry_after = res
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            let body = res
                .into_body()
                .collect()
                .await
                .map_err(|e| CallError {
                    kind: ErrorKind::Io,
                    message: format!("connection to {} broken while reading an answer ({})", self.origin, cause(&e)),
                })?
                .to_bytes();
            Ok(Answer { status, retry_after, body })
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(CallError {
                kind: ErrorKind::Timeout,
                message: format!("no answer from {} within {:?}", self.origin, self.timeout),
            }),
        }
    }

    /// A short sentence for a failed request (never the Debug form of hyper's errors).
    fn call_error(&self, e: &hyper_util::client::legacy::Error) -> CallError {
        if e.is_connect() {
            let message = format!("gateway unreachable at {} ({})", self.origin, cause(e));
            CallError { kind: ErrorKind::Connect, message }
        } else {
            let message = format!("connection to {} failed ({})", self.origin, cause(e));
            CallError { kind: ErrorKind::Io, message }
        }
    }

    /// `http://host:port` of the gateway.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}
