//! The `linkloop` binary: `mint` (offline, same keys as serve) and `verify-jump`.

use std::process::Command;

use crate::support::{JUMP_SECRET, LINK_SECRET, VISITOR_SECRET, keys, spawn_app};

fn config_file(dir: &std::path::Path, public_url: &str) -> std::path::PathBuf {
    let path = dir.join("linkloop.toml");
    std::fs::write(
        &path,
        format!(
            "public_url = \"{public_url}\"\nadmin_token = \"cli-admin-token-0123456789abcdef\"\n[keys]\nlink = [{{kid = 1, secret = \"{LINK_SECRET}\"}}]\njump = [{{kid = 1, secret = \"{JUMP_SECRET}\"}}]\nvisitor_secret = \"{VISITOR_SECRET}\"\n"
        ),
    )
    .unwrap();
    path
}

fn linkloop(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_linkloop")).args(args).env_remove("REDIS_URL").output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[tokio::test]
async fn mint_cli_link_is_served_and_verify_jump_checks_it() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), &app.base);
    let cfg = cfg.to_str().unwrap();
    let url = "https://detail.tmall.com/item.htm?id=41254478179&ali_refid=a3_430583_1006:1109983619:N:MsF9mE9KLTC2IibWJh+K1A==:9da2017571e226e04a39097b54542188&skuId=3214771215838";
    let (code, out, err) = linkloop(&[
        "mint",
        "--config",
        cfg,
        "--note",
        "65a025ea000000001d03799b",
        "--creator",
        "c9",
        "--url",
        url,
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["platform"], "tmall");
    assert_eq!(v["item_id"], "41254478179");
    assert_eq!(v["sku_id"], "3214771215838");
    assert_eq!(v["note_id"], "65a025ea000000001d03799b");
    let link = v["link"].as_str().unwrap();
    assert!(link.starts_with(&format!("{}/j/", app.base)));

    // Without --json: just the link.
    let (code, out, _) =
        linkloop(&["mint", "--config", cfg, "--note", "65a025ea000000001d03799b", "--creator", "c9", "--url", url]);
    assert_eq!(code, 0);
    assert!(out.trim().starts_with(&format!("{}/j/", app.base)));

    // The server (same keys) accepts the offline-minted link.
    let res = app.get(link).await;
    assert_eq!(res.status(), 302);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let (code, out, _) = linkloop(&["verify-jump", "--config", cfg, &location]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("valid: platform=tmall item_id=41254478179 sku_id=3214771215838"), "{out}");
    let tampered = location.replace("id=41254478179", "id=41254478170");
    let (code, out, _) = linkloop(&["verify-jump", "--config", cfg, &tampered]);
    assert_eq!(code, 1, "{out}");
    let (code, _, _) = linkloop(&["verify-jump", "--config", cfg, "https://evil.example/?ll_v=1"]);
    assert_eq!(code, 1);
    let (_, jk) = keys();
    assert!(linkloop::jump::verify(&location, &jk).is_ok());

    // Bad input: exit 65 with the field named.
    let (code, _, err) = linkloop(&[
        "mint",
        "--config",
        cfg,
        "--note",
        "65a025ea000000001d03799b",
        "--creator",
        "c9",
        "--url",
        "https://u.jd.com/JM9CPBK",
    ]);
    assert_eq!(code, 65);
    assert!(err.contains("url: ") && err.contains("short_link"), "{err}");
    // Bad config: exit 64.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = 'nowhere'").unwrap();
    let (code, _, err) =
        linkloop(&["mint", "--config", bad.to_str().unwrap(), "--note", "x", "--creator", "c", "--url", "u"]);
    assert_eq!(code, 64, "{err}");
    // Usage errors: exit 64 too (clap's own default would be 2); help is not an error.
    let (code, _, err) = linkloop(&["bogus"]);
    assert_eq!(code, 64, "{err}");
    let (code, _, err) =
        linkloop(&["mint", "--config", cfg, "--note", "n", "--creator", "c", "--url", "u", "--count", "0"]);
    assert_eq!(code, 64, "{err}");
    let (code, out, _) = linkloop(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("Usage"), "{out}");
    app.stop().await;
}

