//! The click hot path: one task per connection, one raw hyper HTTP/1.1 connection each,
//! one request at a time (keep-alive). Requests reuse pre-built URIs and header values
//! (both reference-counted, so cloning them copies no bytes); the answer's `Location` is
//! scanned in place for the click token, which is kept as a `u128`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedSender;

use crate::histo::{Endpoint, ErrorKind, Live, Recorder};
use crate::raw::{RawConn, write_request};
use crate::scenario::{ClickChoice, Plan, UaClass};
use crate::schedule::{Dispenser, Ticket, latency_origin};

/// What the click connections send.
#[derive(Debug, Clone)]
pub enum Target {
    /// `GET uri` with a fixed user agent; any status below 400 is a success.
    Plain {
        /// Origin-form URI (path and query).
        uri: Uri,
        /// `Host` header.
        host: HeaderValue,
        /// `User-Agent` header.
        ua: HeaderValue,
    },
    /// The scenario: Zipf links, the UA mix, GET/HEAD, conversions after some clicks.
    Scenario {
        /// The minted links and choices.
        plan: Arc<Plan>,
        /// Keep every token seen (for the Redis stream check).
        keep_tokens: bool,
        /// Conversions: share of counted GET clicks, longest delay, where to send them.
        conversions: Option<ConversionHook>,
    },
}

/// Where clicks that convert are handed to the conversion driver.
#[derive(Debug, Clone)]
pub struct ConversionHook {
    /// Share of counted (non-bot) GET clicks that convert.
    pub share: f64,
    /// Longest delay between the click and its conversion.
    pub max_delay: Duration,
    /// The conversion driver's queue.
    pub tx: UnboundedSender<ConversionSeed>,
}

/// A click that will convert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversionSeed {
    /// When to send the conversion.
    pub due: Instant,
    /// The click token.
    pub token: u128,
    /// The click time (`ll_ts`), Unix ms.
    pub ts_ms: u64,
    /// Index of the link clicked.
    pub link: u32,
}

/// Shared by every click connection.
#[derive(Debug)]
pub struct ClickCtx {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Tickets, stop conditions and open-loop pacing (shared with the pacer task).
    pub dispenser: Arc<Dispenser>,
    /// Progress counters.
    pub live: Arc<Live>,
    /// Per-request limit.
    pub timeout: Duration,
    /// What to send.
    pub target: Target,
    /// Which HTTP client.
    pub client: ClientKind,
}

/// How a click was sent, for the verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeenKind {
    /// GET by a non-bot user agent.
    Counted,
    /// GET by a bot user agent.
    Bot,
    /// HEAD (records nothing).
    Head,
}

/// One token seen in a `Location`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenToken {
    /// The click token.
    pub token: u128,
    /// Note index of the link.
    pub note: u32,
    /// How it was requested.
    pub kind: SeenKind,
}

/// Per-note click counts observed by the tester.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoteClicks {
    /// GETs by non-bot user agents answered with a token.
    pub counted: u64,
    /// GETs by bots answered with a token.
    pub bot: u64,
    /// HEADs answered.
    pub head: u64,
    /// GETs sent that got no answer (timeout, broken connection): the gateway may or may not have recorded them.
    pub uncertain: u64,
}

/// What one connection (or all, merged) observed.
#[derive(Debug, Clone, Default)]
pub struct ClickObs {
    /// Per note index.
    pub per_note: Vec<NoteClicks>,
    /// Every token seen (only with `keep_tokens`).
    pub tokens: Vec<SeenToken>,
    /// GET answers that were redirects without a token.
    pub no_token: u64,
}

impl ClickObs {
    /// Adds `other` to these observations.
    pub fn merge(&mut self, other: ClickObs) {
        if self.per_note.len() < other.per_note.len() {
            self.per_note.resize(other.per_note.len(), NoteClicks::default());
        }
        for (m, o) in self.per_note.iter_mut().zip(&other.per_note) {
            m.counted += o.counted;
            m.bot += o.bot;
            m.head += o.head;
            m.uncertain += o.uncertain;
        }
        self.tokens.extend(other.tokens);
        self.no_token += other.no_token;
    }
}

/// What a connection task hands back.
#[derive(Debug)]
pub struct WorkerOut {
    /// Its measurements.
    pub rec: Recorder,
    /// Its observations.
    pub obs: ClickObs,
    /// When its last answer arrived.
    pub last_answer: Option<Instant>,
    /// Why its first failed connection attempt failed (`connection refused`, `connection timed out`, …).
    pub connect_cause: Option<String>,
}

