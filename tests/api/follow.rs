//! `GET /j/{link}`: mint → click → exact Location and exact Redis contents.

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redis::AsyncCommands;

use crate::support::{keys, spawn_app};

const NOTE: &str = "65682d4500000000380339a5";
const CREATOR: &str = "creator_01";
const TAOBAO: &str =
    "https://item.taobao.com/item.htm?spm=a230r.1.14.20.4a8966187RqiPv&id=533000737918&ns=1&abbucket=3#detail";
const IPHONE_WECHAT: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47";
const DESKTOP: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";

fn shanghai_day(ts_ms: u64) -> String {
    linkloop::store::aggregator::day_of(ts_ms, chrono_tz::Asia::Shanghai)
}

#[tokio::test]
async fn mint_click_exact_location_and_redis_contents() {
    let app = spawn_app().await;
    let minted = app.mint(NOTE, CREATOR, TAOBAO).await;
    assert_eq!(minted["platform"], "taobao");
    assert_eq!(minted["item_id"], "533000737918");
    let link = minted["link"].as_str().unwrap();
    let path_len = link.len() - app.base.len();
    assert!(path_len <= 100, "path is {path_len} chars");

    let before_ms = linkloop::click::now_ms();
    let res = app
        .client
        .get(link)
        .header("user-agent", IPHONE_WECHAT)
        .header("referer", "https://www.xiaohongshu.com/explore/65682d4500000000380339a5")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.headers()["referrer-policy"], "no-referrer");
    let location = res.headers()["location"].to_str().unwrap().to_owned();

    // The Location is the mobile Taobao page for the item, signed.
    let (_, jump_keys) = keys();
    let claims = linkloop::jump::verify(&location, &jump_keys).unwrap();
    assert_eq!(claims.product.item_id, 533000737918);
    assert_eq!(claims.product.platform, linkloop::platform::Platform::Taobao);
    let token = claims.click_token.hyphenated().to_string();
    assert!(
        location.starts_with("https://h5.m.taobao.com/awp/core/detail.htm?id=533000737918&ll_v=1&ll_ct="),
        "{location}"
    );
    assert!(location.contains(&format!("ll_ct={token}&ll_ts={}&ll_kid=1&ll_sig=", claims.ts_ms)));
    assert!(claims.ts_ms >= before_ms && claims.ts_ms <= linkloop::click::now_ms());
    assert_eq!(claims.click_token.get_version_num(), 7);

    // Exactly one stream entry, with every field.
    let mut r = app.redis().await;
    let len: u64 = r.xlen("ll:clicks").await.unwrap();
    assert_eq!(len, 1);
    let clicks = crate::support::stream_clicks(&mut r, "ll:clicks").await;
    assert_eq!(clicks.len(), 1);
    let e = &clicks[0];
    assert_eq!(e.fields, 2, "the click's line holds exactly its token and record");
    assert_eq!(e.tok, token);
    let ip_hash = app.state.visitor.ip_hash("127.0.0.1".parse().unwrap());
    assert!(!ip_hash.contains("127.0.0.1"));
    let expected_record =
        format!("1|{}|{NOTE}|{CREATOR}|taobao|533000737918|||{ip_hash}|app|www.xiaohongshu.com", claims.ts_ms);
    assert_eq!(e.rec, expected_record);

    // The aggregator derives the click record, counters and UV.
    app.state.aggregator.catch_up().await.unwrap();
    let (bucket, ms) = crate::support::click_slot_of(&token);
    let slot: String = r.hget(&bucket, ms).await.unwrap();
    assert_eq!(slot, format!("{token} {expected_record}\n"), "the only click of its ms");
    let record = linkloop::store::keys::slot_record(&slot, &token).unwrap().to_owned();
    assert_eq!(record, expected_record);
    let parsed = linkloop::click::ClickRecord::from_packed(&record).unwrap();
    assert_eq!(parsed.ts_ms, claims.ts_ms);
    assert_eq!(parsed.product, claims.product);
    assert_eq!(parsed.referrer_host.as_deref(), Some("www.xiaohongshu.com"));
    // The bucket lives until the end of its minute + 8 days (7-day window + 1 day grace).
    let ttl_ms: i64 = r.pttl(&bucket).await.unwrap();
    let eight_days = 8 * 86_400_000i64;
    assert!(ttl_ms > eight_days - 5_000 && ttl_ms <= eight_days + 60_000, "ttl {ttl_ms}");
    let minute = bucket["ll:crs:".len()..].parse::<i64>().unwrap();
    let expire_at_ms = i64::try_from(linkloop::click::now_ms()).unwrap() + ttl_ms;
    assert!((expire_at_ms - ((minute + 1) * 60_000 + eight_days)).abs() < 5_000, "bucket expiry");

    let day = shanghai_day(claims.ts_ms);
    for dim in [
        format!("note:{NOTE}"),
        format!("creator:{CREATOR}"),
        "item:taobao:533000737918".into(),
        "platform:taobao".into(),
    ] {
        let clicks: u64 = r.hget(format!("ll:agg:{dim}:{day}"), "clicks").await.unwrap();
        assert_eq!(clicks, 1, "{dim}");
        let uv: u64 = r.pfcount(format!("ll:uv:{dim}:{day}")).await.unwrap();
        assert_eq!(uv, 1, "{dim}");
    }
    // Applying again (a replay after a crash) changes nothing.
    let again = app.state.aggregator.catch_up().await.unwrap();
    assert_eq!(again, 0);
    let cursor: String = r.get("ll:agg:cursor").await.unwrap();
    assert_eq!(cursor, e.id, "cursor at the applied entry");
    // A crash that lost the cursor move re-reads the entry: still counted once.
    let _: () = r.set("ll:agg:cursor", "0-0").await.unwrap();
    assert_eq!(app.state.aggregator.catch_up().await.unwrap(), 1, "re-read");
    let clicks: u64 = r.hget(format!("ll:agg:note:{NOTE}:{day}"), "clicks").await.unwrap();
    assert_eq!(clicks, 1, "re-read entries are not counted twice");
    assert_eq!(app.metric("linkloop_clicks_recorded_total").await, 1.0);
    app.stop().await;
}

