//! Conversion callbacks against a real gateway and redis-server: every status
//! code path, idempotency under concurrency, refund arithmetic, the attribution
//! window, signatures, the batch and postback forms.

use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::support::{MERCHANT_SECRET_1, MERCHANT_SECRET_2, TestApp, spawn_app, spawn_app_with};

const NOTE: &str = "65682d4500000000380339a5";
const TAOBAO: &str = "https://item.taobao.com/item.htm?id=567873872517";
const JD: &str = "https://item.jd.com/100012043978.html";

fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64).unwrap().with_timezone(&chrono_tz::Asia::Shanghai).to_rfc3339()
}

fn body(token: &str, order: &str, status: &str, amount: i64, at_ms: u64) -> Value {
    json!({"click_token": token, "order_id": order, "status": status, "amount": amount, "occurred_at": rfc3339(at_ms)})
}

async fn clicked(app: &TestApp, url: &str) -> (String, u64) {
    let minted = app.mint(NOTE, "creator_01", url).await;
    app.click(minted["link"].as_str().unwrap()).await
}

async fn post(app: &TestApp, b: &Value) -> (u16, Value) {
    let (s, v, _) = app.post_conversion("/v1/conversions", "tmall-shop", MERCHANT_SECRET_1, 1, 0, &b.to_string()).await;
    (s, v)
}

/// A counter of `ll:agg:*`, after the aggregator has applied every conversion so far
/// (conversion counters are added from the `ll:conversions` stream).
async fn agg(app: &TestApp, key: String, field: &str) -> i64 {
    app.state.aggregator.catch_up().await.unwrap();
    let mut r = app.redis().await;
    let v: Option<i64> = r.hget(key, field).await.unwrap();
    v.unwrap_or(0)
}

fn day(ms: u64) -> String {
    linkloop::store::aggregator::day_of(ms, chrono_tz::Asia::Shanghai)
}

#[tokio::test]
async fn every_status_code_path() {
    let app = spawn_app_with(|c| c.merchant_rate_limit_per_second = 50).await;
    let (token, ts) = clicked(&app, TAOBAO).await;
    let (jd_token, _) = clicked(&app, JD).await;
    let paid = body(&token, "O-1", "paid", 12900, ts + 1000);

    // 201 attributed, joined to the click's note, creator, item and platform.
    let (s, v) = post(&app, &paid).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["duplicate"], false);
    assert_eq!(v["note_id"], NOTE);
    assert_eq!(v["creator_id"], "creator_01");
    assert_eq!(v["platform"], "taobao");
    assert_eq!(v["item_id"], "567873872517");
    assert_eq!(v["gmv_delta"], 12900);
    // 200 duplicate with the original result; the same body re-signed later too.
    let (s, v2, _) =
        app.post_conversion("/v1/conversions", "tmall-shop", MERCHANT_SECRET_2, 2, 5, &paid.to_string()).await;
    assert_eq!(s, 200);
    assert_eq!(v2["duplicate"], true);
    assert_eq!(v2["gmv_delta"], 12900);
    // 409 conflict: same key, other content.
    let (s, v) = post(&app, &body(&token, "O-1", "paid", 13000, ts + 1000)).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("conflict")));
    // 400 naming the field.
    let (s, v) = post(&app, &body(&token, "O-2", "paid", -5, ts + 1000)).await;
    assert_eq!((s, v["code"].as_str(), v["field"].as_str()), (400, Some("invalid_field"), Some("amount")));
    let mut bad = body(&token, "O-2", "paid", 5, ts + 1000);
    bad["currency"] = json!("XXQ");
    let (s, v) = post(&app, &bad).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("currency")));
    let (s, v, _) = app.post_conversion("/v1/conversions", "tmall-shop", MERCHANT_SECRET_1, 1, 0, "{nope").await;
    assert_eq!((s, v["code"].as_str()), (400, Some("malformed_json")));
    // 401: bad signature, stale timestamp, unknown merchant, missing headers.
    let (s, v, _) = app
        .post_conversion(
            "/v1/conversions",
            "tmall-shop",
            "wrong-secret-0123456789abcdef-0123456789",
            1,
            0,
            &paid.to_string(),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (401, Some("bad_signature")));
    let (s, v, _) =
        app.post_conversion("/v1/conversions", "tmall-shop", MERCHANT_SECRET_1, 1, -400, &paid.to_string()).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("stale_timestamp")));
    let (s, v, _) = app.post_conversion("/v1/conversions", "nobody", MERCHANT_SECRET_1, 1, 0, &paid.to_string()).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("unknown_merchant")));
    let res = app
        .client
        .post(format!("{}/v1/conversions", app.base))
        .header("content-type", "application/json")
        .body(paid.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Linkloop-Signature realm=\"linkloop\"");
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "missing_signature");
    // 403: this merchant may not report on JD clicks.
    let (s, v) = post(&app, &body(&jd_token, "O-3", "paid", 100, ts + 1000)).await;
    assert_eq!((s, v["code"].as_str()), (403, Some("platform_not_allowed")));
    // 422: unknown click token; item mismatch.
    let (s, v) = post(&app, &body("01a22b0b-3df4-779a-a659-5b093b29117d", "O-4", "paid", 100, ts)).await;
    assert_eq!((s, v["code"].as_str()), (422, Some("click_not_found")));
    let mut wrong_item = body(&token, "O-5", "paid", 100, ts + 1000);
    wrong_item["item_id"] = json!("1");
    let (s, v) = post(&app, &wrong_item).await;
    assert_eq!((s, v["code"].as_str()), (422, Some("item_mismatch")));
    // 413, 415.
    let huge = json!({"click_token": token, "order_id": "x".repeat(70_000)}).to_string();
    let (s, v, _) = app.post_conversion("/v1/conversions", "tmall-shop", MERCHANT_SECRET_1, 1, 0, &huge).await;
    assert_eq!((s, v["code"].as_str()), (413, Some("body_too_large")));
    let res = app
        .client
        .post(format!("{}/v1/conversions", app.base))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "unsupported_media_type");
    assert_eq!(app.metric("linkloop_conversions_unattributed_total").await, 1.0);

    // Nothing above changed the counters beyond the one attributed order.
    let d = day(ts + 1000);
    assert_eq!(agg(&app, format!("ll:agg:note:{NOTE}:{d}"), "conversions").await, 1);
    assert_eq!(agg(&app, format!("ll:agg:note:{NOTE}:{d}"), "paid:CNY").await, 12900);
    let mut r = app.redis().await;
    let stream_len: u64 = r.xlen("ll:conversions").await.unwrap();
    assert_eq!(stream_len, 1);
    // The entry's fields, in order (docs/conversions.md, "The conversion stream").
    let entries: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg("ll:conversions").arg("-").arg("+").query_async(&mut r).await.unwrap();
    let names: Vec<&str> = entries[0].1.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["conversion", "agg"]);
    let field = |name: &str| entries[0].1.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap();
    assert_eq!(field("conversion"), format!("tmall-shop|O-1||paid||{}|12900|{token}|", ts + 1000));
    assert_eq!(field("agg"), format!("{d}|{NOTE}|creator_01|taobao|567873872517|CNY|1|0|12900|0"));
    app.stop().await;
}

