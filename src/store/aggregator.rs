//! The aggregator: derives the click record, per-day counters and UV from the
//! click stream, off the redirect's hot path.
//!
//! Invariants (see `docs/redis-schema.md`):
//! - **Exact.** A click is counted iff its click record (a line of field `{ms}` of the
//!   minute's hash `ll:crs:{minute}`, [`keys::click_slots`]) is created. A batch is
//!   applied optimistically
//!   (Redis transactions, <https://redis.io/docs/latest/develop/interact/transactions/>):
//!   on its own connection the aggregator `WATCH`es the cursor `ll:agg:cursor`, reads
//!   the batch after it, reads the record fields of the milliseconds its tokens carry
//!   (`HMGET`; a token already there, or twice in the batch, is skipped; a click minted
//!   before this aggregator started or appended over [`LEGACY_CHECK_MS`] after its
//!   token, i.e. possibly a replay of a click recorded in the legacy layout, is also
//!   looked for in `ll:cr:{minute}`) and each visitor's last unique click (`HMGET` of
//!   the `ll:rpt:*` buckets), decides here what is new and what repeats, then writes
//!   it all in one `MULTI`/`EXEC`: the record fields with the new lines appended
//!   (`HSET`), repeat markers, one `HINCRBY` per counter, one `PFADD` per HLL, and the
//!   cursor moved to the batch's last stream id. Only aggregators write records, markers and the
//!   cursor, and every apply moves the cursor, so if another aggregator applied
//!   anything in between, `EXEC` does nothing and the batch is read again. A batch is
//!   either fully applied with its cursor move, or not at all.
//! - **Crash-safe.** Reading always resumes from the cursor stored in Redis, so
//!   after a crash (of the gateway or of Redis, whose append-only file holds a
//!   transaction whole or, cut short, drops it on load) the next pass re-reads exactly
//!   what was not applied. No consumer-group bookkeeping per entry: a cursor costs
//!   nothing per click. The transaction's connection is never silently re-established
//!   (that would lose the `WATCH`): after any error it is dropped and a new one opened.
//! - **The stream only buffers.** The same transaction trims the stream before the
//!   batch's last id (less `click_stream_retention_ms`): every entry there is applied
//!   (the cursor is at or past it), and its clicks live on in their records.
//! - **Bounded lag, short transactions.** After a short batch it waits [`IDLE`] before
//!   reading again: at full load batches are full (up to [`BEHIND_FACTOR`] × the batch
//!   size while behind), at half load each transaction holds about one batch; lag stays
//!   under [`IDLE`] + one pass. [`Aggregator::catch_up`] lets a caller
//!   (a conversion for a click seconds old) apply everything appended so far.
//! - **Short turns on the runtime.** The pass yields to the runtime between its
//!   computing steps (parse, lay out [`YIELD_EVERY`] clicks at a time, decide), so
//!   redirects on the same worker wait for one step, not a whole pass
//!   (docs/performance.md, step 22). Not while behind: then every yield would wait for
//!   each ready redirect (hundreds at saturation) and the lag would grow without bound.
//! - **No script per click.** Redis runs only native commands for clicks: the decisions
//!   are made here, so Redis spends no interpreter time per click (a Lua script doing
//!   the same cost Redis ≈ 2.3× the CPU, `docs/performance.md`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono_tz::Tz;
use redis::Value;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use tokio::sync::{Mutex, watch};

use super::keys::{self, Dim};
use crate::click::PackedRecord;
use crate::metrics::Metrics;
use crate::platform::Platform;
use crate::store::conversions::{CONVERSION_STREAM, ConversionDeltas};

/// Longest a read waits on an idle stream.
pub const BLOCK: Duration = Duration::from_millis(100);
/// Pause after a batch shorter than the batch size, so batches grow under load. Short
/// enough that at half load a pass finds about one batch waiting (10 ms of clicks at
/// 20k/s ≈ 200), not several: a transaction holds Redis while it runs, and every
/// redirect's `XADD` queues behind it (50 ms gave 512-click transactions at half load
/// and a longer redirect tail, `docs/performance.md` step 20).
pub const IDLE: Duration = Duration::from_millis(10);
/// Longest wait for a reply to one of the aggregator's commands.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// While behind (entries were left waiting by the last pass), a batch holds up to this many
/// times `aggregator_batch` clicks: fewer round trips per click when the redirect saturates
/// the core, the configured size (shorter transactions, a shorter redirect tail) otherwise.
pub const BEHIND_FACTOR: usize = 4;
/// A click appended to the stream more than this many ms after its token was minted
/// (a spool replay) is also looked for in the legacy record layout ([`keys::click_bucket`]),
/// as is one minted before the aggregator started: only such a click can repeat one
/// that a gateway of the per-token layout recorded.
pub const LEGACY_CHECK_MS: u64 = 1_000;
/// Clicks a pass lays out between two yields to the runtime (a few µs of work each: a
/// redirect on the same worker waits for 32 of them, not for a whole batch of up to 512).
pub const YIELD_EVERY: usize = 32;

/// Adds a batch of conversion counter deltas atomically; returns how many counters,
/// or -1 when another aggregator moved the cursor since this batch was read.
///
/// ARGV: 1 conversion cursor key, 2 last stream id of the batch, 3 the cursor the batch
/// was read after (empty: none), 4 n; then n triples (agg key, field, delta). The
/// deltas are pre-summed per batch, so the batch applies only if the cursor is still
/// the one it was read after (several gateways may run the aggregator): never twice.
const APPLY_CONVERSIONS_SCRIPT: &str = r#"
local cursor = redis.call('GET', ARGV[1]) or ''
if cursor ~= ARGV[3] then return -1 end
local n = tonumber(ARGV[4])
for i = 0, n - 1 do
  redis.call('HINCRBY', ARGV[5 + 3 * i], ARGV[6 + 3 * i], ARGV[7 + 3 * i])
end
redis.call('SET', ARGV[1], ARGV[2])
return n
"#;

/// Settings for the aggregator.
#[derive(Debug, Clone)]
pub struct AggregatorOptions {
    /// Clicks applied per transaction (whole stream entries; conversion-stream entries per script call).
    pub batch: usize,
    /// Click record lifetime after the click (attribution window + grace), ms.
    pub click_ttl_ms: u64,
    /// Window within which a visitor's click on the same note and item is a repeat, ms.
    pub repeat_window_ms: u64,
    /// Time zone whose calendar days the counters use.
    pub tz: Tz,
    /// How long applied click-stream entries are kept, ms (by stream id time, before the
    /// batch's last entry); 0 trims them as soon as they are applied.
    pub stream_retention_ms: u64,
}

