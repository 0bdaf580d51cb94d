//! `GET /v1/stats/{dimension}/{id}` and `linkloop report`: exact numbers read back
//! from aggregates written straight to Redis, CSV text, auth, errors naming the
//! field, and the whole loop mint → click → aggregate → stats.

use std::process::Command;

use linkloop::platform::Platform;
use linkloop::store::keys::{self, Dim};
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, TestApp, spawn_app};

const NOTE: &str = "65682d4500000000380339a5";
const OTHER_NOTE: &str = "66bf0663000000001e019e8c";

/// Writes three days of aggregates for `NOTE` (the first day empty), crossing a
/// month boundary, plus noise under another note and the day after the range.
async fn seed(app: &TestApp) {
    let mut r = app.redis().await;
    let n = Dim::Note(NOTE);
    let _: () = r
        .hset_multiple(
            keys::agg(n, "2026-02-28"),
            &[("clicks", "3"), ("conversions", "1"), ("paid:CNY", "12900"), ("paid:USD", "250")],
        )
        .await
        .unwrap();
    let _: () = r.pfadd(keys::uv(n, "2026-02-28"), &["v1", "v2"]).await.unwrap();
    let day = keys::agg(n, "2026-03-01");
    for (field, by) in [("clicks", 4), ("conversions", 2), ("refunds", 1), ("paid:CNY", 5000), ("refunded:CNY", 12900)]
    {
        let _: i64 = r.hincr(&day, field, by).await.unwrap();
    }
    let _: () = r.pfadd(keys::uv(n, "2026-03-01"), &["v2", "v3", "v4", "v5"]).await.unwrap();
    // Outside the range / another note: must not show up.
    let _: () = r.hset(keys::agg(n, "2026-03-02"), "clicks", 1000).await.unwrap();
    let _: () = r.pfadd(keys::uv(n, "2026-03-02"), "v9").await.unwrap();
    let _: () = r.hset(keys::agg(Dim::Note(OTHER_NOTE), "2026-03-01"), "clicks", 77).await.unwrap();
    // An item, addressed as `jd:100012043978`.
    let item = Dim::Item(Platform::Jd, 100_012_043_978);
    let _: () = r.hset_multiple(keys::agg(item, "2026-03-01"), &[("clicks", "8"), ("conversions", "1")]).await.unwrap();
    let _: () = r.pfadd(keys::uv(item, "2026-03-01"), &["v1", "v2", "v3"]).await.unwrap();
}

