//! `linkloop report`: per-day funnel statistics of one note, creator, item or
//! platform, read straight from Redis and printed as a table, CSV or JSON.
//!
//! Redis: `REDIS_URL` / `redis_url` when set, else the supervised server's unix
//! socket `{data_dir}/redis/redis.sock` (so `linkloop serve` must be running).
//! Exit codes: 0 success; 64 bad arguments or configuration; 69 Redis unreachable;
//! 70 another failure.

use std::process::ExitCode;
use std::time::Duration;

use linkloop::config::Config;
use linkloop::stats::{DateRange, Dimension, Report};

/// Longest wait to connect to Redis, and for the report's reply.
const REDIS_WAIT: Duration = Duration::from_secs(5);

/// Output format of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Table,
    Csv,
    Json,
}

/// Runs `linkloop report`: `dim` is `note`, `creator`, `item` or `platform`, `id` its
/// value (`item`: `PLATFORM:ID`); `from`/`to` are `YYYY-MM-DD` in the configured zone
/// (`to` defaults to today, `from` to `to`); `format` is `table`, `csv` or `json`.
pub fn run(config: &Config, dim: &str, id: &str, from: Option<&str>, to: Option<&str>, format: &str) -> ExitCode {
    match report(config, dim, id, from, to, format) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err((code, message)) => {
            eprintln!("linkloop: {message}");
            ExitCode::from(code)
        }
    }
}

/// The rendered report, or an exit code and a one-line message.
fn report(
    config: &Config,
    dim: &str,
    id: &str,
    from: Option<&str>,
    to: Option<&str>,
    format: &str,
) -> Result<String, (u8, String)> {
    let usage = |m: String| (64u8, m);
    let format = match format {
        "table" => Format::Table,
        "csv" => Format::Csv,
        "json" => Format::Json,
        other => return Err(usage(format!("--format: must be table, csv or json, not {other:?}"))),
    };
    let dimension = Dimension::parse(dim, id).map_err(|e| usage(format!("--{dim}: {}", strip_field(&e.message))))?;
    let tz = config.tz().map_err(|e| usage(format!("configuration error: {e:#}")))?;
    let today = linkloop::stats::today(linkloop::click::now_ms(), tz);
    let range = DateRange::parse(from, to, today).map_err(|e| usage(format!("--{}", e.message)))?;
    let url = redis_url(config)?;
    let client = redis::Client::open(url.as_str()).map_err(|e| usage(format!("REDIS_URL {url:?}: {e}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| (70, format!("cannot start runtime: {e}")))?;
    let report: Report = runtime.block_on(async {
        let unreachable = |e: &dyn std::fmt::Display| {
            (69, format!("cannot reach Redis at {url}: {e}; is `linkloop serve` running? set REDIS_URL"))
        };
        let mut conn = match tokio::time::timeout(REDIS_WAIT, client.get_multiplexed_async_connection()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(unreachable(&e)),
            Err(_) => return Err(unreachable(&"timed out")),
        };
        match tokio::time::timeout(REDIS_WAIT, linkloop::store::stats::read_report(&mut conn, &dimension, &range, tz))
            .await
        {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => {
                Err(unreachable(&e))
            }
            Ok(Err(e)) => Err((70, format!("redis error: {e}"))),
            Err(_) => Err(unreachable(&"timed out")),
        }
    })?;
    match format {
        Format::Table => Ok(report.to_table()),
        Format::Csv => Ok(report.to_csv()),
        Format::Json => serde_json::to_string_pretty(&report).map(|s| s + "\n").map_err(|e| (70, e.to_string())),
    }
}

/// `config.redis_url`, else the supervised server's socket under the canonical data dir.
fn redis_url(config: &Config) -> Result<String, (u8, String)> {
    if let Some(url) = &config.redis_url {
        return Ok(url.clone());
    }
    let dir = config.data_dir.canonicalize().map_err(|e| {
        (69, format!("data dir {}: {e}; is `linkloop serve` running? set REDIS_URL", config.data_dir.display()))
    })?;
    Ok(format!("redis+unix://{}", dir.join("redis").join("redis.sock").display()))
}

/// `"id: message"` → `"message"` (the CLI names its own flag).
fn strip_field(message: &str) -> &str {
    message.split_once(": ").map_or(message, |(_, m)| m)
}