/// Derives counters from the click stream. Share it with `Arc`.
pub struct Aggregator {
    /// Self-healing connection for the blocking wait and the conversion stream.
    conn: ConnectionManager,
    /// Opens the transaction connection.
    client: redis::Client,
    conversion_script: redis::Script,
    opts: AggregatorOptions,
    metrics: Arc<Metrics>,
    /// Serialises apply passes of the loop and of [`Aggregator::catch_up`] and holds
    /// the connection their `WATCH`/`MULTI`/`EXEC` runs on (opened on first use,
    /// dropped after any error); held only while applying, never across the blocking read.
    apply: Mutex<Option<MultiplexedConnection>>,
    /// Clicks per stream entry in the last batch read (sizes the next read).
    clicks_per_entry: AtomicUsize,
    /// Whether the last pass left entries waiting (the next one takes a bigger batch).
    behind: AtomicBool,
    /// When this aggregator was built, Unix ms (see [`LEGACY_CHECK_MS`]).
    started_ms: u64,
}

impl std::fmt::Debug for Aggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregator").field("opts", &self.opts).finish_non_exhaustive()
    }
}

/// One click as read back from the click stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Entry {
    /// Id of the stream entry holding it (shared by the clicks of one group commit).
    id: String,
    /// Its click token and packed record.
    fields: [String; 2],
}

impl Aggregator {
    /// Builds an aggregator for the Redis at `url` (`redis://…`,
    /// `redis+unix:///path`) on connections of its own: its blocking reads must not
    /// stall the hot path's pipelined connection, and its transactions need a
    /// connection nobody else writes to. Connects lazily.
    ///
    /// Errors: an invalid URL.
    pub fn new(url: &str, opts: AggregatorOptions, metrics: Arc<Metrics>) -> redis::RedisResult<Self> {
        Ok(Self {
            conn: super::connect_manager(url, RESPONSE_TIMEOUT)?,
            client: redis::Client::open(url)?,
            conversion_script: redis::Script::new(APPLY_CONVERSIONS_SCRIPT),
            opts,
            metrics,
            apply: Mutex::new(None),
            clicks_per_entry: AtomicUsize::new(1),
            behind: AtomicBool::new(false),
            started_ms: crate::click::now_ms(),
        })
    }

