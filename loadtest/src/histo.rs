//! Per-endpoint measurements: an HDR latency histogram, status counts and errors by kind.
//!
//! Each connection (and the conversion driver) owns a [`Recorder`]; nothing is shared
//! on the hot path except the relaxed progress counters in [`Live`]. At the end the
//! recorders are merged ([`Recorder::merge`]) and summarised ([`Recorder::summary`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms hold, µs (longer ones are clamped to it).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// What a measurement is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `GET /j/{link}` (with `--target-kind plain`: `GET` of the target URL).
    ClickGet,
    /// `HEAD /j/{link}`.
    ClickHead,
    /// `POST /v1/conversions` (every attempt, including duplicates, refunds and retries).
    Conversion,
    /// `POST /v1/links` (setup).
    Mint,
}

impl Endpoint {
    /// Every endpoint, in report order.
    pub const ALL: [Endpoint; 4] = [Endpoint::ClickGet, Endpoint::ClickHead, Endpoint::Conversion, Endpoint::Mint];

    /// Human label.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::ClickGet => "GET /j/{link}",
            Endpoint::ClickHead => "HEAD /j/{link}",
            Endpoint::Conversion => "POST /v1/conversions",
            Endpoint::Mint => "POST /v1/links",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Kinds of failed requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The TCP connection could not be made.
    Connect,
    /// No complete answer within `--timeout`.
    Timeout,
    /// The connection failed or closed mid-request (or the answer was not HTTP/1.1).
    Io,
    /// An answer with a status the scenario does not expect (see the status counts).
    Status,
    /// A redirect without a click token (`ll_ct`) in its `Location`.
    NoToken,
    /// A conversion refused with a 4xx (other than 429) for a click the tester saw.
    Rejected,
}

impl ErrorKind {
    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Io => "io",
            ErrorKind::Status => "status",
            ErrorKind::NoToken => "no_token",
            ErrorKind::Rejected => "rejected",
        }
    }
}

/// Measurements of one endpoint.
#[derive(Debug, Clone)]
pub struct EndpointStats {
    /// Latency of every answered request, µs.
    pub hist: Histogram<u64>,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Failures by kind (a request can be answered and still fail, e.g. an unexpected status).
    pub errors: BTreeMap<ErrorKind, u64>,
}

impl EndpointStats {
    fn new() -> EndpointStats {
        EndpointStats {
            // 3 significant digits from 1 µs to an hour: ~100 KiB per endpoint.
            hist: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid"),
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }

    /// Answered requests.
    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// Failures of all kinds.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// One owner's measurements of every endpoint.
#[derive(Debug, Clone)]
pub struct Recorder {
    endpoints: Vec<EndpointStats>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// Empty measurements.
    pub fn new() -> Recorder {
        Recorder { endpoints: Endpoint::ALL.iter().map(|_| EndpointStats::new()).collect() }
    }

    /// The measurements of `e`.
    pub fn get(&self, e: Endpoint) -> &EndpointStats {
        &self.endpoints[e.index()]
    }

    fn get_mut(&mut self, e: Endpoint) -> &mut EndpointStats {
        &mut self.endpoints[e.index()]
    }

    /// An answer with `status` after `latency`.
    pub fn answer(&mut self, e: Endpoint, status: u16, latency: Duration) {
        let s = self.get_mut(e);
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).clamp(1, MAX_LATENCY_US);
        s.hist.saturating_record(us);
        *s.statuses.entry(status).or_insert(0) += 1;
    }

    /// A failure of `kind`.
    pub fn error(&mut self, e: Endpoint, kind: ErrorKind) {
        *self.get_mut(e).errors.entry(kind).or_insert(0) += 1;
    }

    /// Adds `other`'s measurements to these.
    ///
    /// # Errors
    /// Histograms of incompatible bounds (never for recorders made by [`Recorder::new`]).
    pub fn merge(&mut self, other: &Recorder) -> anyhow::Result<()> {
        for (mine, theirs) in self.endpoints.iter_mut().zip(&other.endpoints) {
            mine.hist.add(&theirs.hist).map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?;
            for (k, v) in &theirs.statuses {
                *mine.statuses.entry(*k).or_insert(0) += v;
            }
            for (k, v) in &theirs.errors {
                *mine.errors.entry(*k).or_insert(0) += v;
            }
        }
        Ok(())
    }

    /// Summaries of the endpoints that saw any traffic; rates over `elapsed` (per endpoint).
    pub fn summary(&self, elapsed: impl Fn(Endpoint) -> Duration) -> Vec<EndpointSummary> {
        Endpoint::ALL
            .iter()
            .filter_map(|&e| {
                let s = self.get(e);
                let answered = s.answered();
                let errors = s.error_count();
                if answered == 0 && errors == 0 {
                    return None;
                }
                let secs = elapsed(e).as_secs_f64();
                #[allow(clippy::cast_precision_loss)] // counts far below 2^53
                let rps = if secs > 0.0 { answered as f64 / secs } else { 0.0 };
                let q = |p: f64| s.hist.value_at_quantile(p);
                Some(EndpointSummary {
                    endpoint: e,
                    label: e.label().to_owned(),
                    answered,
                    errors,
                    rps,
                    latency_us: Latency {
                        p50: q(0.5),
                        p90: q(0.9),
                        p99: q(0.99),
                        p999: q(0.999),
                        max: s.hist.max(),
                        mean: s.hist.mean(),
                    },
                    statuses: s.statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                    errors_by_kind: s.errors.iter().map(|(k, v)| (k.name().to_owned(), *v)).collect(),
                })
            })
            .collect()
    }
}

/// Latency percentiles, µs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

/// The report of one endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointSummary {
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// Its label, e.g. `GET /j/{link}`.
    pub label: String,
    /// Requests answered (any status).
    pub answered: u64,
    /// Failures (see `errors_by_kind`).
    pub errors: u64,
    /// Answers per second over the phase the endpoint ran in.
    pub rps: f64,
    /// Latency of the answered requests, µs (open loop: from the planned send time).
    pub latency_us: Latency,
    /// Answers by status code.
    pub statuses: BTreeMap<String, u64>,
    /// Failures by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
}

