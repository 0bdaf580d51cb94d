//! Load tester for linkloop (`linkloop-loadtest`).
//!
//! Drives a gateway the way real traffic does and checks afterwards that every click
//! and conversion it caused was recorded exactly once:
//!
//! 1. **Setup**: mints tracked links (`POST /v1/links`) from the real product URLs over
//!    fresh notes and creators (ids carry a random run id, so their stats start at zero).
//! 2. **Load**: `-c` keep-alive connections click Zipf-popular links with a user-agent
//!    mix (in-app, mobile, desktop, bots) and a share of `HEAD`s, closed loop or open loop
//!    (`-R`, latency from each request's planned send time). A share of counted clicks is
//!    followed, after a random delay, by a signed conversion callback; some are delivered
//!    twice, some refunded ([`conversions`]).
//! 3. **Verification** ([`verify`]): the tester's books against the stats API (and the
//!    Redis click stream with `--redis-url`), side by side; any difference fails the run.
//! 4. **Aggregation lag** ([`prom`]): the gateway's own histogram of click time to counted
//!    (`linkloop_click_aggregation_lag_seconds` on `GET /metrics`), scraped just before the
//!    load and again after the verification saw every click counted; p50/p99 of the
//!    difference as bucket upper bounds ("≤ 25 ms"). Reported, never checked: "n/a" when the
//!    gateway does not export it. It counts every click the gateway aggregated in between,
//!    so other traffic on the same gateway is included.
//!
//! The run always ends by itself, about on time: no click request is started at or after
//! `start + --duration` (open loop included: requests planned but not sent by then are
//! counted and reported as not sent), requests in flight get `--timeout`, and conversion
//! callbacks to a gateway that refuses connections are given up after `--timeout`. Once
//! the load ran, its measurements are always returned; a verification that could not be
//! done (gateway gone, stats API failing) is reported in [`Summary::error`], and so is a
//! target that never answered a click request, or that stopped answering an open-loop run
//! mid-run (refusing connections: [`OpenLoopTally::judge`]), which is then not blamed on the rate.
//!
//! `--target-kind plain` only GETs one URL (no setup, no verification), to compare the
//! tester's own speed with `wrk` against the same target.
//!
//! Module map: [`opts`] (CLI), [`scenario`] (URLs, links, UA mix, client addresses), [`zipf`],
//! [`schedule`] (tickets, open-loop pacing), [`clicks`] (the hot path, one task per
//! connection), [`raw`] (the minimal HTTP/1.1 client it uses by default; `--client hyper`
//! uses hyper's connection API instead), [`conversions`], [`control`] (hyper-util pooled
//! client for setup, callbacks, stats, `/metrics`), [`histo`] (HDR histograms), [`verify`],
//! [`prom`] (the `/metrics` histogram parser), [`report`] (summary, table, progress).
//!
//! Against a gateway with per-client limits the clicks carry `X-Forwarded-For` addresses
//! (`--client-ips`), which the gateway believes only from a trusted proxy: list the tester's
//! address (e.g. `127.0.0.1/32`) in the gateway's `trusted_proxies`.

#![forbid(unsafe_code)]

pub mod clicks;
pub mod control;
pub mod conversions;
pub mod histo;
pub mod opts;
pub mod prom;
pub mod raw;
pub mod report;
pub mod scenario;
pub mod schedule;
pub mod verify;
pub mod zipf;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use http::{HeaderValue, Uri};
use rand::{Rng, SeedableRng};

pub use crate::opts::{Opts, TargetKind};
pub use crate::report::{OpenLoopTally, Summary};

use crate::clicks::{ClickCtx, ClickObs, ConversionHook, Target};
use crate::control::Control;
use crate::conversions::{ConvConfig, ConvOutcome};
use crate::histo::{Endpoint, Live, Recorder};
use crate::prom::{AGGREGATION_LAG, AggregationLag};
use crate::report::{ClickOutcomes, ClickTotals};
use crate::scenario::{Plan, PlanOptions};
use crate::schedule::{Dispenser, Pacer, Schedule};
use crate::verify::{Expected, VerifyReport};

/// Runs the load test described by `opts` to its end (it always stops by itself).
///
/// # Errors
/// Bad options, an unreachable target or minting failing: anything before the load. Once
/// the load ran, the summary is returned whatever happens after it: a verification that
/// could not be done (gateway unreachable, stats API or Redis failing) is in
/// [`Summary::error`], one that finds differences in [`Summary::verification`]; see
/// [`Summary::passed`].
pub async fn run(opts: Opts) -> anyhow::Result<Summary> {
    run_until(opts, std::future::pending()).await
}

