//! Fault tests with real processes: Redis killed mid-burst, the gateway killed
//! with a non-empty spool, a stalled Redis, a damaged spool, SIGTERM under load.
//! Each prints its figures (clicks, 302s, tokens found, duplicates).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::AsyncCommands;

use crate::chaos::ChaosProxy;
use crate::support::{JUMP_SECRET, LINK_SECRET, TestRedis, VISITOR_SECRET, keys, spawn_app, spawn_app_with};

const NOTE: &str = "65682d4500000000380339a5";
const URL: &str = "https://item.taobao.com/item.htm?id=567873872517";

/// Clicks `link` from `workers` tasks until `stop`; returns the tokens of every 302.
fn burst(
    client: reqwest::Client,
    link: String,
    workers: usize,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<Vec<String>>> {
    (0..workers)
        .map(|_| {
            let (client, link, stop, count) = (client.clone(), link.clone(), stop.clone(), count.clone());
            tokio::spawn(async move {
                let mut tokens = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let Ok(res) = client.get(&link).header("user-agent", "Mozilla/5.0 (iPhone) Mobile").send().await
                    else {
                        continue;
                    };
                    assert_eq!(res.status(), 302);
                    let loc = res.headers()["location"].to_str().unwrap();
                    let claims = linkloop::jump::verify(loc, &keys().1).unwrap();
                    tokens.push(claims.click_token.hyphenated().to_string());
                    count.fetch_add(1, Ordering::SeqCst);
                }
                tokens
            })
        })
        .collect()
}

async fn wait_count(count: &AtomicU64, n: u64) {
    while count.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Tokens recorded in Redis: click records, and distinct stream tokens with the stream length.
async fn recorded(r: &mut redis::aio::MultiplexedConnection) -> (HashSet<String>, HashSet<String>, usize) {
    let records = crate::support::click_records(r).await.into_keys().collect();
    let clicks = crate::support::stream_clicks(r, "ll:clicks").await;
    let n = clicks.len();
    (records, clicks.into_iter().map(|c| c.tok).collect(), n)
}

#[tokio::test]
async fn redis_killed_mid_burst_every_302_is_recorded_once() {
    let mut app = spawn_app().await;
    let link = app.mint(NOTE, "c1", URL).await["link"].as_str().unwrap().to_owned();
    let (stop, count) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let workers = burst(app.client.clone(), link, 16, stop.clone(), count.clone());
    wait_count(&count, 300).await;
    app.redis.server.kill().await;
    let killed_at = count.load(Ordering::SeqCst);
    wait_count(&count, killed_at + 300).await;
    app.redis.server.restart().await.unwrap();
    wait_count(&count, killed_at + 600).await;
    stop.store(true, Ordering::SeqCst);
    let mut tokens = Vec::new();
    for w in workers {
        tokens.extend(w.await.unwrap());
    }
    crate::support::wait_spool_empty(&app).await;
    app.state.aggregator.catch_up().await.unwrap();
    let mut r = app.redis().await;
    let (records, stream, stream_len) = recorded(&mut r).await;
    let sent: HashSet<String> = tokens.iter().cloned().collect();
    let spooled = app.metric("linkloop_clicks_spooled_total").await;
    println!(
        "redis kill: 302s={} distinct={} spooled={spooled} records={} stream_entries={stream_len} stream_tokens={}",
        tokens.len(),
        sent.len(),
        records.len(),
        stream.len()
    );
    assert_eq!(sent.len(), tokens.len(), "every 302 has its own token");
    assert!(spooled > 0.0, "the spool took clicks while redis was down");
    assert_eq!(records, sent, "every token a 302 carried has exactly one click record");
    assert_eq!(stream, sent);
    let day = linkloop::store::aggregator::day_of(linkloop::click::now_ms(), chrono_tz::Asia::Shanghai);
    let clicks: u64 = r.hget(format!("ll:agg:note:{NOTE}:{day}"), "clicks").await.unwrap();
    assert_eq!(clicks, tokens.len() as u64, "counters equal the number of 302s");
    assert_eq!(app.metric("linkloop_clicks_dropped_total").await, 0.0);
    app.stop().await;
}

#[tokio::test]
async fn slow_redis_clicks_go_to_the_spool_within_the_bounded_wait() {
    let redis = TestRedis::start().await;
    let proxy = ChaosProxy::start(redis.server.port()).await;
    let url = proxy.url();
    let app = spawn_app_with(move |c| {
        c.redis_url = Some(url);
        c.click_write_timeout_ms = 100;
    })
    .await;
    let link = app.mint(NOTE, "c1", URL).await["link"].as_str().unwrap().to_owned();
    let mut tokens = Vec::new();
    for _ in 0..20 {
        tokens.push(app.click(&link).await.0);
    }
    proxy.stall();
    let mut latencies = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        tokens.push(app.click(&link).await.0);
        latencies.push(t.elapsed());
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100 - 1];
    let max = latencies[latencies.len() - 1];
    let spooled = app.metric("linkloop_clicks_spooled_total").await;
    println!("stalled redis: 50 clicks, spooled={spooled}, p99={p99:?}, max={max:?}");
    assert_eq!(spooled, 50.0, "every click during the stall went to the spool");
    proxy.resume();
    crate::support::wait_spool_empty(&app).await;
    app.state.aggregator.catch_up().await.unwrap();
    let mut r = redis.conn().await;
    let (records, _, _) = recorded(&mut r).await;
    assert_eq!(records, tokens.iter().cloned().collect::<HashSet<_>>());
    app.stop().await;
}

