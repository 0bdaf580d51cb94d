//! Bots, previews, HEAD and per-IP limits: redirected, never counted as clicks.

use redis::AsyncCommands;

use crate::support::spawn_app_with;

const NOTE: &str = "65682d4500000000380339a5";
const URL: &str = "https://item.jd.com/100002580230.html";

async fn stream_reasons(r: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    crate::support::stream_clicks(r, "ll:nonbillable").await.into_iter().map(|c| c.reason).collect()
}

#[tokio::test]
async fn bots_previews_and_head_are_redirected_but_not_counted() {
    let app = spawn_app_with(|_| {}).await;
    let link = app.mint(NOTE, "c1", URL).await["link"].as_str().unwrap().to_owned();
    let uas = [
        ("curl/8.5.0", "http_library"),
        ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", "facebook_preview"),
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "googlebot"),
        ("TelegramBot (like TwitterBot)", "telegram_preview"),
        ("Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)", "crawler"),
        ("", "empty_ua"),
    ];
    for (ua, _) in uas {
        let res = app.client.get(&link).header("user-agent", ua).send().await.unwrap();
        assert_eq!(res.status(), 302, "{ua}");
        assert!(res.headers()["location"].to_str().unwrap().starts_with("https://item.jd.com/100002580230.html?"));
    }
    let res = app.client.head(&link).send().await.unwrap();
    assert_eq!(res.status(), 302);
    // One human click.
    app.click(&link).await;
    let mut r = app.redis().await;
    let clicks = crate::support::stream_len(&mut r, "ll:clicks").await;
    assert_eq!(clicks, 1, "only the human click is a click");
    let mut expected: Vec<String> = uas.iter().map(|(_, reason)| (*reason).to_owned()).collect();
    expected.push("head".into());
    assert_eq!(stream_reasons(&mut r).await, expected);
    app.state.aggregator.catch_up().await.unwrap();
    let day = linkloop::store::aggregator::day_of(linkloop::click::now_ms(), chrono_tz::Asia::Shanghai);
    let counted: u64 = r.hget(format!("ll:agg:note:{NOTE}:{day}"), "clicks").await.unwrap();
    assert_eq!(counted, 1);
    assert_eq!(app.metric("linkloop_nonbillable_requests_total").await, 7.0);
    app.stop().await;
}

#[tokio::test]
async fn per_ip_soft_then_hard_limit() {
    let app = spawn_app_with(|c| {
        c.click_soft_limit_per_minute = 3;
        c.click_hard_limit_per_minute = 6;
    })
    .await;
    let link = app.mint(NOTE, "c1", URL).await["link"].as_str().unwrap().to_owned();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let res = app.get(&link).await;
        if res.status() == 429 {
            assert_eq!(res.headers()["retry-after"], "60");
            assert!(res.headers().get("location").is_none());
        }
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [302, 302, 302, 302, 302, 302, 429, 429]);
    let mut r = app.redis().await;
    let clicks = crate::support::stream_len(&mut r, "ll:clicks").await;
    assert_eq!(clicks, 3, "past the soft limit clicks are not billable");
    assert_eq!(stream_reasons(&mut r).await, ["rate_limited"; 3]);
    app.stop().await;
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let app = spawn_app_with(|c| {
        c.click_soft_limit_per_minute = 1;
        c.click_hard_limit_per_minute = 1000;
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let link = app.mint(NOTE, "c1", URL).await["link"].as_str().unwrap().to_owned();
    for i in 0..5 {
        let res =
            app.client.get(&link).header("x-forwarded-for", format!("203.0.113.{i}, 127.0.0.1")).send().await.unwrap();
        assert_eq!(res.status(), 302);
    }
    let mut r = app.redis().await;
    let clicks = crate::support::stream_len(&mut r, "ll:clicks").await;
    assert_eq!(clicks, 5, "five clients, one click each: all billable");
    let e = crate::support::stream_clicks(&mut r, "ll:clicks").await;
    let rec = linkloop::click::ClickRecord::from_packed(&e[2].rec).unwrap();
    assert_eq!(rec.ip_hash, app.state.visitor.ip_hash("203.0.113.2".parse().unwrap()));
    app.stop().await;
    // Without trust, the header is ignored: one client, soft-limited after one click.
    let app = spawn_app_with(|c| {
        c.click_soft_limit_per_minute = 1;
        c.click_hard_limit_per_minute = 1000;
    })
    .await;
    let link = app.mint(NOTE, "c1", URL).await["link"].as_str().unwrap().to_owned();
    for i in 0..3 {
        app.client.get(&link).header("x-forwarded-for", format!("203.0.113.{i}")).send().await.unwrap();
    }
    let mut r = app.redis().await;
    let clicks = crate::support::stream_len(&mut r, "ll:clicks").await;
    assert_eq!(clicks, 1);
    app.stop().await;
}
