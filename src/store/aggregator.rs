//! The aggregator: derives the click record, per-day counters and UV from the
//! click stream, off the redirect's hot path.
//!
//! Invariants (see `docs/redis-schema.md`):
//! - **Exact.** A click is counted iff its click record (field `{token}` of the
//!   minute bucket `ll:cr:{minute}`) is created. A batch is applied by one Lua
//!   script that, per bucket, checks which tokens are recorded (`HMGET`; those, and
//!   a token twice in the batch, are skipped) and writes the new records (`HSET`),
//!   flags repeats from the `ll:rpt:*` buckets the same way, adds the batch's counts
//!   with one `HINCRBY` per counter and one `PFADD` per HLL, and advances the cursor
//!   `ll:agg:cursor` to the batch's last stream id.
//!   Entries at or below the cursor are skipped. Scripts run atomically, so a
//!   batch is either fully applied with its cursor move, or not at all.
//! - **Crash-safe.** Reading always resumes from the cursor stored in Redis, so
//!   after a crash (of the gateway or of Redis, whose append-only file holds the
//!   script's effects together) the next pass re-reads exactly what was not applied.
//!   No consumer-group bookkeeping per entry: a cursor costs nothing per click.
//! - **The stream only buffers.** Once a batch is applied, the script trims the stream
//!   before the batch's last id (less `click_stream_retention_ms`): every entry there is
//!   applied (the cursor is at or past it), and its clicks live on in their records.
//! - **Bounded lag, big batches.** After a short batch it waits [`IDLE`] before
//!   reading again, so under load each script call applies hundreds of clicks;
//!   lag stays under [`IDLE`] + one pass. [`Aggregator::catch_up`] lets a caller
//!   (a conversion for a click seconds old) apply everything appended so far.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono_tz::Tz;
use redis::Value;
use redis::aio::ConnectionManager;
use tokio::sync::{Mutex, watch};

use super::keys::{self, Dim};
use crate::click::PackedRecord;
use crate::metrics::Metrics;
use crate::platform::Platform;
use crate::store::conversions::{CONVERSION_STREAM, ConversionDeltas};

/// Longest a read waits on an idle stream.
pub const BLOCK: Duration = Duration::from_millis(100);
/// Pause after a batch shorter than the batch size, so batches grow under load.
pub const IDLE: Duration = Duration::from_millis(50);
/// While behind (entries were left waiting by the last pass), a batch holds up to this many
/// times `aggregator_batch` clicks: fewer round trips per click when the redirect saturates
/// the core, the configured size (shorter script calls, a shorter redirect tail) otherwise.
pub const BEHIND_FACTOR: usize = 4;

