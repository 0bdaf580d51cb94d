//! One short end-to-end run against a real gateway and its own redis-server, started the
//! way the main crate's tests start them (`Application::build` + `RedisServer`): a few
//! seconds at a low rate, conversions with duplicates and refunds, the Redis stream
//! check on. Asserts exact counts (never timings).

#![allow(clippy::unwrap_used)]

use linkloop::app::Application;
use linkloop::config::{Config, KeyConfig, KeysConfig};
use linkloop::conversion::auth::MerchantConfig;
use linkloop::platform::Platform;
use linkloop::store::supervisor::{RedisServer, RedisServerOptions};
use loadtest::Opts;
use loadtest::histo::Endpoint;
use secrecy::SecretString;

const ADMIN_TOKEN: &str = "loadtest-admin-token";
const MERCHANT: &str = "loadtest-shop";
const MERCHANT_SECRET: &str = "loadtest-merchant-secret-0123456789abcdef";

fn config(data_dir: &std::path::Path, redis_url: &str) -> Config {
    let key = |s: &str| vec![KeyConfig { kid: 1, secret: SecretString::from(s.to_owned()) }];
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.into(),
        redis_url: Some(redis_url.into()),
        admin_token: Some(SecretString::from(ADMIN_TOKEN.to_owned())),
        keys: KeysConfig {
            link: key("loadtest-link-secret-0123456789abcdef-0123"),
            link_active_kid: Some(1),
            jump: key("loadtest-jump-secret-0123456789abcdef-0123"),
            jump_active_kid: Some(1),
            visitor_secret: Some(SecretString::from("loadtest-visitor-secret-0123456789abcdef".to_owned())),
        },
        merchants: vec![MerchantConfig {
            id: MERCHANT.into(),
            platforms: vec![Platform::Taobao, Platform::Tmall, Platform::Jd],
            attribution_window_days: None,
            secrets: vec![KeyConfig { kid: 3, secret: SecretString::from(MERCHANT_SECRET.to_owned()) }],
        }],
        // The tester sends each click from its own address in X-Forwarded-For.
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        ..Config::default()
    }
}

#[test]
fn user_agent_classes_agree_with_the_gateway() {
    for (text, class) in loadtest::scenario::USER_AGENTS {
        let ua = if text.is_empty() { None } else { Some(*text) };
        assert_eq!(linkloop::click::UaClass::classify(ua).as_str(), class.as_str(), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_run_against_a_real_gateway_verifies_exactly() {
    linkloop::telemetry::init_for_test();
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(RedisServerOptions::in_dir(dir.path().join("redis"))).await.unwrap();
    let app = Application::build(config(&dir.path().join("data"), &redis.tcp_url())).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stop_rx.await;
    }));

    let json_path = dir.path().join("summary.json");
    let args = format!(
        "-R 150 -d 3s -c 8 --links 60 --notes 12 --creators 4 --admin-token {ADMIN_TOKEN} --merchant {MERCHANT} \
         --merchant-secret {MERCHANT_SECRET} --kid 3 --conversion-share 0.3 --duplicate-share 0.5 \
         --refund-share 0.5 --conversion-delay 300ms --redis-url {} --json {} --progress off {base}",
        redis.tcp_url(),
        json_path.display()
    );
    let opts = Opts::from_args(args.split_whitespace()).unwrap();
    let s = loadtest::run(opts).await.unwrap();
    let report = s.render();
    let v = s.verification.as_ref().unwrap();
    assert!(s.passed(), "{report}");
    assert!(v.checks.iter().all(|c| c.ok), "{report}");

    // Every click sent was answered with a 302 carrying a token. Each of the 450 planned clicks
    // was sent or counted as not sent (a noisy machine may leave a few unsent at the deadline).
    let o = s.open_loop.as_ref().unwrap();
    assert_eq!((o.planned, o.sent + o.not_sent), (450, 450), "{report}");
    assert_eq!(s.clicks.get_counted + s.clicks.get_bot + s.clicks.head, o.sent, "{report}");
    assert_eq!((s.clicks.unanswered, s.clicks.no_token), (0, 0), "{report}");
    let get = s.endpoint(Endpoint::ClickGet).unwrap();
    assert_eq!(get.errors, 0, "{report}");
    assert_eq!(get.statuses.get("302").copied(), Some(s.clicks.get_counted + s.clicks.get_bot));
    assert!(s.refused_urls.is_empty(), "{:?}", s.refused_urls);

    // The side-by-side numbers are equal, not merely "ok".
    let line = |name: &str| v.checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("{name}: {report}"));
    // The gateway records bots and HEADs as non-billable (the tester's default, --bots-counted false).
    let clicks = line("clicks (GET, bots excluded)");
    assert_eq!(clicks.observed, s.clicks.get_counted as i64);
    assert_eq!(clicks.recorded, clicks.observed, "{report}");
    let stream = line("click tokens recorded (ll:crs:*, ll:clicks)");
    assert_eq!((stream.observed, stream.recorded), (clicks.observed, clicks.observed), "{report}");
    let nonbillable = line("bot/HEAD tokens in ll:nonbillable");
    assert_eq!(nonbillable.observed, (s.clicks.get_bot + s.clicks.head) as i64, "{report}");
    assert_eq!(nonbillable.recorded, nonbillable.observed, "{report}");
    assert!(s.clicks.get_bot > 0 && s.clicks.head > 0, "{report}");
    for name in ["conversions (paid, 201)", "refunds (201)", "GMV net of refunds (fen)"] {
        let c = line(name);
        assert_eq!(c.observed, c.recorded, "{name}: {report}");
    }
    let c = s.conversions.as_ref().unwrap();
    assert!(c.paid_accepted > 10, "{report}");
    assert_eq!(c.paid_accepted, c.paid_sent, "{report}");
    assert!(c.duplicates_sent > 0 && c.duplicates_ok == c.duplicates_sent, "{report}");
    assert!(c.refunds_accepted > 0 && c.refunds_accepted == c.refunds_sent, "{report}");
    assert_eq!(line("conversions (paid, 201)").recorded, c.paid_accepted as i64);
    assert!(v.lag_ms.is_some(), "{report}");

    // The gateway's aggregation-lag histogram, scraped around the run: clicks were counted
    // in between, and p99 is a bucket bound (no timing asserted).
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let lag = &json["aggregation_lag"];
    assert!(lag["count"].as_u64().is_some_and(|n| n > 0), "{lag}: {report}");
    assert!(lag["p99_le_s"].is_number() || lag["p99_le_s"] == "+Inf", "{lag}: {report}");
    assert!(lag["p50_le_s"].is_number() || lag["p50_le_s"] == "+Inf", "{lag}: {report}");
    assert_eq!(lag["settled"], true, "{report}");
    let printed = report.lines().find(|l| l.starts_with("aggregation lag (gateway histogram): n=")).unwrap();
    println!("{printed}");

    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(15), server).await;
    let mut redis = redis;
    redis.stop().await;
}
