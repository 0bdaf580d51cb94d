//! The verification phase: what the tester observed against what the gateway recorded.
//!
//! **Observed** (the tester's own books): the click tokens in the `Location` of every
//! answered `GET` (non-bot, plus bots when `--bots-counted true`), per note; every
//! conversion and refund the gateway accepted with `201`, and the GMV net of refunds.
//! **Recorded**: the stats API totals of each of the run's notes (the notes are fresh
//! per run, so they hold nothing else), and with `--redis-url` token by token: the click
//! records (`ll:crs:{minute}`, and the legacy `ll:cr:{minute}`) and what is left of the click stream `ll:clicks` (the
//! aggregator trims entries once applied), and `ll:nonbillable`.
//!
//! Clicks are counted asynchronously, so the stats are polled until they match or stop
//! changing ([`poll_stats`]); the time from the last click to the match is the lag.
//! The arithmetic ([`compare`]) is a pure function, tested on its own.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::clicks::{ClickObs, SeenKind};
use crate::control::Control;
use crate::conversions::{ConvOutcome, NoteConversions};

/// Per-note counters, as the stats API reports them (`total`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Clicks.
    pub clicks: u64,
    /// Paid conversions.
    pub conversions: u64,
    /// Refund events.
    pub refunds: u64,
    /// Net GMV, fen.
    pub gmv_fen: i64,
}

/// What the gateway should have recorded, per note.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Exact expectation per note.
    pub per_note: Vec<Counts>,
    /// Per note: GETs without an answer, which the gateway may or may not have recorded.
    pub uncertain_clicks: Vec<u64>,
}

impl Expected {
    /// The expectation from the tester's observations.
    pub fn new(clicks: &ClickObs, conv: &[NoteConversions], bots_counted: bool) -> Expected {
        let n = clicks.per_note.len().max(conv.len());
        let mut per_note = vec![Counts::default(); n];
        let mut uncertain_clicks = vec![0; n];
        for (i, c) in clicks.per_note.iter().enumerate() {
            per_note[i].clicks = c.counted + if bots_counted { c.bot } else { 0 };
            uncertain_clicks[i] = c.uncertain;
        }
        for (i, c) in conv.iter().enumerate() {
            per_note[i].conversions = c.conversions;
            per_note[i].refunds = c.refunds;
            per_note[i].gmv_fen = c.gmv_fen;
        }
        Expected { per_note, uncertain_clicks }
    }

    /// The same expectation summed by group: `group_of[note]` is the note's group (its creator).
    pub fn group(&self, group_of: &[usize], groups: usize) -> Expected {
        let mut per_note = vec![Counts::default(); groups];
        let mut uncertain_clicks = vec![0; groups];
        for (n, e) in self.per_note.iter().enumerate() {
            let Some(g) = group_of.get(n).and_then(|&g| per_note.get_mut(g).map(|c| (g, c))) else { continue };
            let (gi, c) = g;
            c.clicks += e.clicks;
            c.conversions += e.conversions;
            c.refunds += e.refunds;
            c.gmv_fen += e.gmv_fen;
            uncertain_clicks[gi] += self.uncertain_clicks.get(n).copied().unwrap_or(0);
        }
        Expected { per_note, uncertain_clicks }
    }

    /// Whether `recorded` matches: clicks within `[expected, expected + uncertain]`, the rest exactly.
    pub fn matches(&self, recorded: &[Counts]) -> bool {
        self.per_note.len() == recorded.len() && self.matching(recorded) == recorded.len()
    }

    /// How many entries of `recorded` match theirs (see [`Expected::matches`]).
    pub fn matching(&self, recorded: &[Counts]) -> usize {
        self.count_matching(recorded, false)
    }

    /// Whether the clicks of `recorded` match (conversions ignored).
    pub fn clicks_match(&self, recorded: &[Counts]) -> bool {
        self.per_note.len() == recorded.len() && self.count_matching(recorded, true) == recorded.len()
    }

    fn count_matching(&self, recorded: &[Counts], clicks_only: bool) -> usize {
        self.per_note
            .iter()
            .zip(recorded)
            .zip(&self.uncertain_clicks)
            .filter(|((e, r), u)| {
                r.clicks >= e.clicks
                    && r.clicks <= e.clicks + **u
                    && (clicks_only || (r.conversions, r.refunds, r.gmv_fen) == (e.conversions, e.refunds, e.gmv_fen))
            })
            .count()
    }
}

