//! The Redis key schema: every key linkloop writes, in one place.
//!
//! NEVER CHANGE a key format once data exists under it; add a new one instead.
//! The full schema, with field lists and TTLs, is `docs/redis-schema.md`.

use crate::platform::Platform;

/// Click stream: one entry per group commit of clicks, appended on the hot path (`XADD`, no
/// cap: only the aggregator trims it, behind its cursor).
pub const CLICK_STREAM: &str = "ll:clicks";
/// Non-billable requests (bots, link-preview fetchers, `HEAD`, rate-limited clients):
/// entries like the click stream's with a reason per click ([`CLICKS_FIELD`]); never
/// counted as clicks.
pub const NONBILLABLE_STREAM: &str = "ll:nonbillable";

/// Repeat-click markers of one time slot: a hash, field = [`visitor`] of a visitor's
/// click on a note and item, value = Unix ms of that visitor's last unique click
/// there. Slot = click ms / window ms, so a click's possible predecessors within the
/// window lie in its own slot or the one before. Expires at the end of the next slot.
/// The window (ms) is part of the key, so changing it starts fresh buckets.
pub fn repeat_bucket(window_ms: u64, slot: u64) -> String {
    format!("ll:rpt:{window_ms}:{slot}")
}

/// The repeat-marker field of a visitor (keyed ip hash + UA class) on a note and item:
/// the first 8 bytes of SHA-256 over `note|platform|item|ip_hash|ua`, 16 lower-case hex.
pub fn visitor(note: &str, platform: Platform, item: u64, ip_hash: &str, ua: &str) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    // Piece by piece, the item id formatted on the stack (`format!`/`write!` machinery cost
    // ≈ 6% of the redirect's instructions here).
    let mut item_buf = itoa::Buffer::new();
    for part in [note, platform.as_str(), item_buf.format(item), ip_hash, ua] {
        h.update(part.as_bytes());
        h.update(b"|");
    }
    hex::encode(&h.finalize()[..8])
}

/// Aggregator cursor: the id of the last click-stream entry applied to the aggregates.
pub const AGGREGATOR_CURSOR: &str = "ll:agg:cursor";
/// Conversion cursor: the id of the last `ll:conversions` entry whose counter deltas
/// were added to the aggregates.
pub const CONVERSION_CURSOR: &str = "ll:agg:conv_cursor";

/// The one field of a click-stream entry (`ll:clicks`, `ll:nonbillable`): its clicks, one
/// line per click, in order, joined by `\n`: `{token} {record}` (`ll:nonbillable`:
/// `{token} {record} {reason}`), with the click token's canonical UUID text and the packed
/// click record ([`crate::click::ClickRecord::to_packed`]), neither of which holds a space
/// or a newline. One field per group commit instead of two per click: Redis stores and
/// sends one string, and the aggregator parses one reply value per entry.
pub const CLICKS_FIELD: &str = "clicks";

/// Field names of one click in a click-stream entry written before [`CLICKS_FIELD`]
/// (2026-11-30): a `tok`/`rec` group per click, in order. Still read by the aggregator.
pub const LEGACY_CLICK_FIELDS: [&str; 2] = ["tok", "rec"];

/// Click records of one minute as written before 2026-12-01 (the legacy layout): a
/// hash, field = click token (canonical UUID text), value = the packed record
/// (`ClickRecord::to_packed`). Still read: by the conversion script when a token is not
/// in [`click_slots`], and by the aggregator for clicks that may have been recorded
/// there (see `docs/redis-schema.md`). Expires like [`click_slots`].
pub fn click_bucket(minute: u64) -> String {
    format!("ll:cr:{minute}")
}

/// Click records of one minute, one hash field per millisecond: field = the Unix ms of
/// the click token's UUID v7 timestamp (RFC 9562 §5.7: Unix ms in the first 48 bits),
/// decimal; value = the records of the clicks whose tokens carry that ms, one line per
/// click, each `{token} {record}\n` (the same line as in a click-stream entry,
/// [`CLICKS_FIELD`], and newline-terminated, so appending is concatenation). The
/// minute is that ms / 60,000, so a record is found from the token alone
/// ([`token_ms`], [`slot_record`]). The hash expires at the end of its minute +
/// attribution window + grace, so every record lives at least that long.
///
/// Why a field per ms rather than per click: the aggregator writes one field per ms
/// its batch touches (≈ 20 clicks per field at 20,000 clicks/s) instead of one per
/// click, and a record costs no hash-field overhead of its own (docs/performance.md).
pub fn click_slots(minute: u64) -> String {
    format!("ll:crs:{minute}")
}