    /// Runs until `shutdown` turns true: reads from the cursor, applies, repeats.
    /// Redis errors are logged and retried after a pause.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        // After a full batch there is more to read at once: no blocking wait.
        let mut full = false;
        while !*shutdown.borrow() {
            let step = async {
                let (_, more) = self.pass((!full).then_some(BLOCK)).await?;
                while self.conversion_pass().await? >= self.opts.batch as u64 {}
                full = more;
                if !full {
                    tokio::time::sleep(IDLE).await;
                }
                Ok::<_, redis::RedisError>(())
            };
            tokio::select! {
                r = step => if let Err(e) = r {
                    tracing::warn!(error = %e, "aggregator: redis error, retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                },
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Applies everything appended to the click stream and the conversion stream
    /// up to the moment of the call (not what keeps arriving meanwhile, so it ends
    /// promptly under load). Returns how many clicks it read (re-reads after another
    /// aggregator applied first included).
    ///
    /// Errors: Redis errors.
    pub async fn catch_up(&self) -> redis::RedisResult<u64> {
        let clicks = self.catch_up_stream(keys::CLICK_STREAM, keys::AGGREGATOR_CURSOR).await?;
        self.catch_up_stream(CONVERSION_STREAM, keys::CONVERSION_CURSOR).await?;
        Ok(clicks)
    }

    async fn catch_up_stream(&self, stream: &str, cursor_key: &str) -> redis::RedisResult<u64> {
        let mut conn = self.conn.clone();
        let last: Value =
            redis::cmd("XREVRANGE").arg(stream).arg("+").arg("-").arg("COUNT").arg(1).query_async(&mut conn).await?;
        let Some(target) = first_id(&last).as_deref().and_then(parse_id) else { return Ok(0) };
        let mut total = 0;
        loop {
            let cursor: Option<String> = redis::cmd("GET").arg(cursor_key).query_async(&mut conn).await?;
            if cursor.as_deref().and_then(parse_id).is_some_and(|c| c >= target) {
                return Ok(total);
            }
            let n = if stream == CONVERSION_STREAM { self.conversion_pass().await? } else { self.pass(None).await?.0 };
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    /// Reads one batch of the conversion stream after its cursor and adds the
    /// entries' counter deltas (the `agg` field) in one script call: one `HINCRBY`
    /// per distinct counter of the batch, then the cursor, only if the cursor has not
    /// moved since the read. Each accepted conversion is in the stream exactly once
    /// (written with its idempotency record), so this makes it counted exactly once.
    /// Entries without `agg` are passed over. Returns the entries read (applied by this
    /// call or, when the cursor moved meanwhile, by another aggregator).
    async fn conversion_pass(&self) -> redis::RedisResult<u64> {
        let mut conn = self.conn.clone();
        let _guard = self.apply.lock().await;
        let cursor: Option<String> = redis::cmd("GET").arg(keys::CONVERSION_CURSOR).query_async(&mut conn).await?;
        let reply: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(self.opts.batch)
            .arg("STREAMS")
            .arg(CONVERSION_STREAM)
            .arg(cursor.as_deref().unwrap_or("0-0"))
            .query_async(&mut conn)
            .await?;
        let entries = parse_read_reply(reply, ["agg"]);
        let Some((last_id, _)) = entries.last() else { return Ok(0) };
        let mut sums: std::collections::BTreeMap<(String, String), i64> = std::collections::BTreeMap::new();
        for (id, [agg]) in &entries {
            if agg.is_empty() {
                continue;
            }
            let Some(d) = ConversionDeltas::parse(agg) else {
                tracing::warn!(stream.id = %id, "aggregator: skipping malformed conversion-stream entry");
                continue;
            };
            let dims = [
                Dim::Note(&d.note),
                Dim::Creator(&d.creator),
                Dim::Item(d.platform, d.item),
                Dim::Platform(d.platform),
            ];
            for (field, delta) in d.fields() {
                for dim in dims {
                    *sums.entry((keys::agg(dim, &d.day), field.clone())).or_insert(0) += delta;
                }
            }
        }
        let mut inv = self.conversion_script.prepare_invoke();
        inv.arg(keys::CONVERSION_CURSOR).arg(last_id).arg(cursor.as_deref().unwrap_or("")).arg(sums.len());
        for ((key, field), delta) in &sums {
            inv.arg(key).arg(field).arg(*delta);
        }
        // -1: another aggregator moved the cursor first; the caller re-reads from there.
        let _applied: i64 = inv.invoke_async(&mut conn).await?;
        Ok(entries.len() as u64)
    }

    /// Reads one batch after the stored cursor and applies it, holding the apply
    /// lock from the cursor read to the script's return, so concurrent passes
    /// never re-read a batch another is applying. Returns the clicks read (a malformed
    /// entry counts as one) and whether more entries were already waiting behind them.
    async fn pass(&self, block: Option<Duration>) -> redis::RedisResult<(u64, bool)> {
        let mut conn = self.conn.clone();
        if let Some(b) = block {
            // Wait (without the lock) until something lies past the cursor.
            let cursor: Option<String> = redis::cmd("GET").arg(keys::AGGREGATOR_CURSOR).query_async(&mut conn).await?;
            let _: Value = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(b.as_millis() as u64)
                .arg("STREAMS")
                .arg(keys::CLICK_STREAM)
                .arg(cursor.as_deref().unwrap_or("0-0"))
                .query_async(&mut conn)
                .await?;
        }
        let mut slot = self.apply.lock().await;
        let mut tx = match slot.take() {
            Some(tx) => tx,
            None => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_millis(500)))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT));
                self.client.get_multiplexed_async_connection_with_config(&config).await?
            }
        };
        // On an error the connection is dropped with whatever `WATCH` it held.
        let r = self.read_and_apply(&mut tx).await;
        if r.is_ok() {
            *slot = Some(tx);
        }
        r
    }

    /// One optimistic pass on the transaction connection `tx`: `WATCH` the cursor, read
    /// the batch after it, look up what it needs, apply it in one `MULTI`/`EXEC`.
    async fn read_and_apply(&self, tx: &mut MultiplexedConnection) -> redis::RedisResult<(u64, bool)> {
        let (cursor, stream_len): (Option<String>, i64) = redis::pipe()
            .cmd("WATCH")
            .arg(keys::AGGREGATOR_CURSOR)
            .ignore()
            .cmd("GET")
            .arg(keys::AGGREGATOR_CURSOR)
            .cmd("XLEN")
            .arg(keys::CLICK_STREAM)
            .query_async(tx)
            .await?;
        self.metrics.click_stream_entries.set(stream_len);
        // Entries hold a group commit each: read about `batch` clicks' worth.
        // Behind (the last pass left entries waiting): bigger batches, fewer round trips.
        let behind = self.behind.load(Ordering::Relaxed);
        let batch = if behind { self.opts.batch * BEHIND_FACTOR } else { self.opts.batch };
        let count = batch / self.clicks_per_entry.load(Ordering::Relaxed).max(1) + 1;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(count).arg("STREAMS").arg(keys::CLICK_STREAM);
        cmd.arg(cursor.as_deref().unwrap_or("0-0"));
        let reply: Value = cmd.query_async(tx).await?;
        // Whole stream entries, at most `batch` clicks (at least one entry): the cursor
        // moves by entries. An entry without a click is kept as one malformed row, so
        // the cursor passes it.
        let mut entries: Vec<Entry> = Vec::with_capacity(batch);
        let mut read_entries = 0usize;
        let got = parse_click_entries(reply);
        give_way(!behind).await;
        let mut more = got.len() >= count;
        for (id, clicks) in got {
            if read_entries > 0 && entries.len() + clicks.len().max(1) > batch {
                more = true;
                break;
            }
            read_entries += 1;
            if clicks.is_empty() {
                entries.push(Entry { id, fields: Default::default() });
                continue;
            }
            for fields in clicks {
                entries.push(Entry { id: id.clone(), fields });
            }
        }
        if entries.is_empty() {
            redis::cmd("UNWATCH").query_async::<()>(tx).await?;
            return Ok((0, false));
        }
        let read = entries.len() as u64;
        let Some(new) = self.apply_batch(tx, &entries, !behind).await? else {
            // Another aggregator moved the cursor meanwhile: nothing was written. The loop
            // reads again after its idle pause (`more` = false), leaving the field to the one
            // that is ahead instead of redoing every lookup at once; `catch_up` goes on at once.
            self.metrics.aggregator_conflicts.inc();
            return Ok((read, false));
        };
        self.behind.store(more, Ordering::Relaxed);
        let per_entry = (entries.len() / read_entries).max(1);
        self.clicks_per_entry.store(per_entry, Ordering::Relaxed);
        self.metrics.clicks_aggregated.inc_by(new);
        let now_ms = crate::click::now_ms();
        for e in &entries {
            if let Some(ms) = e.id.split('-').next().and_then(|m| m.parse::<u64>().ok()) {
                self.metrics.aggregation_lag.observe(now_ms.saturating_sub(ms) as f64 / 1000.0);
            }
        }
        Ok((read, more))
    }

    /// Applies `entries` (read after the cursor `tx` watches): looks up which tokens
    /// have a record and each visitor's last unique click, decides, then writes in one
    /// `MULTI`/`EXEC`, giving way to the runtime between its steps when `yielding`.
    /// Returns how many clicks were new, or `None` when the cursor moved since the
    /// `WATCH` (nothing written).
    async fn apply_batch(
        &self,
        tx: &mut MultiplexedConnection,
        entries: &[Entry],
        yielding: bool,
    ) -> redis::RedisResult<Option<u64>> {
        let last_id = entries.last().map_or("0-0", |e| e.id.as_str());
        let batch = Batch::build(entries, &self.opts, self.started_ms, yielding).await;
        let lookups = batch.lookups();
        give_way(yielding).await;
        let mut found: Vec<Vec<Value>> = Vec::new();
        if !lookups.is_empty() {
            let mut pipe = redis::pipe();
            for l in &lookups {
                pipe.cmd("HMGET").arg(l.key.as_ref()).arg(&l.fields);
            }
            found = pipe.query_async(tx).await?;
        }
        let plan = batch.decide(&lookups, &found, self.opts.repeat_window_ms.max(1));
        give_way(yielding).await;
        let mut t = redis::pipe();
        // Every reply comes back, errors included: Redis does not roll a transaction back.
        t.atomic().ignore_errors();
        for (b, put) in plan.records.iter().enumerate() {
            if let (false, Some((key, at))) = (put.is_empty(), batch.buckets.get(b)) {
                let cmd = t.cmd("HSET").arg(key);
                for (ms, lines) in put {
                    cmd.arg(*ms).arg(lines);
                }
                t.cmd("PEXPIREAT").arg(key).arg(*at);
            }
        }
        for (r, put) in plan.repeats.iter().enumerate() {
            if let (false, Some((key, at))) = (put.is_empty(), batch.repeats.get(r)) {
                t.cmd("HSET").arg(key).arg(put);
                t.cmd("PEXPIREAT").arg(key).arg(*at);
            }
        }
        for ((agg, _), (clicks, repeats)) in batch.dims.iter().zip(&plan.counts) {
            if *clicks > 0 {
                t.cmd("HINCRBY").arg(agg).arg("clicks").arg(*clicks);
            }
            if *repeats > 0 {
                t.cmd("HINCRBY").arg(agg).arg("repeat_clicks").arg(*repeats);
            }
        }
        for ((_, uv), visitors) in batch.dims.iter().zip(&batch.visitors) {
            if !visitors.is_empty() {
                t.cmd("PFADD").arg(uv).arg(visitors);
            }
        }
        t.cmd("SET").arg(keys::AGGREGATOR_CURSOR).arg(last_id);
        // Applied entries are in the records now: the stream keeps only what waits (and
        // the configured retention), whole nodes at a time.
        let trim = trim_id(last_id, self.opts.stream_retention_ms);
        if !trim.is_empty() {
            t.cmd("XTRIM").arg(keys::CLICK_STREAM).arg("MINID").arg("~").arg(trim);
        }
        // `EXEC` answers nil when the watched cursor changed: then nothing was applied.
        let Some(replies): Option<Vec<Value>> = t.query_async(tx).await? else { return Ok(None) };
        // Otherwise the whole transaction ran, the cursor move included: a command that failed
        // (say a key of the wrong type) lost only its own effect, and the batch is not re-read.
        let failed: Vec<String> = replies
            .iter()
            .filter_map(|v| match v {
                Value::ServerError(e) => Some(e.to_string()),
                _ => None,
            })
            .collect();
        if let Some(first) = failed.first() {
            tracing::error!(
                failed = failed.len(),
                error = %first.chars().take(300).collect::<String>(),
                stream.id = %last_id,
                "aggregator: batch applied, but some of its commands failed"
            );
        }
        Ok(Some(plan.new))
    }
}

/// Lets every other ready task of the runtime (redirects) run first, when `on`.
async fn give_way(on: bool) {
    if on {
        tokio::task::yield_now().await;
    }
}

/// One click of a batch; `kind` is 1-based, 0 = malformed (passed over).
#[derive(Debug, Default)]
struct Row<'a> {
    kind: usize,
    token: &'a str,
    packed: &'a str,
    ts_ms: u64,
    /// The token's own Unix ms: its record's field.
    token_ms: u64,
    /// Also look for its record in the legacy layout ([`LEGACY_CHECK_MS`]).
    legacy: bool,
    visitor: String,
}

