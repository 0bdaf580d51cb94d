//! All Redis code: the key schema ([`keys`]), the hot-path click writer
//! ([`Store`]), the aggregator that derives per-day counters from the click
//! stream ([`aggregator`]), and the supervised `redis-server` ([`supervisor`]).
//!
//! The hot path costs Redis less than one command per click: concurrent clicks are
//! group-committed, one `XADD` to the click stream carrying every click of the group
//! (at most [`MAX_CLICKS_PER_ENTRY`] per entry) and one socket write and read serving
//! them all (see [`Store`]). Everything else (the click record keyed by token, counters, UV) is
//! derived from the stream by the aggregator, exactly once and crash-safely.
//! See `docs/redis-schema.md`.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use tokio::sync::{mpsc, oneshot};

use crate::click::UnrecordedReason;

pub mod aggregator;
pub mod conversions;
pub mod keys;
pub mod replay;
pub mod stats;
pub mod supervisor;

/// Settings for [`Store::connect`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Longest wait for Redis to acknowledge a click before the redirect goes on without it, ms.
    pub click_write_timeout: Duration,
    /// Approximate cap on the non-billable stream, requests (see [`xadd_clicks`]). The
    /// billable click stream is never capped: only the aggregator trims it, behind its cursor.
    pub click_stream_maxlen: u64,
}

/// Most clicks written by one pipeline (one socket write, one Redis event-loop pass).
pub const MAX_GROUP_COMMIT: usize = 1024;

/// Most clicks in one stream entry (a larger group is split over several `XADD`s of
/// the same pipeline). Bounds what the aggregator must apply at once, since it
/// applies whole entries.
pub const MAX_CLICKS_PER_ENTRY: usize = 128;

/// Connection to Redis for request handlers: cheap to clone, reconnects by itself.
///
/// Click writes go through a **group-commit writer**: each redirect hands its
/// click to one writer task and waits; the writer yields once so every request
/// already runnable can add its click, then appends them all as one stream entry per
/// stream (see [`xadd_clicks`]) in one pipeline and wakes each waiter with the
/// outcome. Under load one Redis round trip, one command and one append-only-file
/// write carry dozens to hundreds of clicks.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    opts: StoreOptions,
    writer: mpsc::UnboundedSender<PendingClick>,
}

/// A click waiting for the writer: its stream, fields and whom to tell.
struct PendingClick {
    stream: &'static str,
    token: String,
    record: String,
    reason: Option<&'static str>,
    done: oneshot::Sender<bool>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("opts", &self.opts).finish_non_exhaustive()
    }
}

/// Opens a lazily connecting, self-healing multiplexed connection to `url`
/// (`redis://[:password@]host:port/db` or `redis+unix:///path`; TLS is not built in: put a
/// TLS tunnel or a local Redis in front of a remote one).
///
/// Errors: an invalid URL. An unreachable server is *not* an error here: calls
/// fail (bounded by `response_timeout`) until it is back.
pub fn connect_manager(url: &str, response_timeout: Duration) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, config)
}

impl Store {
    /// Connects (lazily) to the Redis at `url` and starts the group-commit writer.
    /// Must be called inside a Tokio runtime.
    ///
    /// Errors: an invalid URL.
    pub fn connect(url: &str, opts: StoreOptions) -> redis::RedisResult<Store> {
        let conn = connect_manager(url, opts.click_write_timeout.max(Duration::from_secs(1)))?;
        let (writer, rx) = mpsc::unbounded_channel();
        tokio::spawn(group_commit(conn.clone(), rx, opts.click_stream_maxlen));
        Ok(Store { conn, opts, writer })
    }

    /// Appends spooled clicks to the click stream in one pipeline (used by the spool replayer),
    /// in order, [`MAX_CLICKS_PER_ENTRY`] clicks per entry like a group commit.
    ///
    /// Errors: Redis errors; then none or some of the clicks may be in the stream
    /// (the aggregator counts a token once, so replaying them again is safe).
    pub async fn replay_clicks(&self, clicks: &[(String, String)]) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        let clicks: Vec<_> = clicks.iter().map(|(t, r)| (t.as_str(), r.as_str(), None)).collect();
        for entry in clicks.chunks(MAX_CLICKS_PER_ENTRY) {
            pipe.add_command(xadd_clicks(keys::CLICK_STREAM, entry, None)).ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await
    }

    /// A clone of the underlying connection, for other request-side Redis work.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Appends a click to the click stream and waits (bounded) for Redis's acknowledgement.
    ///
    /// Group-committed with concurrent clicks into one entry
    /// `XADD ll:clicks * tok {token} rec {record} [tok … rec …]…`
    /// (record: [`crate::click::ClickRecord::to_packed`]).
    /// Errors: [`UnrecordedReason`] when Redis fails or is slower than the bounded wait.
    pub async fn write_click(&self, token: String, record: String) -> Result<(), UnrecordedReason> {
        self.write(keys::CLICK_STREAM, token, record, None).await
    }

    /// Appends a non-billable request (bot, preview fetcher, `HEAD`, rate-limited
    /// client) to `ll:nonbillable` with its reason: visible, never counted as a click.
    /// Same bounded wait; not spooled.
    ///
    /// Errors: as [`Store::write_click`].
    pub async fn write_nonbillable(
        &self,
        token: String,
        record: String,
        reason: &'static str,
    ) -> Result<(), UnrecordedReason> {
        self.write(keys::NONBILLABLE_STREAM, token, record, Some(reason)).await
    }

