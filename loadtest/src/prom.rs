//! The gateway's aggregation lag, read from its Prometheus histogram on `GET /metrics`.
//!
//! The gateway observes `linkloop_click_aggregation_lag_seconds` (click time to counted in
//! the aggregates) for every click its aggregator applies. The tester scrapes `/metrics`
//! just before the load and again after the verification saw every click counted,
//! subtracts the cumulative bucket counts, and reports p50/p99 as the **upper bound of the
//! first bucket** whose cumulative count reaches 50%/99% of the clicks counted in between:
//! a histogram says "≤ 25 ms", never "23.4 ms".
//!
//! The parser reads the subset of the text exposition format (Prometheus 0.0.4 and
//! OpenMetrics 1.0) that histogram samples use: `name{label="value",…} value [timestamp]
//! [# exemplar]`, label values with `\\`, `\"` and `\n` escapes, `+Inf`/`-Inf`/`NaN`
//! values; comment (`# HELP`, `# TYPE`, `# EOF`) and blank lines are skipped. Only the
//! lines of the histogram asked for are parsed, so an odd line elsewhere changes nothing.

use serde::{Serialize, Serializer};

use crate::control::Control;

/// The gateway's histogram of click time to counted in the aggregates, seconds.
pub const AGGREGATION_LAG: &str = "linkloop_click_aggregation_lag_seconds";

/// One sample line: metric name, labels in order, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, suffix included (`…_bucket`, `…_count`).
    pub name: String,
    /// Label pairs, unescaped values.
    pub labels: Vec<(String, String)>,
    /// The value (`+Inf`, `-Inf` and `NaN` included).
    pub value: f64,
}

impl Sample {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Parses one line of the exposition: `Ok(None)` for a blank or comment line.
///
/// # Errors
/// A message saying what is malformed.
pub fn parse_line(line: &str) -> Result<Option<Sample>, String> {
    let line = line.trim_matches(|c| c == ' ' || c == '\t' || c == '\r');
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let name_len = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(line.len());
    let (name, mut rest) = line.split_at(name_len);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("no metric name at the start of {line:?}"));
    }
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    if !rest.starts_with([' ', '\t']) {
        return Err(format!("{name}: expected a space before the value"));
    }
    let value_text = rest.split_ascii_whitespace().next().ok_or_else(|| format!("{name}: no value"))?;
    let value = parse_value(value_text).ok_or_else(|| format!("{name}: value {value_text:?} is not a number"))?;
    Ok(Some(Sample { name: name.to_owned(), labels, value }))
}

/// Parses `label="value",…}` (the `{` already taken), returning what follows the `}`.
fn parse_labels<'a>(mut s: &'a str, labels: &mut Vec<(String, String)>) -> Result<&'a str, String> {
    loop {
        s = s.trim_start_matches([' ', '\t']);
        if let Some(after) = s.strip_prefix('}') {
            return Ok(after);
        }
        let key_len = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
        let (key, after_key) = s.split_at(key_len);
        if key.is_empty() || key.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("bad label name at {s:?}"));
        }
        let after_eq = after_key
            .trim_start_matches([' ', '\t'])
            .strip_prefix('=')
            .ok_or_else(|| format!("label {key}: expected '='"))?
            .trim_start_matches([' ', '\t']);
        let body = after_eq.strip_prefix('"').ok_or_else(|| format!("label {key}: expected '\"'"))?;
        let mut chars = body.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next() {
                None => return Err(format!("label {key}: unterminated value")),
                Some((i, '"')) => break i + 1,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("label {key}: bad escape {:?}", other.map(|(_, c)| c))),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        s = body.get(end..).unwrap_or("").trim_start_matches([' ', '\t']);
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err(format!("label {key}: expected ',' or '}}' after the value"));
        }
    }
}

/// A sample value or an `le` bound: a float, `+Inf`, `-Inf` or `NaN`.
fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        t if t.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E')) => t.parse().ok(),
        _ => None,
    }
}