/// What clicks of one link in one minute share (1-based indexes into the batch's
/// tables): record bucket, the four dimension values, repeat bucket of the slot and
/// of the slot before (0: none).
type Kind = [usize; 7];

/// A batch laid out for its transaction: the key tables and one row per entry.
#[derive(Debug, Default)]
struct Batch<'a> {
    /// Distinct dimension values: (agg key, uv key).
    dims: Vec<(String, String)>,
    /// Click-record hashes ([`keys::click_slots`]): (key, expire-at ms).
    buckets: Vec<(String, u64)>,
    /// The minute of each of `buckets`.
    minutes: Vec<u64>,
    /// Repeat buckets: (key, expire-at ms).
    repeats: Vec<(String, u64)>,
    /// Distinct kinds of the batch's clicks.
    kinds: Vec<Kind>,
    rows: Vec<Row<'a>>,
    /// Distinct visitors (ip hashes) per dimension value.
    visitors: Vec<std::collections::BTreeSet<&'a str>>,
}

impl<'a> Batch<'a> {
    /// Lays `entries` out; `started_ms`: when the aggregator started ([`LEGACY_CHECK_MS`]).
    /// Yields to the runtime every [`YIELD_EVERY`] clicks when `yielding`.
    async fn build(entries: &'a [Entry], opts: &AggregatorOptions, started_ms: u64, yielding: bool) -> Batch<'a> {
        // foldhash: the keys are server-made (tokens, hashes, ids from signed links); SipHash
        // cost ≈ 5% of the redirect's instructions in these maps.
        use foldhash::HashMap;
        let mut b = Batch::default();
        let window = opts.repeat_window_ms.max(1);
        let mut dim_index: HashMap<String, usize> = HashMap::default();
        let mut bucket_index: HashMap<u64, usize> = HashMap::default();
        let mut repeat_index: HashMap<u64, usize> = HashMap::default();
        let mut kind_index: HashMap<Kind, usize> = HashMap::default();
        // A batch holds few distinct links and days: their four indexes are computed once.
        let mut group_index: HashMap<(&str, &str, Platform, u64, u64), [usize; 4]> = HashMap::default();
        let mut day_cache: Option<(u64, String)> = None;
        fn index_of(
            table: &mut Vec<(String, u64)>,
            map: &mut HashMap<u64, usize>,
            n: u64,
            key: impl FnOnce() -> String,
            at: u64,
        ) -> usize {
            *map.entry(n).or_insert_with(|| {
                table.push((key(), at));
                table.len()
            })
        }
        for (i, e) in entries.iter().enumerate() {
            if i > 0 && i % YIELD_EVERY == 0 {
                give_way(yielding).await;
            }
            let [tok, packed] = &e.fields;
            let parsed = uuid::Uuid::try_parse(tok).ok().and_then(|t| keys::token_ms(&t));
            let (Some(token_ms), Some(rec)) = (parsed, PackedRecord::parse(packed)) else {
                tracing::warn!(stream.id = %e.id, "aggregator: skipping malformed click-stream entry");
                b.rows.push(Row::default());
                continue;
            };
            let minute = token_ms / 60_000;
            let bucket_at = (minute + 1).saturating_mul(60_000).saturating_add(opts.click_ttl_ms);
            let minutes = &mut b.minutes;
            let bucket = index_of(
                &mut b.buckets,
                &mut bucket_index,
                minute,
                || {
                    minutes.push(minute);
                    keys::click_slots(minute)
                },
                bucket_at,
            );
            let entry_ms = e.id.split('-').next().and_then(|m| m.parse::<u64>().ok()).unwrap_or(0);
            let legacy = token_ms < started_ms || token_ms.saturating_add(LEGACY_CHECK_MS) < entry_ms;
            let slot = rec.ts_ms / window;
            let repeat_at = (slot + 2).saturating_mul(window);
            let repeat =
                index_of(&mut b.repeats, &mut repeat_index, slot, || keys::repeat_bucket(window, slot), repeat_at);
            let repeat_prev = match slot.checked_sub(1) {
                Some(prev) => index_of(
                    &mut b.repeats,
                    &mut repeat_index,
                    prev,
                    || keys::repeat_bucket(window, prev),
                    (prev + 2).saturating_mul(window),
                ),
                None => 0,
            };
            // Days change rarely within a batch: recompute only when the minute changes.
            let ts_minute = rec.ts_ms / 60_000;
            let day = match &day_cache {
                Some((m, d)) if *m == ts_minute => d.clone(),
                _ => {
                    let d = day_of(rec.ts_ms, opts.tz);
                    day_cache = Some((ts_minute, d.clone()));
                    d
                }
            };
            let p = rec.product.platform;
            let item = rec.product.item_id;
            let (note, creator, ip) = (rec.note_id, rec.creator_id, rec.ip_hash);
            let dims = *group_index.entry((note, creator, p, item, ts_minute)).or_insert_with(|| {
                [Dim::Note(note), Dim::Creator(creator), Dim::Item(p, item), Dim::Platform(p)].map(|d| {
                    let agg = keys::agg(d, &day);
                    let next = dim_index.len() + 1;
                    *dim_index.entry(agg.clone()).or_insert_with(|| {
                        b.dims.push((agg, keys::uv(d, &day)));
                        b.visitors.push(std::collections::BTreeSet::new());
                        next
                    })
                })
            });
            for i in dims {
                if let Some(set) = b.visitors.get_mut(i - 1) {
                    set.insert(ip);
                }
            }
            let kind: Kind = [bucket, dims[0], dims[1], dims[2], dims[3], repeat, repeat_prev];
            let next = b.kinds.len() + 1;
            let kind = *kind_index.entry(kind).or_insert_with(|| {
                b.kinds.push(kind);
                next
            });
            b.rows.push(Row {
                kind,
                token: tok,
                packed,
                ts_ms: rec.ts_ms,
                token_ms,
                legacy,
                visitor: keys::visitor(rec.note_id, p, item, rec.ip_hash, rec.ua),
            });
        }
        b
    }

    /// The `HMGET`s the batch needs before deciding: per record hash the fields of the
    /// milliseconds its clicks' tokens carry (each once), per legacy bucket the tokens
    /// of the clicks to look for there ([`LEGACY_CHECK_MS`]), per repeat bucket the
    /// distinct visitor fields of the clicks whose slot or slot before it is.
    fn lookups(&self) -> Vec<Lookup<'_>> {
        use std::borrow::Cow;
        let mut slots: Vec<Vec<u64>> = vec![Vec::new(); self.buckets.len()];
        let mut legacy: Vec<Vec<usize>> = vec![Vec::new(); self.buckets.len()];
        let mut repeats: Vec<Vec<&str>> = vec![Vec::new(); self.repeats.len()];
        let mut asked_ms = foldhash::HashSet::default();
        let mut asked = foldhash::HashSet::default();
        for (i, row) in self.rows.iter().enumerate() {
            let Some(kind) = row.kind.checked_sub(1).and_then(|k| self.kinds.get(k)) else { continue };
            let b = kind[0] - 1;
            if let Some(ms) = slots.get_mut(b)
                && asked_ms.insert((b, row.token_ms))
            {
                ms.push(row.token_ms);
            }
            if let (true, Some(rows)) = (row.legacy, legacy.get_mut(b)) {
                rows.push(i);
            }
            for r in [kind[5], kind[6]] {
                if let Some(fields) = r.checked_sub(1).and_then(|r| repeats.get_mut(r))
                    && asked.insert((r, row.visitor.as_str()))
                {
                    fields.push(row.visitor.as_str());
                }
            }
        }
        let slots = slots.into_iter().enumerate().filter(|(_, ms)| !ms.is_empty()).map(|(b, ms)| Lookup {
            key: Cow::Borrowed(self.buckets[b].0.as_str()),
            fields: ms.iter().map(|m| Cow::Owned(m.to_string())).collect(),
            what: Looked::Slots(b, ms),
        });
        let legacy = legacy.into_iter().enumerate().filter(|(_, rows)| !rows.is_empty()).map(|(b, rows)| Lookup {
            key: Cow::Owned(keys::click_bucket(self.minutes[b])),
            fields: rows.iter().map(|&i| Cow::Borrowed(self.rows[i].token)).collect(),
            what: Looked::Legacy(rows),
        });
        let repeats = repeats.into_iter().enumerate().filter(|(_, f)| !f.is_empty()).map(|(r, fields)| Lookup {
            key: Cow::Borrowed(self.repeats[r].0.as_str()),
            fields: fields.into_iter().map(Cow::Borrowed).collect(),
            what: Looked::Repeats(r + 1),
        });
        slots.chain(legacy).chain(repeats).collect()
    }