#[tokio::test]
async fn rate_limited_and_store_unavailable() {
    let mut app = spawn_app_with(|c| c.merchant_rate_limit_per_second = 1).await;
    let (token, ts) = clicked(&app, TAOBAO).await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let (s, _, h) = app
            .post_conversion(
                "/v1/conversions",
                "tmall-shop",
                MERCHANT_SECRET_1,
                1,
                0,
                &body(&token, &format!("R{i}"), "paid", 100, ts).to_string(),
            )
            .await;
        if s == 429 {
            assert!(h.get("retry-after").is_some());
        }
        statuses.push(s);
    }
    assert_eq!(statuses, vec![201, 201, 429, 429], "burst of 2 at 1/s");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    app.redis.server.kill().await;
    let (s, v, h) = app
        .post_conversion(
            "/v1/conversions",
            "tmall-shop",
            MERCHANT_SECRET_1,
            1,
            0,
            &body(&token, "R9", "paid", 100, ts).to_string(),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (503, Some("store_unavailable")));
    assert_eq!(h["retry-after"], "1");
    // Retried after Redis returns: counted once.
    app.redis.server.restart().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let b = body(&token, "R9", "paid", 100, ts).to_string();
    let mut last = 0;
    for _ in 0..20 {
        let (s, _, _) = app.post_conversion("/v1/conversions", "tmall-shop", MERCHANT_SECRET_1, 1, 0, &b).await;
        last = s;
        if s == 201 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    assert_eq!(last, 201);
    app.stop().await;
}

#[tokio::test]
async fn hundred_concurrent_deliveries_count_once_and_hundred_orders_all_count() {
    let app = spawn_app_with(|c| c.merchant_rate_limit_per_second = 10_000).await;
    let (token, ts) = clicked(&app, TAOBAO).await;
    let same = body(&token, "SAME", "paid", 5000, ts + 10).to_string();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let b = same.clone();
        let app = &app;
        tasks.push(
            async move { app.post_conversion("/v1/conversions", "tmall-shop", MERCHANT_SECRET_1, 1, 0, &b).await.0 },
        );
    }
    let statuses = join_all(tasks).await;
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1);
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 99);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let b = body(&token, &format!("ORDER-{i}"), "paid", 100 + i, ts + 10).to_string();
        let app = &app;
        tasks.push(
            async move { app.post_conversion("/v1/conversions", "tmall-shop", MERCHANT_SECRET_1, 1, 0, &b).await.0 },
        );
    }
    let statuses = join_all(tasks).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let key = format!("ll:agg:creator:creator_01:{}", day(ts + 10));
    assert_eq!(agg(&app, key.clone(), "conversions").await, 101);
    let expected: i64 = 5000 + (0..100).map(|i| 100 + i).sum::<i64>();
    assert_eq!(agg(&app, key, "paid:CNY").await, expected);
    app.stop().await;
}

/// Runs the futures concurrently on this task and returns their outputs in order.
async fn join_all<F: std::future::Future<Output = u16>>(futs: Vec<F>) -> Vec<u16> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<u16>> = vec![None; pinned.len()];
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    results.into_iter().map(|r| r.unwrap_or(0)).collect()
}