#[tokio::test]
async fn desktop_gets_desktop_page_and_jd_sku_form() {
    let app = spawn_app().await;
    let minted = app.mint(NOTE, CREATOR, "https://item.m.jd.com/product/100012043978.html").await;
    let res = app.client.get(minted["link"].as_str().unwrap()).header("user-agent", DESKTOP).send().await.unwrap();
    let location = res.headers()["location"].to_str().unwrap();
    assert!(location.starts_with("https://item.jd.com/100012043978.html?ll_v=1&ll_ct="), "{location}");
    let minted = app
        .mint(NOTE, CREATOR, "https://detail.tmall.com/item.htm?id=43724784272&skuId=4611686062152172176&areaId=440300")
        .await;
    assert_eq!(minted["sku_id"], "4611686062152172176");
    let res = app.client.get(minted["link"].as_str().unwrap()).header("user-agent", DESKTOP).send().await.unwrap();
    let location = res.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("https://detail.tmall.com/item.htm?id=43724784272&skuId=4611686062152172176&ll_v=1"),
        "{location}"
    );
    let (_, jump_keys) = keys();
    assert_eq!(linkloop::jump::verify(location, &jump_keys).unwrap().product.sku_id, Some(4611686062152172176));
    app.stop().await;
}

#[tokio::test]
async fn thousand_concurrent_clicks_thousand_tokens_exact_counters() {
    let app = spawn_app().await;
    let minted = app.mint(NOTE, CREATOR, "https://item.jd.com/100002580230.html").await;
    let link = minted["link"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let client = app.client.clone();
        let link = link.clone();
        tasks.push(tokio::spawn(async move {
            let res = client
                .get(&link)
                .header("user-agent", if i % 2 == 0 { DESKTOP } else { IPHONE_WECHAT })
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 302);
            let loc = res.headers()["location"].to_str().unwrap().to_owned();
            let (_, jk) = keys();
            linkloop::jump::verify(&loc, &jk).unwrap().click_token
        }));
    }
    let mut tokens = HashSet::new();
    for t in tasks {
        tokens.insert(t.await.unwrap());
    }
    assert_eq!(tokens.len(), 1000);
    let mut r = app.redis().await;
    // Clicks that missed the bounded wait went to the spool: wait for its replay.
    crate::support::wait_spool_empty(&app).await;
    // The stream is at-least-once (a spooled click whose XADD also landed appears twice);
    // it holds exactly the 1,000 tokens.
    let clicks = crate::support::stream_clicks(&mut r, "ll:clicks").await;
    let in_stream: HashSet<uuid::Uuid> = clicks.iter().map(|c| c.tok.parse().unwrap()).collect();
    assert_eq!(in_stream, tokens);
    app.state.aggregator.catch_up().await.unwrap();
    let day = shanghai_day(linkloop::click::now_ms());
    let clicks: u64 = r.hget(format!("ll:agg:note:{NOTE}:{day}"), "clicks").await.unwrap();
    assert_eq!(clicks, 1000);
    let clicks: u64 = r.hget(format!("ll:agg:item:jd:100002580230:{day}"), "clicks").await.unwrap();
    assert_eq!(clicks, 1000);
    // One IP, two user-agent classes: two visitors, 998 repeats.
    let repeats: u64 = r.hget(format!("ll:agg:note:{NOTE}:{day}"), "repeat_clicks").await.unwrap();
    assert_eq!(repeats, 998);
    let records = crate::support::click_records(&mut r).await;
    assert_eq!(records.len(), 1000);
    // Applied entries are trimmed (whole stream nodes, `click_stream_retention_ms` = 0): what
    // is left is at most the last node, while every click lives on in its record.
    let left = crate::support::stream_entries(&mut r, "ll:clicks").await.len();
    let entries: u64 = r.xlen("ll:clicks").await.unwrap();
    assert!(left < 1000 && entries <= 100, "{left} clicks in {entries} entries left in ll:clicks");
    let stored: HashSet<uuid::Uuid> = records.keys().map(|k| k.parse().unwrap()).collect();
    assert_eq!(stored, tokens);
    // One visitor (127.0.0.1) behind every click.
    let uv: u64 = r.pfcount(format!("ll:uv:note:{NOTE}:{day}")).await.unwrap();
    assert_eq!(uv, 1);
    app.stop().await;
}

