//! The Redis key schema: every key linkloop writes, in one place.
//!
//! NEVER CHANGE a key format once data exists under it; add a new one instead.
//! The full schema, with field lists and TTLs, is `docs/redis-schema.md`.

use crate::platform::Platform;

/// Click stream: one entry per click, appended on the hot path (XADD, approximate MAXLEN).
pub const CLICK_STREAM: &str = "ll:clicks";
/// Non-billable requests (bots, link-preview fetchers, `HEAD`, rate-limited clients):
/// entries `tok`, `rec`, `reason`; never counted as clicks.
pub const NONBILLABLE_STREAM: &str = "ll:nonbillable";

/// Repeat-click marker of one visitor (ip hash + UA class) on one note and item,
/// expiring after the repeat window.
pub fn seen(note: &str, platform: Platform, item: u64, ip_hash: &str, ua: &str) -> String {
    format!("ll:seen:{note}:{platform}:{item}:{ip_hash}:{ua}")
}

/// Aggregator cursor: the id of the last click-stream entry applied to the aggregates.
pub const AGGREGATOR_CURSOR: &str = "ll:agg:cursor";

/// Field names of a click-stream entry, in the order they are written: the click
/// token and the packed click record ([`crate::click::ClickRecord::to_packed`]).
pub const CLICK_FIELDS: [&str; 2] = ["tok", "rec"];

/// Click record: a string (`ClickRecord::to_packed`) keyed by click token (canonical UUID text), expiring at
/// click time + attribution window + grace.
pub fn click(token: &str) -> String {
    format!("ll:click:{token}")
}

/// A dimension of the funnel: what the per-day aggregates are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim<'a> {
    /// By note id.
    Note(&'a str),
    /// By creator id.
    Creator(&'a str),
    /// By platform and item id.
    Item(Platform, u64),
    /// By platform.
    Platform(Platform),
}

impl Dim<'_> {
    fn write(&self, out: &mut String, prefix: &str, day: &str) {
        use std::fmt::Write as _;
        let _ = match self {
            Dim::Note(id) => write!(out, "{prefix}:note:{id}:{day}"),
            Dim::Creator(id) => write!(out, "{prefix}:creator:{id}:{day}"),
            Dim::Item(p, id) => write!(out, "{prefix}:item:{p}:{id}:{day}"),
            Dim::Platform(p) => write!(out, "{prefix}:platform:{p}:{day}"),
        };
    }
}

/// Per-day counters of one dimension value: a hash with fields `clicks` (and the
/// conversion fields). `day` is `YYYY-MM-DD` in the configured time zone.
pub fn agg(dim: Dim<'_>, day: &str) -> String {
    let mut s = String::with_capacity(64);
    dim.write(&mut s, "ll:agg", day);
    s
}

/// Per-day unique visitors of one dimension value: a HyperLogLog of visitor ip hashes.
pub fn uv(dim: Dim<'_>, day: &str) -> String {
    let mut s = String::with_capacity(64);
    dim.write(&mut s, "ll:uv", day);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_formats_never_change() {
        assert_eq!(click("0192f0c1-0000-7000-8000-000000000000"), "ll:click:0192f0c1-0000-7000-8000-000000000000");
        assert_eq!(
            agg(Dim::Note("65682d4500000000380339a5"), "2026-11-30"),
            "ll:agg:note:65682d4500000000380339a5:2026-11-30"
        );
        assert_eq!(agg(Dim::Item(Platform::Jd, 100012043978), "2026-11-30"), "ll:agg:item:jd:100012043978:2026-11-30");
        assert_eq!(uv(Dim::Creator("c1"), "2026-11-30"), "ll:uv:creator:c1:2026-11-30");
        assert_eq!(uv(Dim::Platform(Platform::Tmall), "2026-11-30"), "ll:uv:platform:tmall:2026-11-30");
    }
}
