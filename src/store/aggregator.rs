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
//! - **Bounded lag, big batches.** After a short batch it waits [`IDLE`] before
//!   reading again, so under load each script call applies hundreds of clicks;
//!   lag stays under [`IDLE`] + one pass. [`Aggregator::catch_up`] lets a caller
//!   (a conversion for a click seconds old) apply everything appended so far.

use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use redis::Value;
use redis::aio::ConnectionManager;
use tokio::sync::{Mutex, watch};

use super::keys::{self, Dim};
use crate::click::ClickRecord;
use crate::metrics::Metrics;
use crate::platform::Platform;
use crate::store::conversions::{CONVERSION_STREAM, ConversionDeltas};

/// Longest a read waits on an idle stream.
pub const BLOCK: Duration = Duration::from_millis(100);
/// Pause after a batch shorter than the batch size, so batches grow under load.
pub const IDLE: Duration = Duration::from_millis(50);

/// Applies a batch of click-stream entries atomically; returns how many were new.
///
/// ARGV: 1 cursor key, 2 last stream id of the batch, 3 n (entries), 4 m (distinct
/// dimension values), 5 repeat window (ms), 6 nb (click-record buckets), 7 nr (repeat
/// buckets); then m agg keys; then the m matching uv keys; then nb pairs (bucket key,
/// expire-at ms); then nr pairs (repeat key, expire-at ms); then per entry
/// 11 values: record-bucket index (0: malformed entry, passed over), click
/// token, packed record, click ms, four indexes into the dimension tables (note,
/// creator, item, platform), visitor field, repeat-bucket index of the click's slot,
/// of the slot before (0: none); then per dimension value (1..=m) a count and that
/// many distinct visitors of the batch (PFADD is idempotent, so visitors are added
/// whether or not their click was new).
///
/// Per bucket, not per click: one `HMGET` finds which tokens already have a record
/// (a replayed click), one `HSET` writes the new ones; the same for repeat markers.
/// The whole batch is skipped when the cursor is already at or past its last id.
const APPLY_SCRIPT: &str = concat!(
    after_fn!(),
    r#"
local cursor = redis.call('GET', ARGV[1])
if cursor and not after(ARGV[2], cursor) then return 0 end
local n, m, window = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local nb, nr = tonumber(ARGV[6]), tonumber(ARGV[7])
local kb = 7 + 2 * m
local kr = kb + 2 * nb
local eb = kr + 2 * nr
local W = 11
local function add(t, k, v) local l = t[k]; if not l then l = {}; t[k] = l end; l[#l + 1] = v end
-- 1. Click records: which tokens are new (one HMGET per bucket), then write them.
local byb = {}
for i = 0, n - 1 do
  local b = tonumber(ARGV[eb + i * W + 1])
  if b > 0 then add(byb, b, i) end
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
local want = {}
for i = 0, n - 1 do
  if isnew[i] then
    local e = eb + i * W
    for k = 10, 11 do
      local r = tonumber(ARGV[e + k])
      if r > 0 then add(want, r, ARGV[e + 9]) end
    end
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
local cnt, rep, rput = {}, {}, {}
local new = 0
for i = 0, n - 1 do
  if isnew[i] then
    local e = eb + i * W
    new = new + 1
    local ts, f = tonumber(ARGV[e + 4]), ARGV[e + 9]
    local l = last[f]
    local repeated = l and math.abs(ts - l) < window
    if not repeated then
      last[f] = ts
      local r = tonumber(ARGV[e + 10])
      add(rput, r, f)
      add(rput, r, ARGV[e + 4])
    end
    for j = 5, 8 do
      local d = tonumber(ARGV[e + j])
      cnt[d] = (cnt[d] or 0) + 1
      if repeated then rep[d] = (rep[d] or 0) + 1 end
    end
  end
end
for r, p in pairs(rput) do
  local key = ARGV[kr + 2 * r - 1]
  redis.call('HSET', key, unpack(p))
  redis.call('PEXPIREAT', key, ARGV[kr + 2 * r])
end
for d, c in pairs(cnt) do redis.call('HINCRBY', ARGV[7 + d], 'clicks', c) end
for d, c in pairs(rep) do redis.call('HINCRBY', ARGV[7 + d], 'repeat_clicks', c) end
local v = eb + W * n + 1
for d = 1, m do
  local c = tonumber(ARGV[v])
  if c > 0 then redis.call('PFADD', ARGV[7 + m + d], unpack(ARGV, v + 1, v + c)) end
  v = v + 1 + c
end
redis.call('SET', ARGV[1], ARGV[2])
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
}

impl std::fmt::Debug for Aggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregator").field("opts", &self.opts).finish_non_exhaustive()
    }
}