    /// Decides from the lookups' answers (`found[i]`: the `HMGET` reply of `lookups[i]`)
    /// which clicks are new (no record yet, first time in the batch), which of those
    /// repeat a visitor's unique click less than `window` ms away (the newest such click
    /// from the click's slot and the one before; a unique click becomes the visitor's
    /// last), what that adds to each counter, and each record field's new value (what
    /// it held, then a line per new click).
    fn decide(&self, lookups: &[Lookup<'_>], found: &[Vec<Value>], window: u64) -> Plan {
        use foldhash::{HashMap, HashSet};
        // Tokens with a record already; the record fields as read.
        let mut recorded: HashSet<&str> = HashSet::default();
        // As bytes: a field is extended, never rewritten, even if something else wrote it.
        let mut held: HashMap<(usize, u64), &[u8]> = HashMap::default();
        let mut marker: HashMap<(usize, &str), u64> = HashMap::default();
        for (l, reply) in lookups.iter().zip(found) {
            match &l.what {
                Looked::Slots(b, ms) => {
                    for (m, v) in ms.iter().zip(reply) {
                        if let Value::BulkString(bytes) = v {
                            held.insert((*b, *m), bytes);
                            // Tokens are ASCII: a line is read up to its first non-UTF-8 byte.
                            let text = match std::str::from_utf8(bytes) {
                                Ok(t) => t,
                                Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
                            };
                            recorded.extend(keys::slot_lines(text).map(|(token, _)| token));
                        }
                    }
                }
                Looked::Legacy(rows) => {
                    for (&i, have) in rows.iter().zip(reply) {
                        if !matches!(have, Value::Nil) {
                            recorded.insert(self.rows[i].token);
                        }
                    }
                }
                Looked::Repeats(r) => {
                    for (f, v) in l.fields.iter().zip(reply) {
                        if let Some(ts) = as_str(v).and_then(|t| t.parse::<u64>().ok()) {
                            marker.insert((*r, f.as_ref()), ts);
                        }
                    }
                }
            }
        }
        let mut in_batch: HashSet<&str> = HashSet::default();
        let is_new: Vec<bool> = self
            .rows
            .iter()
            .map(|row| row.kind > 0 && !recorded.contains(row.token) && in_batch.insert(row.token))
            .collect();
        // Each visitor's last unique click, from the buckets its new clicks look in.
        let mut last: HashMap<&str, u64> = HashMap::default();
        for (row, _) in self.rows.iter().zip(&is_new).filter(|(_, n)| **n) {
            let kind = self.kinds[row.kind - 1];
            for r in [kind[5], kind[6]] {
                if let Some(&ts) = marker.get(&(r, row.visitor.as_str())) {
                    let l = last.entry(row.visitor.as_str()).or_insert(ts);
                    *l = (*l).max(ts);
                }
            }
        }
        let mut plan = Plan {
            new: 0,
            records: vec![Vec::new(); self.buckets.len()],
            repeats: vec![Vec::new(); self.repeats.len()],
            counts: vec![(0, 0); self.dims.len()],
        };
        // Per (record hash, ms): the field's index in `plan.records`.
        let mut field_of: HashMap<(usize, u64), usize> = HashMap::default();
        for (row, _) in self.rows.iter().zip(&is_new).filter(|(_, n)| **n) {
            let kind = self.kinds[row.kind - 1];
            plan.new += 1;
            let b = kind[0] - 1;
            let fields = &mut plan.records[b];
            let f = *field_of.entry((b, row.token_ms)).or_insert_with(|| {
                let mut value = held.get(&(b, row.token_ms)).map_or_else(Vec::new, |h| h.to_vec());
                if value.last().is_some_and(|&c| c != b'\n') {
                    value.push(b'\n');
                }
                fields.push((row.token_ms, value));
                fields.len() - 1
            });
            let value = &mut fields[f].1;
            value.extend_from_slice(row.token.as_bytes());
            value.push(b' ');
            value.extend_from_slice(row.packed.as_bytes());
            value.push(b'\n');
            let repeated = last.get(row.visitor.as_str()).is_some_and(|&l| row.ts_ms.abs_diff(l) < window);
            if !repeated {
                last.insert(row.visitor.as_str(), row.ts_ms);
                plan.repeats[kind[5] - 1].extend([row.visitor.clone(), row.ts_ms.to_string()]);
            }
            for d in &kind[1..5] {
                let c = &mut plan.counts[d - 1];
                c.0 += 1;
                c.1 += u64::from(repeated);
            }
        }
        plan
    }
}

/// One `HMGET` of [`Batch::lookups`].
#[derive(Debug)]
struct Lookup<'b> {
    key: std::borrow::Cow<'b, str>,
    fields: Vec<std::borrow::Cow<'b, str>>,
    what: Looked,
}

