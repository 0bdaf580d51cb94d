//! Every Prometheus metric linkloop exports, declared in one place.
//!
//! Names follow `linkloop_<name>_<unit>[_total]`; labels come from small fixed
//! sets (routes are matched paths, never raw URLs; reasons are enum labels).
//! Exposed at `GET /metrics` in the Prometheus text format (OpenMetrics 1.0).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of HTTP request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Matched route (`/j/{link}`, `/v1/links`, …) or `unmatched`.
    pub route: &'static str,
    /// HTTP method.
    pub method: &'static str,
    /// Status code.
    pub status: u16,
}

/// Labels carrying a reason from a fixed set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The reason (`as_str()` of an enum).
    pub reason: &'static str,
}

/// Labels of per-route latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Matched route.
    pub route: &'static str,
}

/// All metrics, shared by `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `linkloop_http_requests_total{route,method,status}`: requests answered.
    pub requests: Family<RequestLabels, Counter>,
    /// `linkloop_http_request_duration_seconds{route}`: time to response head, seconds.
    pub request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// `linkloop_clicks_recorded_total`: clicks acknowledged by Redis before their 302.
    pub clicks_recorded: Counter,
    /// `linkloop_clicks_unrecorded_total{reason}`: clicks Redis did not take in time
    /// (`timeout`, `redis_error`, `redis_down`); each then went to the spool.
    pub clicks_unrecorded: Family<ReasonLabels, Counter>,
    /// `linkloop_clicks_spooled_total`: clicks made durable in the local spool instead of Redis.
    pub clicks_spooled: Counter,
    /// `linkloop_clicks_dropped_total{reason}`: clicks redirected without being made durable
    /// anywhere (`spool_full`, `spool_io`). Target: zero.
    pub clicks_dropped: Family<ReasonLabels, Counter>,
    /// `linkloop_spool_pending_records`: spooled clicks not yet replayed into Redis.
    pub spool_pending: Gauge,
    /// `linkloop_spool_bytes`: bytes in spool segments.
    pub spool_bytes: Gauge,
    /// `linkloop_spool_fsyncs_total`: spool `fdatasync` calls (each serves a group of clicks).
    pub spool_fsyncs: Counter,
    /// `linkloop_spool_replayed_total`: spooled clicks replayed into Redis.
    pub spool_replayed: Counter,
    /// `linkloop_spool_damaged_records_total{reason}`: torn or corrupt spool records skipped at replay.
    pub spool_damaged: Family<ReasonLabels, Counter>,
    /// `linkloop_nonbillable_requests_total{reason}`: redirects not counted as clicks
    /// (`head`, `rate_limited`, or a bot reason such as `crawler`, `facebook_preview`).
    pub nonbillable: Family<ReasonLabels, Counter>,
    /// `linkloop_nonbillable_unrecorded_total`: non-billable requests Redis did not take (best effort).
    pub nonbillable_unrecorded: Counter,
    /// `linkloop_rate_limiter_keys`: client IPs tracked by the per-IP limiters (pruned every 10 s).
    pub rate_limiter_keys: Gauge,
    /// `linkloop_clicks_rate_limited_total`: `/j/` requests refused with `429` (hard per-IP limit).
    pub clicks_rate_limited: Counter,
    /// `linkloop_links_rejected_total{reason}`: tracked links that failed verification.
    pub links_rejected: Family<ReasonLabels, Counter>,
    /// `linkloop_links_minted_total`: tracked links minted over the API.
    pub links_minted: Counter,
    /// `linkloop_conversions_total{reason}`: conversion callbacks by result code (`attributed`, `duplicate`, `conflict`, …).
    pub conversions: Family<ReasonLabels, Counter>,
    /// `linkloop_conversions_unattributed_total{reason}`: conversions refused as not attributable
    /// (`click_not_found`: unknown or expired token; `outside_attribution_window`).
    pub conversions_unattributed: Family<ReasonLabels, Counter>,
    /// `linkloop_clicks_aggregated_total`: clicks counted into per-day aggregates.
    pub clicks_aggregated: Counter,
    /// `linkloop_click_aggregation_lag_seconds`: click time to counted, seconds.
    pub aggregation_lag: Histogram,
    /// `linkloop_click_stream_entries`: entries in the click stream `ll:clicks` at the
    /// aggregator's last pass (`XLEN`): clicks waiting to be counted plus the applied ones
    /// kept (`click_stream_retention_ms`, the last stream node). The stream has no cap, so a
    /// steady rise means no aggregator is keeping up.
    pub click_stream_entries: Gauge,
    /// `linkloop_aggregator_conflicts_total`: click batches read again because another
    /// aggregator (another gateway on the same Redis) applied first.
    pub aggregator_conflicts: Counter,
}

