//! `POST /v1/links`: auth, validation naming the field, envelopes, nothing written on error.

use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, spawn_app};

async fn post(app: &crate::support::TestApp, token: Option<&str>, body: &str, ctype: &str) -> (u16, Value) {
    let mut req = app.client.post(format!("{}/v1/links", app.base)).header("content-type", ctype).body(body.to_owned());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn mint_accepts_share_text_and_note_url() {
    let app = spawn_app().await;
    let body = json!({
        "note_id": "https://www.xiaohongshu.com/explore/67d7c713000000000900e391?xsec_token=AB&xsec_source=pc_user",
        "creator_id": "c-42",
        "url": "[CQ:json,data={\"jumpUrl\":\"https://item.m.jd.com/product/100104625124.html?utm_user=plusmember\"}][分享]【百亿补贴】京觅富硒鸡蛋3斤 https://item.m.jd.com/product/100104625124.html?utm_user=plusmember",
        "campaign": "double11"
    });
    let (status, v) = post(&app, Some(ADMIN_TOKEN), &body.to_string(), "application/json").await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["note_id"], "67d7c713000000000900e391");
    assert_eq!(v["platform"], "jd");
    assert_eq!(v["item_id"], "100104625124");
    assert_eq!(v["sku_id"], Value::Null);
    let link = v["link"].as_str().unwrap();
    assert!(link.starts_with(&format!("{}/j/", app.base)));
    let claims = linkloop::link::verify(link.rsplit('/').next().unwrap(), &crate::support::keys().0).unwrap();
    assert_eq!(claims.campaign.as_deref(), Some("double11"));
    assert_eq!(claims.creator_id, "c-42");
    app.stop().await;
}

#[tokio::test]
async fn errors_have_envelopes_and_write_nothing() {
    let app = spawn_app().await;
    let ok =
        json!({"note_id": "65682d4500000000380339a5", "creator_id": "c1", "url": "https://item.jd.com/6828141.html"});
    let with = |k: &str, v: &str| {
        let mut b = ok.clone();
        b[k] = json!(v);
        b.to_string()
    };
    // (bearer token, body, content type, status, code, field)
    type Case<'a> = (Option<&'a str>, String, &'a str, u16, &'a str, Option<&'a str>);
    let cases: Vec<Case<'_>> = vec![
        (None, ok.to_string(), "application/json", 401, "unauthorized", None),
        (Some("wrong"), ok.to_string(), "application/json", 401, "unauthorized", None),
        (Some(ADMIN_TOKEN), ok.to_string(), "text/plain", 415, "unsupported_media_type", None),
        (Some(ADMIN_TOKEN), "{not json".into(), "application/json", 400, "malformed_json", None),
        (Some(ADMIN_TOKEN), "hello".into(), "application/json", 400, "malformed_json", None),
        // Broken after a field serde would refuse first: still not JSON.
        (Some(ADMIN_TOKEN), r#"{"note_id":7"#.into(), "application/json", 400, "malformed_json", None),
        (Some(ADMIN_TOKEN), "{} x".into(), "application/json", 400, "malformed_json", None),
        // serde reports the first missing field, named in `field`.
        (
            Some(ADMIN_TOKEN),
            json!({"note_id": "x"}).to_string(),
            "application/json",
            400,
            "invalid_body",
            Some("creator_id"),
        ),
        (
            Some(ADMIN_TOKEN),
            json!({"note_id": "x", "creator_id": 7, "url": "u"}).to_string(),
            "application/json",
            400,
            "invalid_body",
            Some("creator_id"),
        ),
        (
            Some(ADMIN_TOKEN),
            with("url", "https://m.tb.cn/h.3EK37eh"),
            "application/json",
            400,
            "short_link",
            Some("url"),
        ),
        (
            Some(ADMIN_TOKEN),
            with("url", "https://item.taobao.com.evil.cn/item.htm?id=1"),
            "application/json",
            400,
            "untrusted_host",
            Some("url"),
        ),
        (
            Some(ADMIN_TOKEN),
            with("url", "javascript:alert(1)//item.taobao.com/item.htm?id=1"),
            "application/json",
            400,
            "unsupported_scheme",
            Some("url"),
        ),
        (Some(ADMIN_TOKEN), with("url", "￥AEpabxiRg0u￥"), "application/json", 400, "share_token", Some("url")),
        (Some(ADMIN_TOKEN), with("url", ""), "application/json", 400, "empty", Some("url")),
        (Some(ADMIN_TOKEN), with("note_id", "not-a-note"), "application/json", 400, "not_product", Some("note_id")),
        (
            Some(ADMIN_TOKEN),
            with("note_id", "http://xhslink.com/jQn5Gw"),
            "application/json",
            400,
            "short_link",
            Some("note_id"),
        ),
        (
            Some(ADMIN_TOKEN),
            with("creator_id", "bad creator"),
            "application/json",
            400,
            "invalid_creator_id",
            Some("creator_id"),
        ),
        (Some(ADMIN_TOKEN), with("creator_id", ""), "application/json", 400, "invalid_creator_id", Some("creator_id")),
        (
            Some(ADMIN_TOKEN),
            with("campaign", &"x".repeat(40)),
            "application/json",
            400,
            "invalid_campaign",
            Some("campaign"),
        ),
    ];
    for (token, body, ctype, status, code, field) in cases {
        let (s, v) = post(&app, token, &body, ctype).await;
        assert_eq!(s, status, "{body}: {v}");
        assert_eq!(v["code"], code, "{body}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        if let Some(f) = field {
            assert_eq!(v["field"], f, "{v}");
            assert!(v["message"].as_str().unwrap().starts_with(f), "{v}");
        }
    }
    let big =
        json!({"note_id": "65682d4500000000380339a5", "creator_id": "c1", "url": "x".repeat(70 * 1024)}).to_string();
    let (s, v) = post(&app, Some(ADMIN_TOKEN), &big, "application/json").await;
    assert_eq!((s, v["code"].as_str()), (413, Some("body_too_large")));
    let mut r = app.redis().await;
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut r).await.unwrap();
    let len: u64 = redis::cmd("XLEN").arg("ll:clicks").query_async(&mut r).await.unwrap();
    assert!(size <= 1, "only the click stream (created by the aggregator) may exist: {size}");
    assert_eq!(len, 0);
    let unknown = app.get(&format!("{}/v1/nope", app.base)).await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(unknown.json::<Value>().await.unwrap()["code"], "not_found");
    app.stop().await;
}