/// What a [`Lookup`] asks for.
#[derive(Debug)]
enum Looked {
    /// The record fields of these ms (fields: the same, in order) in record hash `.0` (0-based).
    Slots(usize, Vec<u64>),
    /// Whether these rows' tokens have a record in the legacy layout (fields: their tokens).
    Legacy(Vec<usize>),
    /// Visitors' last unique click in this repeat bucket (1-based).
    Repeats(usize),
}

/// What a batch's transaction writes, from [`Batch::decide`].
#[derive(Debug)]
struct Plan {
    /// Clicks counted by this batch.
    new: u64,
    /// Per record hash: (ms, the field's whole new value) of each field it gains lines in.
    records: Vec<Vec<(u64, Vec<u8>)>>,
    /// Per repeat bucket: visitor field, click ms, … of the new unique clicks.
    repeats: Vec<Vec<String>>,
    /// Per dimension value: (clicks, repeat clicks) added.
    counts: Vec<(u64, u64)>,
}

/// The id of the first entry of an `XRANGE`/`XREVRANGE` reply.
fn first_id(v: &Value) -> Option<String> {
    let Value::Array(entries) = v else { return None };
    let Value::Array(entry) = entries.first()? else { return None };
    as_str(entry.first()?).map(str::to_owned)
}

/// The id before which applied entries may go (`XTRIM MINID`): `retention_ms` before the
/// last applied id; empty when that id is malformed or nothing is old enough.
fn trim_id(last_id: &str, retention_ms: u64) -> String {
    match parse_id(last_id) {
        Some((ms, seq)) if retention_ms == 0 => format!("{ms}-{seq}"),
        Some((ms, _)) if ms > retention_ms => format!("{}-0", ms - retention_ms),
        _ => String::new(),
    }
}

/// A stream id `ms-seq` as a comparable pair.
fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The calendar day (`YYYY-MM-DD`) of a Unix-ms instant in `tz`.
pub fn day_of(ts_ms: u64, tz: Tz) -> String {
    let ts = i64::try_from(ts_ms).unwrap_or(i64::MAX);
    match chrono::DateTime::from_timestamp_millis(ts) {
        Some(t) => {
            use chrono::Datelike as _;
            let d = t.with_timezone(&tz).date_naive();
            format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
        }
        None => "1970-01-01".to_owned(),
    }
}