/// Applies a batch of click-stream entries atomically; returns how many were new.
///
/// ARGV: 1 cursor key, 2 last stream id of the batch, 3 n (clicks), 4 m (distinct
/// dimension values), 5 repeat window (ms), 6 nb (click-record buckets), 7 nr (repeat
/// buckets), 8 nk (kinds), 9 click stream key, 10 trim id (entries before it are trimmed
/// once the batch is applied, `XTRIM MINID ~`; empty: none); then m agg keys; then the m
/// matching uv keys; then nb pairs (bucket key, expire-at ms); then nr pairs (repeat key, expire-at ms); then nk kinds
/// of 7 indexes each (record bucket, note, creator, item, platform, repeat bucket of the
/// click's slot, of the slot before (0: none)): what clicks of one link in one minute
/// share, sent once; then per click 5 values: kind (0: malformed entry, passed over),
/// click token, packed record, click ms, visitor field; then per dimension value
/// (1..=m) a count and that many distinct visitors of the batch (PFADD is idempotent,
/// so visitors are added whether or not their click was new).
///
/// Per bucket, not per click: one `HMGET` finds which tokens already have a record
/// (a replayed click), one `HSET` writes the new ones; the same for repeat markers.
/// The whole batch is skipped when the cursor is already at or past its last id.
/// Few values per click: each costs Redis an argument object and Lua a string.
const APPLY_SCRIPT: &str = concat!(
    after_fn!(),
    r#"
local cursor = redis.call('GET', ARGV[1])
if cursor and not after(ARGV[2], cursor) then return 0 end
local n, m, window = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local nb, nr, nk = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local H = 10
local kb = H + 2 * m
local kr = kb + 2 * nb
local kk = kr + 2 * nr
local eb = kk + 7 * nk
local W = 5
local kinds = {}
for k = 1, nk do
  local t = {}
  for j = 1, 7 do t[j] = tonumber(ARGV[kk + 7 * (k - 1) + j]) end
  kinds[k] = t
end
local function add(t, k, v) local l = t[k]; if not l then l = {}; t[k] = l end; l[#l + 1] = v end
-- 1. Click records: which tokens are new (one HMGET per bucket), then write them.
local kind, kidx, byb = {}, {}, {}
for i = 0, n - 1 do
  local ki = tonumber(ARGV[eb + i * W + 1])
  local k = kinds[ki]
  if k then kind[i] = k; kidx[i] = ki; add(byb, k[1], i) end
end
local isnew, batch = {}, {}
for b, l in pairs(byb) do
  local key = ARGV[kb + 2 * b - 1]
  local fields = {}
  for j, i in ipairs(l) do fields[j] = ARGV[eb + i * W + 2] end
  local have = redis.call('HMGET', key, unpack(fields))
  local put = {}
  for j, i in ipairs(l) do
    local tok = fields[j]
    if not have[j] and not batch[tok] then
      batch[tok] = true
      isnew[i] = true
      put[#put + 1] = tok
      put[#put + 1] = ARGV[eb + i * W + 3]
    end
  end
  if #put > 0 then
    redis.call('HSET', key, unpack(put))
    redis.call('PEXPIREAT', key, ARGV[kb + 2 * b])
  end
end
-- 2. Repeat clicks: each visitor's last unique click from its slot and the one before.
local want, asked = {}, {}
local function ask(r, f)
  local s = asked[r]
  if not s then s = {}; asked[r] = s end
  if not s[f] then s[f] = true; add(want, r, f) end
end
for i = 0, n - 1 do
  if isnew[i] then
    local k, f = kind[i], ARGV[eb + i * W + 5]
    ask(k[6], f)
    if k[7] > 0 then ask(k[7], f) end
  end
end
local last = {}
for r, fields in pairs(want) do
  local got = redis.call('HMGET', ARGV[kr + 2 * r - 1], unpack(fields))
  for j, f in ipairs(fields) do
    local t = tonumber(got[j])
    if t and (not last[f] or t > last[f]) then last[f] = t end
  end
end
local kcnt, krep, rput = {}, {}, {}
local new = 0
for i = 0, n - 1 do
  if isnew[i] then
    local e, k = eb + i * W, kind[i]
    new = new + 1
    local ts, f = tonumber(ARGV[e + 4]), ARGV[e + 5]
    local l = last[f]
    local repeated = l and math.abs(ts - l) < window
    if not repeated then
      last[f] = ts
      add(rput, k[6], f)
      add(rput, k[6], ARGV[e + 4])
    end
    local ki = kidx[i]
    kcnt[ki] = (kcnt[ki] or 0) + 1
    if repeated then krep[ki] = (krep[ki] or 0) + 1 end
  end
end
-- Counts per kind, then per dimension value (a kind names its four).
local cnt, rep = {}, {}
for ki, c in pairs(kcnt) do
  local k, r = kinds[ki], krep[ki] or 0
  for j = 2, 5 do
    local d = k[j]
    cnt[d] = (cnt[d] or 0) + c
    if r > 0 then rep[d] = (rep[d] or 0) + r end
  end
end
for r, p in pairs(rput) do
  local key = ARGV[kr + 2 * r - 1]
  redis.call('HSET', key, unpack(p))
  redis.call('PEXPIREAT', key, ARGV[kr + 2 * r])
end
for d, c in pairs(cnt) do redis.call('HINCRBY', ARGV[H + d], 'clicks', c) end
for d, c in pairs(rep) do redis.call('HINCRBY', ARGV[H + d], 'repeat_clicks', c) end
local v = eb + W * n + 1
for d = 1, m do
  local c = tonumber(ARGV[v])
  if c > 0 then redis.call('PFADD', ARGV[H + m + d], unpack(ARGV, v + 1, v + c)) end
  v = v + 1 + c
end
redis.call('SET', ARGV[1], ARGV[2])
-- Applied entries are in the records now: the stream keeps only what waits (and the
-- configured retention), whole nodes at a time.
if ARGV[10] ~= '' then redis.call('XTRIM', ARGV[9], 'MINID', '~', ARGV[10]) end
return new
"#
);

/// Lua: is stream id `a` after stream id `b`? (Shared by the scripts below.)
macro_rules! after_fn {
    () => {
        r#"
local function after(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
"#
    };
}
use after_fn;

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
    /// Entries applied per script call.
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
    conn: ConnectionManager,
    script: redis::Script,
    conversion_script: redis::Script,
    opts: AggregatorOptions,
    metrics: Arc<Metrics>,
    /// Serialises apply passes of the loop and of [`Aggregator::catch_up`]; held only
    /// while applying, never across the blocking read.
    apply: Mutex<()>,
    /// Clicks per stream entry in the last batch read (sizes the next read).
    clicks_per_entry: AtomicUsize,
    /// Whether the last pass left entries waiting (the next one takes a bigger batch).
    behind: AtomicBool,
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
    /// `tok` and `rec` values.
    fields: [String; 2],
}

impl Aggregator {
    /// Builds an aggregator on its own connection (its blocking reads must not
    /// stall the hot path's pipelined connection).
    pub fn new(conn: ConnectionManager, opts: AggregatorOptions, metrics: Arc<Metrics>) -> Self {
        Self {
            conn,
            script: redis::Script::new(APPLY_SCRIPT),
            conversion_script: redis::Script::new(APPLY_CONVERSIONS_SCRIPT),
            opts,
            metrics,
            apply: Mutex::new(()),
            clicks_per_entry: AtomicUsize::new(1),
            behind: AtomicBool::new(false),
        }
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
    /// promptly under load). Returns how many click-stream entries it read.
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
        let _guard = self.apply.lock().await;
        let cursor: Option<String> = redis::cmd("GET").arg(keys::AGGREGATOR_CURSOR).query_async(&mut conn).await?;
        // Entries hold a group commit each: read about `batch` clicks' worth.
        // Behind (the last pass left entries waiting): bigger batches, fewer round trips.
        let batch = if self.behind.load(Ordering::Relaxed) { self.opts.batch * BEHIND_FACTOR } else { self.opts.batch };
        let count = batch / self.clicks_per_entry.load(Ordering::Relaxed).max(1) + 1;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(count).arg("STREAMS").arg(keys::CLICK_STREAM);
        cmd.arg(cursor.as_deref().unwrap_or("0-0"));
        let reply: Value = cmd.query_async(&mut conn).await?;
        // Whole stream entries, at most `batch` clicks (at least one entry): the cursor
        // moves by entries. An entry without a click is kept as one malformed row, so
        // the cursor passes it.
        let mut entries: Vec<Entry> = Vec::with_capacity(batch);
        let mut read_entries = 0usize;
        let got = parse_click_entries(reply);
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
            return Ok((0, false));
        }
        self.behind.store(more, Ordering::Relaxed);
        let per_entry = (entries.len() / read_entries).max(1);
        self.clicks_per_entry.store(per_entry, Ordering::Relaxed);
        let read = entries.len() as u64;
        let new = self.apply_batch(&entries).await?;
        self.metrics.clicks_aggregated.inc_by(new);
        let now_ms = crate::click::now_ms();
        for e in &entries {
            if let Some(ms) = e.id.split('-').next().and_then(|m| m.parse::<u64>().ok()) {
                self.metrics.aggregation_lag.observe(now_ms.saturating_sub(ms) as f64 / 1000.0);
            }
        }
        Ok((read, more))
    }

    async fn apply_batch(&self, entries: &[Entry]) -> redis::RedisResult<u64> {
        let mut inv = self.script.prepare_invoke();
        let last_id = entries.last().map_or("0-0", |e| e.id.as_str());
        let batch = Batch::build(entries, &self.opts);
        inv.arg(keys::AGGREGATOR_CURSOR)
            .arg(last_id)
            .arg(batch.rows.len())
            .arg(batch.dims.len())
            .arg(self.opts.repeat_window_ms.max(1))
            .arg(batch.buckets.len())
            .arg(batch.repeats.len())
            .arg(batch.kinds.len())
            .arg(keys::CLICK_STREAM)
            .arg(trim_id(last_id, self.opts.stream_retention_ms));
        for (agg, _) in &batch.dims {
            inv.arg(agg);
        }
        for (_, uv) in &batch.dims {
            inv.arg(uv);
        }
        for (key, at) in batch.buckets.iter().chain(&batch.repeats) {
            inv.arg(key).arg(*at);
        }
        for kind in &batch.kinds {
            for i in kind {
                inv.arg(*i);
            }
        }
        for r in &batch.rows {
            inv.arg(r.kind).arg(r.token).arg(r.packed).arg(r.ts_ms).arg(&r.visitor);
        }
        for set in &batch.visitors {
            inv.arg(set.len());
            for v in set {
                inv.arg(*v);
            }
        }
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn).await
    }
}

/// One click's arguments to [`APPLY_SCRIPT`]; `kind` is 1-based, 0 = malformed.
#[derive(Debug, Default)]
struct Row<'a> {
    kind: usize,
    token: &'a str,
    packed: &'a str,
    ts_ms: u64,
    visitor: String,
}