#[tokio::test]
async fn racing_aggregators_and_replayed_clicks_count_each_click_once() {
    // The in-process aggregator is off; three independent ones (as in three gateways on one
    // Redis) race over one click stream that also holds second copies of clicks (a spooled
    // click whose first write landed too, replayed).
    let app = crate::support::spawn_app_with(|c| c.aggregator_enabled = false).await;
    let link = app.mint(NOTE, CREATOR, TAOBAO).await["link"].as_str().unwrap().to_owned();
    let (_, jk) = keys();
    let mut tokens = HashSet::new();
    for i in 0..300 {
        let ua = if i % 3 == 0 { DESKTOP } else { IPHONE_WECHAT };
        let res = app.client.get(&link).header("user-agent", ua).send().await.unwrap();
        assert_eq!(res.status(), 302);
        let loc = res.headers()["location"].to_str().unwrap();
        tokens.insert(linkloop::jump::verify(loc, &jk).unwrap().click_token.to_string());
    }
    let mut r = app.redis().await;
    let clicks = crate::support::stream_entries(&mut r, "ll:clicks").await;
    assert_eq!(clicks.len(), 300);
    for c in clicks.iter().step_by(6) {
        let _: String = redis::cmd("XADD")
            .arg("ll:clicks")
            .arg("*")
            .arg("tok")
            .arg(&c.tok)
            .arg("rec")
            .arg(&c.rec)
            .query_async(&mut r)
            .await
            .unwrap();
    }
    let opts = linkloop::store::aggregator::AggregatorOptions {
        batch: 8,
        click_ttl_ms: 8 * 86_400_000,
        repeat_window_ms: 1_800_000,
        tz: chrono_tz::Asia::Shanghai,
        stream_retention_ms: 0,
    };
    let url = app.redis.server.tcp_url();
    let make = || linkloop::store::aggregator::Aggregator::new(&url, opts.clone(), app.state.metrics.clone()).unwrap();
    let (a, b, c) = (make(), make(), make());
    let (ra, rb, rc) = tokio::join!(a.catch_up(), b.catch_up(), c.catch_up());
    let read = ra.unwrap() + rb.unwrap() + rc.unwrap();
    a.catch_up().await.unwrap();

    let day = shanghai_day(linkloop::click::now_ms());
    let agg: std::collections::HashMap<String, u64> = r.hgetall(format!("ll:agg:note:{NOTE}:{day}")).await.unwrap();
    assert_eq!(agg.get("clicks"), Some(&300), "each click once: {agg:?}");
    // One IP, two user-agent classes: two visitors, 298 repeats.
    assert_eq!(agg.get("repeat_clicks"), Some(&298), "{agg:?}");
    let uv: u64 = r.pfcount(format!("ll:uv:note:{NOTE}:{day}")).await.unwrap();
    assert_eq!(uv, 1);
    let records = crate::support::click_records(&mut r).await;
    let stored: HashSet<String> = records.keys().cloned().collect();
    assert_eq!(stored, tokens);
    let last: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg("ll:clicks")
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut r)
        .await
        .unwrap();
    let cursor: String = r.get("ll:agg:cursor").await.unwrap();
    assert_eq!(cursor, last[0].0, "cursor at the last entry");
    let conflicts = app.metric("linkloop_aggregator_conflicts_total").await;
    println!("350 entries, {read} read by three racing aggregators, {conflicts} batches read again after a conflict");
    app.stop().await;
}

