//! The click record: what Redis keeps per click token for attribution.
//!
//! Stored as one string (the rest of the line `{token} {record}` in field `{ms}` of the
//! hash `ll:crs:{minute}`, see `docs/redis-schema.md`), fields joined by `|` in this
//! order (none of them can contain `|`; NEVER CHANGE the order of v1):
//!
//! ```text
//! 1|{ts_ms}|{note_id}|{creator_id}|{platform}|{item_id}|{sku_id or empty}|{campaign or empty}|{ip_hash}|{ua}|{referrer_host or empty}
//! ```
//!
//! One string instead of a hash per click: about 110 bytes, written by the aggregator
//! into the minute's hash with one `HSET` per batch.

use crate::platform::{Platform, Product};

/// Version tag, the first field. NEVER CHANGE for v1.
const VERSION: &str = "1";

/// A click as kept for attribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickRecord {
    /// Click time, Unix ms.
    pub ts_ms: u64,
    /// RED note id (24 hex).
    pub note_id: String,
    /// Creator id.
    pub creator_id: String,
    /// Platform, item and SKU.
    pub product: Product,
    /// Campaign tag, if any.
    pub campaign: Option<String>,
    /// Keyed hash of the client IP (16 hex).
    pub ip_hash: String,
    /// User-agent class wire name (`app`, `mobile`, `desktop`, `bot`).
    pub ua: String,
    /// Referrer host, if any.
    pub referrer_host: Option<String>,
}

impl ClickRecord {
    /// Builds a record from its field values in order:
    /// ts, note, creator, platform, item, sku, campaign, ip, ua, ref.
    /// `None` when a value is malformed (an entry not written by linkloop).
    pub fn from_stream_fields(f: [&str; 10]) -> Option<ClickRecord> {
        if f.iter().any(|s| s.contains('|')) {
            return None;
        }
        PackedRecord::from_fields(f).map(ClickRecord::from)
    }

    /// The stored string form (see the module doc).
    pub fn to_packed(&self) -> String {
        pack(&PackedFields {
            ts_ms: self.ts_ms,
            note_id: &self.note_id,
            creator_id: &self.creator_id,
            product: self.product,
            campaign: self.campaign.as_deref(),
            ip_hash: &self.ip_hash,
            ua: &self.ua,
            referrer_host: self.referrer_host.as_deref(),
        })
    }

    /// The stored string form of a click just made, written straight from the click
    /// (no intermediate record: this runs on the redirect's hot path).
    pub fn packed_from_click(c: &super::Click) -> String {
        pack(&PackedFields {
            ts_ms: c.ts_ms,
            note_id: &c.link.note_id,
            creator_id: &c.link.creator_id,
            product: c.link.product,
            campaign: c.link.campaign.as_deref(),
            ip_hash: &c.ip_hash,
            ua: c.ua.as_str(),
            referrer_host: c.referrer_host.as_deref(),
        })
    }

    /// Parses the stored string form. `None` when it is not a v1 record.
    pub fn from_packed(s: &str) -> Option<ClickRecord> {
        PackedRecord::parse(s).map(ClickRecord::from)
    }
}

/// A click record's fields borrowed from its stored string form: what
/// [`ClickRecord::from_packed`] checks, without allocating (the aggregator parses every
/// click of a batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedRecord<'a> {
    /// Click time, Unix ms.
    pub ts_ms: u64,
    /// RED note id.
    pub note_id: &'a str,
    /// Creator id.
    pub creator_id: &'a str,
    /// Platform, item and SKU.
    pub product: Product,
    /// Campaign tag, if any.
    pub campaign: Option<&'a str>,
    /// Keyed hash of the client IP.
    pub ip_hash: &'a str,
    /// User-agent class wire name.
    pub ua: &'a str,
    /// Referrer host, if any.
    pub referrer_host: Option<&'a str>,
}

impl<'a> PackedRecord<'a> {
    /// Parses the stored string form. `None` when it is not a v1 record.
    pub fn parse(s: &'a str) -> Option<Self> {
        let mut it = s.split('|');
        if it.next()? != VERSION {
            return None;
        }
        let mut f = [""; 10];
        for slot in &mut f {
            *slot = it.next()?;
        }
        if it.next().is_some() {
            return None;
        }
        Self::from_fields(f)
    }