#[tokio::test]
async fn sign_callback_prints_a_curl_that_the_gateway_accepts() {
    let app = spawn_app().await;
    let (token, ts) = {
        let minted =
            app.mint("65a025ea000000001d03799b", "c9", "https://item.taobao.com/item.htm?id=567873872517").await;
        app.click(minted["link"].as_str().unwrap()).await
    };
    let dir = tempfile::tempdir().unwrap();
    let body_path = dir.path().join("body.json");
    let at = chrono::DateTime::from_timestamp_millis(ts as i64).unwrap().to_rfc3339();
    let body = format!(
        "{{\"click_token\":\"{token}\",\"order_id\":\"CLI-1\",\"status\":\"paid\",\"amount\":990,\"occurred_at\":\"{at}\"}}"
    );
    std::fs::write(&body_path, &body).unwrap();
    let url = format!("{}/v1/conversions", app.base);
    let (code, out, err) = linkloop(&[
        "sign-callback",
        "--merchant",
        "tmall-shop",
        "--secret",
        crate::support::MERCHANT_SECRET_1,
        "--body",
        body_path.to_str().unwrap(),
        "--url",
        &url,
    ]);
    assert_eq!(code, 0, "{err}");
    // An empty or short secret (an unset variable) is refused, not signed with.
    for secret in ["", "short"] {
        let (code, out, err) = linkloop(&[
            "sign-callback",
            "--merchant",
            "tmall-shop",
            "--secret",
            secret,
            "--body",
            body_path.to_str().unwrap(),
        ]);
        assert_eq!((code, out.as_str()), (64, ""), "{err}");
        assert!(err.contains("at least 32 bytes"), "{err}");
    }
    // Without --secret, the merchant's secret comes from the config; none there: refused.
    let cfg = dir.path().join("merchant.toml");
    let toml = format!(
        "[[merchants]]\nid = \"tmall-shop\"\nplatforms = [\"taobao\"]\nsecrets = [{{kid = 1, secret = \"{}\"}}]\n",
        crate::support::MERCHANT_SECRET_1
    );
    std::fs::write(&cfg, toml).unwrap();
    let args = |merchant: &'static str| {
        [
            "sign-callback",
            "--config",
            cfg.to_str().unwrap(),
            "--merchant",
            merchant,
            "--body",
            body_path.to_str().unwrap(),
            "--url",
            &url,
        ]
        .map(str::to_owned)
    };
    let run = |a: [String; 9]| {
        let out = Command::new(env!("CARGO_BIN_EXE_linkloop"))
            .args(&a)
            .env_remove("LINKLOOP_MERCHANT_SECRET")
            .env("LINKLOOP_DATA_DIR", dir.path())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, from_config, err) = run(args("tmall-shop"));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(args("jd-shop"));
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("no --secret"), "{err}");
    // Run the printed command with a real shell and curl.
    let stdout = run_printed_curl(&out).await;
    assert!(stdout.trim_end().ends_with("HTTP 201"), "{stdout}");
    assert!(stdout.contains("\"order_id\":\"CLI-1\""), "{stdout}");
    // The command signed with the config's secret is accepted too (the same order again: 200).
    let stdout = run_printed_curl(&from_config).await;
    assert!(stdout.trim_end().ends_with("HTTP 200") && stdout.contains("\"duplicate\":true"), "{stdout}");
    app.stop().await;
}

/// Runs the curl command `sign-callback` printed (comment lines dropped) with a real shell;
/// its output, which ends with the HTTP status (`HTTP 201`; stderr first when it says anything).
async fn run_printed_curl(printed: &str) -> String {
    let script: String = printed.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
    let curl = tokio::process::Command::new("sh").arg("-c").arg(&script).output().await.unwrap();
    format!("{}{}", String::from_utf8_lossy(&curl.stderr), String::from_utf8_lossy(&curl.stdout))
}