/// What clicks of one link in one minute share (1-based indexes into the batch's
/// tables): record bucket, the four dimension values, repeat bucket of the slot and
/// of the slot before (0: none).
type Kind = [usize; 7];

/// A batch laid out for [`APPLY_SCRIPT`]: the key tables and one row per entry.
#[derive(Debug, Default)]
struct Batch<'a> {
    /// Distinct dimension values: (agg key, uv key).
    dims: Vec<(String, String)>,
    /// Click-record buckets: (key, expire-at ms).
    buckets: Vec<(String, u64)>,
    /// Repeat buckets: (key, expire-at ms).
    repeats: Vec<(String, u64)>,
    /// Distinct kinds of the batch's clicks.
    kinds: Vec<Kind>,
    rows: Vec<Row<'a>>,
    /// Distinct visitors (ip hashes) per dimension value.
    visitors: Vec<std::collections::BTreeSet<&'a str>>,
}

impl<'a> Batch<'a> {
    fn build(entries: &'a [Entry], opts: &AggregatorOptions) -> Batch<'a> {
        use std::collections::HashMap;
        let mut b = Batch::default();
        let window = opts.repeat_window_ms.max(1);
        let mut dim_index: HashMap<String, usize> = HashMap::new();
        let mut bucket_index: HashMap<u64, usize> = HashMap::new();
        let mut repeat_index: HashMap<u64, usize> = HashMap::new();
        let mut kind_index: HashMap<Kind, usize> = HashMap::new();
        // A batch holds few distinct links and days: their four indexes are computed once.
        let mut group_index: HashMap<(&str, &str, Platform, u64, u64), [usize; 4]> = HashMap::new();
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
        for e in entries {
            let [tok, packed] = &e.fields;
            let parsed = uuid::Uuid::try_parse(tok).ok().and_then(|t| keys::token_minute(&t));
            let (Some(minute), Some(rec)) = (parsed, PackedRecord::parse(packed)) else {
                tracing::warn!(stream.id = %e.id, "aggregator: skipping malformed click-stream entry");
                b.rows.push(Row::default());
                continue;
            };
            let bucket_at = (minute + 1).saturating_mul(60_000).saturating_add(opts.click_ttl_ms);
            let bucket = index_of(&mut b.buckets, &mut bucket_index, minute, || keys::click_bucket(minute), bucket_at);
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
                visitor: keys::visitor(rec.note_id, p, item, rec.ip_hash, rec.ua),
            });
        }
        if b.dims.is_empty() {
            // Only malformed entries: a placeholder key table keeps the script's indexes valid.
            b.dims.push((String::new(), String::new()));
            b.visitors.push(std::collections::BTreeSet::new());
        }
        b
    }
}

