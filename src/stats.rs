//! Funnel statistics: what a stats report *is* (clicks, unique visitors,
//! conversions, refunds, GMV and conversion rate per day of one dimension value),
//! how its inputs are validated, and how it is rendered (JSON via serde, CSV, a
//! plain-text table).
//!
//! Owns: the [`Dimension`] and date-range rules, the per-day arithmetic and the
//! renderings. Never does I/O: the Redis reads live in `crate::store::stats`, the
//! HTTP handler in `crate::http::stats`, the CLI in the `linkloop report` command.
//!
//! Units: counts are events; money is in **minor units** of its ISO-4217
//! currency (for CNY: **fen**, 1 yuan = 100 fen), net of refunds.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::Serialize;

use crate::platform::Platform;

/// Longest report range, in calendar days (both ends included).
pub const MAX_RANGE_DAYS: i64 = 92;

/// Length of a RED note id: 24 hex characters.
const NOTE_ID_LEN: usize = 24;

/// Longest creator id, in bytes.
const MAX_CREATOR_BYTES: usize = 64;

/// Most decimal digits in an item id (every 19-digit number fits in a `u64`).
const MAX_ITEM_DIGITS: usize = 19;

/// The currency whose net GMV is reported as [`DayStats::gmv_fen`].
pub const GMV_FEN_CURRENCY: &str = "CNY";

/// Header line of the CSV rendering (see [`Report::to_csv`]).
pub const CSV_HEADER: &str = "date,clicks,uv,conversions,refunds,gmv_fen,cvr,repeat_clicks";

/// A rejected stats input: which field, a stable code, and a message that
/// starts with the field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StatsError {
    /// Input field at fault: `dimension`, `id`, `from`, `to` or `format`.
    pub field: &'static str,
    /// Stable machine-readable code (`invalid_dimension`, `invalid_id`,
    /// `invalid_date`, `invalid_range`, `range_too_long`, `invalid_format`).
    pub code: &'static str,
    /// Human-readable message, prefixed with the field name.
    pub message: String,
}

impl StatsError {
    fn new(field: &'static str, code: &'static str, message: impl fmt::Display) -> Self {
        Self { field, code, message: format!("{field}: {message}") }
    }
}

/// What a report is grouped by: one value of one dimension of the funnel.
/// Ids are validated and canonical (note ids lowercase).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// A RED note, by its 24-hex id (lowercase).
    Note(String),
    /// A creator, by id (`[A-Za-z0-9_.-]{1,64}`).
    Creator(String),
    /// A marketplace item: platform and item id (JD: the SKU id).
    Item(Platform, u64),
    /// A whole marketplace.
    Platform(Platform),
}

impl Dimension {
    /// Parses a dimension name (`note`, `creator`, `item`, `platform`) and an id
    /// string of that dimension's shape: 24 hex characters; `[A-Za-z0-9_.-]{1,64}`;
    /// `{platform}:{item_id}` (e.g. `jd:100012043978`); `taobao|tmall|jd`.
    /// Note ids are lowercased; nothing else is trimmed or rewritten.
    ///
    /// # Errors
    /// [`StatsError`] with field `dimension` (unknown name) or `id` (bad shape).
    pub fn parse(dimension: &str, id: &str) -> Result<Dimension, StatsError> {
        match dimension {
            "note" => {
                if id.len() == NOTE_ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(Dimension::Note(id.to_ascii_lowercase()))
                } else {
                    Err(StatsError::new("id", "invalid_id", "a note id is 24 hex characters"))
                }
            }
            "creator" => {
                if !id.is_empty()
                    && id.len() <= MAX_CREATOR_BYTES
                    && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
                {
                    Ok(Dimension::Creator(id.to_owned()))
                } else {
                    Err(StatsError::new("id", "invalid_id", "a creator id is 1 to 64 letters, digits, '_', '.' or '-'"))
                }
            }
            "item" => {
                let bad = || {
                    StatsError::new(
                        "id",
                        "invalid_id",
                        "an item is {platform}:{item_id}, platform taobao, tmall or jd, item id 1 to 19 digits without leading zero (e.g. jd:100012043978)",
                    )
                };
                let (platform, item) = id.split_once(':').ok_or_else(bad)?;
                let platform = Platform::from_name(platform).ok_or_else(bad)?;
                let item = parse_item_id(item).ok_or_else(bad)?;
                Ok(Dimension::Item(platform, item))
            }
            "platform" => Platform::from_name(id)
                .map(Dimension::Platform)
                .ok_or_else(|| StatsError::new("id", "invalid_id", "a platform is taobao, tmall or jd")),
            _ => Err(StatsError::new("dimension", "invalid_dimension", "must be note, creator, item or platform")),
        }
    }

    /// The dimension's name: `note`, `creator`, `item` or `platform`.
    pub fn name(&self) -> &'static str {
        match self {
            Dimension::Note(_) => "note",
            Dimension::Creator(_) => "creator",
            Dimension::Item(..) => "item",
            Dimension::Platform(_) => "platform",
        }
    }

    /// The canonical id text, as [`Dimension::parse`] accepts it
    /// (e.g. `jd:100012043978` for an item).
    pub fn id(&self) -> String {
        match self {
            Dimension::Note(id) | Dimension::Creator(id) => id.clone(),
            Dimension::Item(p, id) => format!("{p}:{id}"),
            Dimension::Platform(p) => p.as_str().to_owned(),
        }
    }
}