#[tokio::test]
async fn the_click_stream_cap_never_drops_uncounted_clicks() {
    // A tiny cap and no aggregator: 300 one-click entries wait. The cap binds only on the
    // non-billable stream; every billable click is still there to be counted.
    let app = crate::support::spawn_app_with(|c| {
        c.aggregator_enabled = false;
        c.click_stream_maxlen = 10;
    })
    .await;
    let link = app.mint(NOTE, CREATOR, TAOBAO).await["link"].as_str().unwrap().to_owned();
    for ua in [IPHONE_WECHAT, "curl/8.5.0"] {
        for _ in 0..300 {
            let res = app.client.get(&link).header("user-agent", ua).send().await.unwrap();
            assert_eq!(res.status(), 302);
        }
    }
    let mut r = app.redis().await;
    assert_eq!(crate::support::stream_entries(&mut r, "ll:clicks").await.len(), 300);
    let bots = crate::support::stream_entries(&mut r, "ll:nonbillable").await.len();
    assert!(bots < 300, "the non-billable stream is capped: {bots} left");
    app.state.aggregator.catch_up().await.unwrap();
    let day = shanghai_day(linkloop::click::now_ms());
    let clicks: u64 = r.hget(format!("ll:agg:note:{NOTE}:{day}"), "clicks").await.unwrap();
    assert_eq!(clicks, 300);
    // The gauge holds the stream's length at the last pass, before that pass trimmed it.
    let gauge = app.metric("linkloop_click_stream_entries").await;
    let now: u64 = r.xlen("ll:clicks").await.unwrap();
    assert!(gauge > 0.0 && gauge >= now as f64 && gauge <= 300.0, "gauge {gauge}, XLEN now {now}");
    app.stop().await;
}

#[tokio::test]
async fn a_key_of_the_wrong_type_costs_only_its_own_update() {
    // Redis does not roll a transaction back: a command that fails inside it (here `PFADD` on
    // a key someone overwrote with a string) loses its own effect; the batch is applied, its
    // cursor moved, and it is not re-read forever.
    let app = crate::support::spawn_app_with(|c| c.aggregator_enabled = false).await;
    let link = app.mint(NOTE, CREATOR, TAOBAO).await["link"].as_str().unwrap().to_owned();
    let mut r = app.redis().await;
    let day = shanghai_day(linkloop::click::now_ms());
    let uv_key = format!("ll:uv:note:{NOTE}:{day}");
    let _: () = r.set(&uv_key, "not a hyperloglog").await.unwrap();
    for _ in 0..3 {
        let res = app.client.get(&link).header("user-agent", IPHONE_WECHAT).send().await.unwrap();
        assert_eq!(res.status(), 302);
    }
    let entries = crate::support::stream_entries(&mut r, "ll:clicks").await;
    assert_eq!(app.state.aggregator.catch_up().await.unwrap(), 3);
    let clicks: u64 = r.hget(format!("ll:agg:note:{NOTE}:{day}"), "clicks").await.unwrap();
    assert_eq!(clicks, 3);
    let creator_uv: u64 = r.pfcount(format!("ll:uv:creator:{CREATOR}:{day}")).await.unwrap();
    assert_eq!(creator_uv, 1, "the other keys of the batch were written");
    let left: String = r.get(&uv_key).await.unwrap();
    assert_eq!(left, "not a hyperloglog");
    let cursor: String = r.get("ll:agg:cursor").await.unwrap();
    assert_eq!(cursor, entries.last().unwrap().id, "the cursor moved past the batch");
    assert_eq!(app.state.aggregator.catch_up().await.unwrap(), 0, "nothing is re-read");
    assert_eq!(app.metric("linkloop_clicks_aggregated_total").await, 3.0);
    app.stop().await;
}

