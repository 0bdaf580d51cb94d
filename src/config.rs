//! Configuration: a TOML file, then environment overrides, then validation.
//!
//! Every field has a default (`#[serde(default)]`); units are in the names.
//! The environment variables below override the file (tests pass a map instead
//! of touching the process environment):
//!
//! | variable | field | default |
//! |---|---|---|
//! | `LINKLOOP_LISTEN` | `listen` | `127.0.0.1:8080` |
//! | `LINKLOOP_PUBLIC_URL` | `public_url` | `http://{listen}` |
//! | `LINKLOOP_DATA_DIR` | `data_dir` | `./data` |
//! | `LINKLOOP_ADMIN_TOKEN` | `admin_token` | generated, in `{data_dir}/dev-keys.toml` |
//! | `LINKLOOP_REDIS_URL` or `REDIS_URL` | `redis_url` | unset: `serve` supervises its own `redis-server` |
//! | `LINKLOOP_WORKER_THREADS` | `worker_threads` | `0`: one per CPU |
//!
//! Keys: when `[keys]` gives no link keys, jump keys or visitor secret, dev keys
//! are generated once into `{data_dir}/dev-keys.toml` (mode 0600) and reused, so
//! `linkloop mint` and `linkloop serve` on the same data directory agree. A loud
//! warning says so: production configs set `[keys]` explicitly. See `docs/config.md`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::click::VisitorHasher;
use crate::signing::{Keyring, MIN_SECRET_BYTES};

/// Environment variables that override config fields: `(variable, field)`.
pub const ENV_OVERRIDES: [(&str, &str); 7] = [
    ("LINKLOOP_WORKER_THREADS", "worker_threads"),
    ("LINKLOOP_LISTEN", "listen"),
    ("LINKLOOP_PUBLIC_URL", "public_url"),
    ("LINKLOOP_DATA_DIR", "data_dir"),
    ("LINKLOOP_ADMIN_TOKEN", "admin_token"),
    ("REDIS_URL", "redis_url"),
    // Applied after `REDIS_URL`, so it wins when both are set.
    ("LINKLOOP_REDIS_URL", "redis_url"),
];