/// Finds `ll_ct=<uuid>` (and `ll_ts=<ms>`) in a `Location` value.
pub fn find_token(location: &[u8]) -> Option<(u128, Option<u64>)> {
    let token = find_param(location, b"ll_ct=").and_then(|v| parse_uuid(v.get(..36)?))?;
    let ts = find_param(location, b"ll_ts=").and_then(|v| {
        let end = v.iter().position(|b| !b.is_ascii_digit()).unwrap_or(v.len());
        std::str::from_utf8(v.get(..end)?).ok()?.parse().ok()
    });
    Some((token, ts))
}

/// The bytes after `name` (which must start the query or follow `?` or `&`).
fn find_param<'a>(hay: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut from = 0;
    while let Some(pos) = hay.get(from..)?.windows(name.len()).position(|w| w == name) {
        let at = from + pos;
        if at == 0 || matches!(hay.get(at - 1), Some(b'?' | b'&')) {
            return hay.get(at + name.len()..);
        }
        from = at + 1;
    }
    None
}

/// Parses a canonical hyphenated UUID (36 bytes, either case) into its 128-bit value.
pub fn parse_uuid(s: &[u8]) -> Option<u128> {
    if s.len() != 36 {
        return None;
    }
    let mut v: u128 = 0;
    for (i, &b) in s.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b != b'-' {
                return None;
            }
            continue;
        }
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u128::from(d);
    }
    Some(v)
}

/// Canonical lowercase hyphenated text of a UUID value.
pub fn uuid_text(v: u128) -> String {
    uuid::Uuid::from_u128(v).hyphenated().to_string()
}

const X_FORWARDED_FOR: header::HeaderName = header::HeaderName::from_static("x-forwarded-for");

enum Sent {
    /// An answer: status and, for redirects, the token found.
    Answer { status: u16, token: Option<(u128, Option<u64>)> },
    /// No answer: the connection must be replaced.
    Failed(ErrorKind),
}

/// Which HTTP client the click connections use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// The minimal in-place HTTP/1.1 client of `raw.rs`: no allocation per request.
    #[default]
    Raw,
    /// hyper 1's `client::conn::http1`, driven inside the connection's task.
    Hyper,
}

impl ClientKind {
    /// `raw` or `hyper`.
    pub fn name(self) -> &'static str {
        match self {
            ClientKind::Raw => "raw",
            ClientKind::Hyper => "hyper",
        }
    }
}

/// Per-connection state carried across reconnects.
struct Conn {
    rng: SmallRng,
    out: WorkerOut,
    /// A ticket claimed but not sent when the connection had to be replaced.
    carried: Option<Ticket>,
}

/// A request about to be sent.
#[derive(Clone, Copy)]
struct Prepared {
    planned: Option<Instant>,
    choice: Option<ClickChoice>,
    endpoint: Endpoint,
    kind: SeenKind,
    note: u32,
}

/// How a connection's request loop ended.
enum LoopEnd {
    /// No more tickets.
    Done,
    /// The connection is unusable: connect again.
    Reconnect,
}

/// A click connection's state, made before the load starts so that neither allocating its
/// histograms nor connecting is charged to the first requests' latency.
pub struct Slot {
    conn: Conn,
    /// Connected ahead of the start (`None`: the connection loop connects, and counts a failure).
    stream: Option<TcpStream>,
}

/// Prepares connection `id`: its recorder and tallies, and a connection to `addr` tried once
/// (within `timeout`; a failure is not counted here, [`worker`] tries again and counts it).
pub async fn prepare_slot(addr: SocketAddr, timeout: Duration, notes: usize, id: u64, seed: u64) -> Slot {
    let conn = Conn {
        rng: SmallRng::seed_from_u64(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        out: WorkerOut {
            rec: Recorder::new(),
            obs: ClickObs { per_note: vec![NoteClicks::default(); notes], ..ClickObs::default() },
            last_answer: None,
            connect_cause: None,
        },
        carried: None,
    };
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr)).await.ok().and_then(Result::ok);
    Slot { conn, stream }
}

