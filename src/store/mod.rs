//! All Redis code: the key schema ([`keys`]), the hot-path click writer
//! ([`Store`]), the aggregator that derives per-day counters from the click
//! stream ([`aggregator`]), and the supervised `redis-server` ([`supervisor`]).
//!
//! The hot path costs Redis exactly one command per click: an `XADD` to the
//! click stream. Concurrent clicks share one multiplexed connection, so their
//! `XADD`s are pipelined: one socket write and one read serve many clicks (group
//! commit). Everything else (the click record keyed by token, counters, UV) is
//! derived from the stream by the aggregator, exactly once and crash-safely.
//! See `docs/redis-schema.md`.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::click::{Click, UnrecordedReason};

pub mod aggregator;
pub mod keys;
pub mod supervisor;

/// Settings for [`Store::connect`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Longest wait for Redis to acknowledge a click before the redirect goes on without it, ms.
    pub click_write_timeout: Duration,
    /// Approximate cap on the click stream's length (`XADD MAXLEN ~`), entries.
    pub click_stream_maxlen: u64,
}

/// Connection to Redis for request handlers: cheap to clone, reconnects by itself.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    opts: StoreOptions,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("opts", &self.opts).finish_non_exhaustive()
    }
}

/// Opens a lazily connecting, self-healing multiplexed connection to `url`
/// (`redis://host:port/db`, `rediss://…` or `redis+unix:///path`).
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
    /// Connects (lazily) to the Redis at `url`. Errors: an invalid URL.
    pub fn connect(url: &str, opts: StoreOptions) -> redis::RedisResult<Store> {
        let conn = connect_manager(url, opts.click_write_timeout)?;
        Ok(Store { conn, opts })
    }

    /// A clone of the underlying connection, for other request-side Redis work.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Appends a click to the click stream and waits (bounded) for Redis's acknowledgement.
    ///
    /// One command, `XADD ll:clicks MAXLEN ~ N * tok … ref …` (fields in
    /// [`keys::CLICK_FIELDS`] order; absent values are empty strings).
    /// Errors: [`UnrecordedReason`] when Redis fails or is slower than the bounded wait.
    pub async fn write_click(&self, click: &Click) -> Result<(), UnrecordedReason> {
        let cmd = xadd_click(click, self.opts.click_stream_maxlen);
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.opts.click_write_timeout, conn.send_packed_command(&cmd)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.is_timeout() => Err(UnrecordedReason::Timeout),
            Ok(Err(_)) => Err(UnrecordedReason::RedisError),
            Err(_) => Err(UnrecordedReason::Timeout),
        }
    }

    /// `PING` within the bounded wait: whether Redis is reachable now.
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        let ping = redis::cmd("PING");
        matches!(
            tokio::time::timeout(
                self.opts.click_write_timeout.max(Duration::from_millis(200)),
                conn.send_packed_command(&ping)
            )
            .await,
            Ok(Ok(_))
        )
    }
}

/// Builds the `XADD` for one click (public for benches).
pub fn xadd_click(click: &Click, maxlen: u64) -> redis::Cmd {
    let mut token = uuid::Uuid::encode_buffer();
    let token = click.token.hyphenated().encode_lower(&mut token);
    let product = &click.link.product;
    let mut cmd = redis::cmd("XADD");
    cmd.arg(keys::CLICK_STREAM).arg("MAXLEN").arg("~").arg(maxlen).arg("*");
    let [f_tok, f_ts, f_note, f_creator, f_platform, f_item, f_sku, f_campaign, f_ip, f_ua, f_ref] = keys::CLICK_FIELDS;
    cmd.arg(f_tok).arg(&*token);
    cmd.arg(f_ts).arg(click.ts_ms);
    cmd.arg(f_note).arg(&click.link.note_id);
    cmd.arg(f_creator).arg(&click.link.creator_id);
    cmd.arg(f_platform).arg(product.platform.as_str());
    cmd.arg(f_item).arg(product.item_id);
    match product.sku_id {
        Some(sku) => cmd.arg(f_sku).arg(sku),
        None => cmd.arg(f_sku).arg(""),
    };
    cmd.arg(f_campaign).arg(click.link.campaign.as_deref().unwrap_or(""));
    cmd.arg(f_ip).arg(&click.ip_hash);
    cmd.arg(f_ua).arg(click.ua.as_str());
    cmd.arg(f_ref).arg(click.referrer_host.as_deref().unwrap_or(""));
    cmd
}