#[tokio::test]
async fn damaged_spool_replay_skips_exactly_the_bad_records() {
    // A spool left by an earlier run: 10 records, one with a flipped byte, a torn tail.
    let data = tempfile::tempdir().unwrap();
    let spool_dir = data.path().join("spool");
    let tokens: Vec<String> = (0..10).map(|_| linkloop::click::mint_token().hyphenated().to_string()).collect();
    {
        let spool = linkloop::click::spool::Spool::open(&spool_dir, 1 << 20).unwrap();
        let ts = linkloop::click::now_ms();
        for t in &tokens {
            let rec = format!("1|{ts}|{NOTE}|c1|taobao|567873872517|||0011223344556677|app|");
            spool.append(t, &rec).await.unwrap();
        }
    }
    let seg = std::fs::read_dir(&spool_dir).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&seg).unwrap();
    let one = bytes.len() / 10;
    bytes[4 * one + 20] ^= 0x04; // inside record 4's payload
    let torn: Vec<u8> = bytes[..30].to_vec();
    bytes.extend_from_slice(&torn); // a torn 11th record
    std::fs::write(&seg, &bytes).unwrap();

    let redis = TestRedis::start().await;
    let mut config = crate::support::test_config(data.path(), &redis.server.tcp_url());
    config.listen = "127.0.0.1:0".parse().unwrap();
    let app = linkloop::app::Application::build(config).await.unwrap();
    let state = app.state();
    assert_eq!(state.spool.pending(), 9);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    for _ in 0..200 {
        if state.spool.pending() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    state.aggregator.catch_up().await.unwrap();
    let mut r = redis.conn().await;
    let (records, _, _) = recorded(&mut r).await;
    let expected: HashSet<String> =
        tokens.iter().enumerate().filter(|(i, _)| *i != 4).map(|(_, t)| t.clone()).collect();
    assert_eq!(records, expected, "all but the flipped record replayed");
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!((state.spool.stats.corrupt.load(Relaxed), state.spool.stats.torn.load(Relaxed)), (1, 1));
    assert_eq!(std::fs::read_dir(&spool_dir).unwrap().count(), 0, "replayed segments are deleted");
    let _ = tx.send(());
    let _ = handle.await;
}

// === the gateway as a real process ===

struct Gateway {
    child: tokio::process::Child,
    base: String,
}

fn gateway_config(dir: &std::path::Path, redis_url: &str, port: u16) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nredis_url = \"{redis_url}\"\nadmin_token = \"{}\"\nclick_write_timeout_ms = 100\nclick_soft_limit_per_minute = 1000000\nclick_hard_limit_per_minute = 1000000\n[keys]\nlink = [{{kid = 1, secret = \"{LINK_SECRET}\"}}]\njump = [{{kid = 1, secret = \"{JUMP_SECRET}\"}}]\nvisitor_secret = \"{VISITOR_SECRET}\"\n",
            dir.display(),
            crate::support::ADMIN_TOKEN
        ),
    )
    .unwrap();
    path
}