/// Latency buckets for requests, seconds: 50 µs to 5 s.
const REQUEST_BUCKETS: [f64; 14] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];
/// Aggregation lag buckets, seconds: 1 ms to 60 s.
const LAG_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("linkloop");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        let request_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(request_histogram);
        registry.register("http_request_duration_seconds", "Time to response head", request_duration.clone());
        let clicks_recorded = Counter::default();
        registry.register(
            "clicks_recorded",
            "Clicks acknowledged by Redis before their redirect",
            clicks_recorded.clone(),
        );
        let clicks_unrecorded = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "clicks_unrecorded",
            "Clicks redirected without being made durable",
            clicks_unrecorded.clone(),
        );
        let clicks_spooled = Counter::default();
        registry.register("clicks_spooled", "Clicks made durable in the local spool", clicks_spooled.clone());
        let clicks_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register("clicks_dropped", "Clicks redirected without being made durable", clicks_dropped.clone());
        let spool_pending = Gauge::default();
        registry.register("spool_pending_records", "Spooled clicks not yet replayed", spool_pending.clone());
        let spool_bytes = Gauge::default();
        registry.register("spool_bytes", "Bytes in spool segments", spool_bytes.clone());
        let spool_fsyncs = Counter::default();
        registry.register("spool_fsyncs", "Spool fdatasync calls", spool_fsyncs.clone());
        let spool_replayed = Counter::default();
        registry.register("spool_replayed", "Spooled clicks replayed into Redis", spool_replayed.clone());
        let spool_damaged = Family::<ReasonLabels, Counter>::default();
        registry.register("spool_damaged_records", "Damaged spool records skipped", spool_damaged.clone());
        let nonbillable = Family::<ReasonLabels, Counter>::default();
        registry.register("nonbillable_requests", "Redirects not counted as clicks, by reason", nonbillable.clone());
        let nonbillable_unrecorded = Counter::default();
        registry.register(
            "nonbillable_unrecorded",
            "Non-billable requests Redis did not take",
            nonbillable_unrecorded.clone(),
        );
        let rate_limiter_keys = Gauge::default();
        registry.register("rate_limiter_keys", "Client IPs tracked by the per-IP limiters", rate_limiter_keys.clone());
        let clicks_rate_limited = Counter::default();
        registry.register("clicks_rate_limited", "Redirect requests refused with 429", clicks_rate_limited.clone());
        let links_rejected = Family::<ReasonLabels, Counter>::default();
        registry.register("links_rejected", "Tracked links that failed verification", links_rejected.clone());
        let links_minted = Counter::default();
        registry.register("links_minted", "Tracked links minted over the API", links_minted.clone());
        let conversions = Family::<ReasonLabels, Counter>::default();
        registry.register("conversions", "Conversion callbacks by result code", conversions.clone());
        let conversions_unattributed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "conversions_unattributed",
            "Conversions refused as not attributable",
            conversions_unattributed.clone(),
        );
        let clicks_aggregated = Counter::default();
        registry.register("clicks_aggregated", "Clicks counted into per-day aggregates", clicks_aggregated.clone());
        let aggregation_lag = Histogram::new(LAG_BUCKETS);
        registry.register(
            "click_aggregation_lag_seconds",
            "Click time to counted in aggregates",
            aggregation_lag.clone(),
        );
        let click_stream_entries = Gauge::default();
        registry.register(
            "click_stream_entries",
            "Entries in the click stream at the aggregator's last pass",
            click_stream_entries.clone(),
        );
        let aggregator_conflicts = Counter::default();
        registry.register(
            "aggregator_conflicts",
            "Click batches read again because another aggregator applied first",
            aggregator_conflicts.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            clicks_recorded,
            clicks_unrecorded,
            clicks_spooled,
            clicks_dropped,
            spool_pending,
            spool_bytes,
            spool_fsyncs,
            spool_replayed,
            spool_damaged,
            nonbillable,
            nonbillable_unrecorded,
            clicks_rate_limited,
            rate_limiter_keys,
            links_rejected,
            links_minted,
            conversions,
            conversions_unattributed,
            clicks_aggregated,
            aggregation_lag,
            click_stream_entries,
            aggregator_conflicts,
        }
    }

    /// Copies the spool's own counters into the exported metrics.
    pub fn observe_spool(&self, s: &crate::click::spool::SpoolStats) {
        use std::sync::atomic::Ordering::Relaxed;
        let gauge =
            |g: &Gauge, v: &std::sync::atomic::AtomicU64| g.set(i64::try_from(v.load(Relaxed)).unwrap_or(i64::MAX));
        gauge(&self.spool_pending, &s.pending_records);
        gauge(&self.spool_bytes, &s.bytes);
        self.spool_fsyncs.inner().store(s.fsyncs.load(Relaxed), Relaxed);
        self.spool_replayed.inner().store(s.replayed.load(Relaxed), Relaxed);
        self.spool_damaged.get_or_create(&ReasonLabels { reason: "torn" }).inner().store(s.torn.load(Relaxed), Relaxed);
        self.spool_damaged
            .get_or_create(&ReasonLabels { reason: "corrupt" })
            .inner()
            .store(s.corrupt.load(Relaxed), Relaxed);
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