#[tokio::test]
async fn refund_arithmetic_and_transitions() {
    let app = spawn_app().await;
    let (token, ts) = clicked(&app, TAOBAO).await;
    let at = ts + 60_000;
    let key = format!("ll:agg:item:taobao:567873872517:{}", day(at));
    assert_eq!(post(&app, &body(&token, "P1", "paid", 10000, at)).await.0, 201);
    let mut r1 = body(&token, "P1", "refunded", 3000, at);
    r1["refund_id"] = json!("r1");
    let (s, v) = post(&app, &r1).await;
    assert_eq!((s, v["order_state"].as_str(), v["refunded_total"].as_i64()), (201, Some("paid"), Some(3000)));
    assert_eq!(agg(&app, key.clone(), "paid:CNY").await - agg(&app, key.clone(), "refunded:CNY").await, 7000);
    let mut too_much = body(&token, "P1", "refunded", 7001, at);
    too_much["refund_id"] = json!("r2");
    assert_eq!(post(&app, &too_much).await.1["code"], "refund_exceeds_paid");
    let mut r2 = body(&token, "P1", "refunded", 7000, at);
    r2["refund_id"] = json!("r2");
    let (s, v) = post(&app, &r2).await;
    assert_eq!((s, v["order_state"].as_str(), v["gmv_delta"].as_i64()), (201, Some("refunded"), Some(-7000)));
    assert_eq!(agg(&app, key.clone(), "paid:CNY").await - agg(&app, key.clone(), "refunded:CNY").await, 0);
    assert_eq!(agg(&app, key.clone(), "refunds").await, 2);
    assert_eq!(agg(&app, key.clone(), "conversions").await, 1);
    // Out of refunded: refused.
    let mut r3 = body(&token, "P1", "refunded", 1, at);
    r3["refund_id"] = json!("r3");
    let (s, v) = post(&app, &r3).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("invalid_transition")));
    assert_eq!(post(&app, &body(&token, "P1", "cancelled", 0, at)).await.1["code"], "invalid_transition");
    // Refund of an unknown order: refused.
    let (s, v) = post(&app, &body(&token, "P2", "refunded", 1, at)).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("invalid_transition")));
    assert_eq!(v["message"], "no payment recorded for this order line: report it paid first");
    // Cancel after payment reverses what is left.
    assert_eq!(post(&app, &body(&token, "P3", "paid", 500, at)).await.0, 201);
    let (s, v) = post(&app, &body(&token, "P3", "cancelled", 0, at)).await;
    assert_eq!((s, v["gmv_delta"].as_i64(), v["order_state"].as_str()), (201, Some(-500), Some("cancelled")));
    // The original payment re-delivered after the cancel is a duplicate, not a new payment.
    let (s, v) = post(&app, &body(&token, "P3", "paid", 500, at)).await;
    assert_eq!((s, v["duplicate"].as_bool()), (200, Some(true)));
    app.stop().await;
}

