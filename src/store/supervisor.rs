//! A supervised `redis-server` child process.
//!
//! `linkloop serve` without `REDIS_URL` starts one with its data under the data
//! directory (append-only file on, `appendfsync everysec`) and stops it on exit;
//! tests start one per test on a free port and kill it on purpose. The child is
//! killed when the handle is dropped, so a crashed test leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// Default of [`RedisServerOptions::aof_rewrite_min_mb`] and of the config key
/// `redis_aof_rewrite_min_mb`, MiB.
pub const DEFAULT_AOF_REWRITE_MIN_MB: u64 = 1024;

/// How to start a `redis-server`.
#[derive(Debug, Clone)]
pub struct RedisServerOptions {
    /// The `redis-server` binary (looked up on `PATH` when bare).
    pub bin: PathBuf,
    /// Working directory: append-only file, log and (if enabled) unix socket go here.
    pub dir: PathBuf,
    /// TCP port on 127.0.0.1; `None` picks a free one.
    pub port: Option<u16>,
    /// Listen on a unix socket `dir/redis.sock` (mode 0700) *instead of* TCP when `port`
    /// is `None`: only the gateway's user can reach it, and it is faster.
    pub unix_socket: bool,
    /// Append-only persistence with `appendfsync everysec`.
    pub appendonly: bool,
    /// Size the append-only file must reach before Redis first compacts it
    /// (`auto-aof-rewrite-min-size`), MiB; after that, a rewrite whenever it has doubled
    /// since the last one (`auto-aof-rewrite-percentage 100`, Redis' default). A rewrite
    /// forks and writes the whole data set, taking the core for a second or more at
    /// millions of clicks, so Redis' default of 64 MiB (a rewrite every few seconds at
    /// thousands of clicks or callbacks a second) is raised: see `docs/config.md`.
    pub aof_rewrite_min_mb: u64,
}

impl RedisServerOptions {
    /// Defaults for tests: free port, no unix socket, append-only on.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            bin: "redis-server".into(),
            dir: dir.into(),
            port: None,
            unix_socket: false,
            appendonly: true,
            aof_rewrite_min_mb: DEFAULT_AOF_REWRITE_MIN_MB,
        }
    }
}

/// A running `redis-server`; killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    opts: RedisServerOptions,
    port: u16,
}

impl RedisServer {
    /// Starts the server and waits (up to 10 s) until it answers `PING`.
    ///
    /// Errors: the binary is missing (with the install command in the message),
    /// the directory cannot be created, or the server does not come up.
    pub async fn start(opts: RedisServerOptions) -> anyhow::Result<RedisServer> {
        std::fs::create_dir_all(&opts.dir).with_context(|| format!("creating redis dir {}", opts.dir.display()))?;
        let mut last_err = None;
        // A free port can be taken between probing and binding: retry with a new one.
        for _ in 0..5 {
            let port = match opts.port {
                Some(p) => p,
                // Unix socket only: no TCP listener at all (port 0 disables it).
                None if opts.unix_socket => 0,
                None => free_port()?,
            };
            match Self::spawn_on(&opts, port).await {
                Ok(server) => return Ok(server),
                Err(e) if opts.port.is_none() => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    async fn spawn_on(opts: &RedisServerOptions, port: u16) -> anyhow::Result<RedisServer> {
        let dir = std::fs::canonicalize(&opts.dir)?;
        let mut cmd = Command::new(&opts.bin);
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .arg("--daemonize")
            .arg("no")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg(if opts.appendonly { "yes" } else { "no" })
            .arg("--appendfsync")
            .arg("everysec")
            .arg("--auto-aof-rewrite-min-size")
            .arg(format!("{}mb", opts.aof_rewrite_min_mb.max(1)));
        if opts.unix_socket {
            cmd.arg("--unixsocket").arg(dir.join("redis.sock")).arg("--unixsocketperm").arg("700");
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true);
        // Its own process group: a Ctrl-C at the terminal reaches the gateway only, which
        // drains, runs its last aggregation pass and then stops Redis itself.
        cmd.process_group(0);
        let child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!(
                    "{} not found: install it with `sudo apt-get install -y redis-server`, or set REDIS_URL to an existing server",
                    opts.bin.display()
                )
            } else {
                anyhow::Error::new(e).context("starting redis-server")
            }
        })?;
        let mut server = RedisServer { child: Some(child), opts: RedisServerOptions { dir, ..opts.clone() }, port };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let url = self.url();
        for _ in 0..200 {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("redis-server exited during start ({status}); see {}", self.opts.dir.join("redis.log").display());
            }
            if let Ok(client) = redis::Client::open(url.as_str())
                && let Ok(Ok(mut c)) =
                    tokio::time::timeout(Duration::from_millis(200), client.get_multiplexed_async_connection()).await
            {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
                if pong.is_ok() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("redis-server on port {} did not answer PING within 10 s", self.port)
    }

    /// Whether the process has exited (crashed or killed).
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Stops a `redis-server` left running on `dir`'s unix socket by an earlier
    /// process that died without stopping it (`SHUTDOWN`, which saves), so two
    /// servers never share one data directory. Waits up to 5 s.
    pub async fn stop_orphan(dir: &Path) {
        let sock = dir.join("redis.sock");
        if !sock.exists() {
            return;
        }
        let url = format!("redis+unix://{}", sock.display());
        if let Ok(client) = redis::Client::open(url.as_str())
            && let Ok(Ok(mut c)) =
                tokio::time::timeout(Duration::from_millis(500), client.get_multiplexed_async_connection()).await
        {
            tracing::warn!(redis.dir = %dir.display(), "stopping a redis-server left running by an earlier process");
            let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query_async(&mut c).await;
            for _ in 0..100 {
                if !sock.exists() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The working directory.
    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }

    /// `redis://127.0.0.1:{port}/`.
    pub fn tcp_url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The best URL for a co-located client: the unix socket when enabled, else TCP.
    pub fn url(&self) -> String {
        if self.opts.unix_socket {
            format!("redis+unix://{}", self.opts.dir.join("redis.sock").display())
        } else {
            self.tcp_url()
        }
    }

    /// Kills the server with SIGKILL (no final fsync), as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Stops the server cleanly (`SHUTDOWN`, which fsyncs the append-only file), waiting up to 5 s.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(client) = redis::Client::open(self.url().as_str())
            && let Ok(mut c) = client.get_multiplexed_async_connection().await
        {
            let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query_async(&mut c).await;
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }

    /// Starts a stopped or killed server again on the same port and directory.
    ///
    /// Errors: as [`RedisServer::start`].
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await;
        let opts = RedisServerOptions { port: Some(self.port), ..self.opts.clone() };
        let fresh = Self::spawn_on(&opts, self.port).await?;
        *self = fresh;
        Ok(())
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("probing for a free port")?;
    Ok(l.local_addr()?.port())
}
