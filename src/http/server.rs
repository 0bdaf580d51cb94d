//! The HTTP/1.1 accept loop: connection limits and timeouts that a router cannot see.
//!
//! A tower layer only runs once a request's head has been parsed, so a client that
//! trickles its headers one byte at a time (slow-loris) would hold a connection forever
//! behind it. This loop serves each connection with hyper's HTTP/1 server and sets what
//! only the connection knows:
//!
//! * `header_read_timeout_ms`: the request line and headers must arrive within this
//!   time of the server starting to wait for them, else the connection is closed. The
//!   same clock bounds an idle keep-alive connection.
//! * `max_header_bytes`: a larger head gets `431 Request Header Fields Too Large`
//!   (RFC 6585 §5) and the connection is closed.
//! * `max_connections`: past this many open connections the loop stops accepting; new
//!   ones wait in the kernel's backlog instead of costing memory here.
//!
//! The peer address is attached to every request as
//! [`axum::extract::ConnectInfo<SocketAddr>`], which [`crate::http::client_ip`] reads.
//! Only HTTP/1.x is spoken (the gateway sits behind a TLS terminator, or serves
//! shoppers' browsers directly over HTTP/1.1); an HTTP/2 preface is a parse error.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};

use super::Gateway;

/// Connection-level limits, from [`crate::config::Config`].
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Time allowed for a request's line and headers, ms.
    pub header_read_timeout_ms: u64,
    /// Largest request line + headers, bytes.
    pub max_header_bytes: usize,
    /// Open connections at most.
    pub max_connections: usize,
}

/// Serves `gateway` on `listener` until `shutdown` resolves, then stops accepting,
/// asks every open connection to finish its in-flight request and close, and returns
/// once all have closed. The caller bounds that drain with its own grace timer.
///
/// Accept errors (e.g. `EMFILE`) are logged and retried after 100 ms; they never end
/// the loop. Returns when the drain is complete.
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms))
        .max_header_size(limits.max_header_bytes)
        // The head must fit the read buffer too; leave room for a small body read.
        .max_buf_size(limits.max_header_bytes.max(8192) + 8192)
        .keep_alive(true);
    let http = Arc::new(http);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // `stop` tells connections to close gracefully; each holds an `alive` sender and
    // the loop waits for all of them to be dropped.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Redirect responses are small; send them without waiting for more data.
        let _ = stream.set_nodelay(true);
        let (http, gateway, mut stop, alive) = (http.clone(), gateway.clone(), stop_rx.clone(), alive_tx.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                let res = gateway.clone().serve(req.map(Body::new));
                async move { Ok::<_, std::convert::Infallible>(res.await) }
            });
            let conn = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::trace!(error = %e, "connection ended with an error");
                    }
                }
                () = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop((permit, alive));
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive_tx);
    let _ = alive_rx.recv().await;
}
