//! The run's summary: what `run` returns, the human table and the JSON file; and the
//! progress display while the load runs.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::conversions::ConvOutcome;
use crate::histo::{Endpoint, EndpointSummary, Live};
use crate::opts::Progress;
use crate::prom::AggregationLag;
use crate::verify::VerifyReport;

/// Click requests by what was sent and what came back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClickTotals {
    /// GETs by non-bot user agents answered with a token.
    pub get_counted: u64,
    /// GETs by bots answered with a token.
    pub get_bot: u64,
    /// HEADs answered.
    pub head: u64,
    /// GETs that got no answer.
    pub unanswered: u64,
    /// Redirects without a token.
    pub no_token: u64,
}

/// Open loop: the requests planned against those sent. A tester (or target) that cannot
/// keep up falls behind schedule; whatever is still unsent at the end of `--duration` is
/// never sent, so the run ends on time and the shortfall shows here.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OpenLoopTally {
    /// Requested rate, requests/s.
    pub requested_rate: f64,
    /// Requests planned from the start to the end of the run (to the stop when
    /// interrupted), at most `--requests`.
    pub planned: u64,
    /// Requests sent (tried: failures are in the endpoints' error counts).
    pub sent: u64,
    /// Planned but never sent: the run ended behind schedule.
    pub not_sent: u64,
    /// Rate actually sent, requests/s: `requested_rate × sent / planned`.
    pub achieved_rate: f64,
    /// The run was interrupted (Ctrl-C).
    pub interrupted: bool,
    /// At most [`OpenLoopTally::TOLERANCE`] of the planned requests went unsent.
    pub rate_reached: bool,
}

impl OpenLoopTally {
    /// Share of the planned requests that may go unsent with the rate still taken as reached.
    pub const TOLERANCE: f64 = 0.01;

    /// The tally of a run at `rate` requests/s.
    pub fn new(rate: f64, t: crate::schedule::Tally, interrupted: bool) -> OpenLoopTally {
        #[allow(clippy::cast_precision_loss)]
        let (planned, sent, not_sent) = (t.planned as f64, t.sent.min(t.planned) as f64, t.not_sent as f64);
        OpenLoopTally {
            requested_rate: rate,
            planned: t.planned,
            sent: t.sent,
            not_sent: t.not_sent,
            achieved_rate: if t.planned == 0 { rate } else { rate * sent / planned },
            interrupted,
            rate_reached: not_sent <= planned * Self::TOLERANCE,
        }
    }

    /// `open loop: planned N, sent M, not sent K`.
    pub fn line(&self) -> String {
        format!(
            "open loop: planned {}, sent {}, not sent {}{}",
            self.planned,
            self.sent,
            self.not_sent,
            if self.interrupted { " (interrupted: planned up to the stop)" } else { "" }
        )
    }

    /// The warning printed when the requested rate was not reached.
    pub fn warning(&self) -> Option<String> {
        if self.rate_reached {
            return None;
        }
        #[allow(clippy::cast_precision_loss)]
        let pct = 100.0 * self.not_sent as f64 / self.planned.max(1) as f64;
        Some(format!(
            "WARNING: requested rate NOT reached: {:.0} req/s sent of {} req/s requested.\n\
             WARNING: {} of {} planned requests ({pct:.1}%) were never sent: the run ended behind schedule \
             (the target or the tester could not keep up); latencies are of the {} sent, from their planned times.",
            self.achieved_rate, self.requested_rate, self.not_sent, self.planned, self.sent
        ))
    }
}

