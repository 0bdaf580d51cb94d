//! Test support: a real `redis-server` per test, a gateway on port 0, helpers.

use std::time::Duration;

use linkloop::app::{AppState, Application};
use linkloop::config::{Config, KeyConfig, KeysConfig};
use linkloop::conversion::auth::MerchantConfig;
use linkloop::platform::Platform;
use linkloop::store::supervisor::{RedisServer, RedisServerOptions};
use secrecy::SecretString;

/// Secrets used by every test gateway (the CLI tests pass the same via a config file).
pub const LINK_SECRET: &str = "test-link-secret-0123456789abcdef-0123456789";
pub const JUMP_SECRET: &str = "test-jump-secret-0123456789abcdef-0123456789";
pub const VISITOR_SECRET: &str = "test-visitor-secret-0123456789abcdef-012345";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";
/// A shopper's browser (reqwest sends no User-Agent by default, which is a bot).
pub const SHOPPER_UA: &str =
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36";
/// Merchant `tmall-shop` (taobao + tmall) secrets, kid 1 and kid 2; merchant `jd-shop` (jd) uses kid 1.
pub const MERCHANT_SECRET_1: &str = "merchant-secret-one-0123456789abcdef-0123";
pub const MERCHANT_SECRET_2: &str = "merchant-secret-two-0123456789abcdef-0123";

pub struct TestRedis {
    pub server: RedisServer,
    _dir: tempfile::TempDir,
}

impl TestRedis {
    pub async fn start() -> TestRedis {
        let dir = tempfile::tempdir().unwrap();
        let server = RedisServer::start(RedisServerOptions::in_dir(dir.path().join("redis"))).await.unwrap();
        TestRedis { server, _dir: dir }
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.server.tcp_url()).unwrap().get_multiplexed_async_connection().await.unwrap()
    }
}

pub fn test_config(data_dir: &std::path::Path, redis_url: &str) -> Config {
    let key = |s: &str| vec![KeyConfig { kid: 1, secret: SecretString::from(s.to_owned()) }];
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.into(),
        redis_url: Some(redis_url.into()),
        admin_token: Some(SecretString::from(ADMIN_TOKEN.to_owned())),
        keys: KeysConfig {
            link: key(LINK_SECRET),
            link_active_kid: Some(1),
            jump: key(JUMP_SECRET),
            jump_active_kid: Some(1),
            visitor_secret: Some(SecretString::from(VISITOR_SECRET.to_owned())),
        },
        // Every test client is 127.0.0.1: per-IP limits are tested on their own.
        click_soft_limit_per_minute: 1_000_000,
        click_hard_limit_per_minute: 1_000_000,
        admin_rate_limit_per_second: 100_000,
        merchants: vec![
            merchant(
                "tmall-shop",
                &[Platform::Taobao, Platform::Tmall],
                &[(1, MERCHANT_SECRET_1), (2, MERCHANT_SECRET_2)],
            ),
            merchant("jd-shop", &[Platform::Jd], &[(1, MERCHANT_SECRET_1)]),
        ],
        ..Config::default()
    }
}

fn merchant(id: &str, platforms: &[Platform], secrets: &[(u8, &str)]) -> MerchantConfig {
    MerchantConfig {
        id: id.into(),
        platforms: platforms.to_vec(),
        attribution_window_days: None,
        secrets: secrets
            .iter()
            .map(|(kid, s)| KeyConfig { kid: *kid, secret: SecretString::from((*s).to_owned()) })
            .collect(),
    }
}

pub struct TestApp {
    pub base: String,
    pub state: AppState,
    pub redis: TestRedis,
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _data: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    linkloop::telemetry::init_for_test();
    let redis = TestRedis::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config(data.path(), &redis.server.tcp_url());
    tweak(&mut config);
    let app = Application::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let client =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).user_agent(SHOPPER_UA).build().unwrap();
    TestApp { base, state, redis, client, shutdown: Some(tx), handle: Some(handle), _data: data }
}

impl TestApp {
    /// Mints a link over the API and returns the whole JSON body.
    pub async fn mint(&self, note: &str, creator: &str, url: &str) -> serde_json::Value {
        let res = self
            .client
            .post(format!("{}/v1/links", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({"note_id": note, "creator_id": creator, "url": url}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{:?}", res.text().await);
        res.json().await.unwrap()
    }

    pub async fn get(&self, url: &str) -> reqwest::Response {
        self.client.get(url).send().await.unwrap()
    }

    /// Clicks a tracked link (mobile UA) and returns the click token and click time (ms) from the jump URL.
    pub async fn click(&self, link: &str) -> (String, u64) {
        let res = self.client.get(link).header("user-agent", "Mozilla/5.0 (iPhone) Mobile").send().await.unwrap();
        assert_eq!(res.status(), 302);
        let claims = linkloop::jump::verify(res.headers()["location"].to_str().unwrap(), &keys().1).unwrap();
        (claims.click_token.hyphenated().to_string(), claims.ts_ms)
    }

    /// Posts a signed conversion body as merchant `merchant` with `secret`/`kid`, signed `skew_s` seconds off now.
    pub async fn post_conversion(
        &self,
        path: &str,
        merchant: &str,
        secret: &str,
        kid: u8,
        skew_s: i64,
        body: &str,
    ) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
        let t = (linkloop::click::now_ms() / 1000).saturating_add_signed(skew_s);
        let sig = linkloop::conversion::auth::sign_body(secret.as_bytes(), kid, t, body.as_bytes());
        let res = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("linkloop-merchant", merchant)
            .header("linkloop-signature", sig)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        (status, res.json().await.unwrap_or(serde_json::Value::Null), headers)
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        self.redis.conn().await
    }

    /// Sum of a counter family's samples in `/metrics` whose line starts with `prefix`.
    pub async fn metric(&self, prefix: &str) -> f64 {
        let text = self.get(&format!("{}/metrics", self.base)).await.text().await.unwrap();
        text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), h).await;
        }
    }
}

