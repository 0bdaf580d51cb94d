//! Wiring: config → [`App`] (keys, Redis, metrics) → router → server.
//!
//! [`Application::build`] binds the listener (port 0 picks a free port; see
//! [`Application::port`]), connects to Redis (or starts a supervised
//! `redis-server`), starts the aggregator, and [`Application::run_until_stopped`]
//! serves until the shutdown future resolves. Shutdown order: stop accepting,
//! let in-flight requests finish (bounded by `shutdown_grace_seconds`), stop the
//! aggregator, stop the supervised Redis.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::watch;

use std::sync::atomic::{AtomicBool, Ordering};

use crate::click::spool::Spool;
use crate::click::{Click, ClickRecord, Durability, UnrecordedReason, VisitorHasher};
use crate::config::Config;
use crate::conversion::auth::Merchants;
use crate::metrics::{Metrics, ReasonLabels};
use crate::signing::Keyring;
use crate::store::aggregator::{Aggregator, AggregatorOptions};
use crate::store::supervisor::{RedisServer, RedisServerOptions};
use crate::store::{Store, StoreOptions};

/// Everything a request handler needs. Shared as [`AppState`].
#[derive(Debug)]
pub struct App {
    /// The validated configuration.
    pub config: Config,
    /// The time zone of daily counters (`config.timezone`, parsed once).
    pub tz: chrono_tz::Tz,
    /// Tracked-link keyring (verify any kid on it, sign with the active one).
    pub link_keys: Keyring,
    /// Jump-URL keyring.
    pub jump_keys: Keyring,
    /// Client-IP hasher.
    pub visitor: VisitorHasher,
    /// Admin bearer token.
    pub admin_token: SecretString,
    /// Base URL of minted links.
    pub public_url: String,
    /// Redis for request handlers.
    pub store: Store,
    /// The click-stream aggregator (for on-demand catch-up).
    pub aggregator: Arc<Aggregator>,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// Merchants allowed to post conversions.
    pub merchants: Merchants,
    /// The conversion script (attribution + idempotency + GMV), loaded once.
    pub conversion_script: redis::Script,
    /// Per-merchant rate limiter of the conversion API (governor, keyed by merchant id).
    pub merchant_limiter: governor::DefaultKeyedRateLimiter<String>,
    /// The durable local click spool (used when Redis cannot take a click in time).
    pub spool: Spool,
    /// Whether Redis answered recently; while false, clicks go straight to the spool.
    pub redis_up: Arc<AtomicBool>,
    /// Per-client-IP soft limit on `/j/`: past it, clicks are recorded as not billable.
    pub ip_soft_limiter: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
    /// Per-client-IP hard limit on `/j/`: past it, `429`.
    pub ip_hard_limiter: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
    /// Admin API limit (all tokens together).
    pub admin_limiter: governor::DefaultDirectRateLimiter,
}

/// Handler state: the shared [`App`].
pub type AppState = Arc<App>;

impl App {
    /// Builds the state for `config` against the Redis at `redis_url`.
    /// Nothing connects yet (connections are lazy).
    ///
    /// Errors: bad keys, an invalid Redis URL.
    pub fn new(config: Config, redis_url: &str) -> anyhow::Result<App> {
        let secrets = config.secrets()?;
        if secrets.dev_keys {
            tracing::warn!(
                path = %config.data_dir.join("dev-keys.toml").display(),
                "USING GENERATED DEVELOPMENT KEYS: set [keys] and admin_token in a config file for production"
            );
        }
        let metrics = Arc::new(Metrics::new());
        let store = Store::connect(
            redis_url,
            StoreOptions {
                click_write_timeout: Duration::from_millis(config.click_write_timeout_ms),
                click_stream_maxlen: config.click_stream_maxlen,
            },
        )
        .context("REDIS_URL")?;
        let aggregator = Arc::new(
            Aggregator::new(
                redis_url,
                AggregatorOptions {
                    batch: config.aggregator_batch,
                    click_ttl_ms: u64::try_from(config.click_ttl().as_millis()).unwrap_or(u64::MAX),
                    repeat_window_ms: config.repeat_click_window_seconds.saturating_mul(1000),
                    tz: config.tz()?,
                    stream_retention_ms: config.click_stream_retention_ms,
                },
                metrics.clone(),
            )
            .context("REDIS_URL")?,
        );
        let merchants =
            Merchants::new(&config.merchants, config.attribution_window_days, config.callback_tolerance_seconds)?;
        let per_s =
            std::num::NonZeroU32::new(config.merchant_rate_limit_per_second).unwrap_or(std::num::NonZeroU32::MIN);
        let burst = per_s.saturating_mul(std::num::NonZeroU32::new(2).unwrap_or(std::num::NonZeroU32::MIN));
        let merchant_limiter = governor::RateLimiter::keyed(governor::Quota::per_second(per_s).allow_burst(burst));
        let spool_dir = config.spool_dir();
        let spool = Spool::open(&spool_dir, config.spool_max_bytes)
            .with_context(|| format!("opening spool {}", spool_dir.display()))?;
        if spool.pending() > 0 {
            tracing::warn!(
                spool.records = spool.pending(),
                "spool holds clicks from an earlier run; replaying when redis is up"
            );
        }
        let per_minute = |n: u32| {
            let n = std::num::NonZeroU32::new(n).unwrap_or(std::num::NonZeroU32::MIN);
            governor::Quota::per_minute(n).allow_burst(n)
        };
        let admin_per_s =
            std::num::NonZeroU32::new(config.admin_rate_limit_per_second).unwrap_or(std::num::NonZeroU32::MIN);
        Ok(App {
            tz: config.tz()?,
            ip_soft_limiter: governor::RateLimiter::keyed(per_minute(config.click_soft_limit_per_minute)),
            ip_hard_limiter: governor::RateLimiter::keyed(per_minute(config.click_hard_limit_per_minute)),
            admin_limiter: governor::RateLimiter::direct(governor::Quota::per_second(admin_per_s)),
            spool,
            redis_up: Arc::new(AtomicBool::new(true)),
            merchants,
            conversion_script: crate::store::conversions::script(),
            merchant_limiter,
            public_url: config.public_url(),
            link_keys: secrets.link_keys,
            jump_keys: secrets.jump_keys,
            visitor: secrets.visitor,
            admin_token: secrets.admin_token,
            store,
            aggregator,
            metrics,
            config,
        })
    }

