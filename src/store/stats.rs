//! Reads a stats report ([`crate::stats::Report`]) from the per-day aggregates.
//!
//! Read-only: never writes a key. Keys come from [`super::keys`] only
//! (`ll:agg:{dim}:{id}:{day}` hashes and `ll:uv:{dim}:{id}:{day}` HyperLogLogs;
//! see `docs/redis-schema.md`).

use chrono_tz::Tz;
use redis::Value;

use super::keys::{self, Dim};
use crate::stats::{DateRange, DayStats, Dimension, Report};

/// The key-schema dimension of a validated [`Dimension`].
fn key_dim(dim: &Dimension) -> Dim<'_> {
    match dim {
        Dimension::Note(id) => Dim::Note(id),
        Dimension::Creator(id) => Dim::Creator(id),
        Dimension::Item(p, id) => Dim::Item(*p, *id),
        Dimension::Platform(p) => Dim::Platform(*p),
    }
}

/// Reads the report of `dim` over `range` (days in `tz`) in **one** pipelined round
/// trip: per day `HGETALL ll:agg:…:{day}` and `PFCOUNT ll:uv:…:{day}`, then one
/// `PFCOUNT` over every day's `ll:uv` key (the range's unique visitors, a visitor on
/// several days counted once). At most 2 × 92 + 1 commands ([`crate::stats::MAX_RANGE_DAYS`]).
/// Missing keys read as zeros. Not a snapshot: counters may move between commands.
///
/// Errors: Redis errors (unreachable, timeout, a key of the wrong type).
pub async fn read_report(
    conn: &mut impl redis::aio::ConnectionLike,
    dim: &Dimension,
    range: &DateRange,
    tz: Tz,
) -> redis::RedisResult<Report> {
    let kd = key_dim(dim);
    let days = range.days();
    let uv_keys: Vec<String> = days.iter().map(|d| keys::uv(kd, d)).collect();
    let mut pipe = redis::pipe();
    for (day, uv) in days.iter().zip(&uv_keys) {
        pipe.cmd("HGETALL").arg(keys::agg(kd, day));
        pipe.cmd("PFCOUNT").arg(uv);
    }
    pipe.cmd("PFCOUNT").arg(&uv_keys);
    let replies: Vec<Value> = pipe.query_async(conn).await?;
    let mut replies = replies.into_iter();
    let mut rows = Vec::with_capacity(days.len());
    for day in days {
        let hash = next_reply(&mut replies)?;
        let uv = as_count(next_reply(&mut replies)?)?;
        let fields = hash_fields(hash)?;
        rows.push(DayStats::from_fields(day, fields.iter().map(|(k, v)| (k.as_str(), v.as_str())), uv));
    }
    let total_uv = as_count(next_reply(&mut replies)?)?;
    Ok(Report::new(dim, range, tz, rows, total_uv))
}

fn next_reply(replies: &mut impl Iterator<Item = Value>) -> redis::RedisResult<Value> {
    match replies.next() {
        Some(Value::ServerError(e)) => Err(e.into()),
        Some(v) => Ok(v),
        None => Err(redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "short pipeline reply"))),
    }
}

/// A `PFCOUNT` reply as a count.
fn as_count(v: Value) -> redis::RedisResult<u64> {
    Ok(redis::from_redis_value::<u64>(v)?)
}

/// An `HGETALL` reply (RESP2 flat array or RESP3 map) as text pairs; pairs that are
/// not UTF-8 are skipped.
fn hash_fields(v: Value) -> redis::RedisResult<Vec<(String, String)>> {
    let text = |v: Value| match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    };
    let pairs: Vec<(Value, Value)> = match v {
        Value::Map(m) => m,
        Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len() / 2);
            let mut it = a.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            out
        }
        Value::Nil => Vec::new(),
        _ => {
            return Err(redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "HGETALL: not a hash reply")));
        }
    };
    Ok(pairs.into_iter().filter_map(|(k, v)| Some((text(k)?, text(v)?))).collect())
}