/// The id of the first entry of an `XRANGE`/`XREVRANGE` reply.
fn first_id(v: &Value) -> Option<String> {
    let Value::Array(entries) = v else { return None };
    let Value::Array(entry) = entries.first()? else { return None };
    as_string(entry.first()?)
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
/// `[tok, rec]` values: an entry holds one `tok`/`rec` group per click, in order (other
/// fields, such as `reason`, are skipped). Anything malformed is skipped; an entry
/// without a `tok` yields no clicks.
fn parse_click_entries(v: Value) -> Vec<(String, Vec<[String; 2]>)> {
    let [f_tok, f_rec] = keys::CLICK_FIELDS;
    read_entries(v)
        .into_iter()
        .map(|(id, fields)| {
            let mut clicks: Vec<[String; 2]> = Vec::with_capacity(fields.len() / 4);
            for (name, value) in field_pairs(fields) {
                if name == f_tok {
                    clicks.push([value, String::new()]);
                } else if name == f_rec
                    && let Some(click) = clicks.last_mut()
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

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn click_entries_hold_one_group_per_click() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry =
            |id: &str, fields: &[&str]| Value::Array(vec![b(id), Value::Array(fields.iter().map(|f| b(f)).collect())]);
        let reply = Value::Array(vec![Value::Array(vec![
            b("ll:clicks"),
            Value::Array(vec![
                entry("1-0", &["tok", "t1", "rec", "r1"]),
                entry("2-0", &["tok", "t2", "rec", "r2", "tok", "t3", "rec", "r3"]),
                entry("3-0", &["reason", "x"]),
            ]),
        ])]);
        let got = parse_click_entries(reply);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], ("1-0".to_owned(), vec![["t1".to_owned(), "r1".to_owned()]]));
        assert_eq!(got[1].1, vec![["t2".to_owned(), "r2".to_owned()], ["t3".to_owned(), "r3".to_owned()]]);
        assert!(got[2].1.is_empty(), "an entry without tok has no click");
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
