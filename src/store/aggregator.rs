//! The aggregator: derives the click record, per-day counters and UV from the
//! click stream, off the redirect's hot path.
//!
//! Invariants (see `docs/redis-schema.md`):
//! - **Exact.** A click is counted iff its click record `ll:click:{token}` is
//!   created. A batch is applied by one Lua script that, per entry, creates the
//!   record with `SET … NX PXAT` (a token already recorded is skipped), then adds
//!   the batch's counts with one `HINCRBY` per counter and one `PFADD` per HLL,
//!   and advances the cursor `ll:agg:cursor` to the batch's last stream id.
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

/// Longest a read waits on an idle stream.
pub const BLOCK: Duration = Duration::from_millis(100);
/// Pause after a batch shorter than the batch size, so batches grow under load.
pub const IDLE: Duration = Duration::from_millis(50);

/// Applies a batch of click-stream entries atomically; returns how many were new.
///
/// ARGV: cursor key, last stream id of the batch, n (entries), m (distinct dimension
/// values in the batch), repeat window (ms); then m agg keys; then the m matching uv
/// keys; then per entry 9 values: stream id, click key, packed click record,
/// expire-at (Unix ms), four 1-based indexes into the key tables (note, creator,
/// item, platform), repeat-marker key; then per dimension value (1..=m) a count
/// and that many distinct visitors of the batch (PFADD is idempotent, so visitors
/// are added whether or not their click was new).
/// Entries whose click key is empty are malformed: passed over, never counted.
/// The whole batch is skipped when the cursor is already at or past its last id.
const APPLY_SCRIPT: &str = r#"
local function after(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
local cursor = redis.call('GET', ARGV[1])
if cursor and not after(ARGV[2], cursor) then return 0 end
local n, m, window = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local cnt, rep = {}, {}
local new = 0
local base = 5 + 2 * m
for i = 0, n - 1 do
  local b = base + i * 9
  local ck = ARGV[b + 2]
  if ck ~= '' and redis.call('SET', ck, ARGV[b + 3], 'NX', 'PXAT', ARGV[b + 4]) then
    new = new + 1
    local repeated = not redis.call('SET', ARGV[b + 9], '1', 'NX', 'PX', window)
    for j = 5, 8 do
      local d = tonumber(ARGV[b + j])
      cnt[d] = (cnt[d] or 0) + 1
      if repeated then rep[d] = (rep[d] or 0) + 1 end
    end
  end
end
for d, c in pairs(cnt) do redis.call('HINCRBY', ARGV[5 + d], 'clicks', c) end
for d, c in pairs(rep) do redis.call('HINCRBY', ARGV[5 + d], 'repeat_clicks', c) end
local v = base + 9 * n + 1
for d = 1, m do
  local c = tonumber(ARGV[v])
  if c > 0 then redis.call('PFADD', ARGV[5 + m + d], unpack(ARGV, v + 1, v + c)) end
  v = v + 1 + c
end
redis.call('SET', ARGV[1], ARGV[2])
return new
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
        Self { conn, script: redis::Script::new(APPLY_SCRIPT), opts, metrics, apply: Mutex::new(()) }
    }

    /// Runs until `shutdown` turns true: reads from the cursor, applies, repeats.
    /// Redis errors are logged and retried after a pause.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            let step = async {
                let read = self.pass(Some(BLOCK)).await?;
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

    /// Applies everything appended to the stream up to the moment of the call
    /// (not what keeps arriving meanwhile, so it ends promptly under load).
    /// Returns how many entries it read.
    ///
    /// Errors: Redis errors.
    pub async fn catch_up(&self) -> redis::RedisResult<u64> {
        let mut conn = self.conn.clone();
        let last: Value = redis::cmd("XREVRANGE")
            .arg(keys::CLICK_STREAM)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        let Some(target) = first_id(&last).as_deref().and_then(parse_id) else { return Ok(0) };
        let mut total = 0;
        loop {
            let cursor: Option<String> = redis::cmd("GET").arg(keys::AGGREGATOR_CURSOR).query_async(&mut conn).await?;
            if cursor.as_deref().and_then(parse_id).is_some_and(|c| c >= target) {
                return Ok(total);
            }
            let n = self.pass(None).await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
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
        let entries = parse_read_reply(reply);
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
        // Distinct dimension keys of the batch (usually a handful), and per entry its indexes.
        let mut dims: Vec<(String, String)> = Vec::new();
        let mut index = std::collections::HashMap::<String, usize>::new();
        let mut day_cache: Option<(u64, String)> = None;
        // Per entry: stream id, click key, packed record, expire-at ms, key-table indexes, repeat key.
        type Row<'a> = (&'a str, String, String, u64, [usize; 4], String);
        let mut rows: Vec<Row<'_>> = Vec::with_capacity(entries.len());
        // Distinct visitors per dimension value (index - 1).
        let mut visitors: Vec<std::collections::BTreeSet<String>> = Vec::new();
        for e in entries {
            let [tok, packed] = &e.fields;
            let Some(rec) = ClickRecord::from_packed(packed).filter(|_| uuid::Uuid::try_parse(tok).is_ok()) else {
                tracing::warn!(stream.id = %e.id, "aggregator: skipping malformed click-stream entry");
                rows.push((&e.id, String::new(), String::new(), 0, [1; 4], String::new()));
                continue;
            };
            // Days change rarely within a batch: recompute only when the minute changes.
            let minute = rec.ts_ms / 60_000;
            let day = match &day_cache {
                Some((m, d)) if *m == minute => d.clone(),
                _ => {
                    let d = day_of(rec.ts_ms, self.opts.tz);
                    day_cache = Some((minute, d.clone()));
                    d
                }
            };
            let p = rec.product.platform;
            let ds = [
                Dim::Note(&rec.note_id),
                Dim::Creator(&rec.creator_id),
                Dim::Item(p, rec.product.item_id),
                Dim::Platform(p),
            ];
            let idx = ds.map(|d| {
                let agg = keys::agg(d, &day);
                let next = index.len() + 1;
                *index.entry(agg.clone()).or_insert_with(|| {
                    dims.push((agg, keys::uv(d, &day)));
                    next
                })
            });
            let expire_at = rec.ts_ms.saturating_add(self.opts.click_ttl_ms);
            let seen = keys::seen(&rec.note_id, p, rec.product.item_id, &rec.ip_hash, &rec.ua);
            for i in idx {
                if let Some(set) = visitors.get_mut(i - 1) {
                    set.insert(rec.ip_hash.clone());
                } else {
                    visitors.push(std::collections::BTreeSet::from([rec.ip_hash.clone()]));
                }
            }
            rows.push((&e.id, keys::click(tok), packed.clone(), expire_at, idx, seen));
        }
        if dims.is_empty() {
            // Only malformed entries: a placeholder key table keeps the script's indexes valid.
            dims.push((String::new(), String::new()));
        }
        let mut inv = self.script.prepare_invoke();
        let last_id = entries.last().map_or("0-0", |e| e.id.as_str());
        inv.arg(keys::AGGREGATOR_CURSOR)
            .arg(last_id)
            .arg(rows.len())
            .arg(dims.len())
            .arg(self.opts.repeat_window_ms.max(1));
        for (agg, _) in &dims {
            inv.arg(agg);
        }
        for (_, uv) in &dims {
            inv.arg(uv);
        }
        for (id, ck, packed, expire_at, idx, seen) in &rows {
            inv.arg(*id).arg(ck).arg(packed).arg(*expire_at);
            for i in idx {
                inv.arg(*i);
            }
            inv.arg(seen);
        }
        for d in 0..dims.len() {
            let set = visitors.get(d);
            inv.arg(set.map_or(0, |s| s.len()));
            for v in set.into_iter().flatten() {
                inv.arg(v);
            }
        }
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn).await
    }
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

/// Parses an `XREADGROUP` reply (RESP2 arrays) into entries; skips anything malformed.
fn parse_read_reply(v: Value) -> Vec<Entry> {
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
            let mut entry = Entry { id, ..Entry::default() };
            for pair in fields.chunks_exact(2) {
                let (Some(name), Some(value)) = (as_string(&pair[0]), as_string(&pair[1])) else { continue };
                if let Some(i) = keys::CLICK_FIELDS.iter().position(|f| *f == name) {
                    entry.fields[i] = value;
                }
            }
            out.push(entry);
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