async fn start_gateway(config: &std::path::Path, port: u16) -> Gateway {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_linkloop"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env_remove("REDIS_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if reqwest::get(format!("{base}/healthz")).await.is_ok() {
            return Gateway { child, base };
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("gateway did not start");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn mint_link(base: &str) -> String {
    let link_keys = linkloop::signing::Keyring::new(&[(1, LINK_SECRET)], 1).unwrap();
    let req = linkloop::link::MintRequest { note: NOTE, creator_id: "c1", url: URL, campaign: None };
    linkloop::link::mint(&req, &link_keys, base, 1_790_000_000).unwrap().link
}

#[tokio::test]
async fn gateway_killed_with_spooled_clicks_replays_them_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = TestRedis::start().await;
    let port = free_port();
    let config = gateway_config(dir.path(), &redis.server.tcp_url(), port);
    let mut gw = start_gateway(&config, port).await;
    let link = mint_link(&gw.base);
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    // Redis goes away: the burst is spooled.
    redis.server.kill().await;
    let (stop, count) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let workers = burst(client.clone(), link.clone(), 8, stop.clone(), count.clone());
    wait_count(&count, 400).await;
    // kill -9 the gateway mid-burst.
    gw.child.start_kill().unwrap();
    let _ = gw.child.wait().await;
    stop.store(true, Ordering::SeqCst);
    let mut tokens = Vec::new();
    for w in workers {
        tokens.extend(w.await.unwrap());
    }
    let spooled_files = std::fs::read_dir(dir.path().join("spool")).unwrap().count();
    assert!(spooled_files > 0, "spool left on disk");
    // Redis back, gateway restarted on the same data dir: it replays the spool.
    redis.server.restart().await.unwrap();
    let gw2 = start_gateway(&config, port).await;
    let mut r = redis.conn().await;
    let sent: HashSet<String> = tokens.iter().cloned().collect();
    let mut records = HashSet::new();
    for _ in 0..200 {
        records = recorded(&mut r).await.0;
        if records.is_superset(&sent) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let day = linkloop::store::aggregator::day_of(linkloop::click::now_ms(), chrono_tz::Asia::Shanghai);
    let mut clicks = 0u64;
    for _ in 0..100 {
        clicks = r.hget(format!("ll:agg:note:{NOTE}:{day}"), "clicks").await.unwrap_or(0);
        if clicks == records.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "gateway kill -9: 302s={} distinct={} records={} counted={clicks} (records beyond 302s: clicks spooled whose 302 was cut off)",
        tokens.len(),
        sent.len(),
        records.len()
    );
    assert_eq!(sent.len(), tokens.len());
    assert!(records.is_superset(&sent), "every token a 302 carried is recorded");
    assert!(records.len() <= sent.len() + 8, "at most one in-flight click per worker beyond the 302s");
    assert_eq!(clicks, records.len() as u64, "each recorded click counted once");
    drop(gw2);
}

#[tokio::test]
async fn sigterm_under_load_finishes_in_flight_and_exits_zero() {
    // Both runtimes: one thread per CPU (default) and the single-threaded one (`worker_threads = 1`).
    for threads in [0, 1] {
        sigterm_under_load(threads).await;
    }
}

async fn sigterm_under_load(threads: usize) {
    let dir = tempfile::tempdir().unwrap();
    let redis = TestRedis::start().await;
    let port = free_port();
    let config = gateway_config(dir.path(), &redis.server.tcp_url(), port);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("[keys]", &format!("worker_threads = {threads}\n[keys]"))).unwrap();
    let mut gw = start_gateway(&config, port).await;
    let link = mint_link(&gw.base);
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let (stop, count) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let workers = burst(client, link, 8, stop.clone(), count.clone());
    wait_count(&count, 300).await;
    let pid = gw.child.id().unwrap();
    let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(15), gw.child.wait()).await.unwrap().unwrap();
    stop.store(true, Ordering::SeqCst);
    let mut tokens = Vec::new();
    for w in workers {
        tokens.extend(w.await.unwrap());
    }
    println!("sigterm (worker_threads = {threads}): 302s={} exit={exit:?}", tokens.len());
    assert_eq!(exit.code(), Some(0));
    // Every 302 answered before exit is recorded (the process applied the stream before exiting).
    let mut r = redis.conn().await;
    let (_, stream, _) = recorded(&mut r).await;
    let sent: HashSet<String> = tokens.into_iter().collect();
    assert!(stream.is_superset(&sent), "{} of {} tokens in the stream", stream.intersection(&sent).count(), sent.len());
}

#[tokio::test]
async fn supervised_redis_is_restarted_and_the_data_dir_is_exclusive() {
    let data = tempfile::tempdir().unwrap();
    let mut config = crate::support::test_config(data.path(), "unused");
    config.redis_url = None;
    let app = linkloop::app::Application::build(config.clone()).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    // A second gateway on the same data dir is refused.
    let err = linkloop::app::Application::build(config).await.unwrap_err();
    assert!(format!("{err:#}").contains("in use by another"), "{err:#}");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    // Redis dies (as if killed): the gateway restarts it.
    let sock = data.path().join("redis/redis.sock");
    let mut c = redis::Client::open(format!("redis+unix://{}", sock.display()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Durable and rarely compacted: appendonly everysec, first rewrite at 1 GiB.
    let conf: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("append*")
        .arg("auto-aof-rewrite-min-size")
        .query_async(&mut c)
        .await
        .unwrap();
    let conf: std::collections::HashMap<_, _> = conf.chunks(2).map(|p| (p[0].as_str(), p[1].as_str())).collect();
    assert_eq!(conf["appendonly"], "yes");
    assert_eq!(conf["appendfsync"], "everysec");
    assert_eq!(conf["auto-aof-rewrite-min-size"], (1024u64 << 20).to_string());
    let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").arg("NOSAVE").query_async(&mut c).await;
    let mut ready = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let res = reqwest::get(format!("{base}/readyz")).await.unwrap();
        if res.status() == 200 {
            ready = true;
            break;
        }
    }
    assert!(ready, "redis-server restarted and the gateway is ready again");
    let _ = tx.send(());
    assert!(handle.await.unwrap().is_ok());
    assert!(!sock.exists(), "the supervised redis-server is stopped on exit");
}