/// 1 to 19 ASCII digits, no sign, no leading zero, not zero.
fn parse_item_id(text: &str) -> Option<u64> {
    let first = *text.as_bytes().first()?;
    if text.len() > MAX_ITEM_DIGITS || first == b'0' || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// An inclusive range of calendar days, `from <= to`, at most [`MAX_RANGE_DAYS`] days long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    from: NaiveDate,
    to: NaiveDate,
}

impl DateRange {
    /// Builds a range from `YYYY-MM-DD` texts. `to` defaults to `today`; `from`
    /// defaults to `to` (so with neither given, the range is just `today`).
    ///
    /// # Errors
    /// [`StatsError`] with field `from`/`to` (`invalid_date`: not a real `YYYY-MM-DD` date),
    /// `from` (`invalid_range`: after `to`) or `to` (`range_too_long`: over [`MAX_RANGE_DAYS`]).
    pub fn parse(from: Option<&str>, to: Option<&str>, today: NaiveDate) -> Result<DateRange, StatsError> {
        // `from` first: with both malformed, the error names the first in reading order.
        let from = from.map(|f| parse_date("from", f)).transpose()?;
        let to = match to {
            Some(t) => parse_date("to", t)?,
            None => today,
        };
        DateRange::new(from.unwrap_or(to), to)
    }

    /// Builds a range from dates.
    ///
    /// # Errors
    /// As [`DateRange::parse`]: `from` after `to`, or longer than [`MAX_RANGE_DAYS`].
    pub fn new(from: NaiveDate, to: NaiveDate) -> Result<DateRange, StatsError> {
        if from > to {
            return Err(StatsError::new("from", "invalid_range", format_args!("{from} is after to ({to})")));
        }
        let days = (to - from).num_days() + 1;
        if days > MAX_RANGE_DAYS {
            return Err(StatsError::new(
                "to",
                "range_too_long",
                format_args!("{from}..{to} is {days} days; at most {MAX_RANGE_DAYS}"),
            ));
        }
        Ok(DateRange { from, to })
    }

    /// First day (included).
    pub fn from(&self) -> NaiveDate {
        self.from
    }

    /// Last day (included).
    pub fn to(&self) -> NaiveDate {
        self.to
    }

    /// Every day of the range in order, as `YYYY-MM-DD` (the Redis key's day format).
    pub fn days(&self) -> Vec<String> {
        self.from.iter_days().take_while(|d| *d <= self.to).map(|d| d.format("%Y-%m-%d").to_string()).collect()
    }
}

/// Parses a strict `YYYY-MM-DD` (exactly 10 characters, zero-padded) calendar date.
fn parse_date(field: &'static str, text: &str) -> Result<NaiveDate, StatsError> {
    let b = text.as_bytes();
    let shaped = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() });
    shaped
        .then(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
        .flatten()
        .ok_or_else(|| StatsError::new(field, "invalid_date", "must be a date YYYY-MM-DD"))
}