/// One line of the side-by-side table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What is compared.
    pub name: String,
    /// The tester's number.
    pub observed: i64,
    /// The gateway's number.
    pub recorded: i64,
    /// Whether they agree.
    pub ok: bool,
    /// Explanation (which notes differ, what a difference means).
    pub detail: String,
}

/// Where one token of this run was found in Redis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenRecord {
    /// Billable recordings: entries in `ll:clicks`, or 1 for a click record whose entry
    /// was trimmed once applied.
    pub clicks: u32,
    /// Entries in `ll:nonbillable` (bots, previews, HEAD, rate-limited clients).
    pub nonbillable: u32,
    /// The `reason` of the first non-billable entry.
    pub reason: String,
}

/// What the Redis streams hold for this run's notes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamTokens {
    /// Token → where it was found.
    pub entries: HashMap<u128, TokenRecord>,
    /// Entries read in all (every note, both streams).
    pub scanned: u64,
    /// Whether `ll:nonbillable` exists at all (gateways before the abuse-control change lack it).
    pub has_nonbillable: bool,
}

/// The verification result.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Every check passed.
    pub passed: bool,
    /// The side-by-side lines.
    pub checks: Vec<Check>,
    /// Time from the last click answer until the stats counted every click (None: never).
    /// Polled while the conversions drain, so it is the click-counting lag alone.
    pub lag_ms: Option<u64>,
    /// Stats polls made (per-creator stats of every creator per poll).
    pub polls: u32,
    /// Time between polls, ms.
    pub poll_interval_ms: u64,
    /// Whether bot clicks were expected to count.
    pub bots_counted: bool,
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn check(name: &str, observed: i64, recorded: i64, ok: bool, detail: impl Into<String>) -> Check {
    Check { name: name.to_owned(), observed, recorded, ok, detail: detail.into() }
}

