//! The aggregator: derives the click record, per-day counters and UV from the
//! click stream, off the redirect's hot path.
//!
//! Invariants (see `docs/redis-schema.md`):
//! - **Exact.** A click is counted iff its click record `ll:click:{token}` is
//!   created; a batch is applied by one Lua script that, per entry, creates the
//!   record with `SET … NX PXAT` (a token already recorded is skipped), then adds
//!   the batch's counts with one `HINCRBY` per counter and one `PFADD` per HLL,
//!   and `XACK`s the whole batch. Scripts run atomically, so a batch is either
//!   fully applied and acknowledged or not applied at all.
//! - **Crash-safe.** An entry is acknowledged only by the script that applied it.
//!   After a crash the entries still pending for this consumer are read again
//!   (`XREADGROUP … 0`) and re-applied; the token check makes that a no-op for
//!   any already counted. Entries left pending by another consumer that died are
//!   claimed after [`CLAIM_IDLE`] (`XAUTOCLAIM`).
//! - **Bounded lag.** It blocks on the stream for at most [`BLOCK`] and applies
//!   up to `batch` entries per script call; [`Aggregator::catch_up`] lets a caller
//!   (a conversion for a click seconds old) force everything appended so far to be applied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono_tz::Tz;
use redis::Value;
use redis::aio::ConnectionManager;
use tokio::sync::{Mutex, watch};

use super::keys::{self, Dim};
use crate::click::ClickRecord;
use crate::metrics::Metrics;

/// Longest a read waits on an idle stream.
pub const BLOCK: Duration = Duration::from_millis(100);
/// Entries pending this long on a consumer are presumed abandoned and claimed.
pub const CLAIM_IDLE: Duration = Duration::from_secs(30);