async fn get(app: &TestApp, path_and_query: &str, token: Option<&str>, accept: Option<&str>) -> reqwest::Response {
    let mut req = app.client.get(format!("{}{path_and_query}", app.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn note_stats_exact_json_and_csv() {
    let app = spawn_app().await;
    seed(&app).await;

    let q = format!("/v1/stats/note/{NOTE}?from=2026-02-27&to=2026-03-01");
    let res = get(&app, &q, Some(ADMIN_TOKEN), None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let v: Value = res.json().await.unwrap();
    assert_eq!(
        v,
        json!({
            "dimension": "note",
            "id": NOTE,
            "from": "2026-02-27",
            "to": "2026-03-01",
            "timezone": "Asia/Shanghai",
            "days": [
                {"date": "2026-02-27", "clicks": 0, "repeat_clicks": 0, "uv": 0, "conversions": 0, "refunds": 0,
                 "gmv_fen": 0, "gmv": {}, "cvr": 0.0},
                {"date": "2026-02-28", "clicks": 3, "repeat_clicks": 0, "uv": 2, "conversions": 1, "refunds": 0,
                 "gmv_fen": 12900, "gmv": {"CNY": 12900, "USD": 250}, "cvr": 0.333333},
                {"date": "2026-03-01", "clicks": 4, "repeat_clicks": 0, "uv": 4, "conversions": 2, "refunds": 1,
                 "gmv_fen": -7900, "gmv": {"CNY": -7900}, "cvr": 0.5},
            ],
            // uv: the union {v1..v5}, not 2 + 4.
            "total": {"clicks": 7, "repeat_clicks": 0, "uv": 5, "conversions": 3, "refunds": 1, "gmv_fen": 5000,
                      "gmv": {"CNY": 5000, "USD": 250}, "cvr": 0.428571},
        })
    );

    // Upper-case note ids are the same note.
    let upper = format!("/v1/stats/note/{}?from=2026-03-01&to=2026-03-01", NOTE.to_ascii_uppercase());
    let v: Value = get(&app, &upper, Some(ADMIN_TOKEN), None).await.json().await.unwrap();
    assert_eq!((v["id"].as_str(), v["total"]["clicks"].as_u64()), (Some(NOTE), Some(4)));

    let csv = "date,clicks,uv,conversions,refunds,gmv_fen,cvr,repeat_clicks\n\
               2026-02-27,0,0,0,0,0,0,0\n\
               2026-02-28,3,2,1,0,12900,0.333333,0\n\
               2026-03-01,4,4,2,1,-7900,0.5,0\n\
               total,7,5,3,1,5000,0.428571,0\n";
    for (query, accept) in [(format!("{q}&format=csv"), None), (q.clone(), Some("text/csv"))] {
        let res = get(&app, &query, Some(ADMIN_TOKEN), accept).await;
        assert_eq!(res.status(), 200, "{query} {accept:?}");
        assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
        assert_eq!(res.headers()["cache-control"], "no-store");
        assert_eq!(res.text().await.unwrap(), csv);
    }
    // An explicit format=json wins over Accept.
    let res = get(&app, &format!("{q}&format=json"), Some(ADMIN_TOKEN), Some("text/csv")).await;
    assert_eq!(res.headers()["content-type"], "application/json");

    // Item dimension, `{platform}:{item_id}` in the path.
    let res =
        get(&app, "/v1/stats/item/jd:100012043978?from=2026-03-01&to=2026-03-01&format=csv", Some(ADMIN_TOKEN), None)
            .await;
    assert_eq!(
        res.text().await.unwrap(),
        "date,clicks,uv,conversions,refunds,gmv_fen,cvr,repeat_clicks\n2026-03-01,8,3,1,0,0,0.125,0\ntotal,8,3,1,0,0,0.125,0\n"
    );
    app.stop().await;
}

#[tokio::test]
async fn stats_auth_and_errors_name_the_field() {
    let app = spawn_app().await;
    let ok = format!("/v1/stats/note/{NOTE}?from=2026-03-01&to=2026-03-02");
    for token in [None, Some("wrong")] {
        let res = get(&app, &ok, token, None).await;
        assert_eq!(res.status(), 401);
        assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"linkloop\"");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["code"], "unauthorized");
    }
    let too_long = format!("/v1/stats/note/{NOTE}?from=2026-01-01&to=2026-04-03");
    let cases: Vec<(String, &str, &str)> = vec![
        ("/v1/stats/sku/1".into(), "invalid_dimension", "dimension"),
        ("/v1/stats/note/123".into(), "invalid_id", "id"),
        (format!("/v1/stats/note/{NOTE}z"), "invalid_id", "id"),
        ("/v1/stats/creator/a%20b".into(), "invalid_id", "id"),
        ("/v1/stats/item/100012043978".into(), "invalid_id", "id"),
        ("/v1/stats/item/amazon:1".into(), "invalid_id", "id"),
        ("/v1/stats/platform/ebay".into(), "invalid_id", "id"),
        (format!("/v1/stats/note/{NOTE}?from=2026-3-01"), "invalid_date", "from"),
        (format!("/v1/stats/note/{NOTE}?from=2026-03-01&to=2026-02-30"), "invalid_date", "to"),
        (format!("/v1/stats/note/{NOTE}?from=2026-03-02&to=2026-03-01"), "invalid_range", "from"),
        (too_long, "range_too_long", "to"),
        (format!("{ok}&format=xml"), "invalid_format", "format"),
        (format!("{ok}&from=2026-02-01"), "invalid_query", "from"),
        (format!("{ok}&format=csv&format=json"), "invalid_query", "format"),
    ];
    for (path, code, field) in cases {
        let res = get(&app, &path, Some(ADMIN_TOKEN), None).await;
        assert_eq!(res.status(), 400, "{path}");
        assert_eq!(res.headers()["content-type"], "application/json");
        let v: Value = res.json().await.unwrap();
        assert_eq!((v["code"].as_str(), v["field"].as_str()), (Some(code), Some(field)), "{path}: {v}");
        assert!(v["message"].as_str().unwrap().starts_with(&format!("{field}: ")), "{v}");
    }
    // 92 days is allowed; a range with no data is all zeros.
    let res = get(&app, "/v1/stats/platform/tmall?from=2026-01-01&to=2026-04-02", Some(ADMIN_TOKEN), None).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["days"].as_array().unwrap().len(), 92);
    assert_eq!(
        v["total"],
        json!({"clicks": 0, "repeat_clicks": 0, "uv": 0, "conversions": 0, "refunds": 0, "gmv_fen": 0, "gmv": {}, "cvr": 0.0})
    );
    app.stop().await;
}

#[tokio::test]
async fn stats_redis_down_is_503_with_retry_after() {
    let mut app = spawn_app().await;
    app.redis.server.kill().await;
    let res = get(&app, &format!("/v1/stats/note/{NOTE}"), Some(ADMIN_TOKEN), None).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["code"], "store_unavailable");
    app.stop().await;
}