/// Compares the observations with the stats (and the stream, when read).
pub fn compare(
    exp: &Expected,
    recorded: &[Counts],
    clicks: &ClickObs,
    conv: &ConvOutcome,
    stream: Option<&StreamTokens>,
    bots_counted: bool,
) -> Vec<Check> {
    let mut out = Vec::new();
    let sum = |f: &dyn Fn(&Counts) -> i64, v: &[Counts]| v.iter().map(f).sum::<i64>();
    let differing = |f: &dyn Fn(&Counts, &Counts, u64) -> bool| -> Vec<usize> {
        (0..exp.per_note.len())
            .filter(|&n| {
                let e = exp.per_note.get(n).copied().unwrap_or_default();
                let r = recorded.get(n).copied().unwrap_or_default();
                !f(&e, &r, exp.uncertain_clicks.get(n).copied().unwrap_or(0))
            })
            .collect()
    };
    let describe = |bad: &[usize], what: &str| {
        if bad.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = bad.iter().take(5).map(|n| format!("#{n}")).collect();
            format!(
                "{} note(s) differ ({}{}): {what}",
                bad.len(),
                list.join(", "),
                if bad.len() > 5 { ", …" } else { "" }
            )
        }
    };
    let uncertain: u64 = exp.uncertain_clicks.iter().sum();
    let bots: u64 = clicks.per_note.iter().map(|n| n.bot).sum();
    let heads: u64 = clicks.per_note.iter().map(|n| n.head).sum();

    // Clicks.
    let bad = differing(&|e, r, u| r.clicks >= e.clicks && r.clicks <= e.clicks + u);
    let (oc, rc) = (sum(&|c| i(c.clicks), &exp.per_note), sum(&|c| i(c.clicks), recorded));
    let mut detail = describe(&bad, if rc < oc { "lost clicks" } else { "clicks counted twice or counted bots/HEADs" });
    if uncertain > 0 {
        detail = format!(
            "{detail}{}{uncertain} GET(s) without an answer may count",
            if detail.is_empty() { "" } else { "; " }
        );
    }
    let what = if bots_counted { "clicks (GET, bots included)" } else { "clicks (GET, bots excluded)" };
    out.push(check(what, oc, rc, bad.is_empty(), detail));
    out.push(check(
        if bots_counted { "  of which bot GETs (counted)" } else { "  bot GETs (must not count)" },
        i(bots),
        -1,
        true,
        "sent; the stats have no per-class count",
    ));
    out.push(check("  HEADs (must not count)", i(heads), -1, true, "sent"));
    out.push(check(
        "redirects without a click token",
        0,
        i(clicks.no_token),
        clicks.no_token == 0,
        if clicks.no_token == 0 { "" } else { "302 whose Location has no ll_ct" },
    ));

    // Conversions.
    let bad = differing(&|e, r, _| e.conversions == r.conversions);
    let (o, r) = (sum(&|c| i(c.conversions), &exp.per_note), sum(&|c| i(c.conversions), recorded));
    out.push(check(
        "conversions (paid, 201)",
        o,
        r,
        bad.is_empty(),
        describe(&bad, "conversions lost or double-counted"),
    ));
    let bad = differing(&|e, r, _| e.refunds == r.refunds);
    let (o, r) = (sum(&|c| i(c.refunds), &exp.per_note), sum(&|c| i(c.refunds), recorded));
    out.push(check("refunds (201)", o, r, bad.is_empty(), describe(&bad, "refunds lost or double-counted")));
    let bad = differing(&|e, r, _| e.gmv_fen == r.gmv_fen);
    let (o, r) = (sum(&|c| c.gmv_fen, &exp.per_note), sum(&|c| c.gmv_fen, recorded));
    out.push(check("GMV net of refunds (fen)", o, r, bad.is_empty(), describe(&bad, "GMV differs")));
    out.push(check(
        "duplicate deliveries answered 200",
        i(conv.duplicates_sent),
        i(conv.duplicates_ok),
        conv.duplicates_ok == conv.duplicates_sent && conv.duplicates_counted_again == 0,
        if conv.duplicates_counted_again > 0 {
            format!("{} answered 201: counted twice", conv.duplicates_counted_again)
        } else {
            String::new()
        },
    ));
    let rejected: u64 = conv.rejected.values().sum();
    out.push(check(
        "conversions refused (4xx)",
        0,
        i(rejected),
        rejected == 0,
        conv.rejected.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", "),
    ));
    out.push(check(
        "first deliveries answered 200",
        0,
        i(conv.unexpected_duplicates),
        conv.unexpected_duplicates == 0,
        if conv.unexpected_duplicates > 0 { "a new order was already known" } else { "" },
    ));
    out.push(check(
        "conversions with unknown outcome",
        0,
        i(conv.unknown),
        conv.unknown == 0,
        if conv.unknown > 0 { "no answer after every retry: the books cannot be exact" } else { "" },
    ));
    if conv.throttled > 0 || conv.not_sent > 0 || conv.unreachable > 0 {
        out.push(check(
            "conversions throttled / not sent",
            0,
            i(conv.throttled + conv.not_sent + conv.unreachable),
            true,
            "429/503 after every retry, gateway unreachable, or queued past the drain deadline: not counted on either side",
        ));
    }

    // The click streams, token by token.
    if let Some(stream) = stream {
        out.extend(compare_streams(clicks, stream, bots_counted, uncertain));
    }
    out
}

