//! Conversion callbacks: clicks that convert are queued by the click connections
//! ([`crate::clicks::ConversionSeed`]); this driver sends each as a signed `paid`
//! report after its delay, then, for some, the same report again (must be `200`
//! duplicate) and a refund (a distinct `refund_id`, at most the paid amount).
//!
//! Retries are safe by design of the API (idempotency key + fingerprint): on `429`,
//! `503`, a timeout or a broken connection the same body is re-signed and sent again,
//! up to [`ATTEMPTS`] times. A `200` after an attempt with no answer means that attempt
//! was counted, so the tester's own books stay exact.
//!
//! A gateway that refuses every connection for `--timeout` (no answer in between) is taken
//! as gone ([`Reach`]): reports are no longer retried, and once the clicks are done the
//! queued ones are dropped as not delivered, so the run ends about `--timeout` after
//! `--duration` instead of retrying each report against a dead gateway.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;

use crate::clicks::{ConversionSeed, uuid_text};
use crate::control::Control;
use crate::histo::{Endpoint, ErrorKind, Live, Recorder};

/// Deliveries of one report before its outcome is declared unknown.
pub const ATTEMPTS: u32 = 4;

/// `t=<unix s>,k=<kid>,v1=<lowercase hex HMAC-SHA256(secret, "<t>." + body)>`.
pub fn sign(secret: &[u8], kid: u8, t: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},k={kid},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// RFC 3339 UTC text with milliseconds of Unix ms `ms`.
pub fn rfc3339_ms(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Unix ms now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Body of a `paid` report.
pub fn paid_body(token: u128, order_id: &str, amount: i64, occurred_ms: u64) -> String {
    format!(
        r#"{{"click_token":"{}","order_id":"{order_id}","status":"paid","amount":{amount},"occurred_at":"{}"}}"#,
        uuid_text(token),
        rfc3339_ms(occurred_ms)
    )
}

/// Body of a `refunded` report.
pub fn refund_body(token: u128, order_id: &str, refund_id: &str, amount: i64, occurred_ms: u64) -> String {
    format!(
        r#"{{"click_token":"{}","order_id":"{order_id}","status":"refunded","amount":{amount},"refund_id":"{refund_id}","occurred_at":"{}"}}"#,
        uuid_text(token),
        rfc3339_ms(occurred_ms)
    )
}

/// Settings of the conversion driver.
#[derive(Debug, Clone)]
pub struct ConvConfig {
    /// `Linkloop-Merchant`.
    pub merchant: String,
    /// Signing secret (raw bytes).
    pub secret: Vec<u8>,
    /// Its key id.
    pub kid: u8,
    /// Longest random delay before a duplicate delivery or a refund.
    pub max_delay: Duration,
    /// Share of accepted conversions delivered twice.
    pub duplicate_share: f64,
    /// Share of accepted conversions refunded.
    pub refund_share: f64,
    /// Reports in flight at once.
    pub concurrency: usize,
    /// Run id (order ids carry it).
    pub run_id: u32,
    /// Note index of each link.
    pub link_notes: Vec<u32>,
    /// Number of notes.
    pub notes: usize,
    /// Random seed.
    pub seed: u64,
    /// How long the gateway may refuse every connection before it is taken as gone ([`Reach`]).
    pub give_up_after: Duration,
}

/// Whether the gateway still answers: it is taken as gone once every call for
/// `give_up_after` failed to connect (no answer in between).
#[derive(Debug)]
pub struct Reach {
    origin: Instant,
    give_up_after: Duration,
    /// Microseconds after `origin` of the first refused connection since the last answer, plus 1 (0: none).
    refused_since: AtomicU64,
}

impl Reach {
    /// A tracker that gives up after `give_up_after` of refused connections.
    pub fn new(give_up_after: Duration) -> Reach {
        Reach { origin: Instant::now(), give_up_after, refused_since: AtomicU64::new(0) }
    }

    /// An answer came: the gateway is there.
    pub fn answered(&self) {
        self.refused_since.store(0, AtomicOrdering::Relaxed);
    }

    /// A connection could not be made at `now`.
    pub fn refused(&self, now: Instant) {
        let t = u64::try_from(now.saturating_duration_since(self.origin).as_micros()).unwrap_or(u64::MAX - 1) + 1;
        let _ = self.refused_since.compare_exchange(0, t, AtomicOrdering::Relaxed, AtomicOrdering::Relaxed);
    }

    /// When the gateway is (or will be, unless it answers first) taken as gone.
    pub fn gone_at(&self) -> Option<Instant> {
        match self.refused_since.load(AtomicOrdering::Relaxed) {
            0 => None,
            t => Some(self.origin + Duration::from_micros(t - 1) + self.give_up_after),
        }
    }

    /// Whether the gateway is taken as gone at `now`.
    pub fn gone(&self, now: Instant) -> bool {
        self.gone_at().is_some_and(|t| now >= t)
    }
}

/// Per-note conversion books.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NoteConversions {
    /// Paid reports counted (`201`).
    pub conversions: u64,
    /// Refunds counted (`201`).
    pub refunds: u64,
    /// Paid minus refunded, fen.
    pub gmv_fen: i64,
}