/// A count (bucket or `_count`): a non-negative integer, possibly written as a float.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
fn as_count(v: f64) -> Option<u64> {
    (v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

/// One histogram at one scrape: cumulative counts by upper bound, summed over every label
/// set other than `le` (as PromQL's `sum by (le)`), and the total count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// `(le, cumulative count)`, ascending by `le` (`+Inf` last when exported).
    pub buckets: Vec<(f64, u64)>,
    /// `_count` (or, without one, the `+Inf` bucket).
    pub count: u64,
}

impl HistogramSnapshot {
    /// The histogram `name` in an exposition text; `Ok(None)` when it has no sample of it.
    ///
    /// # Errors
    /// A malformed line of that histogram (with its line number), a `_bucket` without an
    /// `le`, or a count that is not a non-negative integer.
    pub fn from_exposition(text: &str, name: &str) -> Result<Option<HistogramSnapshot>, String> {
        let bucket_name = format!("{name}_bucket");
        let count_name = format!("{name}_count");
        let mut buckets: Vec<(f64, u64)> = Vec::new();
        let mut count: Option<u64> = None;
        for (i, line) in text.lines().enumerate() {
            let t = line.trim_start();
            // Only this histogram's lines: the name followed by `{` or a space.
            let ours = |n: &str| t.strip_prefix(n).is_some_and(|r| r.starts_with(['{', ' ', '\t']));
            if !ours(&bucket_name) && !ours(&count_name) {
                continue;
            }
            let Some(sample) = parse_line(t).map_err(|e| format!("line {}: {e}", i + 1))? else { continue };
            let n = as_count(sample.value)
                .ok_or_else(|| format!("line {}: {} is not a count: {}", i + 1, sample.name, sample.value))?;
            if sample.name == bucket_name {
                let le_text = sample.label("le").ok_or_else(|| format!("line {}: bucket without le", i + 1))?;
                let le = parse_value(le_text)
                    .filter(|v| !v.is_nan())
                    .ok_or_else(|| format!("line {}: le {le_text:?} is not a number", i + 1))?;
                match buckets.iter_mut().find(|(b, _)| *b == le) {
                    Some((_, c)) => *c += n,
                    None => buckets.push((le, n)),
                }
            } else {
                *count.get_or_insert(0) += n;
            }
        }
        if buckets.is_empty() && count.is_none() {
            return Ok(None);
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let inf = buckets.last().filter(|(le, _)| le.is_infinite()).map(|(_, c)| *c);
        Ok(Some(HistogramSnapshot { count: count.or(inf).unwrap_or(0), buckets }))
    }

    /// What was observed between `earlier` and this snapshot. An empty `earlier` (the
    /// histogram not exported yet) counts as all zeros.
    ///
    /// # Errors
    /// The bucket bounds differ or a count went down (the gateway restarted in between).
    pub fn since(&self, earlier: &HistogramSnapshot) -> Result<HistogramSnapshot, String> {
        if earlier.buckets.is_empty() && earlier.count == 0 {
            return Ok(self.clone());
        }
        let same_bounds = earlier.buckets.len() == self.buckets.len()
            && earlier.buckets.iter().zip(&self.buckets).all(|(a, b)| a.0 == b.0);
        if !same_bounds {
            return Err("the bucket bounds changed between the scrapes (gateway restarted?)".into());
        }
        let reset = || "a count went down between the scrapes (gateway restarted?)".to_owned();
        let buckets = earlier
            .buckets
            .iter()
            .zip(&self.buckets)
            .map(|(a, b)| b.1.checked_sub(a.1).map(|d| (b.0, d)).ok_or_else(reset))
            .collect::<Result<Vec<_>, _>>()?;
        let count = self.count.checked_sub(earlier.count).ok_or_else(reset)?;
        Ok(HistogramSnapshot { buckets, count })
    }

    /// The upper bound of the first bucket whose cumulative count reaches `per_mille`/1000
    /// of the count (p50: 500, p99: 990); `+Inf` when no finite bucket does; `None` when
    /// the count is zero.
    pub fn quantile_le(&self, per_mille: u32) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let need = u128::from(per_mille.min(1000)) * u128::from(self.count);
        let le = self.buckets.iter().find(|(_, cum)| u128::from(*cum) * 1000 >= need).map(|(le, _)| *le);
        Some(le.unwrap_or(f64::INFINITY))
    }

    /// The largest finite bucket bound.
    pub fn top_finite_le(&self) -> Option<f64> {
        self.buckets.iter().rev().map(|(le, _)| *le).find(|le| le.is_finite())
    }
}

/// The histogram `name` on the gateway's `GET /metrics` (no authentication).
///
/// # Errors
/// No answer, a status other than 200, a body that is not UTF-8 or a malformed line.
pub async fn scrape(control: &Control, name: &str) -> Result<Option<HistogramSnapshot>, String> {
    let a = control.get_public("/metrics").await.map_err(|e| format!("GET /metrics: {}", e.message))?;
    if a.status != 200 {
        return Err(format!("GET /metrics answered {}", a.status));
    }
    let text = std::str::from_utf8(&a.body).map_err(|e| format!("GET /metrics: body is not UTF-8: {e}"))?;
    HistogramSnapshot::from_exposition(text, name).map_err(|e| format!("GET /metrics: {e}"))
}

/// The aggregation lag over the run, from the gateway's histogram (bucket upper bounds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AggregationLag {
    /// Clicks the gateway counted into its aggregates between the two scrapes
    /// (`_count` delta; any other traffic on the gateway included); `null` when n/a.
    pub count: Option<u64>,
    /// Median lag: the upper bound in seconds of the first bucket holding half the clicks
    /// (`"+Inf"` past the last finite bucket); `null` when n/a or no click was counted.
    #[serde(serialize_with = "le_json")]
    pub p50_le_s: Option<f64>,
    /// p99 lag, as `p50_le_s`.
    #[serde(serialize_with = "le_json")]
    pub p99_le_s: Option<f64>,
    /// True when the second scrape came after the verification saw every click counted;
    /// false (`--no-verify`, or the counts never matched) means late clicks may be missing.
    pub settled: bool,
    /// Why there are no figures (no answer, no such metric, gateway restarted); `null` otherwise.
    pub unavailable: Option<String>,
    /// Largest finite bucket bound (for "> 60 s" when a percentile is past it).
    #[serde(skip)]
    pub top_le_s: Option<f64>,
}