/// The gateway's configuration. Each field's doc gives its default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Base URL of minted links (`{public_url}/j/{link}`), no trailing slash. Default `http://{listen}`.
    pub public_url: Option<String>,
    /// Data directory: dev keys, the supervised Redis's files. Default `./data`.
    pub data_dir: PathBuf,
    /// Redis to use. Default unset: start and supervise `redis-server` under `{data_dir}/redis`.
    pub redis_url: Option<String>,
    /// `redis-server` binary for the supervised Redis. Default `redis-server`.
    pub redis_server_bin: PathBuf,
    /// Supervised Redis only: append-only-file size before its first compaction
    /// (`auto-aof-rewrite-min-size`), MiB; then whenever it doubles. Default 1,024.
    pub redis_aof_rewrite_min_mb: u64,
    /// Bearer token for the admin API (`POST /v1/links`, stats). Default: generated dev token.
    pub admin_token: Option<SecretString>,
    /// IANA time zone of the day boundaries of daily counters. Default `Asia/Shanghai`.
    pub timezone: String,
    /// How long after a click a conversion still counts, days. Default 7.
    pub attribution_window_days: u32,
    /// Extra time a click record is kept after the attribution window, days. Default 1.
    pub click_grace_days: u32,
    /// Longest wait for Redis to acknowledge a click before redirecting anyway, ms. Default 200.
    pub click_write_timeout_ms: u64,
    /// Approximate cap of the non-billable stream `ll:nonbillable`, requests (an entry of `n`
    /// requests trims it to `click_stream_maxlen / n` entries, `XADD MAXLEN ~`). The billable
    /// click stream `ll:clicks` has no cap: a cap trims the oldest entries whether or not they
    /// were counted, so only the aggregator trims it, behind its cursor. Default 2,000,000.
    pub click_stream_maxlen: u64,
    /// How long the click stream keeps entries the aggregator has applied, ms (their
    /// clicks live on in the click records). 0: trimmed as soon as applied, so the stream
    /// holds the clicks waiting to be counted and at most a few applied entries of its last
    /// node (`XTRIM MINID ~` before the last applied entry, whole nodes at a time).
    /// Raise it to tail the stream from another consumer. Default 0.
    pub click_stream_retention_ms: u64,
    /// Clicks applied per aggregator transaction (whole stream entries; at least one). Default 128 (a
    /// transaction holds Redis for well under a millisecond, so the redirect's tail stays short).
    pub aggregator_batch: usize,
    /// Run the aggregator in this process. With several gateways on one Redis, any
    /// number may run it (a batch is applied by whichever applies first; the others read
    /// again from the moved cursor). Default true.
    pub aggregator_enabled: bool,
    /// Longest time in-flight requests get to finish on SIGTERM/SIGINT, seconds. Default 10.
    pub shutdown_grace_seconds: u64,
    /// Longest time a request may take before `408`/`503`, ms. Default 10,000.
    pub request_timeout_ms: u64,
    /// Requests served at once before new ones are shed with `503`. Default 4,096.
    pub max_concurrent_requests: usize,
    /// Longest time a client may take to send a request's line and headers, ms; past it the
    /// connection is closed (slow-loris defence; also bounds idle keep-alive). Default 10,000.
    pub header_read_timeout_ms: u64,
    /// Largest request line + headers, bytes; past it `431` and the connection is closed.
    /// Default 16,384 (16 KiB).
    pub max_header_bytes: usize,
    /// Open client connections at most; past it new connections wait in the kernel's
    /// accept backlog. Default 10,000.
    pub max_connections: usize,
    /// Request-serving threads. `0` (default): one per CPU (Tokio's multi-threaded
    /// runtime; `TOKIO_WORKER_THREADS` also sets the count). `1`: a single-threaded
    /// runtime, the fastest choice when the gateway is given one core (like an nginx
    /// with `worker_processes 1`): no work-stealing, no cross-thread wake-ups.
    /// `n > 1`: a multi-threaded runtime with `n` workers.
    pub worker_threads: usize,
    /// Log JSON lines instead of human-readable text. Default false.
    pub log_json: bool,
    /// Signing keys. Default: dev keys (see module doc).
    pub keys: KeysConfig,
    /// Merchants allowed to post conversions (`[[merchants]]`). Default none.
    pub merchants: Vec<crate::conversion::auth::MerchantConfig>,
    /// Accepted skew of a callback signature's timestamp, seconds. Default 300.
    pub callback_tolerance_seconds: u64,
    /// Conversion callbacks per second per merchant (burst: 2 s worth); past it `429`. Default 2,000.
    pub merchant_rate_limit_per_second: u32,
    /// Approximate cap of the conversion stream, entries. Default 1,000,000.
    pub conversion_stream_maxlen: u64,
    /// Directory of the durable click spool. Default `{data_dir}/spool`.
    pub spool_dir: Option<PathBuf>,
    /// Size cap of the spool, bytes. Default 256 MiB (about 1.5 million clicks).
    pub spool_max_bytes: u64,
    /// Proxies (CIDRs) whose `X-Forwarded-For` / `Forwarded` headers are believed. Default none.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Clicks per minute per client IP past which clicks are still redirected but
    /// recorded as not billable (`rate_limited`). Default 120.
    pub click_soft_limit_per_minute: u32,
    /// Requests per minute per client IP on `/j/` past which the answer is `429`. Default 1,200.
    pub click_hard_limit_per_minute: u32,
    /// Admin API requests per second (all tokens together). Default 50.
    pub admin_rate_limit_per_second: u32,
    /// A click by the same visitor (IP hash + UA class) on the same note and item within
    /// this many seconds is recorded but flagged a repeat. Default 1,800.
    pub repeat_click_window_seconds: u64,
}

/// `[keys]`: signing keys by key id. Secrets are at least 32 bytes.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeysConfig {
    /// Tracked-link keys; more than one during rotation.
    pub link: Vec<KeyConfig>,
    /// Kid that signs new links. Default: the highest kid in `link`.
    pub link_active_kid: Option<u8>,
    /// Jump-URL keys (share these with merchants that verify jump URLs).
    pub jump: Vec<KeyConfig>,
    /// Kid that signs new jump URLs. Default: the highest kid in `jump`.
    pub jump_active_kid: Option<u8>,
    /// Key of the client-IP hash.
    #[serde(serialize_with = "expose")]
    pub visitor_secret: Option<SecretString>,
}

/// One key: a kid and its secret.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Key id, 0–255.
    pub kid: u8,
    /// The secret, at least 32 bytes (used as raw UTF-8 bytes).
    #[serde(serialize_with = "expose_str")]
    pub secret: SecretString,
}