/// The entries of an `XREAD` reply (RESP2 arrays) as `(id, field values in order: name,
/// value, name, value, …)`, moved out of the reply; malformed entries are skipped.
fn read_entries(v: Value) -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    let Value::Array(streams) = v else { return out };
    for stream in streams {
        let Value::Array(mut kv) = stream else { continue };
        let Some(Value::Array(items)) = kv.pop() else { continue };
        for item in items {
            let Value::Array(mut parts) = item else { continue };
            let fields = parts.pop();
            let id = parts.pop();
            let (Some(id), Some(Value::Array(fields))) = (id, fields) else { continue };
            let Some(id) = into_string(id) else { continue };
            out.push((id, fields));
        }
    }
    out
}

/// `(name, value)` pairs of an entry's fields, as strings (pairs that are not are skipped).
fn field_pairs(fields: Vec<Value>) -> impl Iterator<Item = (String, String)> {
    let mut it = fields.into_iter();
    std::iter::from_fn(move || Some((it.next()?, it.next()?)))
        .filter_map(|(name, value)| Some((into_string(name)?, into_string(value)?)))
}

/// Parses an `XREAD` reply into `(id, values of the named fields)`; a missing field is
/// empty; anything malformed is skipped.
fn parse_read_reply<const N: usize>(v: Value, names: [&str; N]) -> Vec<(String, [String; N])> {
    read_entries(v)
        .into_iter()
        .map(|(id, fields)| {
            let mut values: [String; N] = std::array::from_fn(|_| String::new());
            for (name, value) in field_pairs(fields) {
                if let Some(i) = names.iter().position(|f| *f == name) {
                    values[i] = value;
                }
            }
            (id, values)
        })
        .collect()
}

/// Parses an `XREAD` reply of the click stream into `(id, clicks)`, each click its
/// `[token, record]`: an entry's `clicks` field holds one line per click
/// ([`crate::store::xadd_clicks`]); entries written before that field existed hold a
/// `tok`/`rec` group per click, in order. Other fields are skipped. Anything malformed
/// is skipped; an entry without a click yields no clicks.
fn parse_click_entries(v: Value) -> Vec<(String, Vec<[String; 2]>)> {
    let [f_tok, f_rec] = keys::LEGACY_CLICK_FIELDS;
    read_entries(v)
        .into_iter()
        .map(|(id, fields)| {
            let mut clicks: Vec<[String; 2]> = Vec::new();
            // The click a legacy `rec` belongs to: the one its `tok` started, never a line.
            let mut open_tok: Option<usize> = None;
            for (name, value) in field_pairs(fields) {
                if name == keys::CLICKS_FIELD {
                    clicks.extend(
                        crate::store::entry_clicks(&value)
                            .map(|(token, record, _)| [token.to_owned(), record.to_owned()]),
                    );
                    open_tok = None;
                } else if name == f_tok {
                    clicks.push([value, String::new()]);
                    open_tok = Some(clicks.len() - 1);
                } else if name == f_rec
                    && let Some(click) = open_tok.and_then(|i| clicks.get_mut(i))
                {
                    click[1] = value;
                }
            }
            (id, clicks)
        })
        .collect()
}