/// The calendar day in `tz` at `now_ms` (Unix milliseconds).
pub fn today(now_ms: u64, tz: Tz) -> NaiveDate {
    let ts = i64::try_from(now_ms).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp_millis(ts).map_or(NaiveDate::MIN, |t| t.with_timezone(&tz).date_naive())
}

/// Conversion rate: `conversions / clicks`, rounded to 6 decimals; 0 when there
/// were no clicks. May exceed 1 (a day's conversions can come from earlier clicks).
pub fn cvr(conversions: u64, clicks: u64) -> f64 {
    if clicks == 0 {
        return 0.0;
    }
    #[allow(clippy::cast_precision_loss)] // counts far below 2^53
    let r = conversions as f64 / clicks as f64;
    (r * 1e6).round() / 1e6
}

/// One day of one dimension value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayStats {
    /// The day, `YYYY-MM-DD` in the report's time zone.
    pub date: String,
    /// Clicks on tracked links (human redirects recorded; bots and previews never count).
    pub clicks: u64,
    /// Of `clicks`, repeats: the same visitor on the same note and item within the
    /// repeat window (`clicks - repeat_clicks` are unique clicks).
    pub repeat_clicks: u64,
    /// Unique visitors (HyperLogLog estimate, ~0.81% standard error; never reported above
    /// `clicks`, which a visitor needs at least one of).
    pub uv: u64,
    /// Paid orders attributed to the clicks.
    pub conversions: u64,
    /// Refund/cancel events that reversed money.
    pub refunds: u64,
    /// Net CNY GMV: paid minus refunded, in fen (1/100 yuan). Negative when a day's
    /// refunds exceed its payments.
    pub gmv_fen: i64,
    /// Net GMV per ISO-4217 currency code (paid minus refunded), in that currency's
    /// minor unit; only currencies with money on the day appear.
    pub gmv: BTreeMap<String, i64>,
    /// `conversions / clicks`, rounded to 6 decimals; 0 when `clicks == 0`.
    pub cvr: f64,
}

impl DayStats {
    /// Builds a day from its aggregate hash fields (`clicks`, `conversions`,
    /// `refunds`, `paid:{CUR}`, `refunded:{CUR}`; absent = 0) and its UV count.
    /// Values that are not integers, and unknown fields, are ignored; negative counts
    /// count as 0; sums saturate.
    pub fn from_fields<'a>(
        date: impl Into<String>,
        fields: impl IntoIterator<Item = (&'a str, &'a str)>,
        uv: u64,
    ) -> DayStats {
        let (mut clicks, mut conversions, mut refunds, mut repeat_clicks) = (0u64, 0u64, 0u64, 0u64);
        let mut gmv: BTreeMap<String, i64> = BTreeMap::new();
        for (name, value) in fields {
            let Ok(v) = value.trim().parse::<i64>() else { continue };
            let count = u64::try_from(v).unwrap_or(0);
            match name {
                "clicks" => clicks = clicks.saturating_add(count),
                "repeat_clicks" => repeat_clicks = repeat_clicks.saturating_add(count),
                "conversions" => conversions = conversions.saturating_add(count),
                "refunds" => refunds = refunds.saturating_add(count),
                _ => {
                    let (cur, signed) = if let Some(cur) = name.strip_prefix("paid:") {
                        (cur, v)
                    } else if let Some(cur) = name.strip_prefix("refunded:") {
                        (cur, v.saturating_neg())
                    } else {
                        continue;
                    };
                    if is_currency(cur) {
                        let net = gmv.entry(cur.to_owned()).or_insert(0);
                        *net = net.saturating_add(signed);
                    }
                }
            }
        }
        let gmv_fen = gmv.get(GMV_FEN_CURRENCY).copied().unwrap_or(0);
        DayStats {
            date: date.into(),
            clicks,
            repeat_clicks,
            uv: uv.min(clicks),
            conversions,
            refunds,
            gmv_fen,
            gmv,
            cvr: cvr(conversions, clicks),
        }
    }
}