    /// Records a non-billable request (bot, preview fetcher, `HEAD`, soft-limited
    /// client) in the non-billable stream, best effort within the bounded wait.
    pub async fn record_nonbillable(&self, click: &Click, reason: &'static str) {
        self.metrics.nonbillable.get_or_create(&ReasonLabels { reason }).inc();
        if !self.redis_up.load(Ordering::Relaxed) {
            return;
        }
        let (token, record) = wire_strings(click);
        if self.store.write_nonbillable(token, record, reason).await.is_err() {
            self.metrics.nonbillable_unrecorded.inc();
        }
    }

    /// Forgets rate-limiter state of idle clients, so memory stays bounded under a
    /// flood of distinct IPs. Called periodically.
    pub fn prune_limiters(&self) {
        for l in [&self.ip_soft_limiter, &self.ip_hard_limiter] {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Makes a click durable: Redis within the bounded wait, else the local spool
    /// (fsynced). Never fails the redirect: if both fail, the click is counted as
    /// dropped and logged loudly.
    pub async fn record_click(&self, click: &Click) -> Durability {
        let reason = if self.redis_up.load(Ordering::Relaxed) {
            // The strings move into the writer; the rare spool path rebuilds them.
            let (token, record) = wire_strings(click);
            match self.store.write_click(token, record).await {
                Ok(()) => {
                    self.metrics.clicks_recorded.inc();
                    return Durability::Redis;
                }
                Err(reason) => {
                    // Until the replayer's next probe succeeds, skip Redis.
                    self.redis_up.store(false, Ordering::Relaxed);
                    reason
                }
            }
        } else {
            UnrecordedReason::RedisDown
        };
        self.metrics.clicks_unrecorded.get_or_create(&ReasonLabels { reason: reason.as_str() }).inc();
        let (token, record) = wire_strings(click);
        match self.spool.append(&token, &record).await {
            Ok(()) => {
                self.metrics.clicks_spooled.inc();
                Durability::Spooled(reason)
            }
            Err(e) => {
                self.metrics.clicks_dropped.get_or_create(&ReasonLabels { reason: e.as_str() }).inc();
                tracing::error!(click.token = %token, reason = e.as_str(), "CLICK DROPPED: neither redis nor the spool could take it");
                Durability::Dropped(e)
            }
        }
    }
}

/// A click's stream fields: the click token (canonical text) and the packed click record.
fn wire_strings(click: &Click) -> (String, String) {
    let mut token = uuid::Uuid::encode_buffer();
    (click.token.hyphenated().encode_lower(&mut token).to_owned(), ClickRecord::packed_from_click(click))
}

/// A built, bound, not yet serving gateway.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    state: AppState,
    redis: Option<RedisServer>,
    /// Exclusive lock on the supervised Redis's directory, held while serving.
    _redis_lock: Option<std::fs::File>,
}

impl Application {
    /// Binds `config.listen`, starts a supervised `redis-server` when
    /// `config.redis_url` is unset, and builds the state.
    ///
    /// Errors: the port is taken, Redis cannot start, bad keys or URL.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let (redis, url, lock) = match &config.redis_url {
            Some(url) => (None, url.clone(), None),
            None => {
                let dir = config.data_dir.join("redis");
                std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                let lock = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(dir.join("serve.lock"))
                    .context("opening the data directory lock")?;
                if lock.try_lock().is_err() {
                    anyhow::bail!(
                        "{} is in use by another `linkloop serve`: give each gateway its own LINKLOOP_DATA_DIR, or share one Redis with REDIS_URL",
                        config.data_dir.display()
                    );
                }
                RedisServer::stop_orphan(&dir).await;
                let opts = RedisServerOptions {
                    bin: config.redis_server_bin.clone(),
                    dir: config.data_dir.join("redis"),
                    port: None,
                    unix_socket: true,
                    appendonly: true,
                    aof_rewrite_min_mb: config.redis_aof_rewrite_min_mb,
                };
                let server = RedisServer::start(opts).await?;
                tracing::info!(redis.url = %server.url(), "started supervised redis-server (unix socket only)");
                let url = server.url();
                (Some(server), url, Some(lock))
            }
        };
        let mut config = config;
        // With port 0 the real port is known only now: minted links must use it.
        let local = listener.local_addr()?;
        if config.public_url.is_none() {
            config.public_url = Some(format!("http://{local}"));
        }
        let state = Arc::new(App::new(config, &url)?);
        Ok(Application { listener, state, redis, _redis_lock: lock })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    /// The shared state (tests use it to reach the store and metrics).
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// The supervised Redis, if this gateway started one.
    pub fn redis(&self) -> Option<&RedisServer> {
        self.redis.as_ref()
    }