#[test]
fn mint_count_prints_distinct_verifiable_links_with_indexed_note_ids() {
    let dir = tempfile::tempdir().unwrap();
    let base = "https://t.example";
    let cfg = config_file(dir.path(), base);
    let cfg = cfg.to_str().unwrap();
    let note = "65a025ea000000001d03799b";
    let url = "https://detail.tmall.com/item.htm?id=41254478179&skuId=3214771215838";
    let args = ["mint", "--config", cfg, "--note", note, "--creator", "c9", "--url", url, "--campaign", "d11"];
    let (code, out, err) = linkloop(&[&args[..], &["--count", "1000"]].concat());
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1000);
    assert_eq!(lines.iter().collect::<std::collections::HashSet<_>>().len(), 1000, "links are not distinct");
    let (lk, _) = keys();
    let mut issued_at = None;
    for (i, line) in lines.iter().enumerate() {
        let token = line.strip_prefix(&format!("{base}/j/")).unwrap_or_else(|| panic!("line {i}: {line}"));
        let claims = linkloop::link::verify(token, &lk).unwrap_or_else(|e| panic!("line {i}: {e:?}"));
        // The first 18 hex digits of --note, then the index as 6 hex digits.
        assert_eq!(claims.note_id, format!("65a025ea000000001d{i:06x}"));
        assert_eq!(claims.creator_id, "c9");
        assert_eq!(claims.product.platform.as_str(), "tmall");
        assert_eq!(claims.product.item_id, 41254478179);
        assert_eq!(claims.product.sku_id, Some(3214771215838));
        assert_eq!(claims.campaign.as_deref(), Some("d11"));
        assert_eq!(*issued_at.get_or_insert(claims.issued_at), claims.issued_at);
    }

    // --json: one object per line, with the same note ids.
    let (code, out, err) = linkloop(&[&args[..], &["--count", "3", "--json"]].concat());
    assert_eq!(code, 0, "{err}");
    let objects: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(objects.len(), 3);
    for (i, v) in objects.iter().enumerate() {
        assert_eq!(v["note_id"], format!("65a025ea000000001d{i:06x}"));
        assert_eq!(v["item_id"], "41254478179");
        let token = v["link"].as_str().unwrap().strip_prefix(&format!("{base}/j/")).unwrap();
        assert_eq!(linkloop::link::verify(token, &lk).unwrap().note_id, v["note_id"].as_str().unwrap());
    }

    // --vary campaign: one note, campaign tags d11-000000, d11-000001, …
    let (code, out, err) = linkloop(&[&args[..], &["--count", "300", "--vary", "campaign"]].concat());
    assert_eq!(code, 0, "{err}");
    for (i, line) in out.lines().enumerate() {
        let claims = linkloop::link::verify(line.strip_prefix(&format!("{base}/j/")).unwrap(), &lk).unwrap();
        assert_eq!(claims.note_id, note);
        assert_eq!(claims.campaign, Some(format!("d11-{i:06x}")));
    }
    assert_eq!(out.lines().count(), 300);

    // --count 1 (the default) keeps the note id as given.
    let (code, out, _) = linkloop(&[&args[..], &["--count", "1"]].concat());
    assert_eq!(code, 0);
    let token = out.trim().strip_prefix(&format!("{base}/j/")).unwrap();
    assert_eq!(linkloop::link::verify(token, &lk).unwrap().note_id, note);

    // Out of range or not a number: a usage error naming --count, nothing printed.
    for bad in ["0", "10000001", "-1", "many"] {
        let flag = format!("--count={bad}");
        let (code, out, err) = linkloop(&[&args[..], &[flag.as_str()]].concat());
        assert_ne!(code, 0, "--count {bad}");
        assert!(out.is_empty(), "--count {bad}: {out}");
        assert!(err.contains("--count"), "--count {bad}: {err}");
    }
    // Bad input is still reported once, before anything is printed.
    let (code, out, err) = linkloop(&[
        "mint",
        "--config",
        cfg,
        "--note",
        note,
        "--creator",
        "c9",
        "--url",
        "https://u.jd.com/JM9CPBK",
        "--count",
        "5",
    ]);
    assert_eq!(code, 65);
    assert!(out.is_empty() && err.contains("short_link"), "{out} {err}");
}
