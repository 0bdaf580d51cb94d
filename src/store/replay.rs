//! The spool replayer: moves spooled clicks into the click stream once Redis is
//! healthy again, in order, then deletes what it replayed (see
//! [`crate::click::spool`] for the guarantees). It also keeps the shared
//! "Redis is up" flag current, which lets the redirect go straight to the spool
//! while Redis is down instead of waiting out the bounded wait on every click.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::Store;
use crate::click::spool::Spool;

/// Clicks per replay pipeline.
pub const REPLAY_BATCH: usize = 512;
/// How often Redis health is probed and the spool checked.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// Runs until `shutdown`; then makes one last attempt to empty the spool.
pub async fn run(store: Store, spool: Spool, redis_up: Arc<AtomicBool>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let up = store.ping().await;
        redis_up.store(up, Ordering::Relaxed);
        if up
            && spool.pending() > 0
            && let Err(e) = replay_once(&store, &spool).await
        {
            // A pipeline error lists every failed command: log its start only.
            let error: String = e.to_string().chars().take(300).collect();
            tracing::warn!(%error, "spool replay interrupted; will retry");
        }
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Seals the current segment and replays every sealed segment, oldest first.
/// Returns the number of clicks replayed.
///
/// Errors: Redis or file errors; the segment being replayed stays on disk.
pub async fn replay_once(store: &Store, spool: &Spool) -> anyhow::Result<u64> {
    let mut total = 0;
    for segment in spool.seal().await {
        let records = spool.read_segment(&segment)?;
        for chunk in records.chunks(REPLAY_BATCH) {
            store.replay_clicks(chunk).await?;
        }
        let n = records.len() as u64;
        // Damaged records were never counted as pending, except those read back now.
        spool.finish_segment(&segment, n)?;
        total += n;
        tracing::info!(spool.segment = %segment.display(), clicks = n, "spool: replayed segment into redis");
    }
    Ok(total)
}