    /// The record of field values in order (ts, note, creator, platform, item, sku,
    /// campaign, ip, ua, ref); `None` when one is malformed.
    fn from_fields(f: [&'a str; 10]) -> Option<Self> {
        let [ts, note, creator, platform, item, sku, campaign, ip, ua, rf] = f;
        if note.is_empty() || creator.is_empty() {
            return None;
        }
        let some = |s: &'a str| if s.is_empty() { None } else { Some(s) };
        Some(PackedRecord {
            ts_ms: ts.parse().ok()?,
            note_id: note,
            creator_id: creator,
            product: Product {
                platform: Platform::from_name(platform)?,
                item_id: item.parse().ok()?,
                sku_id: if sku.is_empty() { None } else { Some(sku.parse().ok()?) },
            },
            campaign: some(campaign),
            ip_hash: ip,
            ua,
            referrer_host: some(rf),
        })
    }
}

impl From<PackedRecord<'_>> for ClickRecord {
    fn from(r: PackedRecord<'_>) -> Self {
        ClickRecord {
            ts_ms: r.ts_ms,
            note_id: r.note_id.to_owned(),
            creator_id: r.creator_id.to_owned(),
            product: r.product,
            campaign: r.campaign.map(str::to_owned),
            ip_hash: r.ip_hash.to_owned(),
            ua: r.ua.to_owned(),
            referrer_host: r.referrer_host.map(str::to_owned),
        }
    }
}

/// The fields of a packed record, borrowed.
struct PackedFields<'a> {
    ts_ms: u64,
    note_id: &'a str,
    creator_id: &'a str,
    product: Product,
    campaign: Option<&'a str>,
    ip_hash: &'a str,
    ua: &'a str,
    referrer_host: Option<&'a str>,
}

/// The one place the v1 packed format is written (see the module doc).
fn pack(f: &PackedFields<'_>) -> String {
    let mut num = itoa::Buffer::new();
    let mut out = String::with_capacity(128);
    out.push_str(VERSION);
    out.push('|');
    out.push_str(num.format(f.ts_ms));
    for part in [f.note_id, f.creator_id, f.product.platform.as_str()] {
        out.push('|');
        out.push_str(part);
    }
    out.push('|');
    out.push_str(num.format(f.product.item_id));
    out.push('|');
    if let Some(sku) = f.product.sku_id {
        out.push_str(num.format(sku));
    }
    for part in [f.campaign.unwrap_or(""), f.ip_hash, f.ua, f.referrer_host.unwrap_or("")] {
        out.push('|');
        out.push_str(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_round_trip_and_rejects() {
        let f = [
            "1796018486772",
            "65682d4500000000380339a5",
            "c1",
            "tmall",
            "43724784272",
            "4611686062152172176",
            "",
            "0011223344556677",
            "app",
            "www.xiaohongshu.com",
        ];
        let r = ClickRecord::from_stream_fields(f).unwrap();
        let packed = r.to_packed();
        assert_eq!(
            packed,
            "1|1796018486772|65682d4500000000380339a5|c1|tmall|43724784272|4611686062152172176||0011223344556677|app|www.xiaohongshu.com"
        );
        assert_eq!(ClickRecord::from_packed(&packed), Some(r));
        assert_eq!(ClickRecord::from_packed("2|x"), None);
        assert_eq!(ClickRecord::from_packed(&format!("{packed}|extra")), None);
        let mut bad = f;
        bad[3] = "ebay";
        assert_eq!(ClickRecord::from_stream_fields(bad), None);
        // The borrowed view reads the same fields, without the campaign (empty) and with the sku.
        let view = PackedRecord::parse(&packed).unwrap();
        assert_eq!((view.ts_ms, view.note_id, view.creator_id), (1796018486772, "65682d4500000000380339a5", "c1"));
        assert_eq!(
            (view.product.item_id, view.product.sku_id, view.campaign),
            (43724784272, Some(4611686062152172176), None)
        );
        assert_eq!(
            (view.ip_hash, view.ua, view.referrer_host),
            ("0011223344556677", "app", Some("www.xiaohongshu.com"))
        );
        for broken in ["", "1", "1|x|n|c|tmall|1||||app|", "1|1|n|c|tmall|x||||app|", "1|1||c|tmall|1||||app|"] {
            assert_eq!(PackedRecord::parse(broken), None, "{broken:?}");
        }
    }
}