/// Waits (up to 10 s) until the spool is replayed into Redis.
pub async fn wait_spool_empty(app: &TestApp) {
    for _ in 0..200 {
        if app.state.spool.pending() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("spool still holds {} clicks", app.state.spool.pending());
}

pub fn keys() -> (linkloop::signing::Keyring, linkloop::signing::Keyring) {
    (
        linkloop::signing::Keyring::new(&[(1, LINK_SECRET)], 1).unwrap(),
        linkloop::signing::Keyring::new(&[(1, JUMP_SECRET)], 1).unwrap(),
    )
}

/// Every click record in Redis (`ll:crs:{minute}` hashes, a `{token} {record}` line per
/// click in the field of the token's ms; a token recorded twice would panic): token → packed record.
pub async fn click_records(r: &mut redis::aio::MultiplexedConnection) -> std::collections::HashMap<String, String> {
    use redis::AsyncCommands;
    let hashes: Vec<String> = r.keys("ll:crs:*").await.unwrap();
    let mut out = std::collections::HashMap::new();
    for h in hashes {
        let fields: std::collections::HashMap<String, String> = r.hgetall(&h).await.unwrap();
        for (ms, slot) in fields {
            for (token, record) in linkloop::store::keys::slot_lines(&slot) {
                let t: uuid::Uuid = token.parse().unwrap();
                assert_eq!(linkloop::store::keys::token_ms(&t).unwrap().to_string(), ms, "{token} in field {ms}");
                assert!(out.insert(token.to_owned(), record.to_owned()).is_none(), "{token} recorded twice");
            }
        }
    }
    out
}

/// The record hash holding the click record of `token` and its field (see
/// `linkloop::store::keys::click_slots`).
pub fn click_slot_of(token: &str) -> (String, u64) {
    let t: uuid::Uuid = token.parse().unwrap();
    let ms = linkloop::store::keys::token_ms(&t).unwrap();
    (linkloop::store::keys::click_slots(ms / 60_000), ms)
}

/// One click as stored in a stream entry (`ll:clicks` or `ll:nonbillable`).
#[derive(Debug, Clone, Default)]
pub struct StreamClick {
    /// Id of the entry holding it (one entry per group commit).
    pub id: String,
    pub tok: String,
    pub rec: String,
    /// `reason` (non-billable stream only).
    pub reason: String,
    /// Parts of this click in the entry: token, record[, reason].
    pub fields: usize,
}

/// Every click of `stream`, in order: an entry holds the clicks of one group commit. For `ll:clicks`, whose entries the aggregator trims once
/// applied, the clicks trimmed away come first (from their click records, `id` empty), so
/// this is every billable click recorded, each token once unless the stream holds it twice.
pub async fn stream_clicks(r: &mut redis::aio::MultiplexedConnection, stream: &str) -> Vec<StreamClick> {
    let left = stream_entries(r, stream).await;
    if stream != linkloop::store::keys::CLICK_STREAM {
        return left;
    }
    // Trimmed clicks are older than every entry left: they come first, in token (UUID v7
    // time) order.
    let seen: std::collections::HashSet<String> = left.iter().map(|c| c.tok.clone()).collect();
    let mut out: Vec<StreamClick> = click_records(r)
        .await
        .into_iter()
        .filter(|(tok, _)| !seen.contains(tok))
        .map(|(tok, rec)| StreamClick { tok, rec, fields: 2, ..StreamClick::default() })
        .collect();
    out.sort_by(|a, b| a.tok.cmp(&b.tok));
    out.extend(left);
    out
}

/// The clicks still in `stream`'s entries, in order. An entry's one field `clicks` holds a
/// line per click, `{token} {record}[ {reason}]`; entries of the earlier layout (a test may
/// write them) hold a `tok`/`rec`[/`reason`] group per click.
pub async fn stream_entries(r: &mut redis::aio::MultiplexedConnection, stream: &str) -> Vec<StreamClick> {
    let reply: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query_async(r).await.unwrap();
    let mut out: Vec<StreamClick> = Vec::new();
    for (id, fields) in reply {
        let mut entry: Vec<StreamClick> = Vec::new();
        for (name, value) in fields {
            if name == "clicks" {
                assert!(entry.is_empty(), "one clicks field per entry");
                for line in value.split('\n') {
                    let parts: Vec<&str> = line.split(' ').collect();
                    assert!(matches!(parts.len(), 2 | 3), "a click line is token, record[, reason]: {line:?}");
                    entry.push(StreamClick {
                        id: id.clone(),
                        tok: parts[0].to_owned(),
                        rec: parts[1].to_owned(),
                        reason: parts.get(2).map(|r| (*r).to_owned()).unwrap_or_default(),
                        fields: parts.len(),
                    });
                }
                continue;
            }
            if name == "tok" {
                entry.push(StreamClick { id: id.clone(), tok: value, ..StreamClick::default() });
            } else {
                let c = entry.last_mut().expect("a stream entry starts with tok");
                match name.as_str() {
                    "rec" => c.rec = value,
                    "reason" => c.reason = value,
                    other => panic!("unexpected stream field {other:?}"),
                }
            }
            if let Some(c) = entry.last_mut() {
                c.fields += 1;
            }
        }
        out.extend(entry);
    }
    out
}

/// Clicks in `stream` (entries hold a group commit each, so this is not `XLEN`).
pub async fn stream_len(r: &mut redis::aio::MultiplexedConnection, stream: &str) -> u64 {
    stream_clicks(r, stream).await.len() as u64
}