/// What the driver did and saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConvOutcome {
    /// Per note index.
    #[serde(skip)]
    pub per_note: Vec<NoteConversions>,
    /// Paid reports sent (first deliveries).
    pub paid_sent: u64,
    /// Of those, counted.
    pub paid_accepted: u64,
    /// Second deliveries sent on purpose.
    pub duplicates_sent: u64,
    /// Second deliveries answered `200` duplicate.
    pub duplicates_ok: u64,
    /// Second deliveries answered `201`: counted twice.
    pub duplicates_counted_again: u64,
    /// Refunds sent.
    pub refunds_sent: u64,
    /// Refunds counted.
    pub refunds_accepted: u64,
    /// First deliveries answered `200` without an earlier unanswered attempt (should not happen).
    pub unexpected_duplicates: u64,
    /// Reports refused, by `code` (`4xx` other than `429`).
    pub rejected: BTreeMap<String, u64>,
    /// Reports still `429` (rate limited) or `503` after every attempt: not counted.
    pub throttled: u64,
    /// Reports without a known outcome after every attempt.
    pub unknown: u64,
    /// Reports still queued when the drain deadline passed (never sent).
    pub not_sent: u64,
    /// Reports never delivered because the gateway refused every connection (every attempt
    /// refused, or given up once the gateway was taken as gone): not counted on either side.
    pub unreachable: u64,
}

/// Codes of a callback refused for its merchant or signature (`401`; the gateway's
/// `AuthError::code`, docs/conversions.md).
const AUTH_CODES: [&str; 5] =
    ["missing_signature", "unknown_merchant", "malformed_signature", "stale_timestamp", "bad_signature"];

impl ConvOutcome {
    /// When reports were sent, not one was accepted, and every refusal was about the merchant
    /// or the signature: the tester's credentials do not match the gateway's. The sentence
    /// saying so, e.g. `every conversion callback was refused (bad_signature ×12): check
    /// --merchant, --merchant-secret and --kid against the gateway's [[merchants]] config`.
    pub fn credentials_refused(&self) -> Option<String> {
        let all_auth = !self.rejected.is_empty() && self.rejected.keys().all(|k| AUTH_CODES.contains(&k.as_str()));
        if self.paid_accepted > 0 || self.refunds_accepted > 0 || !all_auth {
            return None;
        }
        let codes: Vec<String> = self.rejected.iter().map(|(code, n)| format!("{code} ×{n}")).collect();
        Some(format!(
            "every conversion callback was refused ({}): check --merchant, --merchant-secret and --kid \
             against the gateway's [[merchants]] config",
            codes.join(", ")
        ))
    }
}

#[derive(Debug, Clone)]
enum Action {
    Paid { token: u128, note: u32, order: String, amount: i64, occurred_ms: u64 },
    Duplicate { body: Bytes },
    Refund { note: u32, body: Bytes, amount: i64 },
}

struct Job {
    due: Instant,
    seq: u64,
    action: Action,
}

