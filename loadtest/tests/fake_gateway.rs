//! Verification arithmetic end to end against a tiny in-test fake gateway (axum):
//! it mints links, answers `/j/` with a 302 carrying a fresh click token, takes
//! conversion callbacks and serves `/v1/stats/note/{id}` — and can be told to lie:
//! lose clicks, count bots, count duplicate deliveries again, drop a fen of GMV.
//! An honest fake must pass; each lie must make the verification fail on its line.
//! A fake that dies mid-run (or is not there at all) must still get the load's measurements
//! printed, a plain sentence saying why there is no verification, and exit status 2. So must a
//! plain target that never answers (exit 2, not 0; a 404 is an answer: exit 0), and an open-loop
//! target that stops answering mid-run (exit 2, blamed on the target, not on the rate; a healthy
//! target too slow for the rate keeps the rate's warning and exit 3).

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use loadtest::Opts;

#[derive(Debug, Clone, Copy, Default)]
struct Lies {
    /// Record only clicks whose sequence number is not a multiple of this.
    lose_every: Option<u64>,
    /// Count clicks by bots (honest when the tester is told `--bots-counted true`).
    count_bots: bool,
    /// Answer a second delivery with 201 and count it again.
    double_count: bool,
    /// Record one fen less GMV for every paid conversion of note #0.
    fen_off: bool,
    /// Refuse every callback's signature (`401 bad_signature`), as for a wrong merchant secret.
    refuse_signatures: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    clicks: u64,
    conversions: u64,
    refunds: u64,
    gmv_fen: i64,
}

#[derive(Default)]
struct Fake {
    lies: Lies,
    links: Vec<String>,
    tokens: HashMap<String, String>,
    seq: u64,
    seen: HashSet<(String, String, String)>,
    notes: HashMap<String, Totals>,
    creator_of: HashMap<String, String>,
    first_note: Option<String>,
}

type Shared = Arc<Mutex<Fake>>;

async fn mint(State(s): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let note = v["note_id"].as_str().unwrap().to_owned();
    let creator = v["creator_id"].as_str().unwrap().to_owned();
    let mut f = s.lock().unwrap();
    f.creator_of.insert(note.clone(), creator);
    f.first_note.get_or_insert_with(|| note.clone());
    f.links.push(note.clone());
    let host = headers[header::HOST].to_str().unwrap();
    let link = format!("http://{host}/j/{}", f.links.len() - 1);
    let out = serde_json::json!({"link": link, "platform": "taobao", "item_id": "1", "sku_id": null, "note_id": note});
    (StatusCode::CREATED, axum::Json(out)).into_response()
}

async fn click(
    State(s): State<Shared>,
    Path(id): Path<usize>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Response {
    let mut f = s.lock().unwrap();
    let note = f.links[id].clone();
    f.seq += 1;
    let seq = f.seq;
    let token = uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | u128::from(seq)).to_string();
    let ua = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok());
    let bot = linkloop::click::UaClass::classify(ua) == linkloop::click::UaClass::Bot;
    let lost = f.lies.lose_every.is_some_and(|n| seq % n == 0);
    if method == axum::http::Method::GET && (!bot || f.lies.count_bots) && !lost {
        f.notes.entry(note.clone()).or_default().clicks += 1;
    }
    f.tokens.insert(token.clone(), note);
    let loc =
        format!("https://item.taobao.com/item.htm?id=1&ll_v=1&ll_ct={token}&ll_ts={}&ll_kid=1&ll_sig=x", now_ms());
    (StatusCode::FOUND, [(header::LOCATION, loc)]).into_response()
}