fn expose<S: serde::Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_some(v.expose_secret()),
        None => s.serialize_none(),
    }
}

fn expose_str<S: serde::Serializer>(v: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.expose_secret())
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            data_dir: PathBuf::from("./data"),
            redis_url: None,
            redis_server_bin: PathBuf::from("redis-server"),
            redis_aof_rewrite_min_mb: crate::store::supervisor::DEFAULT_AOF_REWRITE_MIN_MB,
            admin_token: None,
            timezone: "Asia/Shanghai".into(),
            attribution_window_days: 7,
            click_grace_days: 1,
            click_write_timeout_ms: 200,
            click_stream_maxlen: 2_000_000,
            click_stream_retention_ms: 0,
            aggregator_batch: 128,
            aggregator_enabled: true,
            shutdown_grace_seconds: 10,
            request_timeout_ms: 10_000,
            max_concurrent_requests: 4096,
            header_read_timeout_ms: 10_000,
            max_header_bytes: 16 * 1024,
            max_connections: 10_000,
            worker_threads: 0,
            log_json: false,
            keys: KeysConfig::default(),
            merchants: Vec::new(),
            callback_tolerance_seconds: 300,
            merchant_rate_limit_per_second: 2000,
            conversion_stream_maxlen: 1_000_000,
            spool_dir: None,
            spool_max_bytes: 256 * 1024 * 1024,
            trusted_proxies: Vec::new(),
            click_soft_limit_per_minute: 120,
            click_hard_limit_per_minute: 1200,
            admin_rate_limit_per_second: 50,
            repeat_click_window_seconds: 1800,
        }
    }
}

/// Key material resolved from config or dev keys.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// Tracked-link keyring.
    pub link_keys: Keyring,
    /// Jump-URL keyring.
    pub jump_keys: Keyring,
    /// Client-IP hasher.
    pub visitor: VisitorHasher,
    /// Admin bearer token.
    pub admin_token: SecretString,
    /// True when some key came from the generated dev-keys file.
    pub dev_keys: bool,
}

/// The generated dev-keys file, `{data_dir}/dev-keys.toml`.
#[derive(Debug, Deserialize, Serialize)]
struct DevKeys {
    #[serde(serialize_with = "expose_str")]
    admin_token: SecretString,
    keys: KeysConfig,
}

impl Config {
    /// Parses TOML text (no environment). Errors name the offending key.
    pub fn from_toml_str(text: &str) -> anyhow::Result<Config> {
        Self::build(Some(config::File::from_str(text, config::FileFormat::Toml)), &HashMap::new())
    }

    /// Loads `file` (if any), applies [`ENV_OVERRIDES`] found in `env`, validates.
    ///
    /// Errors: unreadable file, bad TOML, unknown key, a value of the wrong shape
    /// (the message names the field or variable), or a failed [`Config::validate`].
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> anyhow::Result<Config> {
        let source = file.map(|p| config::File::from(p).format(config::FileFormat::Toml).required(true));
        Self::build(source, env)
    }

    fn build<T>(
        file: Option<config::File<T, config::FileFormat>>,
        env: &HashMap<String, String>,
    ) -> anyhow::Result<Config>
    where
        config::File<T, config::FileFormat>: config::Source + Send + Sync + 'static,
    {
        let mut b = config::Config::builder();
        if let Some(f) = file {
            b = b.add_source(f);
        }
        for (var, field) in ENV_OVERRIDES {
            if let Some(v) = env.get(var).filter(|v| !v.is_empty()) {
                b = b.set_override(field, v.as_str()).with_context(|| format!("environment variable {var}"))?;
            }
        }
        let cfg: Config = b.build()?.try_deserialize().context("invalid configuration")?;
        cfg.validate()
    }