/// Progress counters shared by every connection (relaxed atomics, read once a second).
#[derive(Debug, Default)]
pub struct Live {
    answered: [AtomicU64; 4],
    errors: [AtomicU64; 4],
}

impl Live {
    /// One more answer on `e`.
    pub fn answered(&self, e: Endpoint) {
        self.answered[e.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// One more failure on `e`.
    pub fn error(&self, e: Endpoint) {
        self.errors[e.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Answers so far on `e`.
    pub fn answered_count(&self, e: Endpoint) -> u64 {
        self.answered[e.index()].load(Ordering::Relaxed)
    }

    /// Failures so far on `e`.
    pub fn error_count(&self, e: Endpoint) -> u64 {
        self.errors[e.index()].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        let mut all = Recorder::new();
        for i in 1..=1000u64 {
            let (r, status) = if i % 3 == 0 { (&mut a, 302) } else { (&mut b, 404) };
            r.answer(Endpoint::ClickGet, status, Duration::from_micros(i * 10));
            all.answer(Endpoint::ClickGet, status, Duration::from_micros(i * 10));
        }
        a.error(Endpoint::Conversion, ErrorKind::Timeout);
        b.error(Endpoint::Conversion, ErrorKind::Timeout);
        b.error(Endpoint::Conversion, ErrorKind::Io);
        let mut merged = Recorder::new();
        merged.merge(&a).unwrap();
        merged.merge(&b).unwrap();
        let (m, o) = (merged.get(Endpoint::ClickGet), all.get(Endpoint::ClickGet));
        assert_eq!(m.hist.len(), 1000);
        assert_eq!(m.hist, o.hist);
        for p in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(m.hist.value_at_quantile(p), o.hist.value_at_quantile(p));
        }
        assert_eq!(m.statuses, BTreeMap::from([(302, 333), (404, 667)]));
        let c = merged.get(Endpoint::Conversion);
        assert_eq!(c.errors, BTreeMap::from([(ErrorKind::Timeout, 2), (ErrorKind::Io, 1)]));
        let s = merged.summary(|_| Duration::from_secs(2));
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].answered, 1000);
        assert!((s[0].rps - 500.0).abs() < 1e-9);
        assert!(s[0].latency_us.p50.abs_diff(5000) <= 5, "{}", s[0].latency_us.p50);
        assert!(s[0].latency_us.max.abs_diff(10_000) <= 10);
        assert_eq!(s[1].errors, 3);
    }

    #[test]
    fn latencies_clamp() {
        let mut r = Recorder::new();
        r.answer(Endpoint::Mint, 201, Duration::ZERO);
        r.answer(Endpoint::Mint, 201, Duration::from_secs(100_000));
        let h = &r.get(Endpoint::Mint).hist;
        assert_eq!(h.min(), 1);
        assert!(h.max() >= MAX_LATENCY_US);
    }
}