/// Runs one click connection until the dispenser runs dry.
pub async fn worker(ctx: Arc<ClickCtx>, slot: Slot) -> WorkerOut {
    let Slot { conn: mut c, mut stream } = slot;
    loop {
        // The run is over (stopped, or `start + duration` passed): no new connection, and a
        // ticket carried over from a replaced connection is not sent any more.
        if ctx.dispenser.is_over() {
            if c.carried.take().is_some() {
                ctx.dispenser.give_back();
            }
            break;
        }
        let connected = match stream.take() {
            Some(s) => Ok(s),
            None => match tokio::time::timeout(ctx.timeout, TcpStream::connect(ctx.addr)).await {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")),
            },
        };
        let stream = match connected {
            Ok(s) => s,
            Err(e) => {
                if c.out.connect_cause.is_none() {
                    c.out.connect_cause = Some(crate::control::cause(&e));
                }
                c.out.rec.error(Endpoint::ClickGet, ErrorKind::Connect);
                ctx.live.error(Endpoint::ClickGet);
                // Give the ticket up (the request was never sent) and back off a little.
                c.carried = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let end = match ctx.client {
            ClientKind::Raw => raw_loop(&ctx, &mut c, stream).await,
            ClientKind::Hyper => hyper_loop(&ctx, &mut c, stream).await,
        };
        if let LoopEnd::Done = end {
            break;
        }
    }
    c.out
}

/// The next ticket (a carried one first), paced to its planned time; `None` when the run is over.
async fn next(ctx: &ClickCtx, c: &mut Conn) -> Option<Ticket> {
    let ticket = match c.carried.take() {
        // Reconnecting took until the end of the run: that request is not sent.
        Some(_) if ctx.dispenser.is_over() => {
            ctx.dispenser.give_back();
            return None;
        }
        // Already paced before its connection had to be replaced.
        Some(t) => return Some(t),
        None => ctx.dispenser.claim()?,
    };
    if !ctx.dispenser.pace().await {
        ctx.dispenser.give_back();
        return None;
    }
    Some(ticket)
}

fn prepare(ctx: &ClickCtx, c: &mut Conn, ticket: Ticket) -> Prepared {
    let choice = match &ctx.target {
        Target::Plain { .. } => None,
        Target::Scenario { plan, .. } => Some(plan.choose(&mut c.rng, ticket.n)),
    };
    let (endpoint, kind, note) = classify(&ctx.target, choice);
    Prepared { planned: ticket.planned, choice, endpoint, kind, note }
}

/// Records the outcome of one request; `false` when the connection must be replaced.
fn finish(ctx: &ClickCtx, c: &mut Conn, p: Prepared, sent_at: Instant, sent: Sent) -> bool {
    let done = Instant::now();
    match sent {
        Sent::Answer { status, token } => {
            let origin = latency_origin(p.planned, sent_at);
            c.out.rec.answer(p.endpoint, status, done - origin);
            ctx.live.answered(p.endpoint);
            c.out.last_answer = Some(done);
            let link = p.choice.map_or(0, |x| x.link);
            record_answer(ctx, &mut c.out, &mut c.rng, p.endpoint, p.kind, p.note, link, status, token);
            true
        }
        Sent::Failed(e) => {
            c.out.rec.error(p.endpoint, e);
            ctx.live.error(p.endpoint);
            if p.kind != SeenKind::Head
                && let Some(n) = c.out.obs.per_note.get_mut(p.note as usize)
            {
                n.uncertain += 1;
            }
            false
        }
    }
}

/// Waits for `fut` with the connection's lazy timer: the timer is not re-armed per request
/// (that costs a timer-wheel insert and remove each time); when it fires, the request in
/// flight is either past its own deadline (a timeout) or gets the timer re-armed for it.
async fn with_timer<F: std::future::Future<Output = Sent>>(
    fut: F,
    mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
    deadline: Instant,
) -> Sent {
    let mut fut = std::pin::pin!(fut);
    loop {
        tokio::select! {
            biased;
            s = fut.as_mut() => return s,
            () = timer.as_mut() => {
                if Instant::now() >= deadline {
                    return Sent::Failed(ErrorKind::Timeout);
                }
                timer.as_mut().reset(deadline.into());
            }
        }
    }
}

/// The request loop of a `--client raw` connection.
async fn raw_loop(ctx: &ClickCtx, c: &mut Conn, stream: TcpStream) -> LoopEnd {
    let mut conn = RawConn::new(stream);
    let mut timer = std::pin::pin!(tokio::time::sleep(ctx.timeout));
    loop {
        let Some(ticket) = next(ctx, c).await else { return LoopEnd::Done };
        let p = prepare(ctx, c, ticket);
        let head = p.endpoint == Endpoint::ClickHead;
        match (&ctx.target, p.choice) {
            (Target::Scenario { plan, .. }, Some(ch)) => {
                let path = plan.links.get(ch.link).and_then(|l| l.path.path_and_query()).map_or("/", |x| x.as_str());
                let ua = plan.uas.get(ch.ua).and_then(|u| u.0.as_ref()).map(HeaderValue::as_bytes);
                let ip = ch.ip.and_then(|i| plan.client_ips.get(i)).map(HeaderValue::as_bytes);
                write_request(&mut conn.req, head, path.as_bytes(), plan.host.as_bytes(), ua, ip);
            }
            (Target::Plain { uri, host, ua }, _) => {
                let path = uri.path_and_query().map_or("/", |x| x.as_str());
                write_request(&mut conn.req, false, path.as_bytes(), host.as_bytes(), Some(ua.as_bytes()), None);
            }
            (Target::Scenario { .. }, None) => return LoopEnd::Done,
        }
        let sent_at = Instant::now();
        let mut close = false;
        let exchange = async {
            match conn.exchange(head).await {
                Ok(a) => {
                    close = a.close;
                    Sent::Answer { status: a.status, token: a.token }
                }
                Err(_) => Sent::Failed(ErrorKind::Io),
            }
        };
        let sent = with_timer(exchange, timer.as_mut(), sent_at + ctx.timeout).await;
        if !finish(ctx, c, p, sent_at, sent) || close {
            return LoopEnd::Reconnect;
        }
    }
}

/// The request loop of a `--client hyper` connection: the hyper connection future is
/// driven inside this task (no second task, no cross-task wake-ups).
async fn hyper_loop(ctx: &ClickCtx, c: &mut Conn, stream: TcpStream) -> LoopEnd {
    let Ok((mut sender, conn)) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await else {
        c.out.rec.error(Endpoint::ClickGet, ErrorKind::Io);
        ctx.live.error(Endpoint::ClickGet);
        return LoopEnd::Reconnect;
    };
    let mut conn = std::pin::pin!(conn);
    let mut conn_alive = true;
    let mut timer = std::pin::pin!(tokio::time::sleep(ctx.timeout));
    loop {
        let Some(ticket) = next(ctx, c).await else { return LoopEnd::Done };
        let ready = loop {
            tokio::select! {
                biased;
                r = sender.ready() => break r.is_ok(),
                _ = conn.as_mut(), if conn_alive => conn_alive = false,
            }
        };
        if !ready {
            // Closed while idle (server keep-alive timeout): not a failed request.
            c.carried = Some(ticket);
            return LoopEnd::Reconnect;
        }
        let p = prepare(ctx, c, ticket);
        let req = build_request(&ctx.target, p.choice);
        let sent_at = Instant::now();
        let exchange = async {
            let mut ex = std::pin::pin!(exchange(&mut sender, req));
            loop {
                tokio::select! {
                    biased;
                    s = ex.as_mut() => break s,
                    _ = conn.as_mut(), if conn_alive => conn_alive = false,
                }
            }
        };
        let sent = with_timer(exchange, timer.as_mut(), sent_at + ctx.timeout).await;
        if !finish(ctx, c, p, sent_at, sent) || !conn_alive {
            return LoopEnd::Reconnect;
        }
    }
}

/// Endpoint, kind and note index of a click choice (plain: a counted GET).
fn classify(target: &Target, choice: Option<ClickChoice>) -> (Endpoint, SeenKind, u32) {
    match (target, choice) {
        (Target::Scenario { plan, .. }, Some(c)) => {
            let note = plan.links.get(c.link).map_or(0, |l| l.note);
            if c.head {
                (Endpoint::ClickHead, SeenKind::Head, note)
            } else if plan.ua_class(c.ua) == UaClass::Bot {
                (Endpoint::ClickGet, SeenKind::Bot, note)
            } else {
                (Endpoint::ClickGet, SeenKind::Counted, note)
            }
        }
        _ => (Endpoint::ClickGet, SeenKind::Counted, 0),
    }
}

fn build_request(target: &Target, choice: Option<ClickChoice>) -> Request<Empty<Bytes>> {
    let mut req = Request::new(Empty::new());
    match (target, choice) {
        (Target::Scenario { plan, .. }, Some(c)) => {
            if c.head {
                *req.method_mut() = Method::HEAD;
            }
            if let Some(link) = plan.links.get(c.link) {
                *req.uri_mut() = link.path.clone();
            }
            let h = req.headers_mut();
            h.insert(header::HOST, plan.host.clone());
            if let Some((Some(ua), _)) = plan.uas.get(c.ua) {
                h.insert(header::USER_AGENT, ua.clone());
            }
            if let Some(ip) = c.ip.and_then(|i| plan.client_ips.get(i)) {
                h.insert(X_FORWARDED_FOR, ip.clone());
            }
        }
        (Target::Plain { uri, host, ua }, _) => {
            *req.uri_mut() = uri.clone();
            let h = req.headers_mut();
            h.insert(header::HOST, host.clone());
            h.insert(header::USER_AGENT, ua.clone());
        }
        (Target::Scenario { .. }, None) => {}
    }
    req
}

/// Sends one request and reads the whole answer (the connection is driven by the caller).
async fn exchange(sender: &mut http1::SendRequest<Empty<Bytes>>, req: Request<Empty<Bytes>>) -> Sent {
    let res = match sender.send_request(req).await {
        Ok(r) => r,
        Err(_) => return Sent::Failed(ErrorKind::Io),
    };
    let status = res.status().as_u16();
    let token = if (300..400).contains(&status) {
        res.headers().get(header::LOCATION).and_then(|l| find_token(l.as_bytes()))
    } else {
        None
    };
    let mut body = res.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return Sent::Failed(ErrorKind::Io);
        }
    }
    Sent::Answer { status, token }
}