/// The stream lines: every counted token once in `ll:clicks`; bots (unless counted) and
/// HEADs never there, but once in `ll:nonbillable` when the gateway keeps one.
fn compare_streams(clicks: &ClickObs, stream: &StreamTokens, bots_counted: bool, uncertain: u64) -> Vec<Check> {
    let mut out = Vec::new();
    let counted_kind = |k: SeenKind| k == SeenKind::Counted || (bots_counted && k == SeenKind::Bot);
    let mut issued: HashSet<u128> = HashSet::with_capacity(clicks.tokens.len());
    let (mut reissued, mut expected, mut found, mut lost, mut duplicated) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut uncounted, mut uncounted_billed, mut uncounted_kept) = (0u64, 0u64, 0u64);
    let mut lost_reasons: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    let none = TokenRecord::default();
    for t in &clicks.tokens {
        if !issued.insert(t.token) {
            reissued += 1;
        }
        let r = stream.entries.get(&t.token).unwrap_or(&none);
        if counted_kind(t.kind) {
            expected += 1;
            match r.clicks {
                0 => {
                    lost += 1;
                    if r.nonbillable > 0 {
                        *lost_reasons.entry(r.reason.as_str()).or_insert(0) += 1;
                    }
                }
                1 => found += 1,
                _ => {
                    found += 1;
                    duplicated += 1;
                }
            }
        } else {
            uncounted += 1;
            uncounted_billed += u64::from(r.clicks > 0);
            uncounted_kept += u64::from(r.nonbillable == 1 && r.clicks == 0);
        }
    }
    let unknown = stream.entries.iter().filter(|(k, r)| r.clicks > 0 && !issued.contains(k)).count() as u64;
    out.push(check(
        "click tokens recorded (ll:crs:*, ll:clicks)",
        i(expected),
        i(found),
        lost == 0,
        format!("{} stream clicks and click records read", stream.scanned),
    ));
    let detail = if lost_reasons.is_empty() {
        String::new()
    } else {
        let r: Vec<String> = lost_reasons.iter().map(|(k, v)| format!("{k}×{v}")).collect();
        let hint = if lost_reasons.contains_key("rate_limited") {
            ": per-client limit; is the tester's address in the gateway's trusted_proxies?"
        } else {
            ""
        };
        format!("recorded as non-billable instead: {}{hint}", r.join(" "))
    };
    out.push(check("  lost (seen, not recorded)", 0, i(lost), lost == 0, detail));
    out.push(check(
        "  duplicated (twice in ll:clicks)",
        0,
        i(duplicated),
        duplicated == 0,
        "entries left in the stream; double counts show in the stats lines",
    ));
    let what = if bots_counted { "  HEAD tokens recorded as clicks" } else { "  bot/HEAD tokens recorded as clicks" };
    out.push(check(what, 0, i(uncounted_billed), uncounted_billed == 0, ""));
    out.push(check(
        "  unseen tokens of this run's notes",
        0,
        i(unknown),
        unknown <= uncertain,
        if uncertain > 0 { format!("up to {uncertain} unanswered GETs may appear") } else { String::new() },
    ));
    out.push(check("  tokens issued twice", 0, i(reissued), reissued == 0, ""));
    let name = if bots_counted { "HEAD tokens in ll:nonbillable" } else { "bot/HEAD tokens in ll:nonbillable" };
    if stream.has_nonbillable {
        out.push(check(name, i(uncounted), i(uncounted_kept), uncounted_kept == uncounted, "each exactly once"));
    } else {
        out.push(check(name, i(uncounted), -1, true, "the gateway keeps no ll:nonbillable stream"));
    }
    out
}