/// An ISO-4217 alphabetic code: three ASCII capitals.
fn is_currency(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// Totals over a report's range: sums of the days, except `uv`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Totals {
    /// Clicks over the range.
    pub clicks: u64,
    /// Repeat clicks over the range (see [`DayStats::repeat_clicks`]).
    pub repeat_clicks: u64,
    /// Unique visitors over the whole range: the HyperLogLog union of the days
    /// (a visitor seen on several days counts once), not the sum of the days; never above
    /// `clicks`.
    pub uv: u64,
    /// Paid orders over the range.
    pub conversions: u64,
    /// Refund/cancel events over the range.
    pub refunds: u64,
    /// Net CNY GMV over the range, in fen (1/100 yuan).
    pub gmv_fen: i64,
    /// Net GMV per ISO-4217 currency over the range, in minor units.
    pub gmv: BTreeMap<String, i64>,
    /// `conversions / clicks` over the range, rounded to 6 decimals; 0 without clicks.
    pub cvr: f64,
}

impl Totals {
    /// Sums `days`; `uv` is given (the union count over the range).
    pub fn of(days: &[DayStats], uv: u64) -> Totals {
        let (mut clicks, mut conversions, mut refunds, mut gmv_fen) = (0u64, 0u64, 0u64, 0i64);
        let mut repeat_clicks = 0u64;
        let mut gmv: BTreeMap<String, i64> = BTreeMap::new();
        for d in days {
            clicks = clicks.saturating_add(d.clicks);
            repeat_clicks = repeat_clicks.saturating_add(d.repeat_clicks);
            conversions = conversions.saturating_add(d.conversions);
            refunds = refunds.saturating_add(d.refunds);
            gmv_fen = gmv_fen.saturating_add(d.gmv_fen);
            for (cur, v) in &d.gmv {
                let net = gmv.entry(cur.clone()).or_insert(0);
                *net = net.saturating_add(*v);
            }
        }
        let uv = uv.min(clicks);
        Totals { clicks, repeat_clicks, uv, conversions, refunds, gmv_fen, gmv, cvr: cvr(conversions, clicks) }
    }
}

/// A stats report: one dimension value, a range of days, per-day rows and totals.
/// Serialises to the JSON of `GET /v1/stats/{dimension}/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Dimension name: `note`, `creator`, `item` or `platform`.
    pub dimension: &'static str,
    /// Canonical id within the dimension (see [`Dimension::id`]).
    pub id: String,
    /// First day, `YYYY-MM-DD`.
    pub from: String,
    /// Last day (included), `YYYY-MM-DD`.
    pub to: String,
    /// IANA time zone whose calendar days the rows are (e.g. `Asia/Shanghai`).
    pub timezone: String,
    /// One row per day of the range, oldest first, days without data included (zeros).
    pub days: Vec<DayStats>,
    /// Totals over the range.
    pub total: Totals,
}

impl Report {
    /// Assembles a report from per-day rows and the range's UV union count.
    pub fn new(dimension: &Dimension, range: &DateRange, tz: Tz, days: Vec<DayStats>, total_uv: u64) -> Report {
        let total = Totals::of(&days, total_uv);
        Report {
            dimension: dimension.name(),
            id: dimension.id(),
            from: range.from().format("%Y-%m-%d").to_string(),
            to: range.to().format("%Y-%m-%d").to_string(),
            timezone: tz.name().to_owned(),
            days,
            total,
        }
    }