/// Serializes a bucket bound: a number, `"+Inf"`, or `null`.
fn le_json<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(x) if x.is_finite() => s.serialize_f64(*x),
        Some(_) => s.serialize_str("+Inf"),
        None => s.serialize_none(),
    }
}

impl AggregationLag {
    /// The lag from the two scrapes of the histogram (`before` the load, `after` it settled).
    /// A histogram absent before but present after starts from zero.
    pub fn from_scrapes(
        before: Result<Option<HistogramSnapshot>, String>,
        after: Result<Option<HistogramSnapshot>, String>,
        settled: bool,
    ) -> AggregationLag {
        let na = |why: String| AggregationLag {
            count: None,
            p50_le_s: None,
            p99_le_s: None,
            settled,
            unavailable: Some(why),
            top_le_s: None,
        };
        let after = match after {
            Ok(Some(h)) => h,
            Ok(None) => return na(format!("the gateway exports no {AGGREGATION_LAG}")),
            Err(e) => return na(e),
        };
        let before = match before {
            Ok(h) => h.unwrap_or_default(),
            Err(e) => return na(format!("before the load: {e}")),
        };
        match after.since(&before) {
            Ok(d) => AggregationLag {
                count: Some(d.count),
                p50_le_s: d.quantile_le(500),
                p99_le_s: d.quantile_le(990),
                settled,
                unavailable: None,
                top_le_s: d.top_finite_le(),
            },
            Err(e) => na(e),
        }
    }

    /// `aggregation lag (gateway histogram): n=…, p50 ≤ 25 ms, p99 ≤ 100 ms (bucket upper bounds)`.
    pub fn line(&self) -> String {
        let head = "aggregation lag (gateway histogram):";
        let Some(n) = self.count else {
            return format!("{head} n/a ({})", self.unavailable.as_deref().unwrap_or("no figures"));
        };
        let q = |name: &str, v: Option<f64>| match v {
            None => format!("{name} n/a"),
            Some(le) if le.is_finite() => format!("{name} ≤ {}", fmt_seconds(le)),
            Some(_) => match self.top_le_s {
                Some(top) => format!("{name} > {}", fmt_seconds(top)),
                None => format!("{name} ≤ +Inf"),
            },
        };
        let mut s = format!("{head} n={n}, {}, {}", q("p50", self.p50_le_s), q("p99", self.p99_le_s));
        if n > 0 {
            s.push_str(" (bucket upper bounds)");
        }
        if !self.settled {
            s.push_str("; scraped without the counts matching: clicks not yet counted are missing");
        }
        s
    }
}

