//! Hostile input through every public endpoint (issue 5, "Hostile input").
//!
//! Every request here is sent byte for byte by a tiny raw HTTP/1.1 client (reqwest and
//! the `url` crate would normalise backslashes, dot segments and invalid UTF-8 away),
//! and every answer is held to the same rules:
//! - no status ≥ 500, and a well-formed request always gets an answer (a handler panic
//!   shows up as a connection closed without one);
//! - every 3xx carries a `Location` that is an `https` URL on exactly one of the
//!   platforms' own product hosts, with no user info, no port, and a valid jump signature;
//! - no injected header (`Set-Cookie`, `X-Injected`) and nothing naming the hostile host
//!   in any response header; no HTML page reflects the input;
//! - API errors (`/v1/…`, unknown routes) are JSON `{code, message}`;
//! - rejected clicks and rejected callbacks write nothing to Redis;
//! - the gateway still answers `/healthz` afterwards.
//!
//! Malformed HTTP (raw CR/LF, NUL or non-ASCII bytes in the request line, oversize
//! headers) may instead be refused by hyper with a bare 4xx or a closed connection.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{ADMIN_TOKEN, MERCHANT_SECRET_1, TestApp, keys, spawn_app, spawn_app_with};

/// The only hosts a redirect may point at: the platforms' own product pages.
const PLATFORM_HOSTS: [&str; 6] =
    ["item.taobao.com", "h5.m.taobao.com", "detail.tmall.com", "detail.m.tmall.com", "item.jd.com", "item.m.jd.com"];

/// A browser user agent, so no case is mistaken for a bot or a preview fetcher.
const BROWSER_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148";
const NOTE: &str = "65682d4500000000380339a5";
const TAOBAO: &str = "https://item.taobao.com/item.htm?id=533000737918";
const TMALL_SKU: &str = "https://detail.tmall.com/item.htm?id=43724784272&skuId=4611686062152172176";
const JD: &str = "https://item.jd.com/100012043978.html";
/// The host every hostile input tries to send shoppers to; no response header may name it.
const EVIL: &str = "evil.example";

// ---------------------------------------------------------------------------------------
// A raw HTTP/1.1 client: exact bytes out, whatever comes back.
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    fn header_str(&self, name: &str) -> Option<String> {
        self.header(name).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    fn is_json(&self) -> bool {
        self.header_str("content-type").is_some_and(|c| c.starts_with("application/json"))
    }
}

/// Sends `bytes` on a fresh connection and reads until the server closes it (every request
/// built here says `Connection: close`). `None`: the connection closed without a status line.
async fn send_raw(addr: &str, bytes: &[u8]) -> Option<RawResponse> {
    let run = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect to the gateway");
        // The server may answer (431, 400) and close before it has read everything: a failed
        // write is then expected, and what it answered is still in the read buffer.
        let _ = stream.write_all(bytes).await;
        let _ = stream.flush().await;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf
    };
    let buf = tokio::time::timeout(Duration::from_secs(20), run).await.expect("the gateway closed the connection");
    parse_response(&buf)
}

fn parse_response(mut buf: &[u8]) -> Option<RawResponse> {
    // Skip interim answers (`100 Continue`).
    while buf.starts_with(b"HTTP/1.1 1") {
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        buf = &buf[end + 4..];
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    let mut headers = Vec::new();
    let raw_head = &buf[..end];
    // Header values may hold obs-text: re-split the raw bytes rather than the str.
    for line in raw_head.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|b| *b == b':')?;
        let name = String::from_utf8_lossy(&line[..colon]).trim().to_ascii_lowercase();
        let value = line[colon + 1..].trim_ascii().to_vec();
        headers.push((name, value));
    }
    let mut body = buf[end + 4..].to_vec();
    let res = RawResponse { status, headers, body: Vec::new() };
    if let Some(len) = res.header_str("content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.truncate(len);
    } else if res.header_str("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body);
    }
    Some(RawResponse { body, ..res })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16) else { break };
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 2 + size + 2).min(b.len())..];
    }
    out
}