    /// CSV: the [`CSV_HEADER`] line, one row per day, then a `total` row; `\n` line
    /// ends. `gmv_fen` is net CNY in fen; `cvr` is printed as the JSON number is
    /// (`0`, `0.5`, `0.333333`); `repeat_clicks` (last, so readers of the earlier
    /// seven columns keep working) is the part of `clicks` that were repeats. Other
    /// currencies are in the JSON only.
    pub fn to_csv(&self) -> String {
        let mut out = String::with_capacity(64 * (self.days.len() + 2));
        out.push_str(CSV_HEADER);
        out.push('\n');
        for d in &self.days {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{}",
                d.date, d.clicks, d.uv, d.conversions, d.refunds, d.gmv_fen, d.cvr, d.repeat_clicks
            );
        }
        let t = &self.total;
        let _ = writeln!(
            out,
            "total,{},{},{},{},{},{},{}",
            t.clicks, t.uv, t.conversions, t.refunds, t.gmv_fen, t.cvr, t.repeat_clicks
        );
        out
    }

    /// A plain-text table for a terminal: a title line, a header, one row per day,
    /// a rule, the total row; GMV in yuan (`1234.56`), CVR in percent. Net GMV in
    /// other currencies over the range follows on its own line when there is any.
    pub fn to_table(&self) -> String {
        const HEAD: [&str; 8] = ["date", "clicks", "repeats", "uv", "conversions", "refunds", "gmv_cny", "cvr"];
        let row = |date: &str, (clicks, repeats): (u64, u64), uv: u64, conv: u64, refunds: u64, fen: i64, cvr: f64| {
            [
                date.to_owned(),
                clicks.to_string(),
                repeats.to_string(),
                uv.to_string(),
                conv.to_string(),
                refunds.to_string(),
                fen_to_yuan(fen),
                format!("{:.2}%", cvr * 100.0),
            ]
        };
        let mut rows: Vec<[String; 8]> = self
            .days
            .iter()
            .map(|d| row(&d.date, (d.clicks, d.repeat_clicks), d.uv, d.conversions, d.refunds, d.gmv_fen, d.cvr))
            .collect();
        let t = &self.total;
        let total = row("total", (t.clicks, t.repeat_clicks), t.uv, t.conversions, t.refunds, t.gmv_fen, t.cvr);
        let mut widths = HEAD.map(str::len);
        for r in rows.iter().chain(std::iter::once(&total)) {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = format!("{} {}  {}..{}  ({})\n", self.dimension, self.id, self.from, self.to, self.timezone);
        let line = |out: &mut String, cells: &[String]| {
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i == 0 {
                    let _ = write!(out, "{cell:<w$}");
                } else {
                    let _ = write!(out, "  {cell:>w$}");
                }
            }
            out.push('\n');
        };
        line(&mut out, &HEAD.map(str::to_owned));
        for r in rows.drain(..) {
            line(&mut out, &r);
        }
        let rule: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
        out.push_str(&"-".repeat(rule));
        out.push('\n');
        line(&mut out, &total);
        let others: Vec<String> = t
            .gmv
            .iter()
            .filter(|(cur, _)| cur.as_str() != GMV_FEN_CURRENCY)
            .map(|(cur, v)| format!("{cur} {}", fen_to_yuan(*v)))
            .collect();
        if !others.is_empty() {
            let _ = writeln!(out, "net gmv in other currencies (minor units / 100): {}", others.join(", "));
        }
        out
    }
}