#[tokio::test]
async fn clicks_show_up_in_todays_stats() {
    const N: u64 = 5;
    let app = spawn_app().await;
    let minted = app.mint(NOTE, "creator_01", "https://item.jd.com/100012043978.html").await;
    let link = minted["link"].as_str().unwrap();
    let tz = chrono_tz::Asia::Shanghai;
    let first_day = linkloop::store::aggregator::day_of(linkloop::click::now_ms(), tz);
    for _ in 0..N {
        assert_eq!(app.client.get(link).send().await.unwrap().status(), 302);
    }
    app.state.aggregator.catch_up().await.unwrap();
    let last_day = linkloop::store::aggregator::day_of(linkloop::click::now_ms(), tz);
    // Normally one day (today); two only when the test straddles midnight in Shanghai.
    for (dim, id) in [("note", NOTE), ("creator", "creator_01"), ("item", "jd:100012043978"), ("platform", "jd")] {
        let path = format!("/v1/stats/{dim}/{id}?from={first_day}&to={last_day}");
        let v: Value = get(&app, &path, Some(ADMIN_TOKEN), None).await.json().await.unwrap();
        assert_eq!(v["total"]["clicks"], N, "{dim}: {v}");
        assert_eq!(v["total"]["uv"], 1, "{dim}: {v}");
        assert_eq!(v["total"]["conversions"], 0);
        if first_day == last_day {
            assert_eq!(
                v["days"],
                json!([{"date": first_day, "clicks": N, "repeat_clicks": N - 1, "uv": 1, "conversions": 0,
                "refunds": 0, "gmv_fen": 0, "gmv": {}, "cvr": 0.0}])
            );
        }
    }
    // Without from/to: today.
    let v: Value = get(&app, &format!("/v1/stats/note/{NOTE}"), Some(ADMIN_TOKEN), None).await.json().await.unwrap();
    assert_eq!(v["from"], v["to"]);
    assert_eq!(v["to"], linkloop::store::aggregator::day_of(linkloop::click::now_ms(), tz));
    app.stop().await;
}

fn linkloop(args: &[&str], redis_url: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_linkloop"));
    cmd.args(args).env_remove("REDIS_URL").env_remove("LINKLOOP_DATA_DIR");
    if let Some(url) = redis_url {
        cmd.env("REDIS_URL", url);
    }
    let out = cmd.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[tokio::test]
async fn report_cli_prints_csv_json_and_table() {
    let app = spawn_app().await;
    seed(&app).await;
    let url = app.redis.server.tcp_url();
    let url = Some(url.as_str());
    let range = ["--from", "2026-02-27", "--to", "2026-03-01"];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut a = vec!["report", "--note", NOTE];
        a.extend_from_slice(&range);
        a.extend_from_slice(extra);
        a
    };

    let (code, out, err) = linkloop(&with(&["--format", "csv"]), url);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "date,clicks,uv,conversions,refunds,gmv_fen,cvr,repeat_clicks\n2026-02-27,0,0,0,0,0,0,0\n\
         2026-02-28,3,2,1,0,12900,0.333333,0\n2026-03-01,4,4,2,1,-7900,0.5,0\ntotal,7,5,3,1,5000,0.428571,0\n"
    );

    let (code, out, err) = linkloop(&with(&["--format", "json"]), url);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["total"]["uv"], 5);
    assert_eq!(v["total"]["gmv_fen"], 5000);

    let (code, out, err) = linkloop(&with(&[]), url);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("note {NOTE}  2026-02-27..2026-03-01  (Asia/Shanghai)\n")), "{out}");
    assert!(out.contains("\ntotal            7        0   5            3        1    50.00  42.86%\n"), "{out}");

    let (code, out, _) = linkloop(
        &["report", "--item", "jd:100012043978", "--from", "2026-03-01", "--to", "2026-03-01", "--format", "csv"],
        url,
    );
    assert_eq!(code, 0);
    assert!(out.ends_with("\ntotal,8,3,1,0,0,0.125,0\n"), "{out}");

    // Bad arguments: 64, one line naming the flag.
    let (code, _, err) = linkloop(&["report", "--note", "123"], url);
    assert_eq!(code, 64);
    assert!(err.starts_with("linkloop: --note: ") && err.lines().count() == 1, "{err}");
    let (code, _, err) = linkloop(&["report", "--note", NOTE, "--from", "2026-03-02", "--to", "2026-03-01"], url);
    assert_eq!(code, 64);
    assert!(err.starts_with("linkloop: --from: "), "{err}");
    app.stop().await;

    // Redis unreachable: 69 with the hint.
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap();
    let (code, _, err) = linkloop(&["report", "--note", NOTE], Some("redis://127.0.0.1:1/"));
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("is `linkloop serve` running? set REDIS_URL"), "{err}");
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, format!("data_dir = \"{dir_s}\"\n")).unwrap();
    let (code, _, err) = linkloop(&["report", "--config", cfg.to_str().unwrap(), "--platform", "jd"], None);
    assert_eq!(code, 69, "{err}");
    let sock = dir.path().canonicalize().unwrap().join("redis").join("redis.sock");
    assert!(err.contains(sock.to_str().unwrap()), "{err}");
}