async fn dbsize(app: &crate::support::TestApp) -> (u64, u64) {
    let mut r = app.redis().await;
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut r).await.unwrap();
    let len = crate::support::stream_len(&mut r, "ll:clicks").await;
    (size, len)
}

#[tokio::test]
async fn bad_links_get_404_page_and_write_nothing() {
    let app = spawn_app().await;
    let minted = app.mint(NOTE, CREATOR, TAOBAO).await;
    let link = minted["link"].as_str().unwrap();
    let token = link.rsplit('/').next().unwrap();
    let link_path = link.strip_prefix(app.base.as_str()).unwrap().to_owned();
    let raw = URL_SAFE_NO_PAD.decode(token).unwrap();
    // Let the aggregator create its group, so DBSIZE is stable.
    app.state.aggregator.catch_up().await.unwrap();
    let before = dbsize(&app).await;

    let mut bad: Vec<String> = Vec::new();
    let mut tampered = raw.clone();
    tampered[10] ^= 1;
    bad.push(URL_SAFE_NO_PAD.encode(&tampered)); // tampered body
    let mut tag = raw.clone();
    let n = tag.len();
    tag[n - 1] ^= 0x80;
    bad.push(URL_SAFE_NO_PAD.encode(&tag)); // tampered tag
    bad.push(token[..token.len() - 1].to_owned()); // truncated by one char
    bad.push(token[..20].to_owned()); // truncated badly
    let mut wrong_version = raw.clone();
    wrong_version[0] = 2;
    bad.push(URL_SAFE_NO_PAD.encode(&wrong_version));
    let mut wrong_kid = raw.clone();
    wrong_kid[1] = 9;
    bad.push(URL_SAFE_NO_PAD.encode(&wrong_kid));
    let other = linkloop::signing::Keyring::new(&[(1, "another-secret-0123456789abcdef-0123456789")], 1).unwrap();
    let forged = linkloop::link::encode(&linkloop::link::verify(token, &keys().0).unwrap(), &other).unwrap();
    bad.push(forged); // signed with a key we do not hold
    bad.push(format!("{token}="));
    bad.push(format!("{token}%00"));
    bad.push("..%2F..%2Fetc%2Fpasswd".into());
    bad.push("https:%2F%2Fevil.example".into());
    bad.push("x".repeat(5000));

    for b in &bad {
        let res = app.get(&format!("{}/j/{b}", app.base)).await;
        assert_eq!(res.status(), 404, "{b}");
        assert!(res.headers().get("location").is_none());
        assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
        assert!(res.text().await.unwrap().contains("not valid"));
    }
    assert_eq!(dbsize(&app).await, before);
    assert_eq!(app.metric("linkloop_links_rejected_total").await, bad.len() as f64);

    // Mangled copies of a link (doubled slash, capital J, no link) get the page too, not JSON.
    for path in [format!("/{link_path}"), link_path.replacen("/j/", "/J/", 1), "/j/".into(), "/j".into()] {
        let res = app.get(&format!("{}{path}", app.base)).await;
        assert_eq!(res.status(), 404, "{path}");
        assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8", "{path}");
        assert!(res.text().await.unwrap().contains("not valid"), "{path}");
    }
    // Other methods on a valid link: a page saying how to open it (the link is fine), 405
    // and Allow, and no click.
    let client = reqwest::Client::new();
    for method in [reqwest::Method::POST, reqwest::Method::PUT, reqwest::Method::DELETE, reqwest::Method::OPTIONS] {
        let res = client.request(method.clone(), link).send().await.unwrap();
        assert_eq!(res.status(), 405, "{method}");
        assert_eq!(res.headers()["allow"], "GET, HEAD", "{method}");
        assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8", "{method}");
        let page = res.text().await.unwrap();
        assert!(page.contains("Open this link in a browser") && !page.contains("not valid"), "{method}: {page}");
    }
    // API paths keep their JSON envelope.
    let res = client.post(format!("{}/v1/stats/note/{NOTE}", app.base)).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.json::<serde_json::Value>().await.unwrap()["code"], "method_not_allowed");
    assert_eq!(dbsize(&app).await, before);
    // `/j/` reached the redirect with an empty link: one more rejection, nothing else.
    assert_eq!(app.metric("linkloop_links_rejected_total").await, bad.len() as f64 + 1.0);
    app.stop().await;
}