/// A request: method, raw target, extra headers (raw values), body. Adds `Host`, a browser
/// `User-Agent` unless one is given, `Content-Length` for a body, and `Connection: close`.
fn request(method: &str, target: &[u8], headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(256 + target.len() + body.len());
    r.extend_from_slice(method.as_bytes());
    r.push(b' ');
    r.extend_from_slice(target);
    r.extend_from_slice(b" HTTP/1.1\r\n");
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has("host") {
        r.extend_from_slice(b"Host: 127.0.0.1\r\n");
    }
    if !has("user-agent") {
        r.extend_from_slice(format!("User-Agent: {BROWSER_UA}\r\n").as_bytes());
    }
    for (name, value) in headers {
        r.extend_from_slice(name.as_bytes());
        r.extend_from_slice(b": ");
        r.extend_from_slice(value);
        r.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || method == "POST" {
        r.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    r.extend_from_slice(b"Connection: close\r\n\r\n");
    r.extend_from_slice(body);
    r
}

fn get(target: impl AsRef<[u8]>) -> Vec<u8> {
    request("GET", target.as_ref(), &[], b"")
}

fn get_with(target: impl AsRef<[u8]>, headers: &[(&str, &[u8])]) -> Vec<u8> {
    request("GET", target.as_ref(), headers, b"")
}

// ---------------------------------------------------------------------------------------
// The cases and the rules every answer is held to.
// ---------------------------------------------------------------------------------------

/// What a case is allowed to get back, on top of the rules every answer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A well-formed `/j/` request that must be refused: an answer, no redirect.
    Rejected,
    /// A well-formed request for a valid link with hostile extras: an answer; a redirect
    /// (if any) goes to the minted product.
    Click,
    /// A well-formed API request: an answer; errors are JSON `{code, message}`; never 2xx/3xx.
    ApiError,
    /// A well-formed API request that may succeed (stats reads, health).
    Api,
    /// Malformed HTTP, or a request hyper may refuse (oversize): a bare 4xx or a closed
    /// connection is fine; an answer from us follows the rules.
    Malformed,
}

struct Case {
    name: String,
    bytes: Vec<u8>,
    expect: Expect,
}

fn case(name: impl Into<String>, bytes: Vec<u8>, expect: Expect) -> Case {
    Case { name: name.into(), bytes, expect }
}

/// The product a case's link was minted for, to check a redirect against.
#[derive(Clone, Copy)]
struct Minted {
    product: linkloop::platform::Product,
}

/// Checks a redirect's `Location`: an `https` URL on a platform host, nothing else.
fn assert_platform_location(location: &[u8], ctx: &str) -> linkloop::jump::JumpClaims {
    let loc = std::str::from_utf8(location).unwrap_or_else(|_| panic!("{ctx}: Location is not UTF-8"));
    assert!(loc.bytes().all(|b| b.is_ascii_graphic()), "{ctx}: Location has spaces or control bytes: {loc:?}");
    let url = url::Url::parse(loc).unwrap_or_else(|e| panic!("{ctx}: Location {loc:?} does not parse: {e}"));
    assert_eq!(url.scheme(), "https", "{ctx}: {loc}");
    assert!(url.username().is_empty() && url.password().is_none(), "{ctx}: user info in {loc}");
    assert_eq!(url.port(), None, "{ctx}: port in {loc}");
    let host = url.host_str().unwrap_or("");
    assert!(PLATFORM_HOSTS.contains(&host), "{ctx}: Location host {host:?} is not a platform host: {loc}");
    // The string itself (not only its parse) starts with the exact host, so no browser
    // quirk (backslashes, tabs, `@`) can read another host out of it.
    assert!(loc.starts_with(&format!("https://{host}/")), "{ctx}: {loc}");
    linkloop::jump::verify(loc, &keys().1).unwrap_or_else(|e| panic!("{ctx}: Location {loc} does not verify: {e}"))
}

/// What a run of cases saw, for the final checks and the report.
#[derive(Default)]
struct Tally {
    cases: usize,
    answered: usize,
    closed: usize,
    redirects: usize,
    statuses: std::collections::BTreeMap<u16, usize>,
    /// Click tokens of the `GET` redirects (each a recorded click).
    tokens: HashSet<String>,
}

impl Tally {
    fn summary(&self) -> String {
        format!(
            "{} cases: {} answered, {} closed without an answer, {} redirects; statuses {:?}",
            self.cases, self.answered, self.closed, self.redirects, self.statuses
        )
    }
}

async fn run_cases(app: &TestApp, cases: &[Case], minted: Option<Minted>, tally: &mut Tally) {
    let addr = app.base.strip_prefix("http://").unwrap().to_owned();
    for c in cases {
        tally.cases += 1;
        let res = send_raw(&addr, &c.bytes).await;
        let ctx = format!("case {:?} ({:?})", c.name, c.expect);
        let Some(res) = res else {
            tally.closed += 1;
            if std::env::var_os("HOSTILE_VERBOSE").is_some() {
                eprintln!("--- {ctx}: closed without an answer");
            }
            assert_eq!(c.expect, Expect::Malformed, "{ctx}: the connection closed without an answer (a panic?)");
            continue;
        };
        tally.answered += 1;
        *tally.statuses.entry(res.status).or_default() += 1;
        if std::env::var_os("HOSTILE_VERBOSE").is_some() {
            eprintln!("{} {ctx}", res.status);
        }
        check_response(&res, c, minted, &ctx, tally);
    }
}

fn check_response(res: &RawResponse, c: &Case, minted: Option<Minted>, ctx: &str, tally: &mut Tally) {
    let body = String::from_utf8_lossy(&res.body);
    assert!(res.status < 500, "{ctx}: status {} body {body}", res.status);
    assert!(res.status >= 200, "{ctx}: status {}", res.status);
    // Nothing from the input leaks into a response header.
    for (name, value) in &res.headers {
        assert!(name != "set-cookie" && !name.contains("injected"), "{ctx}: injected header {name}");
        let v = String::from_utf8_lossy(value).to_ascii_lowercase();
        assert!(!v.contains(EVIL) && !v.contains("injected"), "{ctx}: header {name}: {v}");
    }
    let location = res.header("location");
    if (300..400).contains(&res.status) {
        let location = location.unwrap_or_else(|| panic!("{ctx}: {} without Location", res.status));
        let claims = assert_platform_location(location, ctx);
        let shown = String::from_utf8_lossy(location);
        assert!(matches!(c.expect, Expect::Click | Expect::Malformed), "{ctx}: redirected to {shown}");
        if let Some(m) = minted {
            assert_eq!(claims.product, m.product, "{ctx}");
        }
        tally.redirects += 1;
        if c.bytes.starts_with(b"GET ") {
            tally.tokens.insert(claims.click_token.hyphenated().to_string());
        }
    } else {
        assert!(location.is_none(), "{ctx}: Location on a {}", res.status);
    }
    // An HTML answer is only ever the static invalid-link page: it reflects nothing.
    if res.header_str("content-type").is_some_and(|c| c.starts_with("text/html")) {
        let lower = body.to_ascii_lowercase();
        assert!(!lower.contains(EVIL) && !lower.contains("<script") && !lower.contains("injected"), "{ctx}: {body}");
        assert_eq!(res.header_str("x-content-type-options").as_deref(), Some("nosniff"), "{ctx}");
    }
    match c.expect {
        Expect::Rejected => assert!((400..500).contains(&res.status), "{ctx}: status {}", res.status),
        Expect::ApiError => {
            assert!((400..500).contains(&res.status), "{ctx}: status {} body {body}", res.status);
            assert_envelope(res, ctx);
        }
        // A valid link redirects; the only other answer allowed is a rate limit.
        Expect::Click if res.status == 429 => assert!(res.header("retry-after").is_some(), "{ctx}: 429"),
        Expect::Click => assert_eq!(res.status, 302, "{ctx}: body {body}"),
        Expect::Api if res.status >= 400 => assert_envelope(res, ctx),
        Expect::Malformed if res.is_json() => assert_envelope(res, ctx),
        Expect::Api | Expect::Malformed => {}
    }
}

/// API errors are JSON `{code, message}` (and `field`, when given, is a string).
fn assert_envelope(res: &RawResponse, ctx: &str) {
    let body = String::from_utf8_lossy(&res.body);
    assert!(res.is_json(), "{ctx}: {} with content type {:?}: {body}", res.status, res.header_str("content-type"));
    let v: Value = serde_json::from_slice(&res.body).unwrap_or_else(|e| panic!("{ctx}: not JSON ({e}): {body}"));
    assert!(v["code"].as_str().is_some_and(|c| !c.is_empty()), "{ctx}: no code: {body}");
    assert!(v["message"].as_str().is_some(), "{ctx}: no message: {body}");
    assert!(v.get("field").is_none_or(Value::is_string), "{ctx}: {body}");
}

async fn redis_sizes(app: &TestApp) -> (u64, u64) {
    let mut r = app.redis().await;
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut r).await.unwrap();
    let len = crate::support::stream_len(&mut r, "ll:clicks").await;
    (size, len)
}

async fn assert_healthy(app: &TestApp) {
    let addr = app.base.strip_prefix("http://").unwrap();
    let res = send_raw(addr, &get("/healthz")).await.expect("healthz answers");
    assert_eq!(res.status, 200);
    assert_eq!(serde_json::from_slice::<Value>(&res.body).unwrap()["status"], "ok");
}