#[allow(clippy::too_many_arguments)]
fn record_answer(
    ctx: &ClickCtx,
    out: &mut WorkerOut,
    rng: &mut SmallRng,
    endpoint: Endpoint,
    kind: SeenKind,
    note: u32,
    link: usize,
    status: u16,
    token: Option<(u128, Option<u64>)>,
) {
    let Target::Scenario { keep_tokens, conversions, .. } = &ctx.target else {
        if status >= 400 {
            out.rec.error(endpoint, ErrorKind::Status);
            ctx.live.error(endpoint);
        }
        return;
    };
    if status != 302 {
        out.rec.error(endpoint, ErrorKind::Status);
        ctx.live.error(endpoint);
        return;
    }
    let Some(n) = out.obs.per_note.get_mut(note as usize) else { return };
    if kind == SeenKind::Head {
        n.head += 1;
        if *keep_tokens && let Some((t, _)) = token {
            out.obs.tokens.push(SeenToken { token: t, note, kind });
        }
        return;
    }
    let Some((t, ts)) = token else {
        out.obs.no_token += 1;
        out.rec.error(endpoint, ErrorKind::NoToken);
        ctx.live.error(endpoint);
        return;
    };
    match kind {
        SeenKind::Bot => n.bot += 1,
        _ => n.counted += 1,
    }
    if *keep_tokens {
        out.obs.tokens.push(SeenToken { token: t, note, kind });
    }
    if kind == SeenKind::Counted
        && let Some(hook) = conversions
        && hook.share > 0.0
        && rng.random::<f64>() < hook.share
    {
        let delay = hook.max_delay.mul_f64(rng.random::<f64>());
        let seed = ConversionSeed {
            due: Instant::now() + delay,
            token: t,
            ts_ms: ts.unwrap_or(0),
            link: u32::try_from(link).unwrap_or(0),
        };
        let _ = hook.tx.send(seed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn token_from_location() {
        let loc = b"https://item.taobao.com/item.htm?id=533000737918&ll_v=1&ll_ct=01a22b0b-3df4-779a-a659-5b093b29117d&ll_ts=1796018486772&ll_kid=1&ll_sig=qw23";
        let (t, ts) = find_token(loc).unwrap();
        assert_eq!(t, 0x01a2_2b0b_3df4_779a_a659_5b09_3b29_117d);
        assert_eq!(ts, Some(1_796_018_486_772));
        assert_eq!(uuid_text(t), "01a22b0b-3df4-779a-a659-5b093b29117d");
        assert!(find_token(b"https://x/?a=1").is_none());
        assert!(find_token(b"https://x/?xll_ct=01a22b0b-3df4-779a-a659-5b093b29117d").is_none());
        assert!(find_token(b"https://x/?ll_ct=01a22b0b-3df4-779a-a659-5b093b29117").is_none());
        assert!(parse_uuid(b"01a22b0b+3df4-779a-a659-5b093b29117d").is_none());
        let (_, ts) = find_token(b"https://x/?ll_ct=01a22b0b-3df4-779a-a659-5b093b29117d").unwrap();
        assert_eq!(ts, None);
    }
}