/// Everything a run measured and checked.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The base URL (or plain target URL).
    pub target: String,
    /// `linkloop` or `plain`.
    pub target_kind: &'static str,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Click connections.
    pub connections: usize,
    /// HTTP client of the click connections.
    pub client: crate::clicks::ClientKind,
    /// Open-loop rate, requests/s.
    pub rate: Option<f64>,
    /// Length of the click phase, seconds (first send to last answer).
    pub duration_s: f64,
    /// Random seed used.
    pub seed: u64,
    /// Run id (hex) of the notes and creators.
    pub run_id: Option<String>,
    /// Links minted.
    pub links: usize,
    /// Notes used.
    pub notes: usize,
    /// Creators used.
    pub creators: usize,
    /// Product URLs the gateway refused to mint (input, answer).
    pub refused_urls: Vec<(String, String)>,
    /// Click requests by kind.
    pub clicks: ClickTotals,
    /// Open loop: planned, sent and not sent requests, and whether the rate was reached.
    pub open_loop: Option<OpenLoopTally>,
    /// Per endpoint: rate, latency percentiles, statuses, errors.
    pub endpoints: Vec<EndpointSummary>,
    /// The conversion books (when conversions were sent).
    pub conversions: Option<ConvOutcome>,
    /// The verification (unless `--no-verify` or plain).
    pub verification: Option<VerifyReport>,
    /// The gateway's aggregation lag over the run, from its `/metrics` histogram (not with plain).
    pub aggregation_lag: Option<AggregationLag>,
    /// What kept the run from finishing after the load (e.g. `verification not possible:
    /// gateway unreachable at http://… (connection refused)`); the measurements above stand.
    pub error: Option<String>,
}

impl Summary {
    /// True unless a verification ran and failed, or could not be done ([`Summary::error`]).
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.verification.as_ref().is_none_or(|v| v.passed)
    }

    /// False when an open-loop run left more than [`OpenLoopTally::TOLERANCE`] of its planned
    /// requests unsent (the requested rate was not reached); true otherwise.
    pub fn rate_reached(&self) -> bool {
        self.open_loop.is_none_or(|o| o.rate_reached)
    }

    /// The summary of `e`, if it saw traffic.
    pub fn endpoint(&self, e: Endpoint) -> Option<&EndpointSummary> {
        self.endpoints.iter().find(|s| s.endpoint == e)
    }

    /// The human table printed at the end.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let rate = self.rate.map_or(String::new(), |r| format!(" at {r} req/s"));
        let _ = writeln!(
            s,
            "linkloop-loadtest {} ({}): {} loop{rate}, {} connections ({} client), {:.1} s, seed {}{}",
            self.target,
            self.target_kind,
            self.mode,
            self.connections,
            self.client.name(),
            self.duration_s,
            self.seed,
            self.run_id.as_ref().map_or(String::new(), |r| format!(", run {r}")),
        );
        if self.target_kind == "linkloop" {
            let c = &self.clicks;
            let _ = writeln!(
                s,
                "{} links over {} notes / {} creators; clicks: {} GET (non-bot), {} GET (bot), {} HEAD, {} unanswered{}",
                self.links,
                self.notes,
                self.creators,
                c.get_counted,
                c.get_bot,
                c.head,
                c.unanswered,
                if self.refused_urls.is_empty() {
                    String::new()
                } else {
                    format!("; {} product URL(s) refused at minting", self.refused_urls.len())
                }
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<22} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
            "endpoint", "answered", "req/s", "p50", "p90", "p99", "p99.9", "max", "errors"
        );
        for e in &self.endpoints {
            let l = e.latency_us;
            let _ = writeln!(
                s,
                "{:<22} {:>10} {:>11.1} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
                e.label,
                e.answered,
                e.rps,
                fmt_us(l.p50),
                fmt_us(l.p90),
                fmt_us(l.p99),
                fmt_us(l.p999),
                fmt_us(l.max),
                e.errors
            );
        }
        for e in &self.endpoints {
            let statuses: Vec<String> = e.statuses.iter().map(|(k, v)| format!("{k}×{v}")).collect();
            let errors: Vec<String> = e.errors_by_kind.iter().map(|(k, v)| format!("{k}×{v}")).collect();
            let _ = write!(s, "  {}: status {}", e.label, statuses.join(" "));
            if !errors.is_empty() {
                let _ = write!(s, "; errors {}", errors.join(" "));
            }
            let _ = writeln!(s);
        }
        if self.mode == "open" {
            let _ = writeln!(s, "  (open loop: latency from each request's planned send time)");
        }
        if let Some(o) = &self.open_loop {
            let _ = writeln!(s, "{}", o.line());
        }
        if let Some(c) = &self.conversions {
            let _ = writeln!(
                s,
                "conversions: {} paid sent, {} counted; {} duplicate deliveries ({} × 200); {} refunds sent, {} counted{}",
                c.paid_sent,
                c.paid_accepted,
                c.duplicates_sent,
                c.duplicates_ok,
                c.refunds_sent,
                c.refunds_accepted,
                if c.unreachable > 0 {
                    format!("; {} not delivered (gateway unreachable)", c.unreachable)
                } else {
                    String::new()
                }
            );
        }
        if let Some(v) = &self.verification {
            let _ = writeln!(s);
            let _ = writeln!(
                s,
                "verification (bots {}counted)            {:>12} {:>12}",
                if v.bots_counted { "" } else { "not " },
                "observed",
                "recorded"
            );
            for c in &v.checks {
                let rec = if c.recorded < 0 { "-".to_owned() } else { c.recorded.to_string() };
                let _ = writeln!(
                    s,
                    "{:<40} {:>12} {:>12}  {}{}",
                    c.name,
                    c.observed,
                    rec,
                    if c.ok { "ok" } else { "DIFFERENT" },
                    if c.detail.is_empty() { String::new() } else { format!("  ({})", c.detail) }
                );
            }
            match v.lag_ms {
                Some(ms) => {
                    let _ = writeln!(
                        s,
                        "every click counted in the stats {ms} ms after the last click answer (polled every {} ms)",
                        v.poll_interval_ms
                    );
                }
                None => {
                    let _ = writeln!(s, "the click counts never matched ({} polls)", v.polls);
                }
            }
            if let Some(lag) = &self.aggregation_lag {
                let _ = writeln!(s, "{}", lag.line());
            }
            let _ = writeln!(s, "{}", if v.passed { "VERIFICATION PASSED" } else { "VERIFICATION FAILED" });
        } else if let Some(lag) = &self.aggregation_lag {
            let _ = writeln!(s, "{}", lag.line());
        }
        if let Some(e) = &self.error {
            let _ = writeln!(s, "ERROR: {e}");
        }
        // Last, where it cannot be missed.
        if let Some(w) = self.open_loop.as_ref().and_then(OpenLoopTally::warning) {
            let _ = writeln!(s);
            let _ = writeln!(s, "{w}");
        }
        s
    }
}