/// `GET /v1/stats/{dim}/{id}?from&to` of every id, 16 at a time: the `total` of each.
///
/// # Errors
/// A stats call fails or answers something else than 200 JSON.
pub async fn fetch_stats(
    control: &Control,
    dim: &str,
    ids: &[String],
    (from, to): (&str, &str),
) -> anyhow::Result<Vec<Counts>> {
    let mut out = vec![Counts::default(); ids.len()];
    let mut set = tokio::task::JoinSet::new();
    let mut next = 0;
    loop {
        while set.len() < 16 && next < ids.len() {
            let (c, i) = (control.clone(), next);
            let path = format!("/v1/stats/{dim}/{}?from={from}&to={to}", ids[i]);
            set.spawn(async move { (i, c.get(&path).await) });
            next += 1;
        }
        let Some(joined) = set.join_next().await else { break };
        let (i, res) = joined.context("stats task")?;
        let (status, body) = res.map_err(|e| anyhow::Error::new(e).context("stats API"))?;
        anyhow::ensure!(status == 200, "stats API answered {status}: {}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).context("stats answer")?;
        let t = &v["total"];
        out[i] = Counts {
            clicks: t["clicks"].as_u64().unwrap_or(0),
            conversions: t["conversions"].as_u64().unwrap_or(0),
            refunds: t["refunds"].as_u64().unwrap_or(0),
            gmv_fen: t["gmv_fen"].as_i64().unwrap_or(0),
        };
    }
    Ok(out)
}

/// Polls the stats of `ids` in dimension `dim` until they match `exp` (only their clicks
/// with `clicks_only`), or stop changing for
/// 2 s while at or above the expected clicks, or `timeout` passes. Polls are spaced so that
/// at most 40 stats calls a second are made (the admin API's default limit is 50/s).
/// Returns the last stats, the lag from `last_click` to the first match, and the number of polls.
///
/// # Errors
/// From [`fetch_stats`].
pub async fn poll_stats(
    control: &Control,
    (dim, ids): (&str, &[String]),
    range: (&str, &str),
    exp: &Expected,
    clicks_only: bool,
    last_click: Instant,
    timeout: Duration,
) -> anyhow::Result<(Vec<Counts>, Option<Duration>, u32)> {
    let started = Instant::now();
    let settle = Duration::from_secs(2).min(timeout);
    let interval = poll_interval(ids.len());
    let mut polls = 0u32;
    let mut last: Option<Vec<Counts>> = None;
    let mut last_change = Instant::now();
    loop {
        let now = fetch_stats(control, dim, ids, range).await?;
        polls += 1;
        if if clicks_only { exp.clicks_match(&now) } else { exp.matches(&now) } {
            return Ok((now, Some(last_click.elapsed()), polls));
        }
        if last.as_ref() != Some(&now) {
            last_change = Instant::now();
        }
        let at_least: bool = exp.per_note.iter().zip(&now).all(|(e, r)| r.clicks >= e.clicks);
        if started.elapsed() >= timeout || (at_least && last_change.elapsed() >= settle) {
            return Ok((now, None, polls));
        }
        last = Some(now);
        tokio::time::sleep(interval).await;
    }
}

/// Time between polls of `ids` stats: at most 40 calls a second, at least 50 ms apart.
pub fn poll_interval(ids: usize) -> Duration {
    Duration::from_millis(25 * ids as u64).max(Duration::from_millis(50))
}

/// Reads `ll:clicks` and `ll:nonbillable` from `since_ms` on, in chunks of 10,000, keeping
/// the entries whose record names one of `notes` (field `rec` is `1|ts|note|…`), then the
/// click records (`ll:crs:{minute}` hashes from `since_ms` on, a `{token} {record}` line per
/// click; and the legacy `ll:cr:{minute}` buckets, field = token, of gateways before
/// 2026-12-01) of the billable clicks the aggregator has trimmed from `ll:clicks` once
/// applied. A token on two record lines counts as two clicks.
///
/// # Errors
/// Redis unreachable or a stream holds something else.
pub async fn read_stream(redis_url: &str, notes: &HashMap<String, u32>, since_ms: u64) -> anyhow::Result<StreamTokens> {
    let client = redis::Client::open(redis_url).context("--redis-url")?;
    let mut conn = tokio::time::timeout(Duration::from_secs(10), client.get_multiplexed_async_connection())
        .await
        .context("connecting to redis: timeout")?
        .context("connecting to redis")?;
    let mut out = StreamTokens::default();
    for (stream, billable) in [("ll:clicks", true), ("ll:nonbillable", false)] {
        if !billable {
            let exists: bool = redis::cmd("EXISTS").arg(stream).query_async(&mut conn).await?;
            out.has_nonbillable = exists;
        }
        let mut start = format!("{since_ms}-0");
        loop {
            // An entry holds the clicks of one group commit.
            let reply: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                .arg(stream)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(10_000)
                .query_async(&mut conn)
                .await?;
            let Some((last, _)) = reply.last() else { break };
            start = next_id(last).with_context(|| format!("stream id {last:?}"))?;
            let n = reply.len();
            for (_, fields) in &reply {
                for click in stream_clicks(fields) {
                    out.scanned += 1;
                    let (Some(tok), Some(rec)) = (click.tok, click.rec) else { continue };
                    if rec.split('|').nth(2).and_then(|n| notes.get(n)).is_none() {
                        continue;
                    }
                    let Some(t) = crate::clicks::parse_uuid(tok.as_bytes()) else { continue };
                    let r = out.entries.entry(t).or_default();
                    if billable {
                        r.clicks += 1;
                    } else {
                        r.nonbillable += 1;
                        if r.reason.is_empty() {
                            r.reason = click.reason.unwrap_or_default().to_owned();
                        }
                    }
                }
            }
            if n < 10_000 {
                break;
            }
        }
    }
    // The aggregator trims applied entries from `ll:clicks` (their clicks live on in the
    // click records), so a billable token missing from what is left is looked for in its
    // record bucket. Read after the stream: an entry is trimmed only once its record exists.
    let now_minute = crate::conversions::now_ms() / 60_000;
    let mut lines: HashMap<u128, u32> = HashMap::new();
    for minute in since_ms / 60_000..=now_minute + 1 {
        // `ll:crs:{minute}` (field: the token's UUID v7 ms) and the legacy `ll:cr:{minute}`
        // (field: the token): minute = the token's UUID v7 ms / 60,000 (docs/redis-schema.md).
        for (key, per_ms) in [(format!("ll:crs:{minute}"), true), (format!("ll:cr:{minute}"), false)] {
            let mut cursor = 0u64;
            loop {
                let (next, pairs): (u64, Vec<(String, String)>) =
                    redis::cmd("HSCAN").arg(&key).arg(cursor).arg("COUNT").arg(1_000).query_async(&mut conn).await?;
                for (field, value) in &pairs {
                    let records: Vec<(&str, &str)> = if per_ms {
                        // A line per click: `{token} {record}\n` (docs/redis-schema.md).
                        value.split('\n').filter_map(|line| line.split_once(' ')).collect()
                    } else {
                        vec![(field.as_str(), value.as_str())]
                    };
                    for (tok, rec) in records {
                        out.scanned += 1;
                        if rec.split('|').nth(2).and_then(|n| notes.get(n)).is_none() {
                            continue;
                        }
                        let Some(t) = crate::clicks::parse_uuid(tok.as_bytes()) else { continue };
                        *lines.entry(t).or_default() += 1;
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
    }
    for (t, n) in lines {
        let r = out.entries.entry(t).or_default();
        r.clicks = r.clicks.max(n);
    }
    Ok(out)
}

/// One click of a stream entry: its `tok`, `rec` and `reason` values.
#[derive(Debug, Default, PartialEq, Eq)]
struct StreamClick<'a> {
    tok: Option<&'a str>,
    rec: Option<&'a str>,
    reason: Option<&'a str>,
}

/// The clicks of one stream entry's fields, in order: the lines of its `clicks` field
/// (`{token} {record}[ {reason}]`, docs/redis-schema.md), or, in entries of gateways before that field, one
/// `tok`/`rec`[/`reason`] group per click (each `tok` starts a click).
fn stream_clicks(fields: &[(String, String)]) -> Vec<StreamClick<'_>> {
    let mut out: Vec<StreamClick<'_>> = Vec::new();
    for (name, value) in fields {
        match (name.as_str(), out.last_mut()) {
            ("clicks", _) => out.extend(value.split('\n').filter(|line| !line.is_empty()).map(|line| {
                let mut parts = line.splitn(3, ' ');
                StreamClick { tok: parts.next(), rec: parts.next(), reason: parts.next() }
            })),
            ("tok", _) => out.push(StreamClick { tok: Some(value), ..StreamClick::default() }),
            ("rec", Some(c)) => c.rec = Some(value),
            ("reason", Some(c)) => c.reason = Some(value),
            _ => {}
        }
    }
    out
}

/// The smallest stream id after `id` (`ms-seq` → `ms-(seq+1)`).
fn next_id(id: &str) -> Option<String> {
    let (ms, seq) = id.split_once('-')?;
    let seq: u64 = seq.parse().ok()?;
    Some(match seq.checked_add(1) {
        Some(s) => format!("{ms}-{s}"),
        None => format!("{}-0", ms.parse::<u64>().ok()?.checked_add(1)?),
    })
}

/// `YYYY-MM-DD` of Unix ms `ms` at UTC+8 (Asia/Shanghai, no DST) shifted by `days`.
pub fn shanghai_day(ms: u64, days: i64) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(0) + 8 * 3600 + days * 86_400;
    chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default().format("%Y-%m-%d").to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::clicks::{NoteClicks, SeenToken};

    #[test]
    fn stream_entries_of_both_layouts_parse() {
        let f = |pairs: &[(&str, &str)]| pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
        let one = f(&[("tok", "t1"), ("rec", "r1")]);
        assert_eq!(stream_clicks(&one), [StreamClick { tok: Some("t1"), rec: Some("r1"), reason: None }]);
        let group =
            f(&[("tok", "t1"), ("rec", "r1"), ("reason", "crawler"), ("tok", "t2"), ("rec", "r2"), ("reason", "head")]);
        let got = stream_clicks(&group);
        assert_eq!(got.len(), 2);
        assert_eq!((got[1].tok, got[1].rec, got[1].reason), (Some("t2"), Some("r2"), Some("head")));
        // A stray field before any tok belongs to no click.
        assert_eq!(stream_clicks(&f(&[("rec", "r0"), ("tok", "t1")])).len(), 1);
        // The current layout: one `clicks` field, a line per click.
        let lines = f(&[("clicks", "t1 r1 crawler\nt2 r2")]);
        assert_eq!(
            stream_clicks(&lines),
            [
                StreamClick { tok: Some("t1"), rec: Some("r1"), reason: Some("crawler") },
                StreamClick { tok: Some("t2"), rec: Some("r2"), reason: None }
            ]
        );
    }

    fn obs(per_note: Vec<NoteClicks>) -> ClickObs {
        ClickObs { per_note, ..ClickObs::default() }
    }

    fn conv(per_note: Vec<NoteConversions>) -> ConvOutcome {
        ConvOutcome { per_note, ..ConvOutcome::default() }
    }

    fn all_ok(c: &[Check]) -> bool {
        c.iter().all(|c| c.ok)
    }

    fn failing(c: &[Check]) -> Vec<&str> {
        c.iter().filter(|c| !c.ok).map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn exact_books_pass() {
        let clicks = obs(vec![
            NoteClicks { counted: 10, bot: 2, head: 3, uncertain: 0 },
            NoteClicks { counted: 5, bot: 0, head: 0, uncertain: 0 },
        ]);
        let c = conv(vec![
            NoteConversions { conversions: 2, refunds: 1, gmv_fen: 15_000 },
            NoteConversions { conversions: 0, refunds: 0, gmv_fen: 0 },
        ]);
        let exp = Expected::new(&clicks, &c.per_note, true);
        assert_eq!(exp.per_note[0].clicks, 12);
        let rec = vec![
            Counts { clicks: 12, conversions: 2, refunds: 1, gmv_fen: 15_000 },
            Counts { clicks: 5, ..Counts::default() },
        ];
        assert!(exp.matches(&rec));
        let checks = compare(&exp, &rec, &clicks, &c, None, true);
        assert!(all_ok(&checks), "{checks:#?}");
        assert_eq!(checks[0].observed, 17);
        // Without bots counted, the same stats are two clicks too many: counted bots.
        let exp = Expected::new(&clicks, &c.per_note, false);
        assert!(!exp.matches(&rec));
        let checks = compare(&exp, &rec, &clicks, &c, None, false);
        assert_eq!(failing(&checks), vec!["clicks (GET, bots excluded)"]);
        assert!(checks[0].detail.contains("counted twice or counted bots"), "{}", checks[0].detail);
    }

    #[test]
    fn every_kind_of_difference_fails() {
        let clicks = obs(vec![NoteClicks { counted: 10, ..NoteClicks::default() }; 2]);
        let c = conv(vec![NoteConversions { conversions: 1, refunds: 1, gmv_fen: 100 }; 2]);
        let exp = Expected::new(&clicks, &c.per_note, true);
        let good = Counts { clicks: 10, conversions: 1, refunds: 1, gmv_fen: 100 };
        let cases: [(Counts, &str); 5] = [
            (Counts { clicks: 9, ..good }, "clicks (GET, bots included)"),
            (Counts { clicks: 11, ..good }, "clicks (GET, bots included)"),
            (Counts { conversions: 2, ..good }, "conversions (paid, 201)"),
            (Counts { refunds: 0, ..good }, "refunds (201)"),
            (Counts { gmv_fen: 101, ..good }, "GMV net of refunds (fen)"),
        ];
        for (bad, name) in cases {
            let rec = vec![good, bad];
            assert!(!exp.matches(&rec));
            assert_eq!(failing(&compare(&exp, &rec, &clicks, &c, None, true)), vec![name]);
        }
        // One lost here and one extra there: the totals agree, the per-note check does not.
        let rec = vec![Counts { clicks: 9, ..good }, Counts { clicks: 11, ..good }];
        let checks = compare(&exp, &rec, &clicks, &c, None, true);
        assert_eq!(checks[0].observed, checks[0].recorded);
        assert!(!checks[0].ok && checks[0].detail.starts_with("2 note(s) differ"));
    }

    #[test]
    fn unanswered_gets_widen_the_click_window_only() {
        let clicks = obs(vec![NoteClicks { counted: 10, uncertain: 2, ..NoteClicks::default() }]);
        let c = conv(vec![NoteConversions::default()]);
        let exp = Expected::new(&clicks, &c.per_note, true);
        for (n, ok) in [(9, false), (10, true), (12, true), (13, false)] {
            assert_eq!(exp.matches(&[Counts { clicks: n, ..Counts::default() }]), ok, "{n}");
        }
    }

    #[test]
    fn conversion_books() {
        let clicks = obs(vec![NoteClicks::default()]);
        let mut c = conv(vec![NoteConversions::default()]);
        c.duplicates_sent = 3;
        c.duplicates_ok = 2;
        c.duplicates_counted_again = 1;
        c.rejected.insert("click_not_found".into(), 1);
        c.unknown = 1;
        let exp = Expected::new(&clicks, &c.per_note, true);
        let checks = compare(&exp, &[Counts::default()], &clicks, &c, None, true);
        assert_eq!(
            failing(&checks),
            vec!["duplicate deliveries answered 200", "conversions refused (4xx)", "conversions with unknown outcome"]
        );
    }

    #[test]
    fn stream_token_by_token() {
        let tok = |token, kind| SeenToken { token, note: 0, kind };
        let mut clicks = obs(vec![NoteClicks { counted: 3, bot: 1, head: 1, uncertain: 0 }]);
        clicks.tokens = vec![
            tok(1, SeenKind::Counted),
            tok(2, SeenKind::Counted),
            tok(3, SeenKind::Counted),
            tok(4, SeenKind::Bot),
            tok(5, SeenKind::Head),
        ];
        let c = conv(vec![NoteConversions::default()]);
        let exp = Expected::new(&clicks, &c.per_note, false);
        let rec = [Counts { clicks: 3, ..Counts::default() }];
        // (token, in ll:clicks, in ll:nonbillable)
        let stream = |e: &[(u128, u32, u32)]| StreamTokens {
            entries: e
                .iter()
                .map(|(t, c, n)| {
                    let reason = if *n > 0 { "rate_limited".to_owned() } else { String::new() };
                    (*t, TokenRecord { clicks: *c, nonbillable: *n, reason })
                })
                .collect(),
            scanned: 9,
            has_nonbillable: true,
        };
        let run = |s: &StreamTokens| failing(&compare(&exp, &rec, &clicks, &c, Some(s), false)).join(" | ");
        let good = [(1, 1, 0), (2, 1, 0), (3, 1, 0), (4, 0, 1), (5, 0, 1)];
        assert_eq!(run(&stream(&good)), "");
        let lossy = stream(&[(1, 1, 0), (2, 0, 1), (3, 1, 0), (4, 0, 1), (5, 0, 1)]);
        assert_eq!(run(&lossy), "click tokens recorded (ll:crs:*, ll:clicks) |   lost (seen, not recorded)");
        let checks = compare(&exp, &rec, &clicks, &c, Some(&lossy), false);
        assert!(checks.iter().any(|c| c.detail.contains("rate_limited×1") && c.detail.contains("trusted_proxies")));
        let doubled = stream(&[(1, 2, 0), (2, 1, 0), (3, 1, 0), (4, 0, 1), (5, 0, 1)]);
        assert_eq!(run(&doubled), "  duplicated (twice in ll:clicks)");
        let bot_billed = stream(&[(1, 1, 0), (2, 1, 0), (3, 1, 0), (4, 1, 0), (5, 0, 1)]);
        assert_eq!(run(&bot_billed), "  bot/HEAD tokens recorded as clicks | bot/HEAD tokens in ll:nonbillable");
        let phantom = stream(&[(1, 1, 0), (2, 1, 0), (3, 1, 0), (4, 0, 1), (5, 0, 1), (99, 1, 0)]);
        assert_eq!(run(&phantom), "  unseen tokens of this run's notes");
        let head_lost = stream(&[(1, 1, 0), (2, 1, 0), (3, 1, 0), (4, 0, 1)]);
        assert_eq!(run(&head_lost), "bot/HEAD tokens in ll:nonbillable");
        // A gateway without the non-billable stream: that line is informational.
        let mut old = stream(&[(1, 1, 0), (2, 1, 0), (3, 1, 0)]);
        old.has_nonbillable = false;
        assert_eq!(run(&old), "");
        // Bots counted: their tokens belong in ll:clicks.
        let exp = Expected::new(&clicks, &c.per_note, true);
        let rec = [Counts { clicks: 4, ..Counts::default() }];
        let counted = stream(&[(1, 1, 0), (2, 1, 0), (3, 1, 0), (4, 1, 0), (5, 0, 1)]);
        assert!(all_ok(&compare(&exp, &rec, &clicks, &c, Some(&counted), true)));
    }

    #[test]
    fn ids_and_days() {
        assert_eq!(next_id("1700000000000-0").as_deref(), Some("1700000000000-1"));
        assert_eq!(next_id(&format!("5-{}", u64::MAX)).as_deref(), Some("6-0"));
        assert!(next_id("x").is_none());
        // 2026-11-30T16:00:00Z is 2026-12-01 00:00 in Shanghai.
        let ms = 1_796_054_400_000;
        assert_eq!(shanghai_day(ms, 0), "2026-12-01");
        assert_eq!(shanghai_day(ms - 1000, 0), "2026-11-30");
        assert_eq!(shanghai_day(ms, -1), "2026-11-30");
    }
}