/// Order events are dated no later than the server clock plus the callback tolerance
/// (300 s), and a refund or cancel no earlier than its payment's second; refused events
/// (`422`, `field` `occurred_at`) change nothing, and a re-delivery of an accepted one is
/// still a duplicate.
#[tokio::test]
async fn events_dated_ahead_of_the_clock_or_before_their_payment_are_refused() {
    let app = spawn_app().await;
    let (token, ts) = clicked(&app, TAOBAO).await;
    let key = format!("ll:agg:item:taobao:567873872517:{}", day(ts));
    let ahead = |ms: u64| linkloop::click::now_ms() + ms;
    let refused = |code: &'static str| (422, Some(code), Some("occurred_at"));
    let answer =
        |(s, v): (u16, Value)| (s, v["code"].as_str().map(str::to_owned), v["field"].as_str().map(str::to_owned));
    let expect = |(s, c, f): (u16, Option<&str>, Option<&str>)| (s, c.map(str::to_owned), f.map(str::to_owned));
    // Inside the attribution window, but days ahead of the clock: refused.
    let (s, v) = post(&app, &body(&token, "F-1", "paid", 100, ahead(3 * 86_400_000))).await;
    assert_eq!(answer((s, v.clone())), expect(refused("occurred_in_future")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("300 s"), "{v}");
    // Within the tolerance (a sender's clock a minute fast): accepted.
    let paid_at = ahead(60_000);
    assert_eq!(post(&app, &body(&token, "F-2", "paid", 10_000, paid_at)).await.0, 201);
    // Refunds and cancels: not before the payment's second, not ahead of the clock.
    let mut early = body(&token, "F-2", "refunded", 100, paid_at - paid_at % 1000 - 1);
    early["refund_id"] = json!("r-early");
    assert_eq!(answer(post(&app, &early).await), expect(refused("before_payment")));
    let mut ancient = body(&token, "F-2", "refunded", 100, 1_577_836_800_000); // 2020-01-01
    ancient["refund_id"] = json!("r-2020");
    assert_eq!(answer(post(&app, &ancient).await), expect(refused("before_payment")));
    let mut far = body(&token, "F-2", "refunded", 100, 253_402_214_400_000); // 9999-12-31
    far["refund_id"] = json!("r-9999");
    assert_eq!(answer(post(&app, &far).await), expect(refused("occurred_in_future")));
    let epoch = body(&token, "F-2", "cancelled", 0, 0); // 1970-01-01
    assert_eq!(answer(post(&app, &epoch).await), expect(refused("before_payment")));
    // Nothing of that was counted: GMV is the payment, no refund.
    assert_eq!(agg(&app, key.clone(), "paid:CNY").await, 10_000);
    assert_eq!(agg(&app, key.clone(), "refunds").await, 0);
    // In the payment's own second (whole seconds), and later: accepted.
    let mut same_second = body(&token, "F-2", "refunded", 100, paid_at - paid_at % 1000);
    same_second["refund_id"] = json!("r-1");
    assert_eq!(post(&app, &same_second).await.0, 201);
    let (s, v) = post(&app, &body(&token, "F-2", "cancelled", 0, paid_at + 1000)).await;
    assert_eq!((s, v["gmv_delta"].as_i64()), (201, Some(-9_900)), "{v}");
    assert_eq!(agg(&app, key.clone(), "refunded:CNY").await, 10_000);
    // The order line keeps the payment's time as its last field.
    let mut r = app.redis().await;
    let line: String = r.hget("ll:order:tmall-shop:F-2:", "o").await.unwrap();
    assert!(line.starts_with("cancelled|10000|10000|CNY|") && line.ends_with(&format!("|{paid_at}")), "{line}");
    // A line written before the payment's time was kept (nine fields): the click's second
    // stands in for it.
    let paid = body(&token, "F-3", "paid", 500, ts + 1000);
    assert_eq!(post(&app, &paid).await.0, 201);
    let nine = format!("paid|500|0|CNY|{token}|{NOTE}|creator_01|taobao|567873872517");
    let _: () = r.hset("ll:order:tmall-shop:F-3:", "o", &nine).await.unwrap();
    let mut before_click = body(&token, "F-3", "refunded", 100, ts - ts % 1000 - 1);
    before_click["refund_id"] = json!("r-b");
    assert_eq!(answer(post(&app, &before_click).await), expect(refused("before_payment")));
    let mut after_click = body(&token, "F-3", "refunded", 100, ts);
    after_click["refund_id"] = json!("r-a");
    assert_eq!(post(&app, &after_click).await.0, 201);
    let line: String = r.hget("ll:order:tmall-shop:F-3:", "o").await.unwrap();
    assert_eq!(line, format!("{}|", nine.replacen("paid|500|0|", "paid|500|100|", 1)));
    // The accepted payment re-delivered is still a duplicate.
    assert_eq!(post(&app, &paid).await.0, 200);
    app.stop().await;
}

#[tokio::test]
async fn attribution_window_edges() {
    // Events up to 8 days ahead of the clock are accepted here (the tolerance bounds how far
    // ahead an event may be dated), so a fresh click's window edges can be reached.
    let app = spawn_app_with(|c| c.callback_tolerance_seconds = 8 * 86_400).await;
    let (token, ts) = clicked(&app, TAOBAO).await;
    let week = 7 * 86_400_000;
    let (s, _) = post(&app, &body(&token, "W-in", "paid", 100, ts + week - 1000)).await;
    assert_eq!(s, 201);
    let (s, v) = post(&app, &body(&token, "W-out", "paid", 100, ts + week + 1000)).await;
    assert_eq!((s, v["code"].as_str()), (422, Some("outside_attribution_window")));
    let (s, v) = post(&app, &body(&token, "W-before", "paid", 100, ts - 1000)).await;
    assert_eq!((s, v["code"].as_str()), (422, Some("outside_attribution_window")));
    // A timestamp in whole seconds, in the click's own second (so before its exact ms): counts.
    let (s, _) = post(&app, &body(&token, "W-same-second", "paid", 100, ts - ts % 1000)).await;
    assert_eq!(s, 201);
    app.stop().await;
}

#[tokio::test]
async fn signature_edges_and_reserialised_body() {
    let app = spawn_app().await;
    let (token, ts) = clicked(&app, TAOBAO).await;
    let b = body(&token, "S1", "paid", 100, ts);
    // Signed over the compact form, sent pretty-printed: fails.
    let compact = b.to_string();
    let t = linkloop::click::now_ms() / 1000;
    let sig = linkloop::conversion::auth::sign_body(MERCHANT_SECRET_1.as_bytes(), 1, t, compact.as_bytes());
    let res = app
        .client
        .post(format!("{}/v1/conversions", app.base))
        .header("content-type", "application/json")
        .header("linkloop-merchant", "tmall-shop")
        .header("linkloop-signature", sig)
        .body(serde_json::to_string_pretty(&b).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "bad_signature");
    // Skew at the edge of the 300 s tolerance.
    let (s, _, _) = app.post_conversion("/v1/conversions", "tmall-shop", MERCHANT_SECRET_1, 1, -295, &compact).await;
    assert_eq!(s, 201);
    let (s, v, _) = app.post_conversion("/v1/conversions", "tmall-shop", MERCHANT_SECRET_1, 1, 305, &compact).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("stale_timestamp")));
    // Rotation: kid 2 valid; kid 2 with kid 1's secret invalid.
    let (s, _, _) = app.post_conversion("/v1/conversions", "tmall-shop", MERCHANT_SECRET_2, 2, 0, &compact).await;
    assert_eq!(s, 200);
    let (s, _, _) = app.post_conversion("/v1/conversions", "tmall-shop", MERCHANT_SECRET_1, 2, 0, &compact).await;
    assert_eq!(s, 401);
    app.stop().await;
}