async fn conversion(State(s): State<Shared>, headers: HeaderMap, body: String) -> Response {
    assert!(headers["linkloop-signature"].to_str().unwrap().starts_with("t="));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let str_of = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    let key = (str_of("order_id"), str_of("status"), str_of("refund_id"));
    let mut f = s.lock().unwrap();
    if f.lies.refuse_signatures {
        return (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({"code": "bad_signature"}))).into_response();
    }
    let Some(note) = f.tokens.get(&str_of("click_token")).cloned() else {
        return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(serde_json::json!({"code": "click_not_found"})))
            .into_response();
    };
    if !f.seen.insert(key.clone()) && !f.lies.double_count {
        return (StatusCode::OK, axum::Json(serde_json::json!({"duplicate": true}))).into_response();
    }
    let amount = v["amount"].as_i64().unwrap();
    let fen_off = f.lies.fen_off && f.first_note.as_deref() == Some(note.as_str());
    let t = f.notes.entry(note).or_default();
    if key.1 == "paid" {
        t.conversions += 1;
        t.gmv_fen += amount - i64::from(fen_off);
    } else {
        t.refunds += 1;
        t.gmv_fen -= amount;
    }
    (StatusCode::CREATED, axum::Json(serde_json::json!({"duplicate": false}))).into_response()
}

async fn stats(State(s): State<Shared>, Path((dim, id)): Path<(String, String)>) -> Response {
    let f = s.lock().unwrap();
    let t = match dim.as_str() {
        "note" => f.notes.get(&id).copied().unwrap_or_default(),
        "creator" => {
            f.notes.iter().filter(|(n, _)| f.creator_of[*n] == id).fold(Totals::default(), |a, (_, t)| Totals {
                clicks: a.clicks + t.clicks,
                conversions: a.conversions + t.conversions,
                refunds: a.refunds + t.refunds,
                gmv_fen: a.gmv_fen + t.gmv_fen,
            })
        }
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    axum::Json(serde_json::json!({"days": [], "total": {
        "clicks": t.clicks, "uv": 0, "conversions": t.conversions, "refunds": t.refunds, "gmv_fen": t.gmv_fen,
    }}))
    .into_response()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

async fn spawn_fake(lies: Lies) -> String {
    spawn_fake_until(lies, std::future::pending()).await
}

/// A fake that stops when `stop` resolves: it closes its listener (connections are refused)
/// and its keep-alive connections.
async fn spawn_fake_until(lies: Lies, stop: impl std::future::Future<Output = ()> + Send + 'static) -> String {
    let state: Shared = Arc::new(Mutex::new(Fake { lies, ..Fake::default() }));
    let app = Router::new()
        .route("/v1/links", post(mint))
        .route("/j/{id}", get(click).head(click))
        .route("/v1/conversions", post(conversion))
        .route("/v1/stats/{dim}/{id}", get(stats))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(stop).await.unwrap() });
    base
}

const HONEST: Lies =
    Lies { lose_every: None, count_bots: true, double_count: false, fen_off: false, refuse_signatures: false };

async fn run_against(lies: Lies, bots_counted: bool) -> loadtest::Summary {
    run_with(lies, bots_counted, "").await
}

async fn run_with(lies: Lies, bots_counted: bool, extra: &str) -> loadtest::Summary {
    let base = spawn_fake(lies).await;
    let bots = if bots_counted { "true" } else { "false" };
    let args = format!(
        "-R 400 -d 1s -c 4 --links 20 --notes 5 --creators 2 --admin-token t --merchant m --merchant-secret s \
         --conversion-share 0.5 --duplicate-share 0.5 --refund-share 0.5 --conversion-delay 100ms \
         --ua-mix app=40,mobile=20,desktop=10,bot=30 --bots-counted {bots} --verify-timeout 1s --progress off \
         --seed 42 {extra} {base}"
    );
    let opts = Opts::from_args(args.split_whitespace()).unwrap();
    loadtest::run(opts).await.unwrap()
}

