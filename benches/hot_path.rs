//! Hot-path micro-benchmarks (criterion): each step of `GET /j/{link}` on its
//! own, the conversion callback's signature check and body parse, then the whole handler in-process through the router (`tower::oneshot`,
//! no HTTP socket) against a real `redis-server` on a unix socket.
//!
//! Run: `make bench` (or `cargo bench --bench hot_path`). Figures: docs/performance.md.

#![allow(clippy::unwrap_used)] // a benchmark fails loudly on bad setup

use std::hint::black_box;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use linkloop::app::App;
use linkloop::config::{Config, KeyConfig, KeysConfig};
use linkloop::link::{LinkClaims, encode, verify};
use linkloop::platform::{Platform, Product, parse_product};
use linkloop::signing::Keyring;
use secrecy::SecretString;
use tower::ServiceExt;

const SECRET: &str = "bench-secret-0123456789abcdef-0123456789abcdef";

fn claims() -> LinkClaims {
    LinkClaims {
        note_id: "65682d4500000000380339a5".into(),
        creator_id: "creator_01".into(),
        product: Product { platform: Platform::Taobao, item_id: 533000737918, sku_id: None },
        campaign: None,
        issued_at: 1_790_000_000,
    }
}

fn steps(c: &mut Criterion) {
    let keys = Keyring::new(&[(1, SECRET)], 1).unwrap();
    let link = encode(&claims(), &keys).unwrap();
    let mut g = c.benchmark_group("step");
    g.throughput(Throughput::Elements(1));
    g.bench_function("link_verify", |b| b.iter(|| verify(black_box(&link), &keys).unwrap()));
    g.bench_function("link_encode", |b| b.iter(|| encode(black_box(&claims()), &keys).unwrap()));
    g.bench_function("click_token_mint", |b| b.iter(linkloop::click::mint_token));
    let token = linkloop::click::mint_token();
    let product = claims().product;
    g.bench_function("jump_url_build_sign", |b| {
        b.iter(|| linkloop::jump::build(black_box(&product), true, &token, 1_790_000_000_000, &keys))
    });
    let jump = linkloop::jump::build(&product, true, &token, 1_790_000_000_000, &keys);
    g.bench_function("jump_url_verify", |b| b.iter(|| linkloop::jump::verify(black_box(&jump), &keys).unwrap()));
    let visitor = linkloop::click::VisitorHasher::new(SECRET.as_bytes());
    let ip = "203.0.113.7".parse().unwrap();
    g.bench_function("ip_hash", |b| b.iter(|| visitor.ip_hash(black_box(ip))));
    let ua = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47";
    g.bench_function("ua_classify", |b| b.iter(|| linkloop::click::UaClass::classify(black_box(Some(ua)))));
    for (name, url) in [
        ("product_parse_plain", "https://item.taobao.com/item.htm?id=567873872517"),
        (
            "product_parse_tracking",
            "https://item.taobao.com/item.htm?spm=a230r.1.14.20.4a8966187RqiPv&id=533000737918&ns=1&abbucket=3#detail",
        ),
        (
            "product_parse_share_text",
            "[分享]【百亿补贴】京觅富硒鸡蛋3斤 https://item.m.jd.com/product/100104625124.html?utm_user=plusmember",
        ),
    ] {
        g.bench_function(name, |b| b.iter(|| parse_product(black_box(url)).unwrap()));
    }
    g.finish();
}

fn callback(c: &mut Criterion) {
    use linkloop::conversion::ConversionInput;
    use linkloop::conversion::auth::{MerchantConfig, Merchants, sign_body};
    let merchants = Merchants::new(
        &[MerchantConfig {
            id: "tmall-shop".into(),
            platforms: vec![Platform::Taobao, Platform::Tmall],
            attribution_window_days: None,
            secrets: vec![KeyConfig { kid: 1, secret: SecretString::from(SECRET.to_owned()) }],
        }],
        7,
        300,
    )
    .unwrap();
    let body = br#"{"click_token":"01a22b0b-3df4-779a-a659-5b093b29117d","order_id":"O-1","status":"paid","amount":12900,"currency":"CNY","occurred_at":"2026-11-30T12:00:00+08:00"}"#;
    let now = linkloop::click::now_ms() / 1000;
    let sig = sign_body(SECRET.as_bytes(), 1, now, body);
    let mut g = c.benchmark_group("callback");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_signature", |b| {
        b.iter(|| merchants.authenticate(Some("tmall-shop"), Some(&sig), black_box(body), now).unwrap())
    });
    g.bench_function("parse_validate_fingerprint", |b| {
        b.iter(|| {
            let input: ConversionInput = serde_json::from_slice(black_box(body)).unwrap();
            input.validate().unwrap().fingerprint()
        })
    });
    g.bench_function("verify_parse_validate", |b| {
        b.iter(|| {
            merchants.authenticate(Some("tmall-shop"), Some(&sig), black_box(body), now).unwrap();
            let input: ConversionInput = serde_json::from_slice(body).unwrap();
            input.validate().unwrap()
        })
    });
    g.finish();
}

fn handler(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (router, link, _redis) = rt.block_on(async {
        let mut opts = linkloop::store::supervisor::RedisServerOptions::in_dir(dir.path().join("redis"));
        opts.unix_socket = true;
        let redis = linkloop::store::supervisor::RedisServer::start(opts).await.unwrap();
        let key = |s: &str| vec![KeyConfig { kid: 1, secret: SecretString::from(s.to_owned()) }];
        let config = Config {
            data_dir: dir.path().into(),
            admin_token: Some(SecretString::from("bench".to_owned())),
            click_soft_limit_per_minute: u32::MAX,
            click_hard_limit_per_minute: u32::MAX,
            keys: KeysConfig {
                link: key(SECRET),
                link_active_kid: Some(1),
                jump: key(SECRET),
                jump_active_kid: Some(1),
                visitor_secret: Some(SecretString::from(SECRET.to_owned())),
            },
            ..Config::default()
        };
        let app = Arc::new(App::new(config, &redis.url()).unwrap());
        let keys = Keyring::new(&[(1, SECRET)], 1).unwrap();
        let link = format!("/j/{}", encode(&claims(), &keys).unwrap());
        (linkloop::http::router(app), link, redis)
    });
    let mut g = c.benchmark_group("handler");
    g.throughput(Throughput::Elements(1));
    g.bench_function("follow_link_oneshot_with_redis", |b| {
        b.to_async(&rt).iter(|| {
            let req = Request::get(link.as_str())
                .header("user-agent", "Mozilla/5.0 (iPhone) Mobile")
                .body(Body::empty())
                .unwrap();
            let router = router.clone();
            async move {
                let res = router.oneshot(req).await.unwrap();
                assert_eq!(res.status(), 302);
            }
        })
    });
    let bad = format!("{}x", &link[..link.len() - 1]);
    g.bench_function("follow_link_invalid_oneshot", |b| {
        b.to_async(&rt).iter(|| {
            let req = Request::get(bad.as_str()).body(Body::empty()).unwrap();
            let router = router.clone();
            async move { router.oneshot(req).await.unwrap() }
        })
    });
    g.finish();
}

criterion_group!(benches, steps, callback, handler);
criterion_main!(benches);