/// The Unix ms of a click token's UUID v7 timestamp; `None` for a token that is not a
/// version-7 UUID (never minted by linkloop).
pub fn token_ms(token: &uuid::Uuid) -> Option<u64> {
    if token.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = token.get_timestamp()?.to_unix();
    Some(secs * 1000 + u64::from(nanos) / 1_000_000)
}

/// The Unix minute of a click token's UUID v7 timestamp ([`token_ms`] / 60,000).
pub fn token_minute(token: &uuid::Uuid) -> Option<u64> {
    token_ms(token).map(|ms| ms / 60_000)
}

/// The `(token, record)` lines of a [`click_slots`] field value, in order: the line form
/// of a click-stream entry ([`crate::store::entry_clicks`]); a line without a space (the
/// empty one after the last newline) is skipped.
pub fn slot_lines(slot: &str) -> impl Iterator<Item = (&str, &str)> {
    crate::store::entry_clicks(slot).map(|(token, record, _)| (token, record))
}

/// The packed record of `token` in a [`click_slots`] field value, if it is there.
pub fn slot_record<'a>(slot: &'a str, token: &str) -> Option<&'a str> {
    slot_lines(slot).find(|(t, _)| *t == token).map(|(_, record)| record)
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
    fn visitor_is_the_hash_of_the_documented_text() {
        use sha2::Digest as _;
        let text = "65682d4500000000380339a5|jd|100012043978|0123456789abcdef|app|";
        let want = hex::encode(&sha2::Sha256::digest(text.as_bytes())[..8]);
        assert_eq!(visitor("65682d4500000000380339a5", Platform::Jd, 100_012_043_978, "0123456789abcdef", "app"), want);
    }

    #[test]
    fn key_formats_never_change() {
        assert_eq!(click_bucket(29_933_641), "ll:cr:29933641");
        assert_eq!(click_slots(29_933_641), "ll:crs:29933641");
        assert_eq!(repeat_bucket(1_800_000, 997_787), "ll:rpt:1800000:997787");
        // 0x019ad4ad9a40 ms = 1,764,504,738,368 ms = minute 29,408,412.
        let t: uuid::Uuid = "019ad4ad-9a40-7000-8000-000000000000".parse().unwrap();
        assert_eq!(token_minute(&t), Some(0x019a_d4ad_9a40 / 60_000));
        assert_eq!(token_ms(&t), Some(0x019a_d4ad_9a40));
        let v4: uuid::Uuid = "019ad4ad-9a40-4000-8000-000000000000".parse().unwrap();
        assert_eq!(token_minute(&v4), None);
        // Pinned: stored repeat markers are keyed by it (SHA-256 of "n|jd|1|ip|app|", 8 bytes).
        assert_eq!(visitor("n", Platform::Jd, 1, "ip", "app"), "89c891d85010318e");
        assert_ne!(visitor("n", Platform::Jd, 1, "ip", "app"), visitor("n", Platform::Jd, 1, "ip", "mobile"));
        assert_eq!(
            agg(Dim::Note("65682d4500000000380339a5"), "2026-11-30"),
            "ll:agg:note:65682d4500000000380339a5:2026-11-30"
        );
        assert_eq!(agg(Dim::Item(Platform::Jd, 100012043978), "2026-11-30"), "ll:agg:item:jd:100012043978:2026-11-30");
        assert_eq!(uv(Dim::Creator("c1"), "2026-11-30"), "ll:uv:creator:c1:2026-11-30");
        assert_eq!(uv(Dim::Platform(Platform::Tmall), "2026-11-30"), "ll:uv:platform:tmall:2026-11-30");
    }

    #[test]
    fn slot_records_are_found_by_their_line() {
        // A record may end in text that looks like a token; only a line's head is one.
        let slot = "t1 1|5|n|c\nt2 1|6|n|t1\n";
        assert_eq!(slot_record(slot, "t1"), Some("1|5|n|c"));
        assert_eq!(slot_record(slot, "t2"), Some("1|6|n|t1"));
        assert_eq!(slot_record(slot, "t3"), None);
        assert_eq!(slot_record("", "t1"), None);
        assert_eq!(slot_lines(slot).collect::<Vec<_>>(), [("t1", "1|5|n|c"), ("t2", "1|6|n|t1")]);
    }
}