#[tokio::test]
async fn head_redirects_but_records_nothing() {
    let app = spawn_app().await;
    let minted = app.mint(NOTE, CREATOR, TAOBAO).await;
    let res = app.client.head(minted["link"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert!(res.headers()["location"].to_str().unwrap().starts_with("https://"));
    let mut r = app.redis().await;
    let len = crate::support::stream_len(&mut r, "ll:clicks").await;
    assert_eq!(len, 0);
    app.stop().await;
}

#[tokio::test]
async fn redis_killed_redirect_still_302_and_counted_unrecorded() {
    let mut app = spawn_app().await;
    let minted = app.mint(NOTE, CREATOR, TAOBAO).await;
    let link = minted["link"].as_str().unwrap().to_owned();
    assert_eq!(app.get(&link).await.status(), 302);
    app.redis.server.kill().await;
    for _ in 0..5 {
        let res = app.get(&link).await;
        assert_eq!(res.status(), 302);
        let (_, jk) = keys();
        assert!(linkloop::jump::verify(res.headers()["location"].to_str().unwrap(), &jk).is_ok());
    }
    assert_eq!(app.metric("linkloop_clicks_unrecorded_total").await, 5.0);
    assert_eq!(app.metric("linkloop_clicks_recorded_total").await, 1.0);
    let ready = app.get(&format!("{}/readyz", app.base)).await;
    assert_eq!(ready.status(), 503);
    app.stop().await;
}

#[tokio::test]
async fn repeat_clicks_within_the_window_only() {
    // A 1 s window: slots are 1 s long, so the clicks below also cross slot boundaries.
    let app = crate::support::spawn_app_with(|c| c.repeat_click_window_seconds = 1).await;
    let link = app.mint(NOTE, CREATOR, TAOBAO).await["link"].as_str().unwrap().to_owned();
    let click = |ua: &'static str| {
        let (client, link) = (app.client.clone(), link.clone());
        async move {
            let res = client.get(&link).header("user-agent", ua).send().await.unwrap();
            assert_eq!(res.status(), 302);
        }
    };
    click(IPHONE_WECHAT).await; // unique
    click(IPHONE_WECHAT).await; // repeat
    click(DESKTOP).await; // another visitor (UA class): unique
    app.state.aggregator.catch_up().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    click(IPHONE_WECHAT).await; // the window has passed: unique
    click(IPHONE_WECHAT).await; // repeat of that one
    app.state.aggregator.catch_up().await.unwrap();

    let mut r = app.redis().await;
    let day = shanghai_day(linkloop::click::now_ms());
    let agg: std::collections::HashMap<String, u64> = r.hgetall(format!("ll:agg:note:{NOTE}:{day}")).await.unwrap();
    assert_eq!(agg.get("clicks"), Some(&5));
    assert_eq!(agg.get("repeat_clicks"), Some(&2));
    // Markers live in `ll:rpt:{window_ms}:{slot}` hashes that expire within two slots.
    let buckets: Vec<String> = r.keys("ll:rpt:1000:*").await.unwrap();
    assert!(!buckets.is_empty());
    for b in buckets {
        let ttl: i64 = r.pttl(&b).await.unwrap();
        assert!(ttl > 0 && ttl <= 2_000, "{b}: ttl {ttl}");
    }
    app.stop().await;
}
