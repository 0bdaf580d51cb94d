//! The run's summary: what `run` returns, the human table and the JSON file; and the
//! progress display while the load runs.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::conversions::ConvOutcome;
use crate::histo::{Endpoint, EndpointSummary, ErrorKind, Live};
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

/// How the click requests (GET and HEAD) of a run ended, from the merged measurements: what
/// tells a target that could not be reached (or stopped answering) from a slow one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClickOutcomes {
    /// Requests answered, whatever the status (a `404` is an answer).
    pub answered: u64,
    /// Connection attempts that failed (`connect` errors; no request was sent on them).
    pub connect_errors: u64,
    /// Requests whose connection failed or closed before the answer (`io` errors).
    pub io_errors: u64,
    /// Requests without an answer within `--timeout` (`timeout` errors).
    pub timeouts: u64,
    /// Why the first failed connection attempt failed, e.g. `connection refused`.
    pub connect_cause: Option<String>,
    /// Seconds from the start of the load to the last answer (`None`: nothing was answered).
    pub last_answer_s: Option<f64>,
}

impl ClickOutcomes {
    /// The outcomes of the click endpoints in `rec`.
    pub fn new(
        rec: &crate::histo::Recorder,
        connect_cause: Option<String>,
        last_answer_s: Option<f64>,
    ) -> ClickOutcomes {
        let mut o = ClickOutcomes { connect_cause, last_answer_s, ..ClickOutcomes::default() };
        for e in [Endpoint::ClickGet, Endpoint::ClickHead] {
            let s = rec.get(e);
            let kind = |k| s.errors.get(&k).copied().unwrap_or(0);
            o.answered += s.answered();
            o.connect_errors += kind(ErrorKind::Connect);
            o.io_errors += kind(ErrorKind::Io);
            o.timeouts += kind(ErrorKind::Timeout);
        }
        o
    }

    /// Not a single click request answered though some were tried (failed to connect, lost
    /// their connection or timed out): the sentence saying so, naming `who` (`target` or
    /// `gateway`) at `url`, e.g. `target unreachable at http://127.0.0.1:1/x (connection
    /// refused): no request was answered`. `None` when anything was answered (or nothing tried).
    pub fn never_answered(&self, who: &str, url: &str) -> Option<String> {
        if self.answered > 0 || self.connect_errors + self.io_errors + self.timeouts == 0 {
            return None;
        }
        if self.connect_errors > 0 {
            let cause = self.connect_cause.as_deref().unwrap_or("connection failed");
            return Some(format!("{who} unreachable at {url} ({cause}): no request was answered"));
        }
        let mut why = Vec::new();
        if self.timeouts > 0 {
            why.push(format!("{} timed out", self.timeouts));
        }
        if self.io_errors > 0 {
            why.push(format!("{} lost their connection", self.io_errors));
        }
        Some(format!("{who} not answering at {url} ({}): no request was answered", why.join(", ")))
    }
}

/// Open loop: the target stopped answering (refused connections), which is what kept the
/// run from its rate; see [`OpenLoopTally::judge`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TargetStopped {
    /// Seconds from the start of the load to the last answer (`None`: nothing was answered).
    pub last_answer_s: Option<f64>,
    /// Click connection attempts that failed.
    pub connect_errors: u64,
}

impl TargetStopped {
    /// `target stopped answering at ~1.5 s: 112 connection attempts to URL failed (connection refused)`.
    pub fn sentence(&self, who: &str, url: &str, cause: Option<&str>) -> String {
        let when = match self.last_answer_s {
            Some(t) => format!("stopped answering at ~{t:.1} s"),
            None => "never answered".to_owned(),
        };
        let cause = cause.map_or(String::new(), |c| format!(" ({c})"));
        format!("{who} {when}: {} connection attempts to {url} failed{cause}", self.connect_errors)
    }
}