#[tokio::test]
async fn batch_and_postback_forms() {
    let app = spawn_app().await;
    let (token, ts) = clicked(&app, TAOBAO).await;
    let batch = json!({"conversions": [
        body(&token, "B1", "paid", 100, ts),
        body(&token, "B1", "paid", 100, ts),
        body(&token, "B2", "paid", -1, ts),
        {"click_token": token},
        body("01a22b0b-3df4-779a-a659-5b093b29117d", "B3", "paid", 100, ts),
    ]});
    let (s, v, _) =
        app.post_conversion("/v1/conversions/batch", "tmall-shop", MERCHANT_SECRET_1, 1, 0, &batch.to_string()).await;
    assert_eq!(s, 200, "{v}");
    let codes: Vec<(u64, &str)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["status_code"].as_u64().unwrap(), r["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        codes,
        vec![
            (201, "attributed"),
            (200, "duplicate"),
            (400, "invalid_field"),
            (400, "invalid_body"),
            (422, "click_not_found")
        ]
    );
    // The item without its fields names the first one missing.
    assert_eq!(v["results"][3]["field"], "order_id", "{v}");
    // A wrong type, an unknown status and an unknown field each name the input at fault.
    let mut wrong_type = body(&token, "B4", "paid", 100, ts);
    wrong_type["amount"] = json!("12900");
    let mut wrong_status = body(&token, "B5", "paid", 100, ts);
    wrong_status["status"] = json!("shipped");
    let mut extra = body(&token, "B6", "paid", 100, ts);
    extra["coupon"] = json!("X");
    for (b, field) in [(&wrong_type, "amount"), (&wrong_status, "status"), (&extra, "coupon")] {
        let (s, v, _) =
            app.post_conversion("/v1/conversions", "tmall-shop", MERCHANT_SECRET_1, 1, 0, &b.to_string()).await;
        assert_eq!((s, v["code"].as_str(), v["field"].as_str()), (400, Some("invalid_body"), Some(field)), "{v}");
        let batch = json!({"conversions": [b]});
        let (s, v, _) = app
            .post_conversion("/v1/conversions/batch", "tmall-shop", MERCHANT_SECRET_1, 1, 0, &batch.to_string())
            .await;
        assert_eq!((s, v["results"][0]["field"].as_str()), (200, Some(field)), "{v}");
    }
    let too_many = json!({"conversions": vec![body(&token, "X", "paid", 1, ts); 501]});
    let (s, v, _) = app
        .post_conversion("/v1/conversions/batch", "tmall-shop", MERCHANT_SECRET_1, 1, 0, &too_many.to_string())
        .await;
    assert_eq!((s, v["field"].as_str()), (400, Some("conversions")));

    // Postback: the same fields as query parameters, signed over the canonical query.
    let t = (linkloop::click::now_ms() / 1000).to_string();
    let mut params: Vec<(String, String)> = [
        ("merchant", "tmall-shop"),
        ("click_token", token.as_str()),
        ("order_id", "PB1"),
        ("status", "paid"),
        ("amount", "4200"),
        ("occurred_at", &rfc3339(ts)),
        ("t", &t),
        ("k", "1"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let sig = linkloop::conversion::auth::sign_postback(MERCHANT_SECRET_1.as_bytes(), &params);
    params.push(("sig".into(), sig));
    let url = reqwest::Url::parse_with_params(&format!("{}/v1/postback", app.base), &params).unwrap();
    let res = app.client.get(url.clone()).send().await.unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.json::<Value>().await.unwrap()["amount"], 4200);
    let tampered = url.as_str().replace("amount=4200", "amount=4300");
    let res = app.client.get(tampered).send().await.unwrap();
    assert_eq!(res.status(), 401);
    // One amount, one spelling: a signed `+5` or `05` is refused, as in the JSON form.
    for amount in ["+5", "05", "-0", " 5", ""] {
        let order = format!("PB-{amount}");
        let res = send_postback(&app, &params, &[("amount", Some(amount)), ("order_id", Some(&order))]).await;
        assert_eq!(res.status(), 400, "amount {amount:?}");
        assert_eq!(res.json::<Value>().await.unwrap()["field"], "amount", "amount {amount:?}");
    }
    // A signed postback missing a field, or with a status it cannot take, names the field
    // as the JSON form does.
    for (missing, status, field) in
        [("amount", "paid", "amount"), ("occurred_at", "paid", "occurred_at"), ("", "shipped", "status")]
    {
        let order = format!("PB-no-{field}");
        let set = [("status", Some(status)), ("order_id", Some(order.as_str())), (missing, None)];
        let res = send_postback(&app, &params, &set).await;
        assert_eq!(res.status(), 400, "{field}");
        let v = res.json::<Value>().await.unwrap();
        assert_eq!((v["code"].as_str(), v["field"].as_str()), (Some("invalid_body"), Some(field)), "{v}");
    }
    let res = send_postback(&app, &params, &[("order_id", Some("PB-foo")), ("foo", Some("1"))]).await;
    let v = res.json::<Value>().await.unwrap();
    assert_eq!((v["code"].as_str(), v["field"].as_str()), (Some("invalid_body"), Some("foo")), "{v}");
    app.stop().await;
}

/// A new report in a currency ISO 4217 gives no minor unit (`XXX`, `XTS`, `XAU`, `XDR`) is
/// refused naming `currency`, and counts nothing; one accepted before that rule is still a
/// duplicate when delivered again.
#[tokio::test]
async fn currencies_without_a_minor_unit_are_refused_unless_already_accepted() {
    let app = spawn_app().await;
    let (token, ts) = clicked(&app, TAOBAO).await;
    let key = format!("ll:agg:item:taobao:567873872517:{}", day(ts));
    for (i, code) in ["XXX", "XTS", "XAU", "XDR"].into_iter().enumerate() {
        let mut b = body(&token, &format!("CUR-{i}"), "paid", 500, ts + 1000);
        b["currency"] = json!(code);
        let (s, v) = post(&app, &b).await;
        assert_eq!((s, v["code"].as_str(), v["field"].as_str()), (400, Some("invalid_field"), Some("currency")), "{v}");
    }
    let mut yen = body(&token, "CUR-JPY", "paid", 500, ts + 1000);
    yen["currency"] = json!("JPY");
    assert_eq!(post(&app, &yen).await.0, 201);
    assert_eq!((agg(&app, key.clone(), "conversions").await, agg(&app, key.clone(), "paid:JPY").await), (1, 500));
    // What a version without the rule left after accepting a report in XTS.
    let mut old = body(&token, "CUR-OLD", "paid", 500, ts + 1000);
    old["currency"] = json!("XTS");
    let fp = serde_json::from_value::<linkloop::conversion::ConversionInput>(old.clone())
        .unwrap()
        .validate()
        .unwrap()
        .fingerprint();
    let res = format!("{token}|{NOTE}|creator_01|taobao|567873872517|XTS|paid|500|0|500|0");
    let mut r = app.redis().await;
    let _: () = r
        .hset_multiple("ll:conv:tmall-shop:CUR-OLD::paid:", &[("fp", fp.as_str()), ("res", res.as_str())])
        .await
        .unwrap();
    let (s, v) = post(&app, &old).await;
    assert_eq!((s, v["duplicate"].as_bool(), v["currency"].as_str()), (200, Some(true), Some("XTS")), "{v}");
    assert_eq!(agg(&app, key.clone(), "conversions").await, 1);
    app.stop().await;
}

/// Sends the postback `params` (any `sig` dropped) edited by `set` (a value replaces the
/// parameter's or is added, `None` drops it), signed anew with merchant secret 1.
async fn send_postback(app: &TestApp, params: &[(String, String)], set: &[(&str, Option<&str>)]) -> reqwest::Response {
    let mut p: Vec<(String, String)> = params.iter().filter(|(k, _)| k != "sig").cloned().collect();
    for (key, value) in set {
        match value {
            Some(v) => match p.iter_mut().find(|(k, _)| k == key) {
                Some((_, old)) => *old = (*v).to_owned(),
                None => p.push(((*key).to_owned(), (*v).to_owned())),
            },
            None => p.retain(|(k, _)| k != key),
        }
    }
    let sig = linkloop::conversion::auth::sign_postback(MERCHANT_SECRET_1.as_bytes(), &p);
    p.push(("sig".into(), sig));
    let url = reqwest::Url::parse_with_params(&format!("{}/v1/postback", app.base), &p).unwrap();
    app.client.get(url).send().await.unwrap()
}

/// A struct is never read from a positional JSON array (serde's derive would accept
/// `["token", "order", …]`): the single form, the batch and each batch item answer
/// `400 invalid_body`, and nothing is counted.
#[tokio::test]
async fn positional_arrays_are_not_conversions() {
    let app = spawn_app().await;
    let (token, ts) = clicked(&app, TAOBAO).await;
    let o = body(&token, "ARR-1", "paid", 100, ts);
    // `ConversionInput`'s field order: what serde's derive would read positionally.
    let fields = [
        "click_token",
        "order_id",
        "sub_order_id",
        "status",
        "raw_status",
        "refund_id",
        "amount",
        "currency",
        "occurred_at",
        "item_id",
    ];
    let positional = Value::Array(fields.iter().map(|f| o.get(*f).cloned().unwrap_or(Value::Null)).collect());
    for (path, b) in [
        ("/v1/conversions", positional.clone()),
        ("/v1/conversions/batch", json!([[o.clone()]])),
        ("/v1/conversions/batch", json!([o.clone()])),
    ] {
        let (s, v, _) = app.post_conversion(path, "tmall-shop", MERCHANT_SECRET_1, 1, 0, &b.to_string()).await;
        assert_eq!((s, v["code"].as_str()), (400, Some("invalid_body")), "{path} {b}: {v}");
        assert_eq!(v["message"], "body must be a JSON object");
    }
    let batch = json!({"conversions": [positional, o]});
    let (s, v, _) =
        app.post_conversion("/v1/conversions/batch", "tmall-shop", MERCHANT_SECRET_1, 1, 0, &batch.to_string()).await;
    assert_eq!(s, 200, "{v}");
    let codes: Vec<(u64, &str)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["status_code"].as_u64().unwrap(), r["code"].as_str().unwrap()))
        .collect();
    assert_eq!(codes, vec![(400, "invalid_body"), (201, "attributed")]);
    app.stop().await;
}