/// Applies a batch of click-stream entries atomically; returns how many were new.
///
/// ARGV: stream, group, n (entries), m (distinct dimension values in the batch),
/// then m agg keys, then the m matching uv keys, then per entry 9 values:
/// stream id, click key, packed click record, expire-at (Unix ms), visitor
/// (ip hash), and four 1-based indexes into the key tables (note, creator, item, platform).
/// Entries whose stream id is listed but whose click key is empty are malformed:
/// acknowledged, never counted.
const APPLY_SCRIPT: &str = r#"
local n, m = tonumber(ARGV[3]), tonumber(ARGV[4])
local cnt, vis, ids = {}, {}, {}
local new = 0
local base = 4 + 2 * m
for i = 0, n - 1 do
  local b = base + i * 9
  ids[#ids + 1] = ARGV[b + 1]
  local ck = ARGV[b + 2]
  if ck ~= '' and redis.call('SET', ck, ARGV[b + 3], 'NX', 'PXAT', ARGV[b + 4]) then
    new = new + 1
    local v = ARGV[b + 5]
    for j = 6, 9 do
      local d = tonumber(ARGV[b + j])
      cnt[d] = (cnt[d] or 0) + 1
      local t = vis[d]
      if not t then t = {}; vis[d] = t end
      t[#t + 1] = v
    end
  end
end
for d, c in pairs(cnt) do redis.call('HINCRBY', ARGV[4 + d], 'clicks', c) end
for d, t in pairs(vis) do redis.call('PFADD', ARGV[4 + m + d], unpack(t)) end
if #ids > 0 then redis.call('XACK', ARGV[1], ARGV[2], unpack(ids)) end
return new
"#;

/// Settings for the aggregator.
#[derive(Debug, Clone)]
pub struct AggregatorOptions {
    /// Consumer name in the `ll-agg` group; stable per gateway instance.
    pub consumer: String,
    /// Entries applied per script call.
    pub batch: usize,
    /// Click record lifetime after the click (attribution window + grace), ms.
    pub click_ttl_ms: u64,
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
    fields: [String; 11],
}

impl Aggregator {
    /// Builds an aggregator on its own connection (its blocking reads must not
    /// stall the hot path's pipelined connection).
    pub fn new(conn: ConnectionManager, opts: AggregatorOptions, metrics: Arc<Metrics>) -> Self {
        Self { conn, script: redis::Script::new(APPLY_SCRIPT), opts, metrics, apply: Mutex::new(()) }
    }

    /// Runs until `shutdown` turns true: ensures the group exists, then reads,
    /// applies and acknowledges. Redis errors are logged and retried after a pause.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut pending_first = true;
        let mut last_claim = Instant::now();
        while !*shutdown.borrow() {
            let step = async {
                self.ensure_group().await?;
                if pending_first {
                    // Our own pending entries (a crash before XACK) come first.
                    while self.pass("0", None).await? > 0 {}
                    pending_first = false;
                }
                if last_claim.elapsed() >= CLAIM_IDLE {
                    last_claim = Instant::now();
                    if self.claim_abandoned().await? > 0 {
                        pending_first = true;
                    }
                }
                self.pass(">", Some(BLOCK)).await
            };
            tokio::select! {
                r = step => if let Err(e) = r {
                    tracing::warn!(error = %e, "aggregator: redis error, retrying");
                    pending_first = true;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                },
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Applies everything appended to the stream so far, including entries the
    /// loop has read but not yet applied. Returns how many new clicks it counted.
    ///
    /// Errors: Redis errors.
    pub async fn catch_up(&self) -> redis::RedisResult<u64> {
        self.ensure_group().await?;
        let mut total = 0;
        loop {
            let n = self.pass(">", None).await?;
            if n == 0 {
                break;
            }
            total += n;
        }
        // Entries delivered to this consumer but not yet acknowledged.
        self.pass("0", None).await?;
        Ok(total)
    }

    async fn ensure_group(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(keys::CLICK_STREAM)
            .arg(keys::AGGREGATOR_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match r {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    async fn claim_abandoned(&self) -> redis::RedisResult<usize> {
        let mut conn = self.conn.clone();
        let v: Value = redis::cmd("XAUTOCLAIM")
            .arg(keys::CLICK_STREAM)
            .arg(keys::AGGREGATOR_GROUP)
            .arg(&self.opts.consumer)
            .arg(CLAIM_IDLE.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(self.opts.batch)
            .arg("JUSTID")
            .query_async(&mut conn)
            .await?;
        let claimed = match v {
            Value::Array(parts) => match parts.get(1) {
                Some(Value::Array(ids)) => ids.len(),
                _ => 0,
            },
            _ => 0,
        };
        Ok(claimed)
    }

    /// Reads one batch from `from` (`>` new, `0` own pending) and applies it.
    /// Returns the number of entries read (not the number newly counted).
    async fn pass(&self, from: &str, block: Option<Duration>) -> redis::RedisResult<u64> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(keys::AGGREGATOR_GROUP).arg(&self.opts.consumer).arg("COUNT").arg(self.opts.batch);
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(keys::CLICK_STREAM).arg(from);
        let reply: Value = cmd.query_async(&mut conn).await?;
        let entries = parse_read_reply(reply);
        if entries.is_empty() {
            return Ok(0);
        }
        let _guard = self.apply.lock().await;
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
        let mut rows: Vec<(&str, String, String, u64, &str, [usize; 4])> = Vec::with_capacity(entries.len());
        for e in entries {
            let [tok, rest @ ..] = &e.fields;
            let fields: [&str; 10] = std::array::from_fn(|i| rest[i].as_str());
            let Some(rec) = ClickRecord::from_stream_fields(fields).filter(|_| uuid::Uuid::try_parse(tok).is_ok())
            else {
                tracing::warn!(stream.id = %e.id, "aggregator: skipping malformed click-stream entry");
                rows.push((&e.id, String::new(), String::new(), 0, "", [1; 4]));
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
            rows.push((&e.id, keys::click(tok), rec.to_packed(), expire_at, &e.fields[8], idx));
        }
        if dims.is_empty() {
            // Only malformed entries: a placeholder key table keeps the script's indexes valid.
            dims.push((String::new(), String::new()));
        }
        let mut inv = self.script.prepare_invoke();
        inv.arg(keys::CLICK_STREAM).arg(keys::AGGREGATOR_GROUP).arg(rows.len()).arg(dims.len());
        for (agg, _) in &dims {
            inv.arg(agg);
        }
        for (_, uv) in &dims {
            inv.arg(uv);
        }
        for (id, ck, packed, expire_at, visitor, idx) in &rows {
            inv.arg(*id).arg(ck).arg(packed).arg(*expire_at).arg(*visitor);
            for i in idx {
                inv.arg(*i);
            }
        }
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn).await
    }
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