/// Sends a request head promising a 100-byte body, then only `{`; returns the raw answer.
async fn stalled_body(app: &crate::support::TestApp, auth: &str) -> String {
    promised_body(app, "/v1/links", auth, 100).await
}

/// Sends a request head to `path` promising `len` body bytes, then only `{`; returns the raw answer.
async fn promised_body(app: &crate::support::TestApp, path: &str, auth: &str, len: u64) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.strip_prefix("http://").unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: a\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n{{"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(30), s.read(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive_and_auth_comes_before_the_body() {
    let app = spawn_app().await;
    let body = json!({"note_id": "65682d4500000000380339a5", "creator_id": "c1",
                      "url": "https://item.jd.com/100012043978.html"})
    .to_string();
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let res = app
            .client
            .post(format!("{}/v1/links", app.base))
            .header("authorization", format!("{scheme} {ADMIN_TOKEN}"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{scheme}");
    }
    // A wrong token is refused without waiting for the (stalled) body.
    let answer = stalled_body(&app, "Bearer wrong").await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("\"code\":\"unauthorized\""), "{answer}");
    // The right token and a body that never completes: 408 body_timeout, a client fault.
    let answer = stalled_body(&app, &format!("Bearer {ADMIN_TOKEN}")).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"body_timeout\""), "{answer}");
    // A declared length over the route's limit is refused at once, without waiting for it.
    for (path, len) in
        [("/v1/links", 64 * 1024 + 1), ("/v1/conversions", 99_999_999_999), ("/v1/conversions/batch", 1 << 21)]
    {
        let answer = promised_body(&app, path, &format!("Bearer {ADMIN_TOKEN}"), len).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        assert!(answer.contains("\"code\":\"body_too_large\""), "{path}: {answer}");
    }
    // `[]` is not an object: the message says so without naming internal types.
    let (status, v) = post(&app, Some(ADMIN_TOKEN), "[]", "application/json").await;
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_body")));
    assert_eq!(v["message"], "body must be a JSON object");
    app.stop().await;
}