/// Formats an amount of minor units as major units with two decimals (`-12.05`).
fn fen_to_yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn dimensions_parse_and_name_fields() {
        assert_eq!(
            Dimension::parse("note", "65682D4500000000380339A5").unwrap(),
            Dimension::Note("65682d4500000000380339a5".into())
        );
        assert_eq!(Dimension::parse("creator", "c_1.a-b").unwrap(), Dimension::Creator("c_1.a-b".into()));
        let item = Dimension::parse("item", "jd:100012043978").unwrap();
        assert_eq!(item, Dimension::Item(Platform::Jd, 100_012_043_978));
        assert_eq!((item.name(), item.id().as_str()), ("item", "jd:100012043978"));
        assert_eq!(Dimension::parse("platform", "tmall").unwrap(), Dimension::Platform(Platform::Tmall));
        assert_eq!(Dimension::parse("sku", "1").unwrap_err().field, "dimension");
        for (dim, id) in [
            ("note", "65682d450000000038033"),
            ("note", "65682d4500000000380339ag"),
            ("creator", ""),
            ("creator", "a b"),
            ("creator", &"x".repeat(65)),
            ("item", "100012043978"),
            ("item", "jd:"),
            ("item", "jd:0123"),
            ("item", "jd:12345678901234567890"),
            ("item", "amazon:1"),
            ("item", "jd:1:2"),
            ("platform", "JD"),
        ] {
            let e = Dimension::parse(dim, id).unwrap_err();
            assert_eq!((e.field, e.code), ("id", "invalid_id"), "{dim} {id}");
            assert!(e.message.starts_with("id: "), "{}", e.message);
        }
    }

    #[test]
    fn range_defaults_and_validation() {
        let today = date("2026-03-10");
        let r = DateRange::parse(None, None, today).unwrap();
        assert_eq!((r.from(), r.to()), (today, today));
        assert_eq!(r.days(), ["2026-03-10"]);
        let r = DateRange::parse(Some("2026-03-01"), None, today).unwrap();
        assert_eq!((r.from(), r.to()), (date("2026-03-01"), today));
        let r = DateRange::parse(None, Some("2026-02-01"), today).unwrap();
        assert_eq!((r.from(), r.to()), (date("2026-02-01"), date("2026-02-01")));

        // 92 days inclusive is the limit.
        assert!(DateRange::parse(Some("2026-01-01"), Some("2026-04-02"), today).is_ok());
        let e = DateRange::parse(Some("2026-01-01"), Some("2026-04-03"), today).unwrap_err();
        assert_eq!((e.field, e.code), ("to", "range_too_long"));
        let e = DateRange::parse(Some("2026-03-02"), Some("2026-03-01"), today).unwrap_err();
        assert_eq!((e.field, e.code), ("from", "invalid_range"));
        for bad in ["2026-3-01", "2026-02-30", "20260301", "2026/03/01", " 2026-03-01", "+2026-03-1", "", "2026-13-01"]
        {
            let e = DateRange::parse(Some(bad), None, today).unwrap_err();
            assert_eq!((e.field, e.code), ("from", "invalid_date"), "{bad:?}");
            let e = DateRange::parse(None, Some(bad), today).unwrap_err();
            assert_eq!((e.field, e.code), ("to", "invalid_date"), "{bad:?}");
            // Both malformed: the first in reading order is named.
            let e = DateRange::parse(Some(bad), Some("x"), today).unwrap_err();
            assert_eq!((e.field, e.code), ("from", "invalid_date"), "{bad:?}");
        }
    }

    #[test]
    fn days_cross_month_and_year_boundaries() {
        let r = DateRange::new(date("2024-02-27"), date("2024-03-02")).unwrap();
        assert_eq!(r.days(), ["2024-02-27", "2024-02-28", "2024-02-29", "2024-03-01", "2024-03-02"]);
        let r = DateRange::new(date("2025-12-30"), date("2026-01-02")).unwrap();
        assert_eq!(r.days(), ["2025-12-30", "2025-12-31", "2026-01-01", "2026-01-02"]);
        let r = DateRange::new(date("2026-01-01"), date("2026-04-02")).unwrap();
        assert_eq!(r.days().len(), 92);
    }

    #[test]
    fn today_uses_the_zone() {
        // 2026-03-01T16:30:00Z is 00:30 on 2026-03-02 in Shanghai.
        let ms = 1_772_382_600_000;
        assert_eq!(today(ms, chrono_tz::Asia::Shanghai), date("2026-03-02"));
        assert_eq!(today(ms, chrono_tz::UTC), date("2026-03-01"));
    }

    #[test]
    fn cvr_rounds_to_six_decimals() {
        assert_eq!(cvr(0, 0), 0.0);
        assert_eq!(cvr(5, 0), 0.0);
        assert_eq!(cvr(1, 3), 0.333333);
        assert_eq!(cvr(2, 3), 0.666667);
        assert_eq!(cvr(1, 8), 0.125);
        assert_eq!(cvr(1, 7), 0.142857);
        assert_eq!(cvr(1, 2_000_000), 0.000001); // 0.0000005 rounds half away from zero
        assert_eq!(cvr(1, 3_000_000), 0.0);
        assert_eq!(cvr(3, 2), 1.5);
    }

    #[test]
    fn day_from_fields() {
        let d = DayStats::from_fields(
            "2026-03-01",
            [
                ("clicks", "10"),
                ("conversions", "3"),
                ("refunds", "1"),
                ("paid:CNY", "29900"),
                ("refunded:CNY", "9900"),
                ("paid:USD", "1500"),
                ("refunded:HKD", "700"),
                ("paid:cny", "5"),
                ("paid:", "5"),
                ("junk", "1"),
                ("clicks_extra", "1"),
            ],
            7,
        );
        assert_eq!((d.clicks, d.uv, d.conversions, d.refunds, d.gmv_fen), (10, 7, 3, 1, 20000));
        assert_eq!(d.gmv, BTreeMap::from([("CNY".into(), 20000), ("HKD".into(), -700), ("USD".into(), 1500)]));
        assert_eq!(d.cvr, 0.3);
        // A HyperLogLog estimate above the clicks (70,438 visitors for 70,000 clicks) is capped.
        let est = DayStats::from_fields("d", [("clicks", "70000")], 70_438);
        assert_eq!(est.uv, 70_000);
        assert_eq!(Totals::of(&[est], 70_500).uv, 70_000);
        let empty = DayStats::from_fields("2026-03-02", [], 0);
        assert_eq!((empty.clicks, empty.gmv_fen, empty.cvr, empty.gmv.len()), (0, 0, 0.0, 0));
        let odd = DayStats::from_fields("d", [("clicks", "-4"), ("conversions", "x"), ("paid:CNY", "1.5")], 0);
        assert_eq!((odd.clicks, odd.conversions, odd.gmv_fen), (0, 0, 0));
    }

    fn sample() -> Report {
        let range = DateRange::new(date("2026-02-28"), date("2026-03-02")).unwrap();
        let days = vec![
            DayStats::from_fields(
                "2026-02-28",
                [
                    ("clicks", "3"),
                    ("repeat_clicks", "1"),
                    ("conversions", "1"),
                    ("paid:CNY", "12900"),
                    ("paid:USD", "250"),
                ],
                2,
            ),
            DayStats::from_fields("2026-03-01", [], 0),
            DayStats::from_fields(
                "2026-03-02",
                [
                    ("clicks", "4"),
                    ("conversions", "2"),
                    ("refunds", "1"),
                    ("paid:CNY", "5000"),
                    ("refunded:CNY", "12900"),
                ],
                4,
            ),
        ];
        let dim = Dimension::parse("note", "65682d4500000000380339a5").unwrap();
        Report::new(&dim, &range, chrono_tz::Asia::Shanghai, days, 5)
    }

    #[test]
    fn csv_exact_text() {
        assert_eq!(
            sample().to_csv(),
            "date,clicks,uv,conversions,refunds,gmv_fen,cvr,repeat_clicks\n\
             2026-02-28,3,2,1,0,12900,0.333333,1\n\
             2026-03-01,0,0,0,0,0,0,0\n\
             2026-03-02,4,4,2,1,-7900,0.5,0\n\
             total,7,5,3,1,5000,0.428571,1\n"
        );
    }

    #[test]
    fn json_shape() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["dimension"], "note");
        assert_eq!(v["id"], "65682d4500000000380339a5");
        assert_eq!((v["from"].as_str(), v["to"].as_str()), (Some("2026-02-28"), Some("2026-03-02")));
        assert_eq!(v["timezone"], "Asia/Shanghai");
        assert_eq!(v["days"].as_array().unwrap().len(), 3);
        assert_eq!(
            v["days"][0],
            serde_json::json!({"date": "2026-02-28", "clicks": 3, "repeat_clicks": 1, "uv": 2, "conversions": 1,
                "refunds": 0, "gmv_fen": 12900, "gmv": {"CNY": 12900, "USD": 250}, "cvr": 0.333333})
        );
        assert_eq!(
            v["total"],
            serde_json::json!({"clicks": 7, "repeat_clicks": 1, "uv": 5, "conversions": 3, "refunds": 1,
                "gmv_fen": 5000, "gmv": {"CNY": 5000, "USD": 250}, "cvr": 0.428571})
        );
    }

    #[test]
    fn table_text() {
        assert_eq!(
            sample().to_table(),
            "note 65682d4500000000380339a5  2026-02-28..2026-03-02  (Asia/Shanghai)\n\
             date        clicks  repeats  uv  conversions  refunds  gmv_cny     cvr\n\
             2026-02-28       3        1   2            1        0   129.00  33.33%\n\
             2026-03-01       0        0   0            0        0     0.00   0.00%\n\
             2026-03-02       4        0   4            2        1   -79.00  50.00%\n\
             ----------------------------------------------------------------------\n\
             total            7        1   5            3        1    50.00  42.86%\n\
             net gmv in other currencies (minor units / 100): USD 2.50\n"
        );
        assert_eq!(fen_to_yuan(i64::MIN), "-92233720368547758.08");
        assert_eq!(fen_to_yuan(5), "0.05");
    }
}