/// [`run`], ending the load early when `stop` resolves (the binary passes Ctrl-C).
///
/// # Errors
/// As [`run`].
pub async fn run_until(opts: Opts, stop: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<Summary> {
    anyhow::ensure!(opts.connections > 0, "--connections must be at least 1");
    for (name, v) in [
        ("--head-share", opts.head_share),
        ("--conversion-share", opts.conversion_share),
        ("--duplicate-share", opts.duplicate_share),
        ("--refund-share", opts.refund_share),
    ] {
        anyhow::ensure!((0.0..=1.0).contains(&v), "{name} must be within 0..1, got {v}");
    }
    let base: Uri = opts.base_url.parse().with_context(|| format!("BASE_URL {:?}", opts.base_url))?;
    anyhow::ensure!(base.scheme_str() == Some("http"), "BASE_URL must be an http:// URL");
    let authority = base.authority().context("BASE_URL has no host")?.clone();
    let host_port = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
    let addr: SocketAddr = tokio::net::lookup_host(&host_port)
        .await
        .map_err(|e| anyhow::anyhow!("cannot resolve {} (DNS lookup failed: {e})", authority.host()))?
        .next()
        .with_context(|| format!("{host_port} resolves to nothing"))?;
    let seed = opts.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64)
    });
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let live = Arc::new(Live::default());
    let mut setup_rec = Recorder::new();
    let control = Control::new(&base, opts.admin_token.as_deref(), opts.timeout)?;
    let run_started_ms = conversions::now_ms();

    // Setup.
    let mut mint_elapsed = Duration::ZERO;
    let (target, plan, run_id) = match opts.target_kind {
        TargetKind::Plain => {
            let uri: Uri = base.path_and_query().map_or("/", |p| p.as_str()).parse()?;
            let target = Target::Plain {
                uri,
                host: HeaderValue::from_str(authority.as_str())?,
                ua: HeaderValue::from_str(&opts.user_agent).context("--user-agent")?,
            };
            (target, None, None)
        }
        TargetKind::Linkloop => {
            anyhow::ensure!(opts.admin_token.is_some(), "minting needs --admin-token (or LINKLOOP_ADMIN_TOKEN)");
            let urls = scenario::load_urls(opts.urls.as_deref())?;
            let run_id: u32 = rng.random();
            let t = Instant::now();
            let minted =
                scenario::mint_links(&control, run_id, &urls, (opts.links, opts.notes, opts.creators), &mut setup_rec)
                    .await?;
            mint_elapsed = t.elapsed();
            let plan_opts = PlanOptions {
                zipf_s: opts.zipf_s,
                host: authority.as_str().to_owned(),
                mix: opts.ua_mix,
                head_share: opts.head_share,
                client_ips: opts.client_ips,
            };
            let plan = Arc::new(Plan::new(run_id, minted, &plan_opts)?);
            (Target::Scenario { plan: plan.clone(), keep_tokens: false, conversions: None }, Some(plan), Some(run_id))
        }
    };

    // Conversions.
    let conv_cfg = match (&plan, &opts.merchant, &opts.merchant_secret) {
        (Some(plan), Some(m), Some(s)) if opts.conversion_share > 0.0 => Some(Arc::new(ConvConfig {
            merchant: m.clone(),
            secret: s.as_bytes().to_vec(),
            kid: opts.kid,
            max_delay: opts.conversion_delay,
            duplicate_share: opts.duplicate_share,
            refund_share: opts.refund_share,
            concurrency: opts.conversion_concurrency,
            run_id: plan.run_id,
            link_notes: plan.links.iter().map(|l| l.note).collect(),
            notes: plan.notes.len(),
            seed,
            give_up_after: opts.timeout,
        })),
        _ => None,
    };
    let (hook, driver) = match &conv_cfg {
        Some(cfg) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            // After the last click: 3 delays (conversion, then duplicate/refund) plus retries.
            let drain = opts.conversion_delay * 3 + opts.timeout * (conversions::ATTEMPTS + 1) + Duration::from_secs(5);
            let driver = tokio::spawn(conversions::drive(control.clone(), cfg.clone(), live.clone(), rx, drain));
            (Some(ConversionHook { share: opts.conversion_share, max_delay: opts.conversion_delay, tx }), Some(driver))
        }
        None => (None, None),
    };
    let target = match target {
        Target::Scenario { plan, .. } => {
            let keep_tokens = opts.redis_url.is_some() && !opts.no_verify;
            Target::Scenario { plan, keep_tokens, conversions: hook }
        }
        t => t,
    };

    // The gateway's aggregation-lag histogram as the load starts (compared after verification).
    let lag_before = match opts.target_kind {
        TargetKind::Linkloop => Some(prom::scrape(&control, AGGREGATION_LAG).await),
        TargetKind::Plain => None,
    };

    // Load. The connections' state is made and connected first, so the schedule starts with
    // every connection ready.
    let notes = match &target {
        Target::Scenario { plan, .. } => plan.notes.len(),
        Target::Plain { .. } => 0,
    };
    // The open loop's timer first: no run starts that cannot be paced.
    let pacer = match opts.rate {
        Some(_) => Some(Pacer::new().context("creating the open-loop pacer's timer")?),
        None => None,
    };
    let preparing: Vec<_> = (0..opts.connections as u64)
        .map(|id| tokio::spawn(clicks::prepare_slot(addr, opts.timeout, notes, id, seed)))
        .collect();
    let mut slots = Vec::with_capacity(preparing.len());
    for p in preparing {
        slots.push(p.await.context("click connection set-up task")?);
    }
    let start = Instant::now();
    let dispenser = Arc::new(match opts.rate {
        Some(r) => Dispenser::open(Schedule::new(start, r)?, opts.duration, opts.requests),
        None => Dispenser::closed(start, opts.duration, opts.requests),
    });
    // Ends by itself once every ticket is released or the run is stopped.
    let pacer = pacer.map(|p| {
        let d = dispenser.clone();
        tokio::spawn(async move {
            let paced = p.run(d.clone()).await;
            if paced.is_err() {
                d.stop(); // the connections waiting for tickets are let go
            }
            paced
        })
    });
    let planned_total = dispenser.planned_total();
    let ctx =
        Arc::new(ClickCtx { addr, dispenser, live: live.clone(), timeout: opts.timeout, target, client: opts.client });
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let progress =
        tokio::spawn(report::progress(opts.progress, live.clone(), planned_total, opts.duration, start, done_rx));
    let stopper = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            stop.await;
            ctx.dispenser.stop();
        })
    };
    let workers: Vec<_> = slots.into_iter().map(|slot| tokio::spawn(clicks::worker(ctx.clone(), slot))).collect();
    let mut rec = Recorder::new();
    rec.merge(&setup_rec)?;
    let mut obs = ClickObs::default();
    let mut last_answer: Option<Instant> = None;
    let mut connect_cause: Option<String> = None;
    for w in workers {
        let out = w.await.context("click connection task")?;
        rec.merge(&out.rec)?;
        obs.merge(out.obs);
        last_answer = last_answer.max(out.last_answer);
        connect_cause = connect_cause.or(out.connect_cause);
    }
    let load_end = Instant::now();
    let last_click = last_answer.unwrap_or(load_end);
    let outcomes = ClickOutcomes::new(&rec, connect_cause, last_answer.map(|t| (t.max(start) - start).as_secs_f64()));
    let open_loop = match (opts.rate, ctx.dispenser.tally()) {
        (Some(rate), Some(t)) => {
            Some(OpenLoopTally::new(rate, t, ctx.dispenser.is_stopped()).judge(&outcomes, opts.connections))
        }
        _ => None,
    };
    stopper.abort();
    // A pacer that failed stopped the run early: its measurements stand, the error is reported.
    let pacer_error = match pacer {
        Some(p) => match p.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("open-loop pacer failed, the load was cut short: {e}")),
            Err(e) => Some(format!("open-loop pacer task failed, the load was cut short: {e}")),
        },
        None => None,
    };
    drop(ctx); // closes the conversion queue: the driver drains and ends
    // While conversions drain, measure how long the gateway takes to count every click.
    let verifying = plan.is_some() && !opts.no_verify;
    let range = (verify::shanghai_day(run_started_ms, -1), verify::shanghai_day(conversions::now_ms(), 1));
    let click_lag = match &plan {
        Some(plan) if verifying => {
            let exp = Expected::new(&obs, &[], opts.bots_counted).group(&creator_of(plan), plan.creators.len());
            let (control, plan, range, timeout) = (control.clone(), plan.clone(), range.clone(), opts.verify_timeout);
            Some(tokio::spawn(async move {
                let ids = ("creator", plan.creators.as_slice());
                verify::poll_stats(&control, ids, (&range.0, &range.1), &exp, true, last_click, timeout).await
            }))
        }
        _ => None,
    };
    // What kept the run from finishing once the load ran (the measurements are kept).
    let mut error: Option<String> = pacer_error;
    let (conv, conv_rec, conv_end) = match driver {
        Some(d) => match d.await {
            Ok((o, r)) => (Some(o), Some(r), Instant::now()),
            Err(e) => {
                error = Some(format!("conversion driver failed: {e}"));
                (None, None, Instant::now())
            }
        },
        None => (None, None, load_end),
    };
    let _ = done_tx.send(true);
    let _ = progress.await;
    if let Some(r) = &conv_rec {
        rec.merge(r)?;
    }
    let load_secs = last_answer.unwrap_or(load_end).max(start) - start;
    // An open loop that sent its whole schedule ran for the schedule's window, though at a
    // slow rate its last request leaves well before the end (`-R 0.5 -d 3s`: at 0 and 2 s):
    // rates are over the window, or over the time to the last answer when that is longer.
    let load_secs = match (&open_loop, opts.rate) {
        (Some(o), Some(rate)) if o.not_sent == 0 && !o.interrupted && o.target_stopped.is_none() => {
            #[allow(clippy::cast_precision_loss)] // request counts far below 2^53
            let window =
                opts.requests.map_or(opts.duration, |n| opts.duration.min(Duration::from_secs_f64(n as f64 / rate)));
            load_secs.max(window)
        }
        _ => load_secs,
    };

    // Verification.
    let verification = match (&plan, click_lag) {
        (Some(plan), Some(lag)) if error.is_none() => {
            let verified = async {
                let (_, lag, polls) = lag.await.context("stats poller")??;
                // Conversions count synchronously: once the clicks matched, the rest must at once.
                let wait = if lag.is_some() { opts.verify_timeout.min(Duration::from_secs(2)) } else { Duration::ZERO };
                let mut v = verify_run(&opts, &control, plan, &obs, conv.as_ref(), range, run_started_ms, wait).await?;
                v.lag_ms = lag.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                v.polls += polls;
                anyhow::Ok(v)
            };
            match verified.await {
                Ok(v) => Some(v),
                Err(e) => {
                    error = Some(verification_error(&e));
                    None
                }
            }
        }
        (_, Some(lag)) => {
            lag.abort();
            None
        }
        _ => None,
    };
    // Nothing else went wrong: a target that never answered a click, or (open loop) stopped
    // answering mid-run, fails the run all the same (exit 2, not 0 or 3).
    if error.is_none() {
        let who = match opts.target_kind {
            TargetKind::Linkloop => "gateway",
            TargetKind::Plain => "target",
        };
        error = outcomes.never_answered(who, &opts.base_url).or_else(|| {
            let stopped = open_loop.and_then(|o| o.target_stopped)?;
            Some(stopped.sentence(who, &opts.base_url, outcomes.connect_cause.as_deref()))
        });
    }
    // Every callback refused for its merchant or signature: a configuration error (exit 2),
    // named as such rather than left as a verification difference.
    if error.is_none() {
        error = conv.as_ref().and_then(ConvOutcome::credentials_refused);
    }
    // The clicks are all counted now (when the verification ran and they matched): the
    // histogram's difference covers every one of them.
    let aggregation_lag = match lag_before {
        Some(before) => {
            let settled = verification.as_ref().is_some_and(|v| v.lag_ms.is_some());
            let after = prom::scrape(&control, AGGREGATION_LAG).await;
            Some(AggregationLag::from_scrapes(before, after, settled))
        }
        None => None,
    };

    let elapsed = |e: Endpoint| match e {
        Endpoint::ClickGet | Endpoint::ClickHead => load_secs,
        Endpoint::Conversion => conv_end - start,
        Endpoint::Mint => mint_elapsed,
    };
    let totals = ClickTotals {
        get_counted: obs.per_note.iter().map(|n| n.counted).sum(),
        get_bot: obs.per_note.iter().map(|n| n.bot).sum(),
        head: obs.per_note.iter().map(|n| n.head).sum(),
        unanswered: obs.per_note.iter().map(|n| n.uncertain).sum(),
        no_token: obs.no_token,
    };
    let summary = Summary {
        target: opts.base_url.clone(),
        target_kind: match opts.target_kind {
            TargetKind::Linkloop => "linkloop",
            TargetKind::Plain => "plain",
        },
        mode: if opts.rate.is_some() { "open" } else { "closed" },
        connections: opts.connections,
        client: opts.client,
        rate: opts.rate,
        duration_s: load_secs.as_secs_f64(),
        seed,
        run_id: run_id.map(|r| format!("{r:08x}")),
        links: plan.as_ref().map_or(0, |p| p.links.len()),
        notes: plan.as_ref().map_or(0, |p| p.notes.len()),
        creators: plan.as_ref().map_or(0, |p| p.creators.len()),
        refused_urls: plan.as_ref().map_or_else(Vec::new, |p| p.refused.clone()),
        clicks: totals,
        open_loop,
        endpoints: {
            let mut endpoints = rec.summary(elapsed);
            // A plain target is one URL, not a tracked link: the table names its path (the
            // first 17 characters and `…` when longer, to fit the table's column).
            if opts.target_kind == TargetKind::Plain {
                let path = base.path_and_query().map_or("/", |p| p.as_str());
                let shown = match path.char_indices().nth(17) {
                    Some((cut, _)) if path.chars().count() > 18 => format!("{}…", &path[..cut]),
                    _ => path.to_owned(),
                };
                for e in endpoints.iter_mut().filter(|e| e.endpoint == Endpoint::ClickGet) {
                    e.label = format!("GET {shown}");
                }
            }
            endpoints
        },
        conversions: conv,
        verification,
        aggregation_lag,
        error,
    };
    if let Some(path) = &opts.json {
        let text = serde_json::to_string_pretty(&summary)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
async fn verify_run(
    opts: &Opts,
    control: &Control,
    plan: &Plan,
    obs: &ClickObs,
    conv: Option<&ConvOutcome>,
    (from, to): (String, String),
    run_started_ms: u64,
    wait: Duration,
) -> anyhow::Result<VerifyReport> {
    let empty = ConvOutcome { per_note: vec![Default::default(); plan.notes.len()], ..ConvOutcome::default() };
    let conv = conv.unwrap_or(&empty);
    let exp = Expected::new(obs, &conv.per_note, opts.bots_counted);
    let range = (from.as_str(), to.as_str());
    // Poll the few creators (each note belongs to one) until everything settles (the clicks
    // already have: see the lag poller), then compare note by note.
    let exp_creators = exp.group(&creator_of(plan), plan.creators.len());
    let ids = ("creator", plan.creators.as_slice());
    let (rec_creators, _, polls) =
        verify::poll_stats(control, ids, range, &exp_creators, false, Instant::now(), wait).await?;
    let recorded = verify::fetch_stats(control, "note", &plan.notes, range).await?;
    let stream = match &opts.redis_url {
        Some(url) => {
            let notes: HashMap<String, u32> =
                plan.notes.iter().enumerate().map(|(i, n)| (n.clone(), u32::try_from(i).unwrap_or(0))).collect();
            // Stream ids are Redis-clock milliseconds (same host): start 5 s early.
            Some(verify::read_stream(url, &notes, run_started_ms.saturating_sub(5_000)).await?)
        }
        None => None,
    };
    let mut checks = verify::compare(&exp, &recorded, obs, conv, stream.as_ref(), opts.bots_counted);
    // Right after the GMV line: the same books summed by creator.
    let at = checks.iter().position(|c| c.name.starts_with("GMV")).map_or(checks.len(), |p| p + 1);
    checks.insert(
        at,
        verify::Check {
            name: "creators whose stats match".into(),
            observed: i64::try_from(plan.creators.len()).unwrap_or(i64::MAX),
            recorded: i64::try_from(exp_creators.matching(&rec_creators)).unwrap_or(i64::MAX),
            ok: exp_creators.matches(&rec_creators),
            detail: "clicks, conversions, refunds and GMV summed by creator".into(),
        },
    );
    Ok(VerifyReport {
        passed: checks.iter().all(|c| c.ok),
        checks,
        lag_ms: None,
        polls,
        poll_interval_ms: u64::try_from(verify::poll_interval(plan.creators.len()).as_millis()).unwrap_or(0),
        bots_counted: opts.bots_counted,
    })
}

/// Why the verification could not be done, in one sentence: the gateway unreachable (or
/// not answering) when a call got no answer, the whole error chain otherwise.
fn verification_error(e: &anyhow::Error) -> String {
    match e.downcast_ref::<control::CallError>() {
        Some(c) => format!("verification not possible: {c}"),
        None => format!("verification not possible: {e:#}"),
    }
}

/// Creator index of each note (note `k` belongs to creator `k % creators`, as minted).
fn creator_of(plan: &Plan) -> Vec<usize> {
    (0..plan.notes.len()).map(|n| n % plan.creators.len().max(1)).collect()
}