async fn mint_link(app: &TestApp, url: &str) -> (String, Minted) {
    let minted = app.mint(NOTE, "creator_01", url).await;
    let link = minted["link"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let claims = linkloop::link::verify(&link, &keys().0).unwrap();
    (link, Minted { product: claims.product })
}

fn pct(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

// ---------------------------------------------------------------------------------------
// /j/{link}: forged, mangled and smuggled links. None may redirect, none may write.
// ---------------------------------------------------------------------------------------

fn rejected_click_cases(link: &str) -> Vec<Case> {
    use Expect::{Malformed, Rejected};
    let raw = URL_SAFE_NO_PAD.decode(link).unwrap();
    let mut flipped = raw.clone();
    flipped[8] ^= 0x01; // the note id
    let mut retargeted = raw.clone();
    retargeted[6] = 3; // taobao → jd, same item id
    let std_alphabet = link.replace('-', "%2B").replace('_', "%2F");
    let last = link.chars().last().unwrap();
    let swapped_last = format!("{}{}", &link[..link.len() - 1], if last == 'A' { 'B' } else { 'A' });
    let mut cases = vec![
        // Encoded slashes, dot segments and scheme-relative hosts.
        case("encoded //host", get("/j/%2F%2Fevil.example"), Rejected),
        case("encoded //host lower", get("/j/%2f%2fevil.example%2fitem.htm"), Rejected),
        case("encoded dot segments", get("/j/..%2F..%2Fevil.example"), Rejected),
        case("double-encoded slashes", get("/j/%252F%252Fevil.example"), Rejected),
        case("encoded scheme", get("/j/https:%2F%2Fevil.example"), Rejected),
        case("encoded scheme + path", get("/j/https%3A%2F%2Fevil.example%2Fitem.htm%3Fid%3D1"), Rejected),
        case("link + encoded //host", get(format!("/j/{link}%2F%2Fevil.example")), Rejected),
        case("link + encoded dot segment", get(format!("/j/{link}%2F..")), Rejected),
        case("empty segment //host", get("/j//evil.example"), Rejected),
        case("scheme in path", get("/j/https://evil.example"), Rejected),
        case("//host before the route", get(format!("//evil.example/j/{link}")), Rejected),
        case("///host", get("///evil.example"), Rejected),
        case("link/..", get(format!("/j/{link}/..")), Rejected),
        case("link/../../host", get(format!("/j/{link}/../../evil.example")), Rejected),
        case("link trailing slash", get(format!("/j/{link}/")), Rejected),
        case("route upper case", get(format!("/J/{link}")), Rejected),
        case("empty link", get("/j/"), Rejected),
        case("empty link + redirect query", get("/j/?url=https://evil.example"), Rejected),
        // Backslashes: raw (browsers read `\` as `/`) and encoded.
        case("encoded backslashes", get("/j/%5C%5Cevil.example"), Rejected),
        case("link + encoded backslash host", get(format!("/j/{link}%5C%5Cevil.example")), Rejected),
        case("raw backslashes", get("/j/\\\\evil.example"), Malformed),
        case("raw backslash after link", get(format!("/j/{link}\\evil.example")), Malformed),
        case("raw /\\ host", get("/\\evil.example/j/x"), Malformed),
        // User info.
        case("link@host", get(format!("/j/{link}@evil.example")), Rejected),
        case("host@link", get(format!("/j/evil.example@{link}")), Rejected),
        case("encoded @", get(format!("/j/{link}%40evil.example")), Rejected),
        case("user:pass@host", get("/j/user:pass@evil.example"), Rejected),
        case("platform host as user info", get("/j/item.taobao.com@evil.example"), Rejected),
        // IDN / punycode look-alikes.
        case("look-alike suffix", get("/j/item.taobao.com.evil.example"), Rejected),
        case("punycode taobao look-alike", get("/j/item.xn--tobao-ura.com"), Rejected),
        case("invalid punycode", get("/j/xn--item-taobao-xyz.com"), Rejected),
        case("encoded cyrillic a", get(format!("/j/item.t{}obao.com", pct("а"))), Rejected),
        case("encoded dotless i", get(format!("/j/{}tem.taobao.com", pct("ı"))), Rejected),
        case("encoded ideographic full stop", get(format!("/j/item.taobao.com{}evil.example", pct("。"))), Rejected),
        case("raw UTF-8 look-alike", get("/j/item.tаobao.com".as_bytes()), Malformed),
        case("raw full-width letters", get("/j/ｉtem.taobao.com".as_bytes()), Malformed),
        // Control characters and CRLF injection in the path.
        case("encoded CRLF Location", get(format!("/j/{link}%0d%0aLocation:%20https://evil.example")), Rejected),
        case("encoded CRLF Set-Cookie", get(format!("/j/{link}%0D%0ASet-Cookie:%20injected=1")), Rejected),
        case("encoded CRLF only", get("/j/%0d%0aX-Injected:%201"), Rejected),
        case("encoded CRLFCRLF body", get(format!("/j/{link}%0d%0a%0d%0a<script>injected</script>")), Malformed),
        case("encoded LF", get(format!("/j/{link}%0aX-Injected:1")), Rejected),
        case("encoded NUL after link", get(format!("/j/{link}%00")), Rejected),
        case("encoded NUL before link", get(format!("/j/%00{link}")), Rejected),
        case("encoded tab", get(format!("/j/{link}%09")), Rejected),
        case("encoded DEL", get(format!("/j/{link}%7F")), Rejected),
        case("encoded ANSI escape", get("/j/%1b%5b31mred%1b%5b0m"), Rejected),
        case("encoded U+2028", get(format!("/j/{link}%E2%80%A8")), Rejected),
        case("encoded RTL override", get(format!("/j/%E2%80%AE{link}")), Rejected),
        case("raw CRLF in target", get(format!("/j/{link}\r\nX-Injected: 1")), Malformed),
        case("raw LF in target", get(format!("/j/{link}\nX-Injected: 1")), Malformed),
        case("raw NUL in target", get(format!("/j/{link}\0")), Malformed),
        case("raw tab in target", get(format!("/j/{link}\tevil.example")), Malformed),
        case("raw ESC in target", get(b"/j/\x1b[31m".as_slice()), Malformed),
        case("raw DEL in target", get(format!("/j/{link}\x7f")), Malformed),
        case("space in target", get(format!("/j/{link} evil.example")), Malformed),
        // Invalid UTF-8, raw and encoded.
        case("raw invalid UTF-8", get(b"/j/\xff\xfe".as_slice()), Malformed),
        case("raw overlong slash", get(b"/j/\xc0\xafevil.example".as_slice()), Malformed),
        case("raw lone continuation after link", get([format!("/j/{link}").as_bytes(), b"\x80"].concat()), Malformed),
        case("raw surrogate", get(b"/j/\xed\xa0\x80".as_slice()), Malformed),
        case("encoded invalid UTF-8", get("/j/%FF%FE"), Rejected),
        case("encoded overlong slash", get("/j/%C0%AF%C0%AFevil.example"), Rejected),
        case("encoded 3-byte overlong slash", get("/j/%E0%80%AF"), Rejected),
        case("encoded surrogate", get("/j/%ED%A0%80"), Rejected),
        case("bad percent escapes", get("/j/%zz%"), Rejected),
        case("lone percent", get("/j/%"), Rejected),
        // Base64 games and tampering.
        case("padding", get(format!("/j/{link}=")), Rejected),
        case("double padding", get(format!("/j/{link}==")), Rejected),
        case("percent-encoded link char", get(format!("/j/%{:02X}{}", link.as_bytes()[0], &link[1..])), Rejected),
        case("non-canonical last char", get(format!("/j/{swapped_last}")), Rejected),
        case("flipped note bit", get(format!("/j/{}", URL_SAFE_NO_PAD.encode(&flipped))), Rejected),
        case("platform switched", get(format!("/j/{}", URL_SAFE_NO_PAD.encode(&retargeted))), Rejected),
        case("truncated", get(format!("/j/{}", &link[..link.len() - 2])), Rejected),
        case("link twice", get(format!("/j/{link}{link}")), Rejected),
        case("link;param", get(format!("/j/{link};jsessionid=evil.example")), Rejected),
        case("link.", get(format!("/j/{link}.")), Rejected),
        case("encoded dot", get(format!("/j/{link}%2E")), Rejected),
        case("plus", get("/j/+"), Rejected),
        case("encoded space", get("/j/%20"), Rejected),
        // Script and scheme payloads.
        case("javascript:", get("/j/javascript:alert(1)"), Rejected),
        case("encoded script tag", get("/j/%3Cscript%3Ealert(1)%3C%2Fscript%3Einjected"), Rejected),
        case("raw script tag", get("/j/<script>injected</script>"), Malformed),
        case("data: URL", get("/j/data:text%2Fhtml,%3Cscript%3Einjected"), Rejected),
        // Overlong links.
        case("10 KB link", get(format!("/j/{}", "A".repeat(10 * 1024))), Rejected),
        case("10 KB of valid links", get(format!("/j/{}", link.repeat(10 * 1024 / link.len() + 1))), Rejected),
        case("60 KB link", get(format!("/j/{}", "A".repeat(60 * 1024))), Malformed),
        case("100 KB link", get(format!("/j/{}", "A".repeat(100 * 1024))), Malformed),
        case("1 MB link", get(format!("/j/{}", "A".repeat(1024 * 1024))), Malformed),
        // Other methods on the redirect: never a click.
        case("HEAD encoded //host", request("HEAD", b"/j/%2F%2Fevil.example", &[], b""), Malformed),
        case("POST link", request("POST", format!("/j/{link}").as_bytes(), &[], b"x"), Rejected),
        case("PUT link", request("PUT", format!("/j/{link}").as_bytes(), &[], b"x"), Rejected),
        case("DELETE link", request("DELETE", format!("/j/{link}").as_bytes(), &[], b""), Rejected),
        case("OPTIONS link", request("OPTIONS", format!("/j/{link}").as_bytes(), &[], b""), Rejected),
        case("TRACE link", request("TRACE", format!("/j/{link}").as_bytes(), &[], b""), Rejected),
        case("CONNECT evil", request("CONNECT", b"evil.example:443", &[], b""), Malformed),
        case("garbage method", request("G\x01T", format!("/j/{link}").as_bytes(), &[], b""), Malformed),
        case("asterisk target", request("OPTIONS", b"*", &[], b""), Malformed),
        // Hostile but well-formed headers on a forged link: still nothing recorded.
        case(
            "forged link + hostile headers",
            get_with(
                "/j/%2F%2Fevil.example",
                &[
                    ("X-Forwarded-Host", b"evil.example"),
                    ("X-Original-URL", b"//evil.example"),
                    ("Referer", b"https://evil.example/"),
                ],
            ),
            Rejected,
        ),
        case("forged link + NUL in header", get_with("/j/x", &[("Referer", b"https://a\0evil.example")]), Malformed),
        // HTTP-level smuggling on a forged link.
        case(
            "CL + TE",
            request(
                "GET",
                b"/j/x",
                &[("Transfer-Encoding", b"chunked"), ("Content-Length", b"4")],
                b"0\r\n\r\nGET /j/x HTTP/1.1\r\nHost: evil.example\r\n\r\n",
            ),
            Malformed,
        ),
        case("bad chunked", request("GET", b"/j/x", &[("Transfer-Encoding", b"chunked")], b"zz\r\n"), Malformed),
        case("HTTP/0.9", b"GET /j/%2F%2Fevil.example\r\n\r\n".to_vec(), Malformed),
        case("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), Malformed),
        case(
            "empty lines before the request line",
            b"\r\n\r\nGET /j/%2F%2Fevil.example HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_vec(),
            Malformed,
        ),
        case("binary garbage", (0u8..=255).cycle().take(4096).collect(), Malformed),
    ];
    if std_alphabet != link {
        cases.push(case("standard alphabet", get(format!("/j/{std_alphabet}")), Rejected));
    }
    // Every third ASCII control byte, percent-encoded, in the middle of the link.
    for b in (0u8..0x20).step_by(3) {
        let mid = link.len() / 2;
        cases.push(case(
            format!("encoded control {b:#04x}"),
            get(format!("/j/{}%{b:02X}{}", &link[..mid], &link[mid..])),
            Rejected,
        ));
    }
    cases
}

#[tokio::test]
async fn hostile_links_never_redirect_off_platform_and_write_nothing() {
    let app = spawn_app().await;
    let (link, minted) = mint_link(&app, TAOBAO).await;
    app.state.aggregator.catch_up().await.unwrap();
    let before = redis_sizes(&app).await;

    let cases = rejected_click_cases(&link);
    let mut tally = Tally::default();
    run_cases(&app, &cases, Some(minted), &mut tally).await;
    eprintln!("rejected clicks: {}", tally.summary());
    assert!(cases.len() >= 100, "{} cases", cases.len());
    assert_eq!(tally.redirects, 0, "a forged or mangled link redirected");
    assert_eq!(redis_sizes(&app).await, before, "a rejected click wrote to Redis (DBSIZE, clicks in ll:clicks)");
    assert_eq!(app.state.spool.pending(), 0, "a rejected click was spooled");

    // The gateway is still up, and the real link still works.
    assert_healthy(&app).await;
    let addr = app.base.strip_prefix("http://").unwrap();
    let res = send_raw(addr, &get(format!("/j/{link}"))).await.unwrap();
    assert_eq!(res.status, 302);
    assert_eq!(assert_platform_location(res.header("location").unwrap(), "real link").product, minted.product);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Valid links with hostile extras: the redirect only ever goes to the minted product.
// ---------------------------------------------------------------------------------------

fn hostile_extra_cases(link: &str) -> Vec<Case> {
    use Expect::{Click, Malformed};
    let path = format!("/j/{link}");
    let p = path.as_bytes();
    let big = "A".repeat(64 * 1024);
    let many_headers: Vec<(String, Vec<u8>)> =
        (0..200).map(|i| (format!("X-Pad-{i}"), b"evil.example".to_vec())).collect();
    let many: Vec<(&str, &[u8])> = many_headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
    vec![
        // Query strings and fragments are ignored.
        case("redirect query", get(format!("{path}?url=https://evil.example")), Click),
        case("next= //host", get(format!("{path}?next=//evil.example&redirect_uri=%2F%2Fevil.example")), Click),
        case("encoded CRLF in query", get(format!("{path}?x=%0d%0aLocation:%20https://evil.example")), Click),
        case("raw backslash query", get(format!("{path}?\\\\evil.example")), Malformed),
        case("fragment @host", get(format!("{path}#@evil.example")), Malformed),
        case("empty query", get(format!("{path}?")), Click),
        case("10 KB query", get(format!("{path}?q={}", "A".repeat(10 * 1024))), Click),
        case("absolute-form target", get(format!("http://evil.example{path}")), Malformed),
        case("absolute-form https userinfo", get(format!("https://item.taobao.com@evil.example{path}")), Malformed),
        // Host and proxy headers never choose the destination.
        case("Host evil", get_with(p, &[("Host", b"evil.example")]), Click),
        case("Host with port and userinfo", get_with(p, &[("Host", b"item.taobao.com@evil.example:443")]), Malformed),
        case("X-Forwarded-Host", get_with(p, &[("X-Forwarded-Host", b"evil.example")]), Click),
        case("X-Forwarded-Proto", get_with(p, &[("X-Forwarded-Proto", b"javascript")]), Click),
        case("Forwarded host", get_with(p, &[("Forwarded", b"for=\"[::1]\";host=evil.example;proto=http")]), Click),
        case("X-Original-URL", get_with(p, &[("X-Original-URL", b"//evil.example/")]), Click),
        case("X-Rewrite-URL", get_with(p, &[("X-Rewrite-URL", b"https://evil.example/")]), Click),
        // X-Forwarded-For garbage.
        case("XFF host name", get_with(p, &[("X-Forwarded-For", b"evil.example")]), Click),
        case("XFF bad IPs", get_with(p, &[("X-Forwarded-For", b"999.999.999.999, ::::, 1.2.3.4\t, -1")]), Click),
        case("XFF with CRLF-free injection", get_with(p, &[("X-Forwarded-For", b"1.2.3.4|injected|x")]), Click),
        case("XFF 10 KB", get_with(p, &[("X-Forwarded-For", "1.2.3.4, ".repeat(1200).as_bytes())]), Click),
        case("XFF obs-text", get_with(p, &[("X-Forwarded-For", b"\xff\xfe1.2.3.4")]), Click),
        case(
            "XFF repeated",
            get_with(p, &[("X-Forwarded-For", b"1.1.1.1"), ("X-Forwarded-For", b"evil.example")]),
            Click,
        ),
        // Referer: recorded as a host only, never as anything that breaks the record.
        case("Referer evil", get_with(p, &[("Referer", b"https://evil.example/x")]), Click),
        case("Referer userinfo port", get_with(p, &[("Referer", b"https://u:p@evil.example:8443/")]), Click),
        case("Referer javascript", get_with(p, &[("Referer", b"javascript:alert('injected')")]), Click),
        case("Referer pipe host", get_with(p, &[("Referer", b"https://a|b.evil.example/")]), Click),
        case("Referer encoded pipe", get_with(p, &[("Referer", b"https://a%7Cb.evil.example/")]), Click),
        case("Referer encoded CRLF", get_with(p, &[("Referer", b"https://evil.example/%0d%0aSet-Cookie:x")]), Click),
        case("Referer obs-text", get_with(p, &[("Referer", b"https://\xe9vil.example/")]), Click),
        case("Referer punycode", get_with(p, &[("Referer", b"https://xn--item-taobao-xyz.com/")]), Click),
        case("Referer 64 KB", get_with(p, &[("Referer", format!("https://{big}.example/").as_bytes())]), Malformed),
        case("Referer IPv6", get_with(p, &[("Referer", b"https://[::1]:443/")]), Click),
        // User-Agent.
        case("UA pipes", get_with(p, &[("User-Agent", b"Mozilla/5.0 (iPhone) Mobile|injected|x")]), Click),
        case("UA obs-text", get_with(p, &[("User-Agent", b"Mozilla/5.0 \xff\xfe (iPhone)")]), Click),
        case("UA empty", get_with(p, &[("User-Agent", b"")]), Click),
        case("UA 64 KB", get_with(p, &[("User-Agent", format!("Mozilla/5.0 {big}").as_bytes())]), Malformed),
        case("UA with folded line", get_with(p, &[("User-Agent", b"Mozilla/5.0\r\n X-Injected: 1")]), Malformed),
        case("UA CRLF header split", get_with(p, &[("User-Agent", b"Mozilla/5.0\r\nX-Injected: 1")]), Click),
        case("UA NUL", get_with(p, &[("User-Agent", b"Mozilla/5.0\0injected")]), Malformed),
        case("UA bare CR", get_with(p, &[("User-Agent", b"Mozilla/5.0\rX-Injected: 1")]), Malformed),
        // Other headers.
        case("Cookie 64 KB", get_with(p, &[("Cookie", format!("a={big}").as_bytes())]), Malformed),
        case("header name with space", get_with(p, &[("X Injected", b"1")]), Malformed),
        case("header name obs-text", get_with(p, &[("X-\u{e9}", b"1")]), Malformed),
        case(
            "header without colon",
            format!("GET {path} HTTP/1.1\r\nHost: x\r\ngarbage\r\nConnection: close\r\n\r\n").into_bytes(),
            Malformed,
        ),
        case("200 headers", get_with(p, &many), Malformed),
        case("1 MB header", get_with(p, &[("X-Big", "A".repeat(1024 * 1024).as_bytes())]), Malformed),
        case("Expect 100-continue", get_with(p, &[("Expect", b"100-continue")]), Malformed),
        case("Expect garbage", get_with(p, &[("Expect", b"evil.example")]), Malformed),
        case("body on GET", request("GET", p, &[], b"{\"location\":\"https://evil.example\"}"), Click),
        case("HEAD", request("HEAD", p, &[("Referer", b"https://evil.example/")], b""), Click),
        case("HTTP/1.0 without Host", format!("GET {path} HTTP/1.0\r\n\r\n").into_bytes(), Click),
        case(
            "HTTP/1.1 without Host",
            format!("GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n").into_bytes(),
            Malformed,
        ),
        case("lower-case method", request("get", p, &[], b""), Malformed),
    ]
}

#[tokio::test]
async fn valid_links_with_hostile_extras_redirect_only_to_the_product() {
    let app = spawn_app().await;
    let mut tally = Tally::default();
    let mut total = 0;
    for url in [TAOBAO, TMALL_SKU, JD] {
        let (link, minted) = mint_link(&app, url).await;
        let cases = hostile_extra_cases(&link);
        total += cases.len();
        run_cases(&app, &cases, Some(minted), &mut tally).await;
    }
    eprintln!("valid links with hostile extras: {}", tally.summary());
    assert!(tally.redirects > 0, "{}", tally.summary());
    assert_eq!(tally.cases, total);

    // Every recorded click is one a 302 carried, and its record parses back: no header
    // value can add a field to the pipe-separated record.
    crate::support::wait_spool_empty(&app).await;
    let mut r = app.redis().await;
    let clicks = crate::support::stream_clicks(&mut r, "ll:clicks").await;
    assert!(!clicks.is_empty());
    for e in &clicks {
        let tok = e.tok.clone();
        assert!(tally.tokens.contains(&tok), "stream holds token {tok} no 302 carried");
        let rec = e.rec.clone();
        let parsed = linkloop::click::ClickRecord::from_packed(&rec).unwrap_or_else(|| panic!("record {rec:?}"));
        if let Some(host) = &parsed.referrer_host {
            assert!(
                host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-[]:".contains(&b)),
                "referrer host {host:?} in {rec:?}"
            );
        }
    }
    assert_healthy(&app).await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// POST /v1/links, GET /v1/stats, health: hostile API input.
// ---------------------------------------------------------------------------------------

const LOOK_ALIKE_PRODUCT_URLS: &[&str] = &[
    "https://item.taobao.com.evil.example/item.htm?id=1",
    "https://evil.example/item.taobao.com/item.htm?id=1",
    "evil.example/item.taobao.com/item.htm?id=1",
    "//evil.example/item.taobao.com/item.htm?id=1",
    "https://item.taobao.com@evil.example/item.htm?id=1",
    "https://item.taobao.com%40evil.example/item.htm?id=1",
    "https://evil.example\\@item.taobao.com/item.htm?id=1",
    "https://evil.example%2F@item.taobao.com/item.htm?id=1",
    "https:/\\evil.example/item.htm?id=1",
    "https:\\\\evil.example\\item.htm?id=1",
    "https://item.tаobao.com/item.htm?id=1",
    "https://item.xn--tobao-ura.com/item.htm?id=1",
    "https://xn--item-taobao-xyz.com/item.htm?id=1",
    "https://ｉtem.taobao.com/item.htm?id=1",
    "https://item.taobao.com。evil.example/item.htm?id=1",
    "https://ıtem.taobao.com/item.htm?id=1",
    "https://item.taobao.com:8080/item.htm?id=1",
    "https://item.taobao.com:443@evil.example/item.htm?id=1",
    "https://detail.tmall.com.evil.example/item.htm?id=1",
    "https://detail.tmall.com%00.evil.example/item.htm?id=1",
    "https://detail.tmall.com\u{0}.evil.example/item.htm?id=1",
    "https://item.jd.com.evil.example/1.html",
    "https://item.jd.com%2eevil.example/1.html",
    "https://evil.example/?u=https://item.jd.com/1.html",
    "https://evil.example/#https://item.jd.com/1.html",
    "https://127.0.0.1/item.htm?id=1",
    "https://2130706433/item.htm?id=1",
    "https://[::1]/item.htm?id=1",
    "https://item.taobao.com\r\n.evil.example/item.htm?id=1",
    "https://item.taobao.com/../evil.example/item.htm?id=1",
    "javascript:alert(1)//https://item.taobao.com/item.htm?id=1",
    "data:text/html,https://item.jd.com/1.html",
    "file:///etc/passwd",
    "https://item.taobao.com/item.htm?id=1%0d%0aLocation:%20https://evil.example",
    "https://item.jd.com/1%2F..%2F..%2Fevil.example.html",
    "\u{202e}moc.elpmaxe.live//:sptth",
];

/// Product URLs with hostile tails that may still name a real product: if they mint, the
/// link must redirect to that product's canonical page and nowhere else.
const HOSTILE_BUT_REAL_PRODUCT_URLS: &[&str] = &[
    "https://item.taobao.com/item.htm?id=533000737918&redirect=https://evil.example",
    "https://item.taobao.com/item.htm?id=533000737918#@evil.example",
    "https://item.jd.com/100012043978.html?returnurl=%2F%2Fevil.example",
    "【淘宝】https://evil.example https://detail.tmall.com/item.htm?id=43724784272 https://evil.example",
    "https://detail.tmall.com/item.htm?id=43724784272&skuId=4611686062152172176&url=javascript:alert(1)",
    // Control characters end a URL candidate in share text: this mints item 1.
    "https://item.taobao.com/item.htm?id=1\u{0}2",
];

fn api_request(method: &str, target: &str, token: Option<&str>, body: &[u8]) -> Vec<u8> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &[u8])> = vec![("Content-Type", b"application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_bytes()));
    }
    request(method, target.as_bytes(), &headers, body)
}

fn mint_body(note: &str, creator: &str, url: &str, campaign: Option<&str>) -> Vec<u8> {
    let mut b = json!({"note_id": note, "creator_id": creator, "url": url});
    if let Some(c) = campaign {
        b["campaign"] = json!(c);
    }
    b.to_string().into_bytes()
}

fn admin_api_cases() -> Vec<Case> {
    use Expect::{Api, ApiError, Malformed};
    let mint = |body: Vec<u8>| api_request("POST", "/v1/links", Some(ADMIN_TOKEN), &body);
    let good_url = "https://item.jd.com/100012043978.html";
    let mut cases = Vec::new();
    for url in LOOK_ALIKE_PRODUCT_URLS {
        cases.push(case(format!("mint look-alike {url:?}"), mint(mint_body(NOTE, "c1", url, None)), ApiError));
    }
    let ten_kb = format!("https://item.jd.com/1.html?{}", "a".repeat(10 * 1024));
    cases.push(case("mint 10 KB url", mint(mint_body(NOTE, "c1", &ten_kb, None)), ApiError));
    for note in [
        "../../etc/passwd",
        "65682d4500000000380339a5\r\nX-Injected: 1",
        "65682d4500000000380339a5\u{0}",
        "https://www.xiaohongshu.com.evil.example/explore/65682d4500000000380339a5",
        "https://evil.example/explore/65682d4500000000380339a5",
        "https://www.xiaohongshu.com@evil.example/explore/65682d4500000000380339a5",
        "https://www.xiaohongshu.com:8443/explore/65682d4500000000380339a5",
        "６５６８２ｄ４５００００００００３８０３３９ａ５",
        "xhsdiscover://item/../../65682d4500000000380339a5",
    ] {
        cases.push(case(format!("mint note {note:?}"), mint(mint_body(note, "c1", good_url, None)), ApiError));
    }
    cases.push(case("mint 10 KB note", mint(mint_body(&"6".repeat(10 * 1024), "c1", good_url, None)), ApiError));
    let long_creator = "c".repeat(65);
    let creators =
        ["c|1", "c\r\n", "c\u{0}", "../c", long_creator.as_str(), "<script>injected</script>", "сreator", ""];
    for creator in creators {
        cases.push(case(format!("mint creator {creator:?}"), mint(mint_body(NOTE, creator, good_url, None)), ApiError));
    }
    let long_campaign = "x".repeat(33);
    for campaign in ["a|b", long_campaign.as_str(), "\u{202e}", "a b", ""] {
        cases.push(case(
            format!("mint campaign {campaign:?}"),
            mint(mint_body(NOTE, "c1", good_url, Some(campaign))),
            ApiError,
        ));
    }
    let good = String::from_utf8(mint_body(NOTE, "c1", good_url, None)).unwrap();
    let deep = format!("{{\"note_id\": {}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("duplicate url key", good.replacen('{', "{\"url\":\"https://evil.example\",", 1).into_bytes()),
        ("unknown field redirect", good.replacen('{', "{\"redirect\":\"https://evil.example\",", 1).into_bytes()),
        ("deeply nested", deep.into_bytes()),
        ("invalid UTF-8 body", [b"{\"note_id\":\"".as_slice(), b"\xff\xfe", b"\"}"].concat()),
        ("raw NUL in a JSON string", good.replace(good_url, "https://item.jd.com/1\u{0}.html").into_bytes()),
        ("lone surrogate escape", good.replace(good_url, "\\ud800").into_bytes()),
        ("null", b"null".to_vec()),
        ("array", b"[]".to_vec()),
        ("number", b"1e999999".to_vec()),
        ("NUL bytes", vec![0u8; 64]),
        ("70 KB body", format!("{{\"note_id\":\"{}\"}}", "a".repeat(70 * 1024)).into_bytes()),
    ];
    for (name, body) in bodies {
        cases.push(case(format!("mint {name}"), mint(body), ApiError));
    }
    let body = mint_body(NOTE, "c1", good_url, None);
    let big_token = vec![b'a'; 64 * 1024];
    for (name, auth) in [
        ("two spaces", b"Bearer  test-admin-token".as_slice()),
        ("token + suffix", b"Bearer test-admin-tokenX"),
        ("token prefix", b"Bearer test-admin-toke"),
        ("basic", b"Basic dGVzdC1hZG1pbi10b2tlbg=="),
        ("obs-text", b"Bearer \xfftest-admin-token"),
        ("64 KB token", big_token.as_slice()),
    ] {
        let headers: [(&str, &[u8]); 2] = [("Content-Type", b"application/json"), ("Authorization", auth)];
        // Past `max_header_bytes` hyper answers a bare 431 before any handler runs.
        let expect = if auth.len() > 16 * 1024 { Malformed } else { ApiError };
        cases.push(case(format!("mint auth {name}"), request("POST", b"/v1/links", &headers, &body), expect));
    }
    let nul_auth: [(&str, &[u8]); 1] = [("Authorization", b"Bearer test-admin-token\0")];
    cases.push(case("mint auth NUL", request("POST", b"/v1/links", &nul_auth, &body), Malformed));
    for ct in [b"text/html".as_slice(), b"application/json\xff", b"application/x-www-form-urlencoded", b""] {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let headers: [(&str, &[u8]); 2] = [("Content-Type", ct), ("Authorization", auth.as_bytes())];
        cases.push(case(
            format!("mint content type {:?}", String::from_utf8_lossy(ct)),
            request("POST", b"/v1/links", &headers, &body),
            ApiError,
        ));
    }

    // Stats: hostile dimensions, ids and queries.
    let stats = |target: &str| api_request("GET", target, Some(ADMIN_TOKEN), b"");
    for target in [
        "/v1/stats/note/..%2F..%2Fetc%2Fpasswd",
        "/v1/stats/note/%FF%FE",
        "/v1/stats/%00/x",
        "/v1/stats/note/65682d4500000000380339a5%0d%0aX-Injected:%201",
        "/v1/stats/item/taobao:1*",
        "/v1/stats/item/taobao:18446744073709551616",
        "/v1/stats/item/taobao:0",
        "/v1/stats/item/evil.example:1",
        "/v1/stats/creator/*",
        "/v1/stats/creator/ll:agg:*",
        "/v1/stats/creator/a%20b",
        "/v1/stats/creator/a%7Cb",
        "/v1/stats/platform/evil.example",
        "/v1/stats/%2F%2Fevil.example/x",
        "/v1/stats/platform/taobao?format=xml",
        "/v1/stats/platform/taobao?format=csv%0d%0aX-Injected:%201",
        "/v1/stats/platform/taobao?from=2020-01-01&to=2030-01-01",
        "/v1/stats/platform/taobao?from=%FF",
        "/v1/stats/platform/taobao?from=9999-99-99",
        "/v1/stats/platform/taobao?from=2026-02-30",
        "/v1/stats/platform/taobao?from=+2026-01-01",
        "/v1/stats/platform/taobao?to=2026-01-01&from=2026-01-02",
        "/v1/stats/platform/taobao?from=x&from=y",
    ] {
        cases.push(case(format!("stats {target}"), stats(target), ApiError));
    }
    for target in [
        "/v1/stats/platform/taobao?from=0000-01-01&to=0000-01-05",
        "/v1/stats/platform/taobao?from=9999-12-27&to=9999-12-31",
        "/v1/stats/platform/taobao?from=1969-12-31&to=1970-01-01",
        "/v1/stats/platform/taobao?redirect=https://evil.example",
        "/v1/stats/note/65682D4500000000380339A5?format=csv",
    ] {
        cases.push(case(format!("stats {target}"), stats(target), Api));
    }
    cases.push(case("stats without token", api_request("GET", "/v1/stats/platform/taobao", None, b""), ApiError));
    cases.push(case(
        "stats with CSV Accept obs-text",
        get_with("/v1/stats/platform/taobao", &[("Accept", b"text/csv\xff")]),
        ApiError,
    ));
    cases.push(case("stats raw NUL", stats("/v1/stats/platform/tao\0bao"), Malformed));
    cases.push(case("stats raw UTF-8", stats("/v1/stats/creator/сreator"), Malformed));
    // Health endpoints and unknown routes.
    for target in ["/healthz?%0d%0aX-Injected:%201", "/healthz?url=//evil.example", "/readyz?%00", "/metrics?name=%FF"]
    {
        cases.push(case(format!("health {target}"), get(target), Api));
    }
    for target in [
        "/healthz%00",
        "/healthz/",
        "/readyz/../healthz",
        "/metrics%2F..%2Fhealthz",
        "/%2F%2Fevil.example",
        "/v1/links/../../evil.example",
        "/v1/conversions%0d%0aX-Injected:%201",
        "/v2/links",
    ] {
        cases.push(case(format!("route {target}"), get(target), ApiError));
    }
    cases
}

/// The wrong method on an API route.
fn wrong_method_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (method, target) in [
        ("GET", "/v1/links"),
        ("PUT", "/v1/links"),
        ("GET", "/v1/conversions"),
        ("DELETE", "/v1/conversions/batch"),
        ("POST", "/v1/postback"),
        ("POST", "/v1/stats/platform/taobao"),
        ("POST", "/healthz"),
    ] {
        cases.push(case(
            format!("method {method} {target}"),
            api_request(method, target, Some(ADMIN_TOKEN), b"{}"),
            Expect::ApiError,
        ));
    }
    cases
}

#[tokio::test]
async fn hostile_api_input_gets_json_errors_and_mints_nothing_off_platform() {
    // Past the admin rate limit every answer would be 429: lift it to reach the validation.
    let app = spawn_app_with(|c| c.admin_rate_limit_per_second = 1_000_000).await;
    app.state.aggregator.catch_up().await.unwrap();
    let before = redis_sizes(&app).await;
    let mut cases = admin_api_cases();
    cases.extend(wrong_method_cases());
    let mut tally = Tally::default();
    run_cases(&app, &cases, None, &mut tally).await;
    eprintln!("hostile API input: {}", tally.summary());
    assert!(cases.len() >= 100, "{} cases", cases.len());
    assert_eq!(tally.redirects, 0);
    assert_eq!(redis_sizes(&app).await, before, "rejected API calls wrote to Redis");

    // Look-alike product hosts are refused naming the field, each with a stable code.
    for url in LOOK_ALIKE_PRODUCT_URLS {
        let res = app
            .client
            .post(format!("{}/v1/links", app.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"note_id": NOTE, "creator_id": "c1", "url": url}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{url:?}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["field"], "url", "{url:?}: {v}");
    }
    // Hostile tails on a real product mint that product and nothing else.
    let addr = app.base.strip_prefix("http://").unwrap().to_owned();
    for url in HOSTILE_BUT_REAL_PRODUCT_URLS {
        let minted = app.mint(NOTE, "c1", url).await;
        assert!(matches!(minted["platform"].as_str(), Some("taobao" | "tmall" | "jd")), "{url:?}: {minted}");
        let link = minted["link"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
        let claims = linkloop::link::verify(&link, &keys().0).unwrap();
        assert_eq!(claims.product, linkloop::platform::parse_product(url).unwrap(), "{url:?}");
        let res = send_raw(&addr, &request("HEAD", format!("/j/{link}").as_bytes(), &[], b"")).await.unwrap();
        assert_eq!(res.status, 302, "{url:?}");
        assert_eq!(assert_platform_location(res.header("location").unwrap(), url).product, claims.product);
    }
    assert_healthy(&app).await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Conversion callbacks: hostile signatures and hostile (correctly signed) bodies.
// ---------------------------------------------------------------------------------------

fn now_s() -> u64 {
    linkloop::click::now_ms() / 1000
}

fn signed(path: &str, body: &[u8]) -> Vec<u8> {
    let sig = linkloop::conversion::auth::sign_body(MERCHANT_SECRET_1.as_bytes(), 1, now_s(), body);
    let headers: [(&str, &[u8]); 3] = [
        ("Content-Type", b"application/json"),
        ("Linkloop-Merchant", b"tmall-shop"),
        ("Linkloop-Signature", sig.as_bytes()),
    ];
    request("POST", path.as_bytes(), &headers, body)
}

fn conversion(token: &str) -> Value {
    json!({
        "click_token": token,
        "order_id": "O-1",
        "status": "paid",
        "amount": 100,
        "occurred_at": "2026-11-30T12:00:00+08:00"
    })
}

fn postback_target(extra: &[(&str, &str)]) -> String {
    let mut params: Vec<(String, String)> = [
        ("merchant", "tmall-shop".to_owned()),
        ("t", now_s().to_string()),
        ("k", "1".to_owned()),
        ("click_token", "01a22b0b-3df4-779a-a659-5b093b29117d".to_owned()),
        ("order_id", "O-1".to_owned()),
        ("status", "paid".to_owned()),
        ("amount", "100".to_owned()),
        ("occurred_at", "2026-11-30T12:00:00+08:00".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in extra {
        params.retain(|(pk, _)| pk != k);
        params.push(((*k).to_owned(), (*v).to_owned()));
    }
    let sig = linkloop::conversion::auth::sign_postback(MERCHANT_SECRET_1.as_bytes(), &params);
    params.push(("sig".into(), sig));
    let q: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    format!("/v1/postback?{q}")
}

fn callback_cases(token: &str) -> Vec<Case> {
    use Expect::{ApiError, Malformed};
    let mut cases = Vec::new();
    let with = |k: &str, v: Value| {
        let mut b = conversion(token);
        b[k] = v;
        b.to_string().into_bytes()
    };
    let hostile_fields: Vec<(&str, Value)> = vec![
        ("click_token", json!("../../ll:click:*")),
        ("click_token", json!(format!("{token}\r\nX-Injected: 1"))),
        ("click_token", json!(format!("{token}\u{0}"))),
        ("click_token", json!(token.to_uppercase())),
        ("click_token", json!(format!("{{{token}}}"))),
        ("click_token", json!(token.replace('-', ""))),
        ("click_token", json!("*")),
        ("click_token", json!("A".repeat(10 * 1024))),
        ("click_token", json!(1)),
        ("order_id", json!("O|1")),
        ("order_id", json!("O\r\nX-Injected: 1")),
        ("order_id", json!("O\u{0}")),
        ("order_id", json!("*")),
        ("order_id", json!("o".repeat(65))),
        ("order_id", json!("<script>injected</script>")),
        ("order_id", json!("")),
        ("sub_order_id", json!("ll:conv:*")),
        ("refund_id", json!("R-1")),
        ("raw_status", json!("PAID\r\nX-Injected: 1")),
        ("raw_status", json!("\u{0}")),
        ("raw_status", json!("已付款")),
        ("raw_status", json!("x".repeat(65))),
        ("status", json!("PAID")),
        ("status", json!("paid\u{0}")),
        ("status", json!(null)),
        ("amount", json!(-1)),
        ("amount", json!(1e20)),
        ("amount", json!("100")),
        ("amount", json!(i64::MAX)),
        ("amount", json!(u64::MAX)),
        ("amount", json!(0.5)),
        ("currency", json!("CNY\r\n")),
        ("currency", json!("xxx")),
        ("currency", json!("cny")),
        ("currency", json!("C".repeat(1000))),
        ("occurred_at", json!("9999-12-31T23:59:59Z")),
        ("occurred_at", json!("0000-01-01T00:00:00Z")),
        ("occurred_at", json!("1969-12-31T23:59:59Z")),
        ("occurred_at", json!("2026-13-45T25:61:61Z")),
        ("occurred_at", json!("+275760-09-13T00:00:00Z")),
        ("occurred_at", json!("2026-06-30T23:59:60Z")),
        ("occurred_at", json!("2026-11-30T12:00:00+99:99")),
        ("occurred_at", json!("")),
        ("item_id", json!(-1)),
        ("item_id", json!("1e3")),
        ("item_id", json!("99999999999999999999")),
        ("item_id", json!(1.5)),
        ("item_id", json!(["1"])),
        ("redirect", json!("https://evil.example")),
    ];
    for (k, v) in hostile_fields {
        let name = format!("conversion {k}={}", v.to_string().chars().take(60).collect::<String>());
        cases.push(case(name, signed("/v1/conversions", &with(k, v)), ApiError));
    }
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let raw_bodies: Vec<(&str, Vec<u8>)> = vec![
        ("invalid UTF-8", [b"{\"click_token\":\"".as_slice(), b"\xff\xfe\xfd", b"\"}"].concat()),
        ("NUL bytes", vec![0u8; 128]),
        ("deeply nested", format!("{{\"click_token\":{deep}}}").into_bytes()),
        ("duplicate keys", format!("{{\"click_token\":\"{token}\",\"click_token\":\"x\"}}").into_bytes()),
        ("trailing garbage", [conversion(token).to_string().as_bytes(), b"\r\nX-Injected: 1"].concat()),
        ("empty", Vec::new()),
        ("70 KB", format!("{{\"order_id\":\"{}\"}}", "a".repeat(70 * 1024)).into_bytes()),
    ];
    for (name, body) in &raw_bodies {
        cases.push(case(format!("conversion body {name}"), signed("/v1/conversions", body), ApiError));
    }
    // Batch form.
    let many: Vec<Value> = (0..501).map(|_| conversion(token)).collect();
    for (name, body) in [
        ("empty", json!({"conversions": []})),
        ("501 items", json!({ "conversions": many })),
        ("object", json!({"conversions": {}})),
        ("hostile items", json!({"conversions": [null, 1, "x", {}, [], {"click_token": "\u{0}"}]})),
        ("unknown field", json!({"conversions": [conversion(token)], "redirect": "https://evil.example"})),
    ] {
        cases.push(case(
            format!("batch {name}"),
            signed("/v1/conversions/batch", body.to_string().as_bytes()),
            Expect::Api,
        ));
    }
    cases.push(case("batch deeply nested", signed("/v1/conversions/batch", deep.as_bytes()), ApiError));
    // Hostile signatures: never past authentication.
    let body = conversion(token).to_string();
    let t = now_s();
    let good_sig = linkloop::conversion::auth::sign_body(MERCHANT_SECRET_1.as_bytes(), 1, t, body.as_bytes());
    let sigs: Vec<(&str, Vec<u8>)> = vec![
        ("empty parts", b"t=,k=,v1=".to_vec()),
        ("t overflow", format!("t=99999999999999999999999,k=1,v1={}", "0".repeat(64)).into_bytes()),
        ("t max", format!("t={},k=1,v1={}", u64::MAX, "0".repeat(64)).into_bytes()),
        ("t negative", format!("t=-1,k=1,v1={}", "0".repeat(64)).into_bytes()),
        ("kid 256", format!("t={t},k=256,v1={}", "0".repeat(64)).into_bytes()),
        ("kid unknown", format!("t={t},k=9,v1={}", "0".repeat(64)).into_bytes()),
        ("odd hex", format!("t={t},k=1,v1={}", "0".repeat(63)).into_bytes()),
        (
            "upper-case hex",
            good_sig.to_uppercase().replace("T=", "t=").replace("K=", "k=").replace("V1=", "v1=").into_bytes(),
        ),
        ("truncated mac", good_sig.as_bytes()[..good_sig.len() - 2].to_vec()),
        ("repeated v1", format!("{good_sig},v1={}", "0".repeat(64)).into_bytes()),
        ("extra part", format!("{good_sig},v0=1").into_bytes()),
        ("spaces", format!(" {} ", good_sig.replace(',', " , ")).into_bytes()),
        ("10 KB", "t=1,".repeat(2600).into_bytes()),
        ("obs-text", [good_sig.as_bytes(), b"\xff"].concat()),
        ("unicode digits", format!("t=１２３,k=1,v1={}", "0".repeat(64)).into_bytes()),
    ];
    for (name, sig) in &sigs {
        let headers: [(&str, &[u8]); 3] =
            [("Content-Type", b"application/json"), ("Linkloop-Merchant", b"tmall-shop"), ("Linkloop-Signature", sig)];
        cases.push(case(
            format!("signature {name}"),
            request("POST", b"/v1/conversions", &headers, body.as_bytes()),
            ApiError,
        ));
    }
    let big_merchant = vec![b'm'; 64 * 1024];
    for (name, merchant) in [
        ("unknown", b"evil.example".as_slice()),
        ("traversal", b"../tmall-shop"),
        ("glob", b"*"),
        ("trailing space", b"tmall-shop "),
        ("obs-text", b"tmall-shop\xff"),
        ("64 KB", big_merchant.as_slice()),
    ] {
        let headers: [(&str, &[u8]); 3] = [
            ("Content-Type", b"application/json"),
            ("Linkloop-Merchant", merchant),
            ("Linkloop-Signature", good_sig.as_bytes()),
        ];
        let expect = if merchant.len() > 16 * 1024 { Malformed } else { ApiError };
        cases.push(case(
            format!("merchant {name}"),
            request("POST", b"/v1/conversions", &headers, body.as_bytes()),
            expect,
        ));
    }
    let nul_sig: [(&str, &[u8]); 3] = [
        ("Content-Type", b"application/json"),
        ("Linkloop-Merchant", b"tmall-shop"),
        ("Linkloop-Signature", b"t=1,k=1\0,v1=00"),
    ];
    cases.push(case("signature NUL", request("POST", b"/v1/conversions", &nul_sig, body.as_bytes()), Malformed));
    let no_ct: [(&str, &[u8]); 2] = [("Linkloop-Merchant", b"tmall-shop"), ("Linkloop-Signature", good_sig.as_bytes())];
    cases.push(case(
        "conversion without content type",
        request("POST", b"/v1/conversions", &no_ct, body.as_bytes()),
        ApiError,
    ));
    let html_ct: [(&str, &[u8]); 3] = [
        ("Content-Type", b"text/html; charset=utf-7"),
        ("Linkloop-Merchant", b"tmall-shop"),
        ("Linkloop-Signature", good_sig.as_bytes()),
    ];
    cases.push(case("conversion text/html", request("POST", b"/v1/conversions", &html_ct, body.as_bytes()), ApiError));
    // Postback: signed with hostile values, and unsigned garbage.
    for (name, extra) in [
        ("CRLF order", vec![("order_id", "O\r\nX-Injected: 1")]),
        ("NUL order", vec![("order_id", "O\u{0}")]),
        ("unicode raw_status", vec![("raw_status", "已付款")]),
        ("redirect param", vec![("redirect", "https://evil.example")]),
        ("amount float", vec![("amount", "1e3")]),
        ("amount overflow", vec![("amount", "99999999999999999999")]),
        ("bad token", vec![("click_token", "../../*")]),
        ("bad date", vec![("occurred_at", "0000-00-00")]),
    ] {
        cases.push(case(format!("postback {name}"), get(postback_target(&extra)), ApiError));
    }
    let signed_target = postback_target(&[]);
    for target in [
        "/v1/postback".to_owned(),
        "/v1/postback?".to_owned(),
        "/v1/postback?merchant=../&sig=zz".to_owned(),
        "/v1/postback?merchant=tmall-shop&t=abc&k=1&sig=00".to_owned(),
        "/v1/postback?merchant=tmall-shop&t=1&k=999&sig=00".to_owned(),
        format!("/v1/postback?merchant=tmall-shop&t={t}&k=1&sig={}", "0".repeat(64)),
        "/v1/postback?merchant=%FF%FE&sig=%00".to_owned(),
        "/v1/postback?%0d%0aX-Injected:%201=1".to_owned(),
        format!("{signed_target}&sig=00"),
        format!("{signed_target}&order_id=O-2"),
        format!("{signed_target}&%FF=%FE"),
        signed_target.replace("order_id=O-1", "order_id=O%FF1"),
        format!("{signed_target}&x={}", "A".repeat(10 * 1024)),
    ] {
        cases.push(case(format!("postback {}", &target[..target.len().min(80)]), get(&target), ApiError));
    }
    cases.push(case("postback raw invalid UTF-8", get([b"/v1/postback?merchant=\xff".as_slice()].concat()), Malformed));
    cases
}

#[tokio::test]
async fn hostile_callbacks_get_json_errors_and_write_nothing() {
    let app = spawn_app().await;
    let (link, _) = mint_link(&app, TAOBAO).await;
    let (token, _) = app.click(&format!("{}/j/{link}", app.base)).await;
    crate::support::wait_spool_empty(&app).await;
    app.state.aggregator.catch_up().await.unwrap();
    let before = redis_sizes(&app).await;
    let cases = callback_cases(&token);
    let mut tally = Tally::default();
    run_cases(&app, &cases, None, &mut tally).await;
    eprintln!("hostile callbacks: {}", tally.summary());
    assert!(cases.len() >= 100, "{} cases", cases.len());
    assert_eq!(tally.redirects, 0);
    assert!(!tally.statuses.keys().any(|s| (200..300).contains(s) && *s != 200), "{}", tally.summary());
    assert_eq!(redis_sizes(&app).await, before, "a rejected callback wrote to Redis");

    // The batch answers are per item, each an envelope with a 4xx status code.
    let addr = app.base.strip_prefix("http://").unwrap().to_owned();
    let items = json!({"conversions": [null, 1, "x", {}, [], {"click_token": "\u{0}"}]}).to_string();
    let res = send_raw(&addr, &signed("/v1/conversions/batch", items.as_bytes())).await.unwrap();
    assert_eq!(res.status, 200);
    let v: Value = serde_json::from_slice(&res.body).unwrap();
    for r in v["results"].as_array().unwrap() {
        assert!((400..500).contains(&r["status_code"].as_u64().unwrap()), "{r}");
        assert!(r["code"].is_string() && r["message"].is_string(), "{r}");
    }
    assert_healthy(&app).await;
    app.stop().await;
}