impl PartialEq for Job {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Job {}
impl PartialOrd for Job {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Job {
    // Reversed: BinaryHeap is a max-heap, the earliest job must come out first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// Final result of delivering one body.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Delivery {
    /// `201`.
    Counted(Bytes),
    /// `200`; `after_unknown`: an earlier attempt got no answer (so that one counted).
    Duplicate { after_unknown: bool },
    /// `4xx` (not 429): code.
    Rejected(String),
    /// Still 429/503 (not counted).
    Throttled,
    /// No answer, or a `503 timeout`, on the last attempt.
    Unknown,
    /// Every attempt failed to connect: never reached the gateway.
    Unreachable,
}

struct Sent {
    delivery: Delivery,
    answers: Vec<(u16, Duration)>,
    errors: Vec<ErrorKind>,
}

async fn deliver(control: &Control, cfg: &ConvConfig, reach: &Reach, body: Bytes) -> Sent {
    let mut answers = Vec::new();
    let mut errors = Vec::new();
    let mut unknown_before = false;
    for attempt in 0..ATTEMPTS {
        // No retry against a gateway taken as gone.
        if attempt > 0 && reach.gone(Instant::now()) {
            let delivery = if unknown_before { Delivery::Unknown } else { Delivery::Unreachable };
            return Sent { delivery, answers, errors };
        }
        let sig = sign(&cfg.secret, cfg.kid, now_ms() / 1000, &body);
        let started = Instant::now();
        let res = control.post_conversion(body.clone(), &cfg.merchant, &sig).await;
        let last = attempt + 1 == ATTEMPTS;
        let backoff = Duration::from_millis(100 << attempt.min(4));
        match res {
            Ok(a) => {
                reach.answered();
                answers.push((a.status, started.elapsed()));
                match a.status {
                    201 => return Sent { delivery: Delivery::Counted(a.body), answers, errors },
                    200 => {
                        return Sent {
                            delivery: Delivery::Duplicate { after_unknown: unknown_before },
                            answers,
                            errors,
                        };
                    }
                    429 | 503 => {
                        // A 503 `timeout` may have run the script: its outcome is unknown until a retry says.
                        let maybe_ran = a.status == 503 && code_of(&a.body).as_deref() == Some("timeout");
                        unknown_before |= maybe_ran;
                        if last {
                            let delivery = if unknown_before { Delivery::Unknown } else { Delivery::Throttled };
                            return Sent { delivery, answers, errors };
                        }
                        let wait = a.retry_after.map_or(backoff, |s| Duration::from_secs(s.clamp(1, 2)));
                        tokio::time::sleep(wait).await;
                    }
                    s => {
                        errors.push(ErrorKind::Rejected);
                        let code = code_of(&a.body).unwrap_or_else(|| format!("http_{s}"));
                        return Sent { delivery: Delivery::Rejected(code), answers, errors };
                    }
                }
            }
            Err(e) => {
                errors.push(e.kind);
                // Connect errors never reached the gateway; anything else may have.
                unknown_before |= e.kind != ErrorKind::Connect;
                if e.unreachable() {
                    reach.refused(Instant::now());
                }
                if last {
                    let delivery = match (unknown_before, answers.is_empty()) {
                        (true, _) => Delivery::Unknown,
                        (false, true) => Delivery::Unreachable,
                        (false, false) => Delivery::Throttled,
                    };
                    return Sent { delivery, answers, errors };
                }
                tokio::time::sleep(backoff).await;
            }
        }
    }
    Sent { delivery: Delivery::Unknown, answers, errors }
}

fn code_of(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body).ok()?.get("code")?.as_str().map(str::to_owned)
}

/// Runs the conversion driver until the click connections are done (the seed channel
/// closes) and every queued report is sent, or `drain` after the channel closed, or, once
/// the channel closed, the gateway is taken as gone ([`Reach`], `cfg.give_up_after` of
/// refused connections): the queued reports are then counted as not delivered.
pub async fn drive(
    control: Control,
    cfg: Arc<ConvConfig>,
    live: Arc<Live>,
    mut rx: UnboundedReceiver<ConversionSeed>,
    drain: Duration,
) -> (ConvOutcome, Recorder) {
    let mut rng = SmallRng::seed_from_u64(cfg.seed ^ 0xC0_4E_E5_10);
    let mut out = ConvOutcome { per_note: vec![NoteConversions::default(); cfg.notes], ..ConvOutcome::default() };
    let mut rec = Recorder::new();
    let mut heap: BinaryHeap<Job> = BinaryHeap::new();
    let mut inflight: JoinSet<(Action, Sent)> = JoinSet::new();
    let mut seq = 0u64;
    let mut closed_deadline: Option<Instant> = None;
    let concurrency = cfg.concurrency.max(1);
    let reach = Arc::new(Reach::new(cfg.give_up_after));
    loop {
        // The clicks are done and the gateway is gone: drop the queue (the reports in flight
        // make no further attempt and come back at once).
        if closed_deadline.is_some() && reach.gone(Instant::now()) {
            out.unreachable += heap.len() as u64;
            heap.clear();
        }
        if closed_deadline.is_some() && heap.is_empty() && inflight.is_empty() {
            break;
        }
        if let Some(d) = closed_deadline
            && Instant::now() >= d
        {
            out.not_sent += heap.len() as u64;
            out.unknown += inflight.len() as u64;
            inflight.abort_all();
            break;
        }
        // Start every due job there is room for.
        while inflight.len() < concurrency && heap.peek().is_some_and(|j| j.due <= Instant::now()) {
            let Some(job) = heap.pop() else { break };
            let body = match &job.action {
                Action::Paid { token, order, amount, occurred_ms, .. } => {
                    out.paid_sent += 1;
                    Bytes::from(paid_body(*token, order, *amount, *occurred_ms))
                }
                Action::Duplicate { body, .. } => {
                    out.duplicates_sent += 1;
                    body.clone()
                }
                Action::Refund { body, .. } => {
                    out.refunds_sent += 1;
                    body.clone()
                }
            };
            let (control, cfg, reach) = (control.clone(), cfg.clone(), reach.clone());
            inflight.spawn(async move {
                let sent = deliver(&control, &cfg, &reach, body).await;
                (job.action, sent)
            });
        }
        let next_due = if inflight.len() < concurrency { heap.peek().map(|j| j.due) } else { None };
        tokio::select! {
            seed = rx.recv(), if closed_deadline.is_none() => match seed {
                Some(s) => {
                    seq += 1;
                    let note = cfg.link_notes.get(s.link as usize).copied().unwrap_or(0);
                    let action = Action::Paid {
                        token: s.token,
                        note,
                        order: format!("lt{:08x}-{seq}", cfg.run_id),
                        amount: rng.random_range(100..=100_000),
                        occurred_ms: now_ms().max(s.ts_ms),
                    };
                    heap.push(Job { due: s.due, seq, action });
                }
                None => closed_deadline = Some(Instant::now() + drain),
            },
            joined = inflight.join_next(), if !inflight.is_empty() => {
                let Some(Ok((action, sent))) = joined else {
                    out.unknown += 1;
                    continue;
                };
                for (status, latency) in &sent.answers {
                    rec.answer(Endpoint::Conversion, *status, *latency);
                    live.answered(Endpoint::Conversion);
                }
                for e in &sent.errors {
                    rec.error(Endpoint::Conversion, *e);
                    live.error(Endpoint::Conversion);
                }
                for follow in settle(&mut out, &cfg, &mut rng, action, sent.delivery) {
                    seq += 1;
                    let delay = cfg.max_delay.mul_f64(rng.random::<f64>());
                    heap.push(Job { due: Instant::now() + delay, seq, action: follow });
                }
            },
            () = sleep_until_opt(next_due) => {},
            () = sleep_until_opt(closed_deadline) => {},
            () = sleep_until_opt(reach.gone_at().filter(|_| closed_deadline.is_some() && !heap.is_empty())) => {},
        }
    }
    (out, rec)
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Books the outcome of one report; returns the follow-ups to schedule.
/// Whether a first delivery (paid or refund) was counted by the gateway: `201`, or a
/// `200` duplicate of an earlier delivery whose answer was lost. Tallies every other
/// outcome in `out`.
fn first_delivery_counted(out: &mut ConvOutcome, d: Delivery) -> bool {
    match d {
        Delivery::Counted(_) | Delivery::Duplicate { after_unknown: true } => true,
        Delivery::Duplicate { after_unknown: false } => {
            out.unexpected_duplicates += 1;
            false
        }
        Delivery::Rejected(code) => {
            *out.rejected.entry(code).or_insert(0) += 1;
            false
        }
        Delivery::Throttled => {
            out.throttled += 1;
            false
        }
        Delivery::Unknown => {
            out.unknown += 1;
            false
        }
        Delivery::Unreachable => {
            out.unreachable += 1;
            false
        }
    }
}

fn settle(out: &mut ConvOutcome, cfg: &ConvConfig, rng: &mut SmallRng, action: Action, d: Delivery) -> Vec<Action> {
    let mut follow = Vec::new();
    let reject = |out: &mut ConvOutcome, code: String| *out.rejected.entry(code).or_insert(0) += 1;
    match action {
        Action::Paid { token, note, order, amount, occurred_ms } => {
            let counted = first_delivery_counted(out, d);
            if counted {
                out.paid_accepted += 1;
                if let Some(n) = out.per_note.get_mut(note as usize) {
                    n.conversions += 1;
                    n.gmv_fen += amount;
                }
                if rng.random::<f64>() < cfg.duplicate_share {
                    let body = Bytes::from(paid_body(token, &order, amount, occurred_ms));
                    follow.push(Action::Duplicate { body });
                }
                if rng.random::<f64>() < cfg.refund_share {
                    let refund = if rng.random::<bool>() { amount } else { rng.random_range(1..=amount) };
                    let at = now_ms().max(occurred_ms);
                    let body = Bytes::from(refund_body(token, &order, "r1", refund, at));
                    follow.push(Action::Refund { note, body, amount: refund });
                }
            }
        }
        Action::Duplicate { .. } => match d {
            Delivery::Duplicate { .. } => out.duplicates_ok += 1,
            Delivery::Counted(_) => out.duplicates_counted_again += 1,
            Delivery::Rejected(code) => reject(out, code),
            Delivery::Throttled => out.throttled += 1,
            Delivery::Unknown => out.unknown += 1,
            Delivery::Unreachable => out.unreachable += 1,
        },
        Action::Refund { note, amount, .. } => {
            let counted = first_delivery_counted(out, d);
            if counted {
                out.refunds_accepted += 1;
                if let Some(n) = out.per_note.get_mut(note as usize) {
                    n.refunds += 1;
                    n.gmv_fen -= amount;
                }
            }
        }
    }
    follow
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_documented_vector_shape() {
        // Same construction as docs/conversions.md: HMAC-SHA256(secret, "<t>." + body), lowercase hex.
        let sig = sign(b"merchant-secret-one-0123456789abcdef-0123", 1, 1_796_018_486, b"{}");
        assert!(sig.starts_with("t=1796018486,k=1,v1="));
        let hexpart = sig.rsplit("v1=").next().unwrap();
        assert_eq!(hexpart.len(), 64);
        assert!(hexpart.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }

    #[test]
    fn bodies() {
        let t = 0x01a2_2b0b_3df4_779a_a659_5b09_3b29_117d;
        assert_eq!(
            paid_body(t, "O-1", 12900, 1_796_018_486_772),
            r#"{"click_token":"01a22b0b-3df4-779a-a659-5b093b29117d","order_id":"O-1","status":"paid","amount":12900,"occurred_at":"2026-11-30T06:01:26.772Z"}"#
        );
        let r = refund_body(t, "O-1", "r1", 5, 0);
        assert!(
            r.contains(r#""status":"refunded","amount":5,"refund_id":"r1","occurred_at":"1970-01-01T00:00:00.000Z""#)
        );
    }

    #[test]
    fn jobs_come_out_earliest_first() {
        let t = Instant::now();
        let mut h = BinaryHeap::new();
        let a = || Action::Duplicate { body: Bytes::new() };
        h.push(Job { due: t + Duration::from_millis(5), seq: 1, action: a() });
        h.push(Job { due: t, seq: 2, action: a() });
        h.push(Job { due: t, seq: 3, action: a() });
        let order: Vec<u64> = std::iter::from_fn(|| h.pop().map(|j| j.seq)).collect();
        assert_eq!(order, vec![2, 3, 1]);
    }
}