/// `412µs`, `1.23ms`, `2.50s`.
pub fn fmt_us(us: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let f = us as f64;
    if us < 1000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.2}ms", f / 1e3)
    } else {
        format!("{:.2}s", f / 1e6)
    }
}

/// Prints progress once a second until `done` resolves.
pub async fn progress(
    mode: Progress,
    live: Arc<Live>,
    dispenser_total: Option<u64>,
    duration: Duration,
    started: Instant,
    mut done: tokio::sync::watch::Receiver<bool>,
) {
    let bar = match mode {
        Progress::Off => return,
        Progress::Bar => true,
        Progress::Lines => false,
        Progress::Auto => std::io::stderr().is_terminal(),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = (0u64, Instant::now());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.changed() => break,
        }
        let answered = live.answered_count(Endpoint::ClickGet) + live.answered_count(Endpoint::ClickHead);
        let errors = live.error_count(Endpoint::ClickGet) + live.error_count(Endpoint::ClickHead);
        let conv = live.answered_count(Endpoint::Conversion);
        let now = Instant::now();
        #[allow(clippy::cast_precision_loss)]
        let rps = (answered - last.0) as f64 / (now - last.1).as_secs_f64().max(1e-9);
        last = (answered, now);
        let elapsed = started.elapsed();
        // The run ends by count or by time, whichever comes first (an open loop behind
        // schedule ends by time with planned requests unsent).
        let by_time = elapsed.as_secs_f64() / duration.as_secs_f64().max(1e-9);
        #[allow(clippy::cast_precision_loss)]
        let frac = match dispenser_total {
            Some(t) if t > 0 => (answered as f64 / t as f64).max(by_time),
            _ => by_time,
        }
        .clamp(0.0, 1.0);
        let conv = if conv > 0 { format!("  {conv} conversion answers") } else { String::new() };
        let line =
            format!("{:>6.1}s  {answered} answered  {rps:>9.0} req/s  {errors} errors{conv}", elapsed.as_secs_f64());
        let mut err = std::io::stderr().lock();
        if bar {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let filled = (frac * 30.0).round() as usize;
            let _ = write!(
                err,
                "\r[{}{}] {:>3.0}% {line}\x1b[K",
                "=".repeat(filled),
                " ".repeat(30 - filled),
                frac * 100.0
            );
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }
    if bar {
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
}