    /// Checks values that types alone cannot: URL shape, time zone, limits, key lengths.
    pub fn validate(self) -> anyhow::Result<Config> {
        if let Some(u) = &self.public_url {
            let parsed = url::Url::parse(u).with_context(|| format!("public_url: not a URL: {u}"))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() {
                bail!("public_url: must be an http(s) URL without query, e.g. https://go.example.com");
            }
        }
        self.tz()?;
        if self.click_write_timeout_ms == 0 || self.request_timeout_ms == 0 || self.max_concurrent_requests == 0 {
            bail!("click_write_timeout_ms, request_timeout_ms and max_concurrent_requests must be positive");
        }
        if self.worker_threads > 1024 {
            bail!("worker_threads: must be 0 (one per CPU) to 1024");
        }
        if self.header_read_timeout_ms == 0 || self.max_connections == 0 {
            bail!("header_read_timeout_ms and max_connections must be positive");
        }
        if !(4096..=1024 * 1024).contains(&self.max_header_bytes) {
            bail!("max_header_bytes: must be 4096..=1048576");
        }
        if self.aggregator_batch == 0 || self.aggregator_batch > 2048 {
            bail!("aggregator_batch: must be 1..=2048");
        }
        if self.click_soft_limit_per_minute == 0
            || self.click_hard_limit_per_minute < self.click_soft_limit_per_minute
            || self.admin_rate_limit_per_second == 0
        {
            bail!(
                "click_soft_limit_per_minute must be positive and <= click_hard_limit_per_minute; admin_rate_limit_per_second positive"
            );
        }
        if self.merchant_rate_limit_per_second == 0 || self.callback_tolerance_seconds == 0 {
            bail!("merchant_rate_limit_per_second and callback_tolerance_seconds must be positive");
        }
        crate::conversion::auth::Merchants::new(&self.merchants, self.attribution_window_days, 1)?;
        if self.attribution_window_days == 0 {
            bail!("attribution_window_days: must be positive");
        }
        // A bearer token guessed is the whole admin API: as long as a signing secret.
        if self.admin_token.as_ref().is_some_and(|t| t.expose_secret().len() < MIN_SECRET_BYTES) {
            bail!("admin_token: must be at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)");
        }
        for k in self.keys.link.iter().chain(&self.keys.jump) {
            if k.secret.expose_secret().len() < MIN_SECRET_BYTES {
                bail!("keys: secret of kid {} must be at least {MIN_SECRET_BYTES} bytes", k.kid);
            }
        }
        Ok(self)
    }

    /// The configured time zone. Errors: not an IANA zone name.
    pub fn tz(&self) -> anyhow::Result<chrono_tz::Tz> {
        self.timezone.parse().map_err(|_| anyhow::anyhow!("timezone: unknown IANA zone {:?}", self.timezone))
    }

    /// The spool directory.
    pub fn spool_dir(&self) -> PathBuf {
        self.spool_dir.clone().unwrap_or_else(|| self.data_dir.join("spool"))
    }

    /// Base URL of minted links.
    pub fn public_url(&self) -> String {
        self.public_url
            .as_deref()
            .map_or_else(|| format!("http://{}", self.listen), |u| u.trim_end_matches('/').to_owned())
    }

    /// Click record lifetime: attribution window + grace.
    pub fn click_ttl(&self) -> Duration {
        Duration::from_secs(u64::from(self.attribution_window_days + self.click_grace_days) * 86_400)
    }

    /// Resolves keys: configured ones, else the dev-keys file (created on first use).
    ///
    /// Errors: unreadable/unwritable dev-keys file, or an invalid keyring.
    pub fn secrets(&self) -> anyhow::Result<Secrets> {
        let k = &self.keys;
        let need_dev =
            k.link.is_empty() || k.jump.is_empty() || k.visitor_secret.is_none() || self.admin_token.is_none();
        let dev = if need_dev { Some(load_or_create_dev_keys(&self.data_dir)?) } else { None };
        let pick = |configured: &Vec<KeyConfig>, dev: Option<&Vec<KeyConfig>>| -> Vec<KeyConfig> {
            if configured.is_empty() { dev.cloned().unwrap_or_default() } else { configured.clone() }
        };
        let link = pick(&k.link, dev.as_ref().map(|d| &d.keys.link));
        let jump = pick(&k.jump, dev.as_ref().map(|d| &d.keys.jump));
        let link_keys = keyring(&link, k.link_active_kid).context("keys.link")?;
        let jump_keys = keyring(&jump, k.jump_active_kid).context("keys.jump")?;
        let visitor = k
            .visitor_secret
            .clone()
            .or_else(|| dev.as_ref().and_then(|d| d.keys.visitor_secret.clone()))
            .context("keys.visitor_secret missing")?;
        let admin_token = self
            .admin_token
            .clone()
            .or_else(|| dev.as_ref().map(|d| d.admin_token.clone()))
            .context("admin_token missing")?;
        Ok(Secrets {
            link_keys,
            jump_keys,
            visitor: VisitorHasher::new(visitor.expose_secret().as_bytes()),
            admin_token,
            dev_keys: dev.is_some(),
        })
    }
}