    async fn write(
        &self,
        stream: &'static str,
        token: String,
        record: String,
        reason: Option<&'static str>,
    ) -> Result<(), UnrecordedReason> {
        let (done, rx) = oneshot::channel();
        let pending = PendingClick { stream, token, record, reason, done };
        if self.writer.send(pending).is_err() {
            return Err(UnrecordedReason::RedisError);
        }
        match tokio::time::timeout(self.opts.click_write_timeout, rx).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false) | Err(_)) => Err(UnrecordedReason::RedisError),
            Err(_) => Err(UnrecordedReason::Timeout),
        }
    }

    /// `PING` within the bounded wait: whether Redis is reachable now.
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        let ping = redis::cmd("PING");
        let wait = self.opts.click_write_timeout.max(Duration::from_millis(200));
        matches!(tokio::time::timeout(wait, conn.send_packed_command(&ping)).await, Ok(Ok(_)))
    }
}

/// The group-commit writer loop (see [`Store`]). Ends when every `Store` is dropped.
async fn group_commit(conn: ConnectionManager, mut rx: mpsc::UnboundedReceiver<PendingClick>, maxlen: u64) {
    while let Some(first) = rx.recv().await {
        // Let every request task that is already runnable enqueue its click first.
        tokio::task::yield_now().await;
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        while batch.len() < MAX_GROUP_COMMIT {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let mut pipe = redis::pipe();
        for stream in [keys::CLICK_STREAM, keys::NONBILLABLE_STREAM] {
            let clicks: Vec<_> = batch
                .iter()
                .filter(|p| p.stream == stream)
                .map(|p| (p.token.as_str(), p.record.as_str(), p.reason))
                .collect();
            // Billable clicks are never capped away: only the aggregator trims them, once applied.
            let cap = (stream == keys::NONBILLABLE_STREAM).then_some(maxlen);
            for entry in clicks.chunks(MAX_CLICKS_PER_ENTRY) {
                pipe.add_command(xadd_clicks(stream, entry, cap)).ignore();
            }
        }
        let mut conn = conn.clone();
        // Several batches may be in flight at once on the multiplexed connection.
        tokio::spawn(async move {
            let ok = pipe.query_async::<()>(&mut conn).await.is_ok();
            for p in batch {
                let _ = p.done.send(ok);
            }
        });
    }
}

/// Builds the `XADD` of one stream entry holding `clicks` (`(token, record, reason)`) in
/// order (public for benches and docs):
/// `XADD {stream} [MAXLEN ~ {maxlen / n}] * clicks "{token} {record}[ {reason}]\n…"`
/// (see [`keys::CLICKS_FIELD`] and `docs/redis-schema.md`).
/// `maxlen`, when given, is a cap in clicks: the entry trims the stream to
/// `maxlen / clicks.len()` entries (at least 1), so a stream of entries like this one holds
/// about `maxlen` clicks. Only for a stream nobody counts (`ll:nonbillable`): a cap
/// trims whatever is oldest, read or not.
pub fn xadd_clicks(stream: &str, clicks: &[(&str, &str, Option<&str>)], maxlen: Option<u64>) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream);
    if let Some(maxlen) = maxlen {
        cmd.arg("MAXLEN").arg("~").arg((maxlen / clicks.len().max(1) as u64).max(1));
    }
    let len = clicks.iter().map(|(t, r, why)| t.len() + r.len() + why.map_or(0, |w| w.len() + 1) + 2).sum();
    let mut lines = String::with_capacity(len);
    for (i, (token, record, reason)) in clicks.iter().enumerate() {
        if i > 0 {
            lines.push('\n');
        }
        lines.push_str(token);
        lines.push(' ');
        lines.push_str(record);
        if let Some(r) = reason {
            lines.push(' ');
            lines.push_str(r);
        }
    }
    cmd.arg("*").arg(keys::CLICKS_FIELD).arg(lines);
    cmd
}

/// The clicks of one click-stream entry's `clicks` value, in order: `(token, record,
/// reason)` per line ([`xadd_clicks`]'s layout). A line without a space is skipped.
pub fn entry_clicks(value: &str) -> impl Iterator<Item = (&str, &str, Option<&str>)> {
    value.split('\n').filter_map(|line| {
        let (token, rest) = line.split_once(' ')?;
        Some(match rest.split_once(' ') {
            Some((record, reason)) => (token, record, Some(reason)),
            None => (token, rest, None),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &redis::Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            })
            .collect()
    }

    #[test]
    fn one_entry_per_group_and_the_cap_counts_clicks() {
        let one = xadd_clicks("ll:clicks", &[("t1", "r1", None)], None);
        assert_eq!(args(&one), ["XADD", "ll:clicks", "*", "clicks", "t1 r1"]);
        let group = [("t1", "r1", Some("crawler")), ("t2", "r2", Some("head"))];
        assert_eq!(
            args(&xadd_clicks("ll:nonbillable", &group, Some(2_000_000))),
            ["XADD", "ll:nonbillable", "MAXLEN", "~", "1000000", "*", "clicks", "t1 r1 crawler\nt2 r2 head"]
        );
        let many: Vec<_> = (0..128).map(|_| ("t", "r", None)).collect();
        assert_eq!(args(&xadd_clicks("s", &many, Some(100)))[4], "1", "at least one entry is kept");
    }

    #[test]
    fn entry_clicks_reads_what_xadd_clicks_writes() {
        let group = [("t1", "1|2|n", None), ("t2", "1|3|n", Some("head")), ("t3", "1|4|n", None)];
        let cmd = xadd_clicks("ll:clicks", &group, None);
        let value = args(&cmd).pop().unwrap_or_default();
        assert_eq!(entry_clicks(&value).collect::<Vec<_>>(), group);
        assert_eq!(entry_clicks("").count(), 0);
        assert_eq!(entry_clicks("no-space\nt r").collect::<Vec<_>>(), [("t", "r", None)]);
    }
}