/// A bucket bound for people: `25 ms` below a second, `2.5 s` from one.
pub fn fmt_seconds(s: f64) -> String {
    let trim = |t: String| t.trim_end_matches('0').trim_end_matches('.').to_owned();
    if s < 1.0 { format!("{} ms", trim(format!("{:.3}", s * 1e3))) } else { format!("{} s", trim(format!("{s:.3}"))) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// As the gateway (prometheus-client, OpenMetrics) writes it, plus another histogram
    /// sharing the name's start, comments, a timestamp and an exemplar.
    const AFTER: &str = "\
# HELP linkloop_clicks_aggregated Clicks counted into per-day aggregates.
# TYPE linkloop_clicks_aggregated counter
linkloop_clicks_aggregated_total 1000
# HELP linkloop_click_aggregation_lag_seconds Click time to counted in aggregates.
# TYPE linkloop_click_aggregation_lag_seconds histogram
linkloop_click_aggregation_lag_seconds_sum 31.5
linkloop_click_aggregation_lag_seconds_count 1000
linkloop_click_aggregation_lag_seconds_bucket{le=\"0.001\"} 0
linkloop_click_aggregation_lag_seconds_bucket{le=\"0.005\"} 10
linkloop_click_aggregation_lag_seconds_bucket{le=\"0.01\"} 100
linkloop_click_aggregation_lag_seconds_bucket{le=\"0.025\"} 500
linkloop_click_aggregation_lag_seconds_bucket{le=\"0.05\"} 900 1700000000000
linkloop_click_aggregation_lag_seconds_bucket{le=\"0.1\"} 990 # {trace_id=\"x\"} 0.07
linkloop_click_aggregation_lag_seconds_bucket{le=\"0.25\"} 1000
linkloop_click_aggregation_lag_seconds_bucket{le=\"+Inf\"} 1000
linkloop_click_aggregation_lag_seconds_extra_bucket{le=\"0.001\"} 7
# EOF
";

    const BEFORE: &str = "\
linkloop_click_aggregation_lag_seconds_count 100
linkloop_click_aggregation_lag_seconds_bucket{le=\"0.001\"} 0
linkloop_click_aggregation_lag_seconds_bucket{le=\"0.005\"} 10
linkloop_click_aggregation_lag_seconds_bucket{le=\"0.01\"} 50
linkloop_click_aggregation_lag_seconds_bucket{le=\"0.025\"} 100
linkloop_click_aggregation_lag_seconds_bucket{le=\"0.05\"} 100
linkloop_click_aggregation_lag_seconds_bucket{le=\"0.1\"} 100
linkloop_click_aggregation_lag_seconds_bucket{le=\"0.25\"} 100
linkloop_click_aggregation_lag_seconds_bucket{le=\"+Inf\"} 100
";

    fn snap(text: &str) -> HistogramSnapshot {
        HistogramSnapshot::from_exposition(text, AGGREGATION_LAG).unwrap().unwrap()
    }

    #[test]
    fn parses_sample_lines() {
        assert_eq!(parse_line("").unwrap(), None);
        assert_eq!(parse_line("# TYPE x histogram").unwrap(), None);
        let s = parse_line("x_bucket{route=\"/j/{link}\",le=\"+Inf\"} 12").unwrap().unwrap();
        assert_eq!(s.name, "x_bucket");
        assert_eq!(s.labels, vec![("route".into(), "/j/{link}".into()), ("le".into(), "+Inf".into())]);
        assert_eq!((s.label("le"), s.value), (Some("+Inf"), 12.0));
        let s = parse_line("up 1").unwrap().unwrap();
        assert_eq!((s.name.as_str(), s.labels.len(), s.value), ("up", 0, 1.0));
        // Escapes, spaces, a trailing comma, a timestamp, scientific notation, special values.
        let s = parse_line(r#"m{ a = "q\"u\\o\nte, }" , b="",} 1.5e3 1700000000"#).unwrap().unwrap();
        assert_eq!(s.labels, vec![("a".into(), "q\"u\\o\nte, }".into()), ("b".into(), String::new())]);
        assert_eq!(s.value, 1500.0);
        assert_eq!(parse_line("m +Inf").unwrap().unwrap().value, f64::INFINITY);
        assert_eq!(parse_line("m -Inf").unwrap().unwrap().value, f64::NEG_INFINITY);
        assert!(parse_line("m NaN").unwrap().unwrap().value.is_nan());
        assert_eq!(parse_line("m 3\r").unwrap().unwrap().value, 3.0);
    }

    #[test]
    fn rejects_malformed_lines() {
        for bad in [
            "{le=\"1\"} 3",
            "9m 1",
            "m",
            "m{le=\"1\"}",
            "m{le=\"1\"}3",
            "m{le=\"1} 3",
            "m{le=1} 3",
            "m{le \"1\"} 3",
            "m{le=\"1\" x=\"2\"} 3",
            "m{le=\"\\t\"} 3",
            "m{=\"1\"} 3",
            "m{le=\"1\"} three",
            "m{le=\"1\"} 0x10",
        ] {
            assert!(parse_line(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn reads_the_histogram_only() {
        let h = snap(AFTER);
        assert_eq!(h.count, 1000);
        let les: Vec<f64> = h.buckets.iter().map(|b| b.0).collect();
        assert_eq!(les, vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, f64::INFINITY]);
        let counts: Vec<u64> = h.buckets.iter().map(|b| b.1).collect();
        assert_eq!(counts, vec![0, 10, 100, 500, 900, 990, 1000, 1000]);
        assert_eq!(h.top_finite_le(), Some(0.25));
        assert_eq!(HistogramSnapshot::from_exposition("up 1\n# EOF\n", AGGREGATION_LAG).unwrap(), None);
        // A malformed line of another metric is not read; one of ours is an error.
        assert!(HistogramSnapshot::from_exposition("other{ 1\nup 1\n", AGGREGATION_LAG).unwrap().is_none());
        let bad = format!("{AGGREGATION_LAG}_bucket{{le=\"0.1\"}} 2.5\n");
        assert!(HistogramSnapshot::from_exposition(&bad, AGGREGATION_LAG).unwrap_err().contains("line 1"));
        let bad = format!("{AGGREGATION_LAG}_bucket{{x=\"1\"}} 2\n");
        assert!(HistogramSnapshot::from_exposition(&bad, AGGREGATION_LAG).unwrap_err().contains("without le"));
        let bad = format!("{AGGREGATION_LAG}_count -1\n");
        assert!(HistogramSnapshot::from_exposition(&bad, AGGREGATION_LAG).is_err());
    }

    #[test]
    fn sums_label_sets_by_le_and_sorts_bounds() {
        let text = "\
h_bucket{route=\"/a\",le=\"+Inf\"} 4
h_bucket{route=\"/a\",le=\"0.5\"} 3
h_bucket{le=\"0.1\",route=\"/a\"} 1
h_bucket{route=\"/b\",le=\"0.1\"} 5
h_bucket{route=\"/b\",le=\"0.5\"} 6
h_bucket{route=\"/b\",le=\"+Inf\"} 6
h_count{route=\"/a\"} 4
h_count{route=\"/b\"} 6
h_sum{route=\"/b\"} 0.9
";
        let h = HistogramSnapshot::from_exposition(text, "h").unwrap().unwrap();
        assert_eq!(h.buckets, vec![(0.1, 6), (0.5, 9), (f64::INFINITY, 10)]);
        assert_eq!(h.count, 10);
        // 60% of 10 within 0.1 s: p50 ≤ 0.1; p90 (9 of 10) ≤ 0.5; p99 needs 9.9: only +Inf.
        assert_eq!(h.quantile_le(500), Some(0.1));
        assert_eq!(h.quantile_le(900), Some(0.5));
        assert_eq!(h.quantile_le(990), Some(f64::INFINITY));
        // Without `_count` lines the `+Inf` bucket is the count.
        let no_count: String = text.lines().filter(|l| !l.starts_with("h_count")).map(|l| format!("{l}\n")).collect();
        assert_eq!(HistogramSnapshot::from_exposition(&no_count, "h").unwrap().unwrap().count, 10);
    }

    #[test]
    fn percentiles_from_the_bucket_deltas() {
        let d = snap(AFTER).since(&snap(BEFORE)).unwrap();
        assert_eq!(d.count, 900);
        let counts: Vec<u64> = d.buckets.iter().map(|b| b.1).collect();
        assert_eq!(counts, vec![0, 0, 50, 400, 800, 890, 900, 900]);
        // p50: 450 of 900; ≤ 0.025 holds 400, ≤ 0.05 holds 800.
        assert_eq!(d.quantile_le(500), Some(0.05));
        // p99: 891 of 900; ≤ 0.1 holds 890 (one short), ≤ 0.25 holds 900.
        assert_eq!(d.quantile_le(990), Some(0.25));
        // Exactly reaching the share counts: 400/900 ≥ 44.4%, 50/900 < 5.6%.
        assert_eq!(d.quantile_le(444), Some(0.025));
        assert_eq!(d.quantile_le(56), Some(0.025));
        assert_eq!(d.quantile_le(55), Some(0.01));
        // Alone (no earlier scrape: from zero), the after text: p50 500 of 1000 at ≤ 0.025 exactly,
        // p99 990 of 1000 at ≤ 0.1 exactly.
        let a = snap(AFTER).since(&HistogramSnapshot::default()).unwrap();
        assert_eq!((a.quantile_le(500), a.quantile_le(990)), (Some(0.025), Some(0.1)));
        // Nothing in between: no percentile.
        let z = snap(AFTER).since(&snap(AFTER)).unwrap();
        assert_eq!((z.count, z.quantile_le(990)), (0, None));
        // The gateway restarted: counts went down.
        assert!(snap(BEFORE).since(&snap(AFTER)).unwrap_err().contains("restarted"));
        let other = HistogramSnapshot { buckets: vec![(1.0, 1), (f64::INFINITY, 1)], count: 1 };
        assert!(snap(AFTER).since(&other).unwrap_err().contains("bounds"));
    }

    #[test]
    fn percentile_past_every_finite_bucket_is_inf() {
        // No `+Inf` bucket exported and the count above every finite one.
        let h = HistogramSnapshot { buckets: vec![(0.01, 1), (0.1, 2)], count: 100 };
        assert_eq!(h.quantile_le(500), Some(f64::INFINITY));
        let lag = AggregationLag::from_scrapes(Ok(None), Ok(Some(h)), true);
        assert_eq!(
            lag.line(),
            "aggregation lag (gateway histogram): n=100, p50 > 100 ms, p99 > 100 ms (bucket upper bounds)"
        );
        let json = serde_json::to_value(&lag).unwrap();
        assert_eq!(json["p99_le_s"], "+Inf");
        assert!(json.get("top_le_s").is_none());
    }

    #[test]
    fn report_line_and_json() {
        let lag = AggregationLag::from_scrapes(Ok(Some(snap(BEFORE))), Ok(Some(snap(AFTER))), true);
        assert_eq!((lag.count, lag.p50_le_s, lag.p99_le_s), (Some(900), Some(0.05), Some(0.25)));
        assert_eq!(
            lag.line(),
            "aggregation lag (gateway histogram): n=900, p50 ≤ 50 ms, p99 ≤ 250 ms (bucket upper bounds)"
        );
        let json = serde_json::to_value(&lag).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"count": 900, "p50_le_s": 0.05, "p99_le_s": 0.25, "settled": true, "unavailable": null})
        );
        let lag = AggregationLag::from_scrapes(Ok(Some(snap(AFTER))), Ok(Some(snap(AFTER))), false);
        assert_eq!(
            lag.line(),
            "aggregation lag (gateway histogram): n=0, p50 n/a, p99 n/a; scraped without the counts matching: \
             clicks not yet counted are missing"
        );
        // No such metric, a failed scrape, a restart: n/a with the reason, never an error.
        let lag = AggregationLag::from_scrapes(Ok(None), Ok(None), true);
        assert_eq!(lag.count, None);
        assert_eq!(
            lag.line(),
            format!("aggregation lag (gateway histogram): n/a (the gateway exports no {AGGREGATION_LAG})")
        );
        let json = serde_json::to_value(&lag).unwrap();
        assert!(json["count"].is_null() && json["p99_le_s"].is_null());
        let lag = AggregationLag::from_scrapes(Err("GET /metrics answered 404".into()), Ok(Some(snap(AFTER))), true);
        assert_eq!(lag.line(), "aggregation lag (gateway histogram): n/a (before the load: GET /metrics answered 404)");
        let lag = AggregationLag::from_scrapes(Ok(Some(snap(AFTER))), Ok(Some(snap(BEFORE))), true);
        assert!(lag.unavailable.unwrap().contains("restarted"));
    }

    #[test]
    fn seconds_for_people() {
        assert_eq!(fmt_seconds(0.001), "1 ms");
        assert_eq!(fmt_seconds(0.025), "25 ms");
        assert_eq!(fmt_seconds(0.0005), "0.5 ms");
        assert_eq!(fmt_seconds(1.0), "1 s");
        assert_eq!(fmt_seconds(2.5), "2.5 s");
        assert_eq!(fmt_seconds(60.0), "60 s");
    }
}