fn keyring(keys: &[KeyConfig], active: Option<u8>) -> anyhow::Result<Keyring> {
    let pairs: Vec<(u8, Vec<u8>)> =
        keys.iter().map(|k| (k.kid, k.secret.expose_secret().as_bytes().to_vec())).collect();
    let active = active.or_else(|| keys.iter().map(|k| k.kid).max()).unwrap_or(1);
    Ok(Keyring::new(&pairs, active)?)
}

fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn load_or_create_dev_keys(data_dir: &Path) -> anyhow::Result<DevKeys> {
    let path = data_dir.join("dev-keys.toml");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return toml::from_str(&text).with_context(|| format!("reading {}", path.display()));
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let dev = DevKeys {
        admin_token: SecretString::from(random_secret()),
        keys: KeysConfig {
            link: vec![KeyConfig { kid: 1, secret: SecretString::from(random_secret()) }],
            link_active_kid: Some(1),
            jump: vec![KeyConfig { kid: 1, secret: SecretString::from(random_secret()) }],
            jump_active_kid: Some(1),
            visitor_secret: Some(SecretString::from(random_secret())),
        },
    };
    let text = toml::to_string(&dev).context("encoding dev keys")?;
    write_private(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    Ok(dev)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(
        b"# Generated development keys. Do not use in production: set [keys] and admin_token in a config file.\n",
    )?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_env_overrides() {
        let c = Config::load(None, &HashMap::new()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.public_url(), "http://127.0.0.1:8080");
        let env: HashMap<String, String> = [
            ("LINKLOOP_LISTEN", "0.0.0.0:9000"),
            ("REDIS_URL", "redis://10.0.0.1:6379/"),
            ("LINKLOOP_PUBLIC_URL", "https://go.example.com"),
        ]
        .into_iter()
        .map(|(a, b)| (a.into(), b.into()))
        .collect();
        let c = Config::load(None, &env).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.redis_url.as_deref(), Some("redis://10.0.0.1:6379/"));
        assert_eq!(c.public_url(), "https://go.example.com");
        // The LINKLOOP_ spelling works too, and wins over REDIS_URL.
        let mut env = env;
        env.insert("LINKLOOP_REDIS_URL".into(), "redis://10.0.0.2:6379/".into());
        assert_eq!(Config::load(None, &env).unwrap().redis_url.as_deref(), Some("redis://10.0.0.2:6379/"));
    }

    #[test]
    fn bad_values_name_the_field() {
        let e = Config::from_toml_str("listen = 'nope'").unwrap_err();
        assert!(format!("{e:#}").contains("listen"), "{e:#}");
        let e = Config::from_toml_str("timezone = 'Mars/Olympus'").unwrap_err();
        assert!(format!("{e:#}").contains("timezone"));
        let e = Config::from_toml_str("public_url = 'https://x.example/?a=1'").unwrap_err();
        assert!(format!("{e:#}").contains("public_url"));
        assert_eq!(
            Config::from_toml_str("public_url = 'https://x.example/'").unwrap().public_url(),
            "https://x.example"
        );
        let e = Config::from_toml_str("bogus = 1").unwrap_err();
        assert!(format!("{e:#}").contains("bogus"), "{e:#}");
        let e = Config::from_toml_str("[keys]\nlink = [{kid = 1, secret = 'short'}]").unwrap_err();
        assert!(format!("{e:#}").contains("kid 1"));
        for short in ["", "a", "0123456789abcdef0123456789abcde"] {
            let e = Config::from_toml_str(&format!("admin_token = '{short}'")).unwrap_err();
            assert!(format!("{e:#}").contains("admin_token: must be at least 32 bytes"), "{e:#}");
        }
        assert!(Config::from_toml_str("admin_token = '0123456789abcdef0123456789abcdef'").is_ok());
    }

    #[test]
    fn dev_keys_are_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config { data_dir: dir.path().into(), ..Config::default() };
        let a = c.secrets().unwrap();
        let b = c.secrets().unwrap();
        assert!(a.dev_keys);
        assert_eq!(a.admin_token.expose_secret(), b.admin_token.expose_secret());
        let (_, t1) = a.link_keys.sign(&[b"x"]);
        assert!(b.link_keys.verify(1, &[b"x"], &t1));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("dev-keys.toml")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