/// Every one of the 400 planned clicks is either sent (and then answered and tallied: the
/// fake never fails) or counted as not sent. A noisy machine may leave a few planned clicks
/// unsent at the deadline, so the test checks the books add up, not that all 400 went out.
fn assert_sent_all_planned(s: &loadtest::Summary) {
    let o = s.open_loop.as_ref().unwrap();
    assert_eq!((o.planned, o.sent + o.not_sent), (400, 400), "{}", s.render());
    assert_eq!(s.clicks.get_counted + s.clicks.get_bot + s.clicks.head, o.sent, "{}", s.render());
}

const CREATORS: &str = "creators whose stats match";

fn failing(s: &loadtest::Summary) -> Vec<String> {
    s.verification.as_ref().unwrap().checks.iter().filter(|c| !c.ok).map(|c| c.name.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_fake_passes_with_exact_counts() {
    let s = run_against(HONEST, true).await;
    let v = s.verification.as_ref().unwrap();
    assert!(s.passed(), "{}", s.render());
    assert_sent_all_planned(&s);
    assert_eq!(v.checks[0].observed, (s.clicks.get_counted + s.clicks.get_bot) as i64);
    assert_eq!(v.checks[0].observed, v.checks[0].recorded);
    let c = s.conversions.as_ref().unwrap();
    assert!(c.paid_accepted > 20 && c.duplicates_sent > 0 && c.refunds_accepted > 0, "{c:?}");
    assert_eq!(c.duplicates_ok, c.duplicates_sent);
    // The fake has no /metrics: the aggregation lag is "n/a", and the run still passes.
    let lag = s.aggregation_lag.as_ref().unwrap();
    assert_eq!((lag.count, lag.p99_le_s), (None, None));
    assert_eq!(lag.unavailable.as_deref(), Some("GET /metrics answered 404"));
    assert!(s.render().contains("aggregation lag (gateway histogram): n/a ("), "{}", s.render());
    // Same honest fake, bots not counting, and it does not count them: still passes.
    let s = run_against(Lies { count_bots: false, ..HONEST }, false).await;
    assert!(s.passed(), "{}", s.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_client_gives_the_same_books() {
    let s = run_with(HONEST, true, "--client hyper").await;
    assert!(s.passed(), "{}", s.render());
    assert_sent_all_planned(&s);
    let s = run_with(Lies { lose_every: Some(25), ..HONEST }, true, "--client hyper").await;
    assert_eq!(failing(&s), vec!["clicks (GET, bots included)", CREATORS], "{}", s.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_clicks_fail() {
    let s = run_against(Lies { lose_every: Some(25), ..HONEST }, true).await;
    assert!(!s.passed());
    assert_eq!(failing(&s), vec!["clicks (GET, bots included)", CREATORS], "{}", s.render());
    let v = s.verification.as_ref().unwrap();
    assert!(v.checks[0].recorded < v.checks[0].observed);
    assert!(v.checks[0].detail.contains("lost clicks"), "{}", v.checks[0].detail);
    assert!(v.lag_ms.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counted_bots_fail() {
    let s = run_against(HONEST, false).await;
    assert_eq!(failing(&s), vec!["clicks (GET, bots excluded)", CREATORS], "{}", s.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_counted_conversions_fail() {
    let s = run_against(Lies { double_count: true, ..HONEST }, true).await;
    let f = failing(&s);
    assert!(f.contains(&"conversions (paid, 201)".to_owned()), "{}", s.render());
    assert!(f.contains(&"duplicate deliveries answered 200".to_owned()), "{}", s.render());
    assert!(f.contains(&"GMV net of refunds (fen)".to_owned()), "{}", s.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gmv_off_by_one_fen_fails() {
    let s = run_against(Lies { fen_off: true, ..HONEST }, true).await;
    assert_eq!(failing(&s), vec!["GMV net of refunds (fen)", CREATORS], "{}", s.render());
    let v = s.verification.as_ref().unwrap();
    let gmv = v.checks.iter().find(|c| c.name.starts_with("GMV")).unwrap();
    assert!(gmv.observed - gmv.recorded >= 1, "{gmv:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_all_refused_for_their_signature_name_the_credentials() {
    // A wrong --merchant-secret: every callback is refused 401. The clicks still verify; the
    // run ends with an error naming the credentials (exit 2), not a "difference" (exit 1).
    let s = run_against(Lies { refuse_signatures: true, ..HONEST }, true).await;
    let conv = s.conversions.as_ref().unwrap();
    assert_eq!(conv.paid_accepted, 0);
    let refused = conv.rejected["bad_signature"];
    assert_eq!(refused, conv.paid_sent, "{conv:?}");
    assert_eq!(
        s.error.as_deref(),
        Some(
            format!(
                "every conversion callback was refused (bad_signature ×{refused}): check --merchant, \
                 --merchant-secret and --kid against the gateway's [[merchants]] config"
            )
            .as_str()
        )
    );
    let clicks = s.verification.as_ref().unwrap().checks.iter().find(|c| c.name.starts_with("clicks (GET")).unwrap();
    assert!(clicks.ok && clicks.observed > 0, "{clicks:?}");
}

/// Runs the `linkloop-loadtest` binary; its exit code, stdout and stderr.
async fn run_binary(args: &str) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_linkloop-loadtest"))
        .args(args.split_whitespace())
        .env_remove("LINKLOOP_ADMIN_TOKEN")
        .env_remove("LINKLOOP_MERCHANT_SECRET")
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_dying_mid_run_still_gets_the_measurements_reported() {
    // The fake stops 1.5 s into a 3 s run: clicks, conversions and the stats API all find it gone.
    let base = spawn_fake_until(HONEST, tokio::time::sleep(std::time::Duration::from_millis(1500))).await;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("summary.json");
    let args = format!(
        "-c 4 -d 3s --timeout 1s --links 20 --notes 5 --creators 2 --admin-token t --merchant m --merchant-secret s \
         --conversion-share 0.5 --conversion-delay 100ms --bots-counted true --progress off --json {} {base}",
        json.display()
    );
    let t = std::time::Instant::now();
    let (code, stdout, stderr) = run_binary(&args).await;
    let took = t.elapsed();
    assert_eq!(code, Some(2), "stdout:\n{stdout}\nstderr:\n{stderr}");
    // Ends soon after --duration (conversion retries given up after --timeout of refusals);
    // a loose bound only: CI machines are noisy.
    assert!(took < std::time::Duration::from_secs(30), "took {took:?}");
    let why = format!("verification not possible: gateway unreachable at {base} (connection refused)");
    assert!(stderr.contains(&why), "{stderr}");
    assert!(!stderr.contains("hyper_util") && !stdout.contains("hyper_util"), "{stderr}");
    // The table of what was measured before the gateway went away.
    let row = stdout.lines().find(|l| l.starts_with("GET /j/{link}")).unwrap_or_else(|| panic!("{stdout}"));
    let answered: u64 = row.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(answered > 0, "{stdout}");
    assert!(stdout.contains(&format!("ERROR: {why}")), "{stdout}");
    assert!(!stdout.contains("VERIFICATION PASSED"), "{stdout}");
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(s["error"], why.as_str());
    assert!(s["verification"].is_null());
    let get = s["endpoints"].as_array().unwrap().iter().find(|e| e["endpoint"] == "click_get").unwrap();
    assert_eq!(get["answered"], answered);
    assert!(get["errors_by_kind"]["connect"].as_u64().is_some_and(|n| n > 0), "{get}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_gateway_is_named_in_a_plain_sentence() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let (code, stdout, stderr) = run_binary(&format!("-d 1s --admin-token t --progress off {base}")).await;
    assert_eq!(code, Some(2), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!("linkloop-loadtest: cannot mint links: gateway unreachable at {base} (connection refused)")
    );
}

/// The `--json` summary written by a run.
fn read_json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The warning lines of a run's output (printed last, before `summary written to …`).
fn warnings(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| l.starts_with("WARNING")).collect()
}

/// The `click_get` endpoint of a `--json` summary.
fn click_get(s: &serde_json::Value) -> serde_json::Value {
    s["endpoints"].as_array().unwrap().iter().find(|e| e["endpoint"] == "click_get").unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_target_that_never_answers_exits_2_and_one_answering_404_exits_0() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/x", listener.local_addr().unwrap());
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("summary.json");
    let why = format!("target unreachable at {url} (connection refused): no request was answered");
    for (mode, rate) in [("closed", ""), ("open", "-R 100")] {
        let args = format!("--target-kind plain {rate} -d 1s -c 4 --progress off --json {} {url}", json.display());
        let (code, stdout, stderr) = run_binary(&args).await;
        assert_eq!(code, Some(2), "{mode} loop: stdout:\n{stdout}\nstderr:\n{stderr}");
        assert_eq!(stderr.trim_end(), format!("linkloop-loadtest: {why}"), "{mode} loop");
        // The table and the JSON all the same, with the failed connection attempts.
        let s = read_json(&json);
        assert_eq!(s["error"], why.as_str(), "{mode} loop");
        let get = click_get(&s);
        assert_eq!(get["label"], "GET /x", "a plain target is named by its path");
        let connect = get["errors_by_kind"]["connect"].as_u64().unwrap();
        assert!(connect > 0, "{mode} loop: {get}");
        assert_eq!((get["answered"].as_u64(), get["errors"].as_u64()), (Some(0), Some(connect)), "{mode} loop");
        assert!(stdout.contains(&format!("errors connect×{connect}\n")), "{mode} loop: {stdout}");
        assert!(stdout.contains(&format!(": errors connect×{connect}\n")), "no empty status list: {stdout}");
        assert!(stdout.contains(&format!("ERROR: {why}\n")), "{mode} loop: {stdout}");
        if mode == "open" {
            // Open loop: the warning blames the target, not the rate.
            let o = &s["open_loop"];
            assert_eq!(o["target_stopped"]["connect_errors"], connect, "{o}");
            assert!(o["target_stopped"]["last_answer_s"].is_null(), "{o}");
            assert_eq!((o["rate_reached"].as_bool(), o["sent"].as_u64()), (Some(false), Some(0)), "{o}");
            let w = warnings(&stdout);
            assert_eq!(w.len(), 2, "{stdout}");
            assert_eq!(w[0], format!("WARNING: the target never answered: {connect} connection attempts failed."));
            assert!(w[1].starts_with(&format!("WARNING: {} of {} planned", o["not_sent"], o["planned"])), "{stdout}");
            assert!(!stdout.contains("requested rate NOT reached"), "{stdout}");
        } else {
            assert!(s["open_loop"].is_null());
        }
    }

    // Answers, even 404s, are not unreachability: exit 0.
    let base = spawn_fake(HONEST).await;
    let args = format!("--target-kind plain -d 1s -c 2 --progress off --json {} {base}/no/such/path", json.display());
    let (code, stdout, stderr) = run_binary(&args).await;
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let s = read_json(&json);
    assert!(s["error"].is_null(), "{s}");
    let get = click_get(&s);
    let answered = get["answered"].as_u64().unwrap();
    assert!(answered > 0, "{get}");
    assert_eq!(get["statuses"]["404"], answered, "{get}");
    assert!(get["errors_by_kind"]["connect"].is_null(), "{get}");
    assert!(!stdout.contains("ERROR") && stderr.is_empty(), "{stdout}\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_open_loop_is_measured_over_its_schedule_window() {
    // At 2 req/s for 1.5 s the requests leave at 0, 0.5 and 1.0 s; at 4 req/s bounded by
    // `-n 2` they leave at 0 and 0.25 s of a 0.5 s window. Either rate is over the window,
    // not over the time to the last answer (which would read 3.0 and 8.0 req/s).
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("summary.json");
    let base = spawn_fake(HONEST).await;
    for (bounds, planned, secs) in [("-R 2 -d 1500ms", 3, 1.5), ("-R 4 -n 2 -d 10s", 2, 0.5)] {
        let args = format!("--target-kind plain {bounds} -c 2 --progress off --json {} {base}/j/x", json.display());
        let (code, stdout, stderr) = run_binary(&args).await;
        assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
        let s = read_json(&json);
        assert_eq!(s["open_loop"]["sent"], planned, "{s}");
        assert_eq!(s["duration_s"].as_f64(), Some(secs), "{s}");
        let get = click_get(&s);
        assert_eq!(get["answered"], planned, "{get}");
        let rate = f64::from(planned) / secs;
        assert_eq!(get["rps"].as_f64(), Some(rate), "{get}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_target_dying_mid_run_is_blamed_and_not_the_rate() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("summary.json");
    // Plain target: the fake's stats route, stopping 1.5 s into a 3 s run at 200 req/s.
    let base = spawn_fake_until(HONEST, tokio::time::sleep(std::time::Duration::from_millis(1500))).await;
    let url = format!("{base}/v1/stats/note/n1");
    let args =
        format!("--target-kind plain -R 200 -d 3s -c 4 --timeout 1s --progress off --json {} {url}", json.display());
    let (code, stdout, stderr) = run_binary(&args).await;
    assert_eq!(code, Some(2), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let s = read_json(&json);
    let get = click_get(&s);
    let answered = get["answered"].as_u64().unwrap();
    let connect = get["errors_by_kind"]["connect"].as_u64().unwrap();
    assert!(answered > 0 && connect >= 4, "{get}");
    let o = &s["open_loop"];
    assert_eq!(o["rate_reached"], false, "{o}");
    assert_eq!(o["target_stopped"]["connect_errors"], connect, "{o}");
    // The last answer is when the target stopped (and where the measured phase ends).
    let at = o["target_stopped"]["last_answer_s"].as_f64().unwrap();
    assert_eq!(Some(at), s["duration_s"].as_f64(), "{s}");
    let why = format!(
        "target stopped answering at ~{at:.1} s: {connect} connection attempts to {url} failed (connection refused)"
    );
    assert_eq!(stderr.trim_end(), format!("linkloop-loadtest: {why}"));
    assert_eq!(s["error"], why.as_str());
    let w = warnings(&stdout);
    assert_eq!(w.len(), 2, "{stdout}");
    assert_eq!(
        w[0],
        format!("WARNING: the target stopped answering at ~{at:.1} s: {connect} connection attempts failed.")
    );
    let not_sent = format!("WARNING: {} of {} planned requests", o["not_sent"], o["planned"]);
    assert!(w[1].starts_with(&not_sent) && w[1].contains("not because the rate was too high"), "{stdout}");
    assert!(!stdout.contains("requested rate NOT reached"), "{stdout}");

    // A gateway (scenario, with verification) dying the same way: the verification is not
    // possible (exit 2, as before), and the warning blames the gateway's stop, not the rate.
    let base = spawn_fake_until(HONEST, tokio::time::sleep(std::time::Duration::from_millis(1500))).await;
    let args = format!(
        "-R 200 -d 3s -c 4 --timeout 1s --links 20 --notes 5 --creators 2 --admin-token t --bots-counted true \
         --progress off --json {} {base}",
        json.display()
    );
    let (code, stdout, stderr) = run_binary(&args).await;
    assert_eq!(code, Some(2), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let s = read_json(&json);
    let why = format!("verification not possible: gateway unreachable at {base} (connection refused)");
    assert_eq!(s["error"], why.as_str());
    let connect = click_get(&s)["errors_by_kind"]["connect"].as_u64().unwrap();
    assert_eq!(s["open_loop"]["target_stopped"]["connect_errors"], connect, "{s}");
    let at = s["open_loop"]["target_stopped"]["last_answer_s"].as_f64().unwrap();
    let warning = format!("WARNING: the target stopped answering at ~{at:.1} s: {connect} connection attempts failed.");
    assert!(stdout.contains(&warning), "{stdout}");
    assert!(!stdout.contains("requested rate NOT reached"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_target_too_slow_for_the_rate_keeps_the_rate_warning_and_exit_3() {
    // Two connections cannot send a million requests in a second; the target answers them all.
    let base = spawn_fake(HONEST).await;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("summary.json");
    let args = format!(
        "--target-kind plain -R 1000000 -d 1s -c 2 --progress off --json {} {base}/v1/stats/note/n1",
        json.display()
    );
    let (code, stdout, stderr) = run_binary(&args).await;
    assert_eq!(code, Some(3), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let s = read_json(&json);
    assert!(s["error"].is_null(), "{s}");
    let o = &s["open_loop"];
    assert_eq!((o["rate_reached"].as_bool(), o["planned"].as_u64()), (Some(false), Some(1_000_000)), "{o}");
    assert!(o["target_stopped"].is_null(), "{o}");
    assert!(click_get(&s)["errors_by_kind"]["connect"].is_null(), "{s}");
    let w = warnings(&stdout);
    assert_eq!(w.len(), 2, "{stdout}");
    assert!(w[0].starts_with("WARNING: requested rate NOT reached: "), "{stdout}");
    let not_sent = format!("WARNING: {} of 1000000 planned requests", o["not_sent"]);
    assert!(w[1].starts_with(&not_sent) && w[1].contains("could not keep up"), "{stdout}");
    assert!(!stdout.contains("stopped answering") && stderr.is_empty(), "{stdout}\n{stderr}");
}

#[tokio::test]
async fn usage_errors_exit_64_and_help_exits_0() {
    let (code, _, err) = run_binary("--bogus-option http://127.0.0.1:1/").await;
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--bogus-option"), "{err}");
    // Bad values are refused before anything is sent (was exit 2 after minting, or a panic).
    for bad in ["-R abc", "-R 0", "-R 1e12", "-c 0", "-d 10000000000000000000"] {
        let (code, _, err) = run_binary(&format!("{bad} http://127.0.0.1:1/")).await;
        assert_eq!(code, Some(64), "{bad}: {err}");
    }
    let (code, out, _) = run_binary("--help").await;
    assert_eq!(code, Some(0));
    assert!(out.contains("Exit status:"), "{out}");
}

/// The first Ctrl-C ends an open-loop run's load and the run reports (exit 0: the requests
/// sent were answered); a second Ctrl-C quits at once with 130.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_ends_the_load_and_a_second_one_quits_at_once() {
    let base = spawn_fake(Lies::default()).await;
    let url = format!("{base}/j/x");
    let start = |extra: &'static str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_linkloop-loadtest"))
            .args(["--target-kind", "plain", "-R", "200", "-d", "30s", "-c", "4", "--progress", "off"])
            .args(extra.split_whitespace())
            .arg(&url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let sigint = |pid: u32| {
        let ok = std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap().success();
        assert!(ok, "kill -INT {pid}");
    };
    // One Ctrl-C: the load stops, the table and the tally come, exit 0.
    let child = start("");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sigint(child.id().unwrap());
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output()).await.unwrap().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(stdout.contains("(interrupted: planned up to the stop)"), "{stdout}");
    let sent: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("open loop: planned ")?.split(", sent ").nth(1)?.split(',').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!((100..=1000).contains(&sent), "about 1.5 s at 200/s, not 30 s: {sent}");
    // Two: quit at once (a long conversion drain or verification would otherwise follow).
    let child = start("");
    let pid = child.id().unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    sigint(pid);
    tokio::time::sleep(Duration::from_millis(50)).await;
    sigint(pid);
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output()).await.unwrap().unwrap();
    let code = out.status.code();
    // Exit 130, or 0 when the run had already finished between the two signals.
    assert!(code == Some(130) || code == Some(0), "{code:?} {}", String::from_utf8_lossy(&out.stderr));
}