#[tokio::test]
async fn stats_after_scripted_mix_match_hand_totals_with_shanghai_day_boundary() {
    use chrono::TimeZone as _;

    use crate::support::ADMIN_TOKEN;
    // Orders dated up to 2 days ahead of the clock are accepted here: the next midnight is.
    let app = spawn_app_with(|c| c.callback_tolerance_seconds = 2 * 86_400).await;
    let note = "6976204a000000000b0100ff";
    let a = app.mint(note, "creator_77", TAOBAO).await;
    let b = app.mint(note, "creator_77", "https://detail.tmall.com/item.htm?id=540212526343").await;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.push(app.click(a["link"].as_str().unwrap()).await);
    }
    for _ in 0..2 {
        tokens.push(app.click(b["link"].as_str().unwrap()).await);
    }
    let click_ms = tokens[0].1;
    // The next 00:00 Asia/Shanghai at least an hour after the clicks.
    let tz = chrono_tz::Asia::Shanghai;
    let later = chrono::DateTime::from_timestamp_millis(click_ms as i64 + 3_600_000).unwrap().with_timezone(&tz);
    let midnight = tz
        .from_local_datetime(&(later.date_naive() + chrono::Days::new(1)).and_hms_opt(0, 0, 0).unwrap())
        .single()
        .unwrap()
        .timestamp_millis() as u64;
    let send = |token: &str, order: &str, status: &str, amount: i64, at: u64, refund: Option<&str>| {
        let mut v = body(token, order, status, amount, at);
        if let Some(r) = refund {
            v["refund_id"] = json!(r);
        }
        v
    };
    // Day D (just before midnight): two paid orders. Day D+1 (at midnight): one paid, one partial refund.
    let script = [
        send(&tokens[0].0, "M1", "paid", 10_000, midnight - 1000, None),
        send(&tokens[3].0, "M2", "paid", 2_500, midnight - 1, None),
        send(&tokens[1].0, "M3", "paid", 4_000, midnight, None),
        send(&tokens[0].0, "M1", "refunded", 1_500, midnight + 1000, Some("r1")),
    ];
    for s in &script {
        let (status, v) = post(&app, s).await;
        assert_eq!(status, 201, "{v}");
    }
    // A duplicate and a refused conversion change nothing.
    assert_eq!(post(&app, &script[0]).await.0, 200);
    assert_eq!(post(&app, &send(&tokens[2].0, "M4", "paid", 1, midnight + 8 * 86_400_000, None)).await.0, 422);
    assert_eq!(post(&app, &send(&tokens[0].0, "M1", "refunded", 1, midnight - 2000, Some("r0"))).await.0, 422);

    app.state.aggregator.catch_up().await.unwrap();
    let today = day(click_ms);
    let d = day(midnight - 1);
    let d1 = day(midnight);
    assert_ne!(d, d1);
    let res = app
        .client
        .get(format!("{}/v1/stats/note/{note}?from={today}&to={d1}", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    let row = |date: &str| v["days"].as_array().unwrap().iter().find(|r| r["date"] == date).cloned().unwrap();
    assert_eq!(row(&today)["clicks"], 5);
    assert_eq!(row(&today)["uv"], 1);
    assert_eq!((row(&d)["conversions"].as_u64(), row(&d)["gmv_fen"].as_i64()), (Some(2), Some(12_500)));
    assert_eq!(row(&d1)["conversions"], 1);
    assert_eq!(row(&d1)["refunds"], 1);
    assert_eq!(row(&d1)["gmv_fen"], 4_000 - 1_500);
    assert_eq!(v["total"]["clicks"], 5);
    assert_eq!(v["total"]["conversions"], 3);
    assert_eq!(v["total"]["refunds"], 1);
    assert_eq!(v["total"]["gmv_fen"], 10_000 + 2_500 + 4_000 - 1_500);
    assert_eq!(v["total"]["cvr"], 0.6);
    // By item: only the Taobao item's orders.
    let res = app
        .client
        .get(format!("{}/v1/stats/item/taobao:567873872517?from={today}&to={d1}&format=csv", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let csv = res.text().await.unwrap();
    let total = csv.lines().last().unwrap();
    // The last column: 3 clicks by one visitor, 2 of them repeats.
    assert_eq!(total, "total,3,1,2,1,12500,0.666667,2", "{csv}");
    app.stop().await;
}

#[tokio::test]
async fn two_aggregators_count_each_conversion_once() {
    // The in-process aggregator is off; two independent ones (as in two gateways on one
    // Redis) race over the same conversion stream.
    let app = spawn_app_with(|c| c.aggregator_enabled = false).await;
    let (token, ts) = clicked(&app, TAOBAO).await;
    for i in 0..300 {
        assert_eq!(post(&app, &body(&token, &format!("R-{i}"), "paid", 100, ts + 10)).await.0, 201);
    }
    let make = || {
        let opts = linkloop::store::aggregator::AggregatorOptions {
            batch: 16,
            click_ttl_ms: 8 * 86_400_000,
            repeat_window_ms: 1_800_000,
            tz: chrono_tz::Asia::Shanghai,
            stream_retention_ms: 0,
        };
        linkloop::store::aggregator::Aggregator::new(&app.redis.server.tcp_url(), opts, app.state.metrics.clone())
            .unwrap()
    };
    let (a, b) = (make(), make());
    let (ra, rb) = tokio::join!(a.catch_up(), b.catch_up());
    ra.unwrap();
    rb.unwrap();
    let mut r = app.redis().await;
    let key = format!("ll:agg:note:{NOTE}:{}", day(ts + 10));
    let conversions: i64 = r.hget(&key, "conversions").await.unwrap();
    let paid: i64 = r.hget(&key, "paid:CNY").await.unwrap();
    assert_eq!((conversions, paid), (300, 30_000));
    app.stop().await;
}

/// Order lines and idempotency records written by versions that kept one hash field per
/// value and a JSON `res`: a re-delivery still gets its original answer, and a refund
/// still finds the payment (the line is rewritten in the current form).
#[tokio::test]
async fn records_from_earlier_versions_still_answer_and_refund() {
    let app = spawn_app().await;
    let (token, ts) = clicked(&app, TAOBAO).await;
    let paid = body(&token, "O-OLD", "paid", 12900, ts + 1000);
    // What an earlier version left after accepting `paid`.
    let fp = {
        let input: linkloop::conversion::ConversionInput = serde_json::from_value(paid.clone()).unwrap();
        input.validate().unwrap().fingerprint()
    };
    let old_res = format!(
        r#"{{"click_token":"{token}","merchant_id":"tmall-shop","order_id":"O-OLD","sub_order_id":"","status":"paid","amount":12900,"currency":"CNY","note_id":"{NOTE}","creator_id":"creator_01","platform":"taobao","item_id":"567873872517","order_state":"paid","paid_total":12900,"refunded_total":0,"gmv_delta":12900}}"#
    );
    let mut r = app.redis().await;
    let _: () = r
        .hset_multiple("ll:conv:tmall-shop:O-OLD::paid:", &[("fp", fp.as_str()), ("res", old_res.as_str())])
        .await
        .unwrap();
    let line = [
        ("state", "paid"),
        ("paid", "12900"),
        ("refunded", "0"),
        ("currency", "CNY"),
        ("token", token.as_str()),
        ("note", NOTE),
        ("creator", "creator_01"),
        ("platform", "taobao"),
        ("item", "567873872517"),
    ];
    let _: () = r.hset_multiple("ll:order:tmall-shop:O-OLD:", &line).await.unwrap();

    let (s, v) = post(&app, &paid).await;
    assert_eq!((s, v["duplicate"].as_bool(), v["gmv_delta"].as_i64()), (200, Some(true), Some(12900)), "{v}");
    assert_eq!(v["order_id"], "O-OLD");

    let (s, v) = post(&app, &body(&token, "O-OLD", "refunded", 12900, ts + 2000)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["order_state"].as_str(), v["refunded_total"].as_i64(), v["gmv_delta"].as_i64()),
        (Some("refunded"), Some(12900), Some(-12900))
    );
    assert_eq!(v["click_token"], token.as_str());
    let fields: std::collections::HashMap<String, String> = r.hgetall("ll:order:tmall-shop:O-OLD:").await.unwrap();
    assert_eq!(
        fields,
        std::collections::HashMap::from([(
            "o".to_owned(),
            format!("refunded|12900|12900|CNY|{token}|{NOTE}|creator_01|taobao|567873872517|")
        )])
    );
    // Refunded in full: nothing more to refund.
    let mut again = body(&token, "O-OLD", "refunded", 1, ts + 3000);
    again["refund_id"] = json!("R-2");
    let (s, v) = post(&app, &again).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("invalid_transition")), "{v}");
    app.stop().await;
}