/// Open loop: the requests planned against those sent. A tester (or target) that cannot
/// keep up falls behind schedule; whatever is still unsent at the end of `--duration` is
/// never sent, so the run ends on time and the shortfall shows here. So does a target that
/// stops answering: [`OpenLoopTally::target_stopped`] tells the two apart.
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
    /// The rate was not reached because the target stopped answering (or never answered),
    /// not because it was too slow: see [`OpenLoopTally::judge`].
    pub target_stopped: Option<TargetStopped>,
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
            target_stopped: None,
        }
    }

    /// Why the rate was not reached, from the click requests' outcomes over `connections`
    /// connections: the target stopped answering when the rate was not reached **and** at
    /// least as many connection attempts failed as there are connections (`connect` errors
    /// ≥ `-c`). A healthy target, however slow, keeps its keep-alive connections: none fail
    /// to connect, and the shortfall is the rate's (exit 3). A target that is gone refuses
    /// every connection, and each connection retries every 50 ms, so its `connect` errors
    /// soon outnumber the connections while the planned requests go unsent (exit 2). A
    /// target that hangs (accepts connections, never answers) looks like a slow one.
    #[must_use]
    pub fn judge(mut self, clicks: &ClickOutcomes, connections: usize) -> OpenLoopTally {
        let enough = clicks.connect_errors >= u64::try_from(connections.max(1)).unwrap_or(u64::MAX);
        self.target_stopped = (!self.rate_reached && enough)
            .then_some(TargetStopped { last_answer_s: clicks.last_answer_s, connect_errors: clicks.connect_errors });
        self
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

    /// The warning printed when the requested rate was not reached: blaming the target's
    /// stop when it stopped answering ([`OpenLoopTally::judge`]), the rate otherwise.
    pub fn warning(&self) -> Option<String> {
        if self.rate_reached {
            return None;
        }
        #[allow(clippy::cast_precision_loss)]
        let pct = 100.0 * self.not_sent as f64 / self.planned.max(1) as f64;
        if let Some(t) = &self.target_stopped {
            let when = match t.last_answer_s {
                Some(s) => format!("stopped answering at ~{s:.1} s"),
                None => "never answered".to_owned(),
            };
            return Some(format!(
                "WARNING: the target {when}: {} connection attempts failed.\n\
                 WARNING: {} of {} planned requests ({pct:.1}%) were never sent because of it, not because the rate \
                 was too high; latencies are of the {} sent, from their planned times.",
                t.connect_errors, self.not_sent, self.planned, self.sent
            ));
        }
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
    /// Length of the click phase, seconds: first send to last answer; for an open loop that
    /// sent its whole schedule, at least the schedule's window (`-d`, or `-n` / `-R` when shorter).
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
    /// gateway unreachable at http://… (connection refused)`), or made the load pointless: no
    /// click request answered (`target unreachable at http://… (connection refused): no request
    /// was answered`), or, open loop, the target stopped answering mid-run (`target stopped
    /// answering at ~1.5 s: 112 connection attempts to http://… failed (connection refused)`).
    /// The measurements above stand.
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
            let mut parts = Vec::with_capacity(2);
            if !statuses.is_empty() {
                parts.push(format!("status {}", statuses.join(" ")));
            }
            if !errors.is_empty() {
                parts.push(format!("errors {}", errors.join(" ")));
            }
            let _ = writeln!(s, "  {}: {}", e.label, parts.join("; "));
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::histo::Recorder;
    use crate::schedule::Tally;

    const URL: &str = "http://127.0.0.1:1/x";

    fn outcomes(answered: u64, connect: u64, io: u64, timeouts: u64) -> ClickOutcomes {
        let mut rec = Recorder::new();
        for _ in 0..answered {
            rec.answer(Endpoint::ClickGet, 404, Duration::from_millis(1));
        }
        for (kind, n) in [(ErrorKind::Connect, connect), (ErrorKind::Io, io), (ErrorKind::Timeout, timeouts)] {
            for _ in 0..n {
                rec.error(Endpoint::ClickGet, kind);
            }
        }
        // An answer with an unexpected status is still an answer, not a failure to answer.
        rec.error(Endpoint::ClickGet, ErrorKind::Status);
        let last = (answered > 0).then_some(1.5);
        ClickOutcomes::new(&rec, Some("connection refused".into()), last)
    }

    #[test]
    fn nothing_answered_is_named_in_a_sentence() {
        let o = outcomes(0, 7, 0, 0);
        assert_eq!((o.answered, o.connect_errors, o.io_errors, o.timeouts), (0, 7, 0, 0));
        assert_eq!(
            o.never_answered("target", URL).unwrap(),
            "target unreachable at http://127.0.0.1:1/x (connection refused): no request was answered"
        );
        assert_eq!(
            outcomes(0, 0, 2, 3).never_answered("gateway", URL).unwrap(),
            "gateway not answering at http://127.0.0.1:1/x (3 timed out, 2 lost their connection): \
             no request was answered"
        );
        // A 404 is an answer; nothing tried is no failure.
        assert_eq!(outcomes(1, 500, 0, 0).never_answered("target", URL), None);
        assert_eq!(outcomes(0, 0, 0, 0).never_answered("target", URL), None);
    }

    #[test]
    fn a_shortfall_is_blamed_on_the_target_only_when_it_refused_connections() {
        let behind = Tally { planned: 1000, sent: 400, not_sent: 600 };
        // Healthy but too slow: no (or fewer than -c) failed connection attempts.
        for connect in [0, 3] {
            let t = OpenLoopTally::new(100.0, behind, false).judge(&outcomes(400, connect, 0, 0), 4);
            assert_eq!(t.target_stopped, None);
            assert!(t.warning().unwrap().starts_with("WARNING: requested rate NOT reached: 40 req/s sent"));
        }
        // Gone: at least one refused attempt per connection.
        let o = outcomes(400, 4, 4, 0);
        let t = OpenLoopTally::new(100.0, behind, false).judge(&o, 4);
        let stopped = t.target_stopped.unwrap();
        assert_eq!(stopped, TargetStopped { last_answer_s: Some(1.5), connect_errors: 4 });
        assert!(!t.rate_reached);
        assert_eq!(
            t.warning().unwrap(),
            "WARNING: the target stopped answering at ~1.5 s: 4 connection attempts failed.\n\
             WARNING: 600 of 1000 planned requests (60.0%) were never sent because of it, not because the rate \
             was too high; latencies are of the 400 sent, from their planned times."
        );
        assert_eq!(
            stopped.sentence("target", URL, o.connect_cause.as_deref()),
            "target stopped answering at ~1.5 s: 4 connection attempts to http://127.0.0.1:1/x failed \
             (connection refused)"
        );
        // Never answered at all.
        let t = OpenLoopTally::new(100.0, Tally { planned: 1000, sent: 0, not_sent: 1000 }, false)
            .judge(&outcomes(0, 80, 0, 0), 4);
        assert!(t.warning().unwrap().starts_with("WARNING: the target never answered: 80 connection attempts failed."));
        // The rate reached: nothing to blame, whatever the refusals.
        let t = OpenLoopTally::new(100.0, Tally { planned: 1000, sent: 995, not_sent: 5 }, false)
            .judge(&outcomes(990, 100, 0, 0), 4);
        assert_eq!((t.target_stopped, t.warning()), (None, None));
    }
}