fn into_string(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn as_str(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn click_entries_of_both_layouts_parse() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry =
            |id: &str, fields: &[&str]| Value::Array(vec![b(id), Value::Array(fields.iter().map(|f| b(f)).collect())]);
        let reply = Value::Array(vec![Value::Array(vec![
            b("ll:clicks"),
            Value::Array(vec![
                entry("1-0", &["tok", "t1", "rec", "r1"]),
                entry("2-0", &["tok", "t2", "rec", "r2", "tok", "t3", "rec", "r3"]),
                entry("3-0", &["reason", "x"]),
                entry("4-0", &["clicks", "t4 r4\nt5 r5"]),
                entry("5-0", &["clicks", "t6 r6"]),
                entry("6-0", &["tok", "t7", "clicks", "t8 r8", "rec", "r7"]),
            ]),
        ])]);
        let got = parse_click_entries(reply);
        assert_eq!(got.len(), 6);
        let pair = |t: &str, r: &str| [t.to_owned(), r.to_owned()];
        // Entries of the earlier layout: a tok/rec group per click.
        assert_eq!(got[0], ("1-0".to_owned(), vec![pair("t1", "r1")]));
        assert_eq!(got[1].1, vec![pair("t2", "r2"), pair("t3", "r3")]);
        assert!(got[2].1.is_empty(), "an entry without a click has none");
        // The current layout: one `clicks` field, a line per click.
        assert_eq!(got[3], ("4-0".to_owned(), vec![pair("t4", "r4"), pair("t5", "r5")]));
        assert_eq!(got[4].1, vec![pair("t6", "r6")]);
        // Mixed (never written): a legacy `rec` belongs to its `tok`, not to a line.
        assert_eq!(got[5].1, vec![pair("t7", ""), pair("t8", "r8")]);
    }

    /// A click-stream entry as the gateway writes it: a v7 token of `ms` and its record.
    fn click_entry(id: &str, ms: u64, ua: &str) -> (Entry, String) {
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, (ms % 1000) as u32 * 1_000_000);
        let token = uuid::Uuid::new_v7(ts).hyphenated().to_string();
        let rec = format!("1|{ms}|65682d4500000000380339a5|c1|taobao|533000737918|||0123456789abcdef|{ua}|");
        assert!(PackedRecord::parse(&rec).is_some(), "{rec}");
        (Entry { id: id.to_owned(), fields: [token.clone(), rec] }, token)
    }

    #[tokio::test]
    async fn decide_counts_new_clicks_once_and_repeats_within_the_window() {
        let ms = 1_795_968_000_000u64; // on a 30-minute slot boundary
        let window = 1_800_000;
        let (a, tok_a) = click_entry("1-0", ms + 10, "app");
        let (b, _) = click_entry("1-0", ms + 20, "app"); // same visitor as a
        let (c, _) = click_entry("2-0", ms + 30, "desktop"); // another visitor
        let (d, tok_d) = click_entry("2-0", ms + 40, "desktop"); // already recorded
        let bad = Entry { id: "3-0".into(), fields: Default::default() };
        let entries = vec![a.clone(), a, b, c, d, bad];
        let opts = AggregatorOptions {
            batch: 128,
            click_ttl_ms: 8 * 86_400_000,
            repeat_window_ms: window,
            tz: chrono_tz::Asia::Shanghai,
            stream_retention_ms: 0,
        };
        let batch = Batch::build(&entries, &opts, 0, true).await;
        assert_eq!(batch.rows.last().map(|r| r.kind), Some(0), "malformed entry passed over");
        let lookups = batch.lookups();
        // One record hash (one minute) with the field of every token's ms, once; the slot's
        // repeat bucket and the one before, each asked once per visitor.
        assert_eq!(lookups.len(), 3);
        assert_eq!(lookups[0].key, format!("ll:crs:{}", (ms + 10) / 60_000));
        let ms_fields: Vec<String> = [10, 20, 30, 40].iter().map(|d| (ms + d).to_string()).collect();
        assert_eq!(lookups[0].fields, ms_fields);
        let (app_visitor, desktop_visitor) = (batch.rows[0].visitor.as_str(), batch.rows[3].visitor.as_str());
        assert_ne!(app_visitor, desktop_visitor);
        assert_eq!(lookups[1].key, format!("ll:rpt:{window}:{}", ms / window));
        assert_eq!(lookups[1].fields, [app_visitor, desktop_visitor]);
        assert_eq!(lookups[2].key, format!("ll:rpt:{window}:{}", ms / window - 1));
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let line = |e: &Entry| format!("{} {}\n", e.fields[0], e.fields[1]);
        // d's ms field already holds d (recorded); a's holds another click of that ms.
        let other = "019ad4ad-9a40-7000-8000-000000000000 1|5|n|c|taobao|1|||0123456789abcdef|app|";
        let found = vec![
            vec![bulk(other), Value::Nil, Value::Nil, bulk(&line(&entries[4]))],
            vec![Value::Nil, Value::Nil],
            // The app visitor's last unique click, 5 s before the slot: within the window.
            vec![bulk(&(ms - 5_000).to_string()), bulk("not a number")],
        ];
        let plan = batch.decide(&lookups, &found, window);
        assert_eq!(plan.new, 3, "a once (not its copy), b, c; not d (recorded)");
        // Each touched field's whole new value: what it held, then a line per new click.
        let text = |fields: &[(u64, Vec<u8>)]| -> Vec<(u64, String)> {
            fields.iter().map(|(ms, v)| (*ms, String::from_utf8(v.clone()).unwrap())).collect()
        };
        let written = text(&plan.records[0]);
        assert_eq!(
            written,
            [
                (ms + 10, format!("{other}\n{}", line(&entries[0]))),
                (ms + 20, line(&entries[2])),
                (ms + 30, line(&entries[3])),
            ]
        );
        assert_eq!(keys::slot_record(&written[0].1, &tok_a), Some(entries[0].fields[1].as_str()));
        // a and b repeat the app visitor's earlier click; c is the desktop visitor's first.
        assert_eq!(plan.counts, vec![(3, 2); 4]);
        assert_eq!(plan.repeats[0], [desktop_visitor.to_owned(), (ms + 30).to_string()]);
        assert!(plan.repeats[1].is_empty());

        // Nothing recorded, no markers: a and c unique, b repeats a.
        let found = vec![vec![Value::Nil; 4], vec![Value::Nil; 2], vec![Value::Nil; 2]];
        let plan = batch.decide(&lookups, &found, window);
        assert_eq!(plan.new, 4);
        assert_eq!(plan.counts, vec![(4, 2); 4], "b repeats a, d repeats c");
        assert_eq!(plan.records[0].len(), 4);
        assert_eq!(
            plan.repeats[0],
            [app_visitor.to_owned(), (ms + 10).to_string(), desktop_visitor.to_owned(), (ms + 30).to_string()]
        );

        // Clicks minted before the aggregator started are also looked for in the legacy
        // layout (field = token): d is recorded there.
        let batch = Batch::build(&entries, &opts, u64::MAX, false).await;
        let lookups = batch.lookups();
        assert_eq!(lookups.len(), 4);
        assert_eq!(lookups[1].key, format!("ll:cr:{}", (ms + 10) / 60_000));
        assert_eq!(
            lookups[1].fields,
            [&tok_a, &tok_a, &entries[2].fields[0], &entries[3].fields[0], &tok_d].map(|t| t.as_str())
        );
        let found = vec![
            vec![Value::Nil; 4],
            vec![Value::Nil, Value::Nil, Value::Nil, Value::Nil, bulk("1|…")],
            vec![Value::Nil; 2],
            vec![Value::Nil; 2],
        ];
        let plan = batch.decide(&lookups, &found, window);
        assert_eq!(plan.new, 3, "a once, b, c; not d (recorded in the legacy layout)");
        assert!(text(&plan.records[0]).iter().all(|(_, v)| !v.contains(&tok_d)));

        // A field holding bytes that are not UTF-8 (written by something else) is extended
        // byte for byte, never rewritten.
        let batch = Batch::build(&entries, &opts, 0, true).await;
        let lookups = batch.lookups();
        let mut odd = format!("{other}\n").into_bytes();
        odd.extend_from_slice(b"\xff\xfe");
        let found = vec![
            vec![Value::BulkString(odd.clone()), Value::Nil, Value::Nil, bulk(&line(&entries[4]))],
            vec![Value::Nil; 2],
            vec![Value::Nil; 2],
        ];
        let plan = batch.decide(&lookups, &found, window);
        assert_eq!(plan.new, 3, "a, b, c; d is recorded");
        let mut want = odd;
        want.push(b'\n');
        want.extend_from_slice(line(&entries[0]).as_bytes());
        assert_eq!(plan.records[0][0], (ms + 10, want));
    }

    #[test]
    fn applied_entries_are_trimmed_after_the_retention() {
        // Retention 0: everything before the last applied entry may go.
        assert_eq!(trim_id("1764500000123-7", 0), "1764500000123-7");
        assert_eq!(trim_id("1764500000123-7", 60_000), "1764499940123-0");
        // Nothing that old yet, or a malformed id: no trim.
        assert_eq!(trim_id("5000-0", 60_000), "");
        assert_eq!(trim_id("garbage", 0), "");
    }

    #[test]
    fn shanghai_day_boundary() {
        // 2026-11-29T16:00:00Z is 2026-11-30T00:00:00+08:00.
        let midnight = 1_795_968_000_000u64;
        assert_eq!(day_of(midnight - 1, chrono_tz::Asia::Shanghai), "2026-11-29");
        assert_eq!(day_of(midnight, chrono_tz::Asia::Shanghai), "2026-11-30");
        assert_eq!(day_of(midnight - 1, chrono_tz::UTC), "2026-11-29");
    }
}