/// A click token of Unix ms `ms` (UUID v7), as the gateway mints them.
fn token_at(ms: u64) -> String {
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, (ms % 1000) as u32 * 1_000_000);
    uuid::Uuid::new_v7(ts).hyphenated().to_string()
}

#[tokio::test]
async fn clicks_recorded_in_the_per_token_layout_still_attribute_and_are_not_counted_twice() {
    let app = spawn_app().await;
    let (_, ts) = clicked(&app, TAOBAO).await;
    let clicks_key = format!("ll:agg:note:{NOTE}:{}", day(ts));
    let before = agg(&app, clicks_key.clone(), "clicks").await;
    assert_eq!(before, 1);
    // A click an earlier version recorded, 5 s ago: field = token in `ll:cr:{minute}`.
    let old_ms = linkloop::click::now_ms() - 5_000;
    let (old, fresh) = (token_at(old_ms), token_at(old_ms + 1));
    let record = |ms: u64| format!("1|{ms}|{NOTE}|creator_01|taobao|567873872517|||0123456789abcdef|app|");
    let mut r = app.redis().await;
    let legacy = linkloop::store::keys::click_bucket(old_ms / 60_000);
    let _: () = r.hset(&legacy, &old, record(old_ms)).await.unwrap();

    // Its conversion is attributed from the legacy record.
    let (s, v) = post(&app, &body(&old, "O-LEGACY", "paid", 5000, old_ms + 1000)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!((v["note_id"].as_str(), v["item_id"].as_str()), (Some(NOTE), Some("567873872517")));

    // A replay of it (appended 5 s after its token) is not counted again; a replayed click
    // recorded nowhere is counted once and recorded in the per-ms layout.
    let lines = format!("{old} {}\n{fresh} {}", record(old_ms), record(old_ms + 1));
    let _: String =
        redis::cmd("XADD").arg("ll:clicks").arg("*").arg("clicks").arg(&lines).query_async(&mut r).await.unwrap();
    assert_eq!(agg(&app, clicks_key.clone(), "clicks").await, before + 1);
    let records = crate::support::click_records(&mut r).await;
    assert_eq!(records.get(&fresh), Some(&record(old_ms + 1)));
    assert!(!records.contains_key(&old), "the legacy click stays where it was");
    app.stop().await;
}

#[tokio::test]
async fn clicks_of_one_millisecond_applied_in_separate_passes_share_its_field_and_attribute() {
    // The in-process aggregator is off; one with batches of one click applies three clicks
    // whose tokens carry the same ms, so each pass appends to the field the last one wrote.
    let app = spawn_app_with(|c| c.aggregator_enabled = false).await;
    let ms = linkloop::click::now_ms() - 2_000;
    let record = format!("1|{ms}|{NOTE}|creator_01|taobao|567873872517|||0123456789abcdef|app|");
    let tokens: Vec<String> = (0..3).map(|_| token_at(ms)).collect();
    let mut r = app.redis().await;
    for t in &tokens {
        let line = format!("{t} {record}");
        let _: String =
            redis::cmd("XADD").arg("ll:clicks").arg("*").arg("clicks").arg(&line).query_async(&mut r).await.unwrap();
    }
    let opts = linkloop::store::aggregator::AggregatorOptions {
        batch: 1,
        click_ttl_ms: 8 * 86_400_000,
        repeat_window_ms: 1_800_000,
        tz: chrono_tz::Asia::Shanghai,
        stream_retention_ms: 0,
    };
    let url = app.redis.server.tcp_url();
    let agg = linkloop::store::aggregator::Aggregator::new(&url, opts, app.state.metrics.clone()).unwrap();
    assert_eq!(agg.catch_up().await.unwrap(), 3);
    let field: String = r.hget(linkloop::store::keys::click_slots(ms / 60_000), ms).await.unwrap();
    let want: String = tokens.iter().map(|t| format!("{t} {record}\n")).collect();
    assert_eq!(field, want, "three passes, one field, lines in stream order");
    let clicks: i64 = r.hget(format!("ll:agg:note:{NOTE}:{}", day(ms)), "clicks").await.unwrap();
    assert_eq!(clicks, 3);
    // Applying again changes nothing; each click's conversion finds its own line.
    assert_eq!(agg.catch_up().await.unwrap(), 0);
    for (i, t) in tokens.iter().enumerate() {
        let (s, v) = post(&app, &body(t, &format!("O-MS-{i}"), "paid", 1000 + i as i64, ms + 500)).await;
        assert_eq!((s, v["click_token"].as_str(), v["note_id"].as_str()), (201, Some(t.as_str()), Some(NOTE)), "{v}");
    }
    app.stop().await;
}
