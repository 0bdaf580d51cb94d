//! The aggregator: derives the click record, per-day counters and UV from the
//! click stream, off the redirect's hot path.
//!
//! Invariants (see `docs/redis-schema.md`):
//! - **Exact.** A click is counted iff its click record `ll:click:{token}` is
//!   created; a batch is applied by one Lua script that, per entry, skips tokens
//!   whose record already exists, writes the record, adds to counters and HLLs,
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
use crate::metrics::Metrics;
use crate::platform::Platform;

/// Longest a read waits on an idle stream.
pub const BLOCK: Duration = Duration::from_millis(100);
/// Entries pending this long on a consumer are presumed abandoned and claimed.
pub const CLAIM_IDLE: Duration = Duration::from_secs(30);

/// Arguments per entry passed to [`APPLY_SCRIPT`].
const ARGS_PER_ENTRY: usize = 21;

/// Applies a batch of click-stream entries atomically; returns how many were new.
///
/// ARGV: stream, group, click_ttl_ms, n, then per entry: id, click key, 4 agg keys
/// (note, creator, item, platform), 4 uv keys (same order), visitor, then the
/// record values ts, note, creator, platform, item, sku, campaign, ip, ua, ref.
const APPLY_SCRIPT: &str = r#"
local ttl = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local incr, uv, ids = {}, {}, {}
local new = 0
for i = 0, n - 1 do
  local b = 4 + i * 21
  ids[#ids + 1] = ARGV[b + 1]
  local ck = ARGV[b + 2]
  if redis.call('EXISTS', ck) == 0 then
    redis.call('HSET', ck, 'ts', ARGV[b + 12], 'note', ARGV[b + 13], 'creator', ARGV[b + 14],
      'platform', ARGV[b + 15], 'item', ARGV[b + 16], 'sku', ARGV[b + 17], 'campaign', ARGV[b + 18],
      'ip', ARGV[b + 19], 'ua', ARGV[b + 20], 'ref', ARGV[b + 21])
    redis.call('PEXPIREAT', ck, tonumber(ARGV[b + 12]) + ttl)
    for j = 3, 6 do
      local k = ARGV[b + j]
      incr[k] = (incr[k] or 0) + 1
    end
    for j = 7, 10 do
      local k = ARGV[b + j]
      local t = uv[k]
      if not t then t = {}; uv[k] = t end
      t[#t + 1] = ARGV[b + 11]
    end
    new = new + 1
  end
end
for k, v in pairs(incr) do redis.call('HINCRBY', k, 'clicks', v) end
for k, t in pairs(uv) do redis.call('PFADD', k, unpack(t)) end
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
        let mut inv = self.script.prepare_invoke();
        inv.arg(keys::CLICK_STREAM).arg(keys::AGGREGATOR_GROUP).arg(self.opts.click_ttl_ms).arg(entries.len());
        let mut day_cache: Option<(u64, String)> = None;
        for e in entries {
            let [tok, ts, note, creator, platform, item, sku, campaign, ip, ua, rf] = &e.fields;
            let ts_ms: u64 = ts.parse().unwrap_or(0);
            // Days change rarely within a batch: recompute only when the minute changes.
            let day = match &day_cache {
                Some((minute, d)) if *minute == ts_ms / 60_000 => d.clone(),
                _ => {
                    let d = day_of(ts_ms, self.opts.tz);
                    day_cache = Some((ts_ms / 60_000, d.clone()));
                    d
                }
            };
            let platform_enum = Platform::from_name(platform).unwrap_or(Platform::Taobao);
            let item_id: u64 = item.parse().unwrap_or(0);
            let dims = [Dim::Note(note), Dim::Creator(creator), Dim::Item(platform_enum, item_id), Dim::Platform(platform_enum)];
            inv.arg(&e.id).arg(keys::click(tok));
            for d in dims {
                inv.arg(keys::agg(d, &day));
            }
            for d in dims {
                inv.arg(keys::uv(d, &day));
            }
            inv.arg(ip);
            inv.arg(ts).arg(note).arg(creator).arg(platform).arg(item).arg(sku).arg(campaign).arg(ip).arg(ua).arg(rf);
        }
        debug_assert_eq!(ARGS_PER_ENTRY, 21);
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