    /// Serves until `shutdown` resolves, then drains (bounded) and stops.
    ///
    /// Errors: the accept loop failed.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Application { listener, state, redis, _redis_lock } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        // Supervise our own redis-server: restart it if it dies, stop it at the end.
        let supervisor = redis.map(|mut server| {
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => break,
                    }
                    if server.has_exited() {
                        tracing::error!(redis.url = %server.url(), "supervised redis-server exited; restarting it");
                        if let Err(e) = server.restart().await {
                            tracing::error!(error = %format!("{e:#}"), "restarting redis-server failed; retrying");
                        }
                    }
                }
                server
            })
        });
        let aggregator =
            state.config.aggregator_enabled.then(|| tokio::spawn(state.aggregator.clone().run(stop_rx.clone())));
        let pruner = {
            let (state, mut stop) = (state.clone(), stop_rx.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(10)) => state.prune_limiters(),
                        _ = stop.changed() => return,
                    }
                }
            })
        };
        let replayer = tokio::spawn(crate::store::replay::run(
            state.store.clone(),
            state.spool.clone(),
            state.redis_up.clone(),
            stop_rx,
        ));
        let grace = Duration::from_secs(state.config.shutdown_grace_seconds);
        let gateway = crate::http::Gateway::new(state.clone());
        let (signalled_tx, mut signalled_rx) = watch::channel(false);
        let limits = crate::http::server::ServerLimits {
            header_read_timeout_ms: state.config.header_read_timeout_ms,
            max_header_bytes: state.config.max_header_bytes,
            max_connections: state.config.max_connections,
        };
        let server = crate::http::server::serve(listener, gateway, limits, async move {
            shutdown.await;
            let _ = signalled_tx.send(true);
        });
        let serving = tokio::spawn(server);
        // Bound the drain: once the signal arrives, in-flight requests get `grace`.
        let drained = async {
            let _ = signalled_rx.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        };
        let result = tokio::select! {
            r = serving => r.context("server task"),
            _ = drained => {
                tracing::warn!(grace_s = grace.as_secs(), "shutdown grace elapsed with requests in flight; stopping anyway");
                Ok(())
            }
        };
        let _ = stop_tx.send(true);
        // Every spooled click is already fsynced; the replayer makes a last attempt
        // to move them into Redis, else they wait on disk for the next start.
        let _ = replayer.await;
        let _ = pruner.await;
        if state.spool.pending() > 0 {
            tracing::warn!(spool.records = state.spool.pending(), "spool not empty at exit; replayed on next start");
        }
        if let Some(aggregator) = aggregator {
            let _ = aggregator.await;
            // Apply what is left so counters are current for the next start.
            if let Err(e) = state.aggregator.catch_up().await {
                tracing::warn!(error = %e, "final aggregation pass failed; the next start resumes it");
            }
        }
        if let Some(task) = supervisor
            && let Ok(mut server) = task.await
        {
            server.stop().await;
        }
        tracing::info!("stopped");
        result
    }
}

/// Resolves on SIGINT or SIGTERM, logging which arrived.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "shutting down"),
        _ = term => tracing::info!(signal = "SIGTERM", "shutting down"),
    }
}
