//! Connection-level limits (issue 5, "Timeouts and limits on every request"): the
//! header-read timeout against slow-loris clients, the header size limit, and the cap
//! on open connections. Raw TCP clients, real gateway, real redis-server.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{SHOPPER_UA, TestApp, spawn_app_with};

const TAOBAO: &str = "https://item.taobao.com/item.htm?id=533000737918";

fn addr(app: &TestApp) -> String {
    app.base.strip_prefix("http://").unwrap().to_owned()
}

/// Reads until the server closes the connection (or `limit` passes); returns what arrived.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .ok()?;
    Some(buf)
}

fn get_request(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: a\r\nUser-Agent: {SHOPPER_UA}\r\n{extra}Connection: close\r\n\r\n")
}

/// One slow-loris client: sends a request line, then one header byte every 50 ms for
/// at most 600 bytes (30 s). Returns how many bytes it got out before the server closed.
async fn trickle(addr: &str) -> usize {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /j/x HTTP/1.1\r\nHost: a\r\nX-Slow: ").await.unwrap();
    let mut sent = 0;
    let mut byte = [0u8; 1];
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if stream.write_all(b"a").await.is_err() {
            break;
        }
        // A closed connection shows as EOF on read (the write may still be buffered).
        match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => break,
            _ => sent += 1,
        }
    }
    sent
}

#[tokio::test]
async fn slow_loris_connections_are_closed_and_never_block_clicks() {
    let app = spawn_app_with(|c| c.header_read_timeout_ms = 500).await;
    let link = app.mint("65682d4500000000380339a5", "c1", TAOBAO).await["link"].as_str().unwrap().to_owned();
    let addr = addr(&app);

    let slow: Vec<_> = (0..32)
        .map(|_| {
            tokio::spawn({
                let addr = addr.clone();
                async move { trickle(&addr).await }
            })
        })
        .collect();
    // While they trickle, shoppers are served.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        let (token, _) = app.click(&link).await;
        assert_eq!(token.len(), 36);
    }
    let mut sent = Vec::new();
    for s in slow {
        sent.push(s.await.unwrap());
    }
    eprintln!("slow-loris bytes sent before close: {sent:?}");
    // Every slow client was cut off long before its 600-byte trickle ended.
    assert!(sent.iter().all(|&n| n < 600), "a slow-loris connection was never closed: {sent:?}");
    // An idle connection (no byte at all) is closed too.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    assert!(read_to_close(&mut idle, Duration::from_secs(20)).await.is_some(), "idle connection kept open");

    app.state.aggregator.catch_up().await.unwrap();
    let mut r = app.redis().await;
    let recorded = crate::support::stream_len(&mut r, "ll:clicks").await;
    assert_eq!(recorded, 5, "only the 5 real clicks are recorded");
    app.stop().await;
}

#[tokio::test]
async fn oversize_request_head_gets_431_and_records_nothing() {
    let app = spawn_app_with(|c| c.max_header_bytes = 8 * 1024).await;
    let link = app.mint("65682d4500000000380339a5", "c1", TAOBAO).await["link"].as_str().unwrap().to_owned();
    let path = format!("/j/{}", link.rsplit('/').next().unwrap());
    let addr = addr(&app);

    // A 6 KB Referer fits the 8 KiB limit: a click.
    let fits = get_request(&path, &format!("Referer: https://{}.example/\r\n", "a".repeat(6 * 1024)));
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(fits.as_bytes()).await.unwrap();
    let res = read_to_close(&mut s, Duration::from_secs(20)).await.unwrap();
    assert!(res.starts_with(b"HTTP/1.1 302"), "{}", String::from_utf8_lossy(&res[..res.len().min(200)]));

    // A 9 KB one does not: 431, nothing recorded.
    let big = get_request(&path, &format!("Referer: https://{}.example/\r\n", "a".repeat(9 * 1024)));
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let _ = s.write_all(big.as_bytes()).await;
    let res = read_to_close(&mut s, Duration::from_secs(20)).await.unwrap();
    assert!(res.starts_with(b"HTTP/1.1 431"), "{}", String::from_utf8_lossy(&res[..res.len().min(200)]));

    let mut r = app.redis().await;
    let recorded = crate::support::stream_len(&mut r, "ll:clicks").await;
    assert_eq!(recorded, 1);
    app.stop().await;
}

#[tokio::test]
async fn connections_past_the_cap_wait_in_the_backlog() {
    let app = spawn_app_with(|c| {
        c.max_connections = 2;
        c.header_read_timeout_ms = 60_000;
    })
    .await;
    let addr = addr(&app);
    let mut idle1 = TcpStream::connect(&addr).await.unwrap();
    let idle2 = TcpStream::connect(&addr).await.unwrap();
    // Both slots are taken by silent connections; the third is not served.
    let mut third = TcpStream::connect(&addr).await.unwrap();
    third.write_all(get_request("/healthz", "").as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "a connection past max_connections was served");
    // One slot frees up: the third is served.
    idle1.shutdown().await.unwrap();
    drop(idle1);
    let res = read_to_close(&mut third, Duration::from_secs(20)).await.unwrap();
    assert!(res.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&res));
    drop(idle2);
    app.stop().await;
}

/// Shoppers who give up while their click waits on Redis release their redirect slot: with
/// `max_concurrent_requests = 2`, four abandoned redirects are followed by redirects that are
/// served (`302`), not shed (`503`).
#[tokio::test]
async fn abandoned_redirects_release_their_slot() {
    let redis = crate::support::TestRedis::start().await;
    let proxy = crate::chaos::ChaosProxy::start(redis.server.port()).await;
    let url = proxy.url();
    let app = spawn_app_with(move |c| {
        c.redis_url = Some(url);
        c.max_concurrent_requests = 2;
        c.click_write_timeout_ms = 1500;
    })
    .await;
    let link = app.mint("65682d4500000000380339a5", "c1", TAOBAO).await["link"].as_str().unwrap().to_owned();
    let path = link.split_once("/j/").map(|(_, l)| format!("/j/{l}")).unwrap();
    proxy.stall();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr(&app)).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\nUser-Agent: {SHOPPER_UA}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(s);
    }
    proxy.resume();
    // Past the bounded wait, whatever hyper did with the abandoned requests is over.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    for _ in 0..5 {
        let res = app.client.get(&link).header("user-agent", SHOPPER_UA).send().await.unwrap();
        assert_eq!(res.status(), 302, "a slot leaked: {:?}", res.text().await);
    }
    app.stop().await;
}