/// One click-stream entry as read back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Entry {
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
        }
    }

    /// Runs until `shutdown` turns true: reads from the cursor, applies, repeats.
    /// Redis errors are logged and retried after a pause.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            let step = async {
                let read = self.pass(Some(BLOCK)).await?;
                while self.conversion_pass().await? >= self.opts.batch as u64 {}
                if read < self.opts.batch as u64 {
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
            let n = if stream == CONVERSION_STREAM { self.conversion_pass().await? } else { self.pass(None).await? };
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
    /// never re-read a batch another is applying. Returns the entries read.
    async fn pass(&self, block: Option<Duration>) -> redis::RedisResult<u64> {
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
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(self.opts.batch).arg("STREAMS").arg(keys::CLICK_STREAM);
        cmd.arg(cursor.as_deref().unwrap_or("0-0"));
        let reply: Value = cmd.query_async(&mut conn).await?;
        let entries: Vec<Entry> =
            parse_read_reply(reply, keys::CLICK_FIELDS).into_iter().map(|(id, fields)| Entry { id, fields }).collect();
        if entries.is_empty() {
            return Ok(0);
        }
        let read = entries.len() as u64;
        let new = self.apply_batch(&entries).await?;
        self.metrics.clicks_aggregated.inc_by(new);
        let now_ms = crate::click::now_ms();
        for e in &entries {
            if let Some(ms) = e.id.split('-').next().and_then(|m| m.parse::<u64>().ok()) {
                self.metrics.aggregation_lag.observe(now_ms.saturating_sub(ms) as f64 / 1000.0);
            }
        }
        Ok(read)
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
            .arg(batch.repeats.len());
        for (agg, _) in &batch.dims {
            inv.arg(agg);
        }
        for (_, uv) in &batch.dims {
            inv.arg(uv);
        }
        for (key, at) in batch.buckets.iter().chain(&batch.repeats) {
            inv.arg(key).arg(*at);
        }
        for r in &batch.rows {
            inv.arg(r.bucket).arg(r.token).arg(r.packed).arg(r.ts_ms);
            for i in r.dims {
                inv.arg(i);
            }
            inv.arg(&r.visitor).arg(r.repeat).arg(r.repeat_prev);
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

/// One entry's arguments to [`APPLY_SCRIPT`]; indexes are 1-based, 0 = none.
#[derive(Debug, Default)]
struct Row<'a> {
    bucket: usize,
    token: &'a str,
    packed: &'a str,
    ts_ms: u64,
    dims: [usize; 4],
    visitor: String,
    repeat: usize,
    repeat_prev: usize,
}

/// A batch laid out for [`APPLY_SCRIPT`]: the key tables and one row per entry.
#[derive(Debug, Default)]
struct Batch<'a> {
    /// Distinct dimension values: (agg key, uv key).
    dims: Vec<(String, String)>,
    /// Click-record buckets: (key, expire-at ms).
    buckets: Vec<(String, u64)>,
    /// Repeat buckets: (key, expire-at ms).
    repeats: Vec<(String, u64)>,
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
            let (Some(minute), Some(rec)) = (parsed, ClickRecord::from_packed(packed)) else {
                tracing::warn!(stream.id = %e.id, "aggregator: skipping malformed click-stream entry");
                b.rows.push(Row { dims: [1; 4], ..Row::default() });
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
            let note = note_of(packed);
            let creator = creator_of(packed);
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
            let ip = ip_of(packed);
            for i in dims {
                if let Some(set) = b.visitors.get_mut(i - 1) {
                    set.insert(ip);
                }
            }
            b.rows.push(Row {
                bucket,
                token: tok,
                packed,
                ts_ms: rec.ts_ms,
                dims,
                visitor: keys::visitor(&rec.note_id, p, item, &rec.ip_hash, &rec.ua),
                repeat,
                repeat_prev,
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

/// Field `i` (0-based, after the version) of a packed record already validated by
/// [`ClickRecord::from_packed`], borrowed from it.
fn packed_field(packed: &str, i: usize) -> &str {
    packed.split('|').nth(i + 1).unwrap_or("")
}

fn note_of(packed: &str) -> &str {
    packed_field(packed, 1)
}

fn creator_of(packed: &str) -> &str {
    packed_field(packed, 2)
}

fn ip_of(packed: &str) -> &str {
    packed_field(packed, 7)
}

/// The id of the first entry of an `XRANGE`/`XREVRANGE` reply.
fn first_id(v: &Value) -> Option<String> {
    let Value::Array(entries) = v else { return None };
    let Value::Array(entry) = entries.first()? else { return None };
    as_string(entry.first()?)
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
        Some(t) => t.with_timezone(&tz).format("%Y-%m-%d").to_string(),
        None => "1970-01-01".to_owned(),
    }
}

/// Parses an `XREAD` reply (RESP2 arrays) into `(id, values of the named fields)`;
/// a missing field is empty; anything malformed is skipped.
fn parse_read_reply<const N: usize>(v: Value, names: [&str; N]) -> Vec<(String, [String; N])> {
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
            let Some(id) = as_string(&id) else { continue };
            let mut values: [String; N] = std::array::from_fn(|_| String::new());
            for pair in fields.chunks_exact(2) {
                let (Some(name), Some(value)) = (as_string(&pair[0]), as_string(&pair[1])) else { continue };
                if let Some(i) = names.iter().position(|f| *f == name) {
                    values[i] = value;
                }
            }
            out.push((id, values));
        }
    }
    out
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
    fn shanghai_day_boundary() {
        // 2026-11-29T16:00:00Z is 2026-11-30T00:00:00+08:00.
        let midnight = 1_795_968_000_000u64;
        assert_eq!(day_of(midnight - 1, chrono_tz::Asia::Shanghai), "2026-11-29");
        assert_eq!(day_of(midnight, chrono_tz::Asia::Shanghai), "2026-11-30");
        assert_eq!(day_of(midnight - 1, chrono_tz::UTC), "2026-11-29");
    }
}
