//! Conversions: orders a merchant platform reports against click tokens.
//!
//! Owns: the callback body's shape and validation ([`ConversionInput`] →
//! [`Conversion`]), the content fingerprint that makes delivery idempotent, and
//! merchant authentication ([`auth`]). The atomic attribution + idempotency +
//! GMV arithmetic runs in Redis (`crate::store::conversions`). Never does I/O.
//!
//! Wire format and status codes: `docs/conversions.md`.

use serde::Deserialize;
use sha2::{Digest, Sha256};

pub mod auth;

/// Longest `order_id`, `sub_order_id` or `refund_id`, bytes.
pub const MAX_ID_BYTES: usize = 64;
/// Largest `amount` accepted, minor units (10^12 fen = 10 billion yuan).
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// Order status as reported by the merchant. Wire names `paid`, `refunded`, `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The order was paid: counts as a conversion, adds `amount` to GMV.
    Paid,
    /// A (partial) refund of `amount`: subtracts it from GMV; the sum of refunds never exceeds the paid amount.
    Refunded,
    /// The order was cancelled: before payment it only closes the order; after payment it reverses what is left.
    Cancelled,
}

impl Status {
    /// Wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Paid => "paid",
            Status::Refunded => "refunded",
            Status::Cancelled => "cancelled",
        }
    }
}

/// The JSON body of `POST /v1/conversions` (and each item of the batch form).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversionInput {
    /// Click token from the jump URL's `ll_ct` (UUID, canonical lowercase).
    pub click_token: String,
    /// Merchant's order id, `[A-Za-z0-9_.-]{1,64}`.
    pub order_id: String,
    /// Optional order line id, same shape.
    #[serde(default)]
    pub sub_order_id: Option<String>,
    /// `paid`, `refunded` or `cancelled`.
    pub status: Status,
    /// The platform's own status string, kept verbatim (≤ 64 printable ASCII chars).
    #[serde(default)]
    pub raw_status: Option<String>,
    /// Optional refund id: distinguishes several partial refunds of one order line.
    #[serde(default)]
    pub refund_id: Option<String>,
    /// Amount in the currency's minor unit (fen for CNY), 0..=10^12.
    pub amount: i64,
    /// ISO 4217 code, default `CNY`. A new report must name a currency with a minor unit
    /// ([`has_minor_unit`]); that rule is applied by the store after its duplicate check.
    #[serde(default)]
    pub currency: Option<String>,
    /// When the order event happened, RFC 3339.
    pub occurred_at: String,
    /// Optional item id; when sent it must equal the click's item.
    #[serde(default, deserialize_with = "string_or_number")]
    pub item_id: Option<String>,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    /// `item_id` as a JSON string or a non-negative integer; anything else (a float, a
    /// negative or an integer too big for u64) is an error that names the field.
    struct ItemId;
    const EXPECTED: &str = "item_id: a decimal item id, as a string or an integer";
    impl<'de> serde::de::Visitor<'de> for ItemId {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(EXPECTED)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(self)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_owned()))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        // A negative, fractional or oversized number is passed on as text, so validation
        // refuses it like the same value sent as a string (`invalid_field`, field `item_id`).
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
    }
    d.deserialize_option(ItemId)
}

/// A validated conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    /// Click token, canonical text.
    pub click_token: String,
    /// Order id.
    pub order_id: String,
    /// Order line id, empty when absent.
    pub sub_order_id: String,
    /// Status.
    pub status: Status,
    /// Platform's raw status, empty when absent.
    pub raw_status: String,
    /// Refund id, empty when absent.
    pub refund_id: String,
    /// Amount, minor units.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Event time, Unix ms.
    pub occurred_at_ms: u64,
    /// Item id the merchant says was bought, if sent.
    pub item_id: Option<u64>,
}

/// A field that failed validation: the field name and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// JSON field name.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

/// Whether ISO 4217 gives `code` a minor unit (CNY: 2, the fen; JPY: 0): amounts are in
/// minor units, so a new report must name such a currency. ISO 4217 gives none to `XXX`
/// (no currency), `XTS` (testing), metals (`XAU`, `XAG`, `XPT`, `XPD`) and units of account
/// (`XDR`, `XBA`–`XBD`, `XSU`, `XUA`). Reports accepted before this rule stay duplicates on
/// re-delivery, which is why the store applies it after its duplicate check.
pub fn has_minor_unit(code: &str) -> bool {
    iso_currency::Currency::from_code(code).and_then(|c| c.exponent()).is_some()
}

fn err(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError { field, message: message.into() }
}

fn check_id(field: &'static str, s: &str) -> Result<(), FieldError> {
    if s.is_empty() || s.len() > MAX_ID_BYTES {
        return Err(err(field, format!("must be 1–{MAX_ID_BYTES} characters")));
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return Err(err(field, "may contain only letters, digits, '_', '.' and '-'"));
    }
    Ok(())
}

impl ConversionInput {
    /// Validates every field. Errors: the first [`FieldError`], naming the field.
    pub fn validate(self) -> Result<Conversion, FieldError> {
        let token = uuid::Uuid::try_parse(&self.click_token).map_err(|_| err("click_token", "must be a UUID"))?;
        if token.hyphenated().to_string() != self.click_token {
            return Err(err("click_token", "must be the canonical lowercase hyphenated form"));
        }
        check_id("order_id", &self.order_id)?;
        let sub_order_id = self.sub_order_id.unwrap_or_default();
        if !sub_order_id.is_empty() {
            check_id("sub_order_id", &sub_order_id)?;
        }
        let refund_id = self.refund_id.unwrap_or_default();
        if !refund_id.is_empty() {
            check_id("refund_id", &refund_id)?;
            if self.status != Status::Refunded {
                return Err(err("refund_id", "only allowed with status refunded"));
            }
        }
        let raw_status = self.raw_status.unwrap_or_default();
        if raw_status.len() > 64 || !raw_status.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(err("raw_status", "at most 64 printable ASCII characters"));
        }
        if !(0..=MAX_AMOUNT).contains(&self.amount) {
            return Err(err("amount", "must be an integer from 0 to 10^12 (minor units)"));
        }
        if self.status != Status::Cancelled && self.amount == 0 {
            return Err(err("amount", "must be positive for paid and refunded"));
        }
        let currency = self.currency.unwrap_or_else(|| "CNY".to_owned());
        if iso_currency::Currency::from_code(&currency).is_none() {
            return Err(err("currency", "must be an ISO 4217 code such as CNY"));
        }
        let occurred = chrono::DateTime::parse_from_rfc3339(&self.occurred_at)
            .map_err(|_| err("occurred_at", "must be an RFC 3339 timestamp, e.g. 2026-11-30T12:00:00+08:00"))?;
        let occurred_at_ms =
            u64::try_from(occurred.timestamp_millis()).map_err(|_| err("occurred_at", "before 1970"))?;
        let item_id = match self.item_id {
            None => None,
            Some(s) if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) => {
                Some(s.parse().map_err(|_| err("item_id", "out of range"))?)
            }
            Some(_) => return Err(err("item_id", "must be a decimal item id")),
        };
        Ok(Conversion {
            click_token: self.click_token,
            order_id: self.order_id,
            sub_order_id,
            status: self.status,
            raw_status,
            refund_id,
            amount: self.amount,
            currency,
            occurred_at_ms,
            item_id,
        })
    }
}

impl Conversion {
    /// SHA-256 (hex) of the canonical content: what "the same report" means for
    /// idempotency. Independent of JSON formatting and field order.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.click_token.as_str(),
            &self.order_id,
            &self.sub_order_id,
            self.status.as_str(),
            &self.raw_status,
            &self.refund_id,
            &self.amount.to_string(),
            &self.currency,
            &self.occurred_at_ms.to_string(),
            &self.item_id.map(|i| i.to_string()).unwrap_or_default(),
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        hex::encode(h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> ConversionInput {
        serde_json::from_str(
            r#"{"click_token":"01a22b0b-3df4-779a-a659-5b093b29117d","order_id":"O-1","status":"paid",
                "amount":12900,"occurred_at":"2026-11-30T12:00:00+08:00","item_id":533000737918}"#,
        )
        .unwrap()
    }

    #[test]
    fn item_id_is_a_string_or_an_integer_and_errors_name_it() {
        let parse = |item: &str| {
            let body =
                format!(r#"{{"click_token":"t","order_id":"O-1","status":"paid","amount":1,"occurred_at":"x"{item}}}"#);
            serde_json::from_str::<ConversionInput>(&body).map(|i| i.item_id).map_err(|e| e.to_string())
        };
        assert_eq!(parse(r#","item_id":"533000737918""#), Ok(Some("533000737918".to_owned())));
        assert_eq!(parse(r#","item_id":533000737918"#), Ok(Some("533000737918".to_owned())));
        assert_eq!(parse(r#","item_id":null"#), Ok(None));
        assert_eq!(parse(""), Ok(None));
        for bad in ["true", "[1]", "{}"] {
            let e = parse(&format!(r#","item_id":{bad}"#)).unwrap_err();
            assert!(e.contains("item_id: a decimal item id"), "{bad}: {e}");
        }
        // Numbers that are no item id fail validation on the field, as the same text would.
        for bad in ["123456789012345678901234567890", "1.5", "-3"] {
            let mut i = input();
            i.item_id = parse(&format!(r#","item_id":{bad}"#)).unwrap();
            assert_eq!(i.validate().unwrap_err().field, "item_id", "{bad}");
        }
    }

    #[test]
    fn validates_and_fingerprints() {
        let c = input().validate().unwrap();
        assert_eq!(c.currency, "CNY");
        assert_eq!(c.occurred_at_ms, 1_796_011_200_000);
        assert_eq!(c.item_id, Some(533000737918));
        assert_eq!(c.fingerprint(), input().validate().unwrap().fingerprint());
        let mut other = input();
        other.amount = 12901;
        assert_ne!(other.validate().unwrap().fingerprint(), c.fingerprint());
    }

    #[test]
    fn minor_units_come_from_iso_4217() {
        for code in ["CNY", "JPY", "KWD", "CLF", "USD"] {
            assert!(has_minor_unit(code), "{code}");
        }
        // No currency, testing, gold, SDR; not a code at all.
        for code in ["XXX", "XTS", "XAU", "XDR", "QQQ", "cny"] {
            assert!(!has_minor_unit(code), "{code}");
        }
    }

    #[test]
    fn bad_fields_are_named() {
        type Mutation = fn(&mut ConversionInput);
        let cases: Vec<(Mutation, &str)> = vec![
            (|i| i.click_token = "nope".into(), "click_token"),
            (|i| i.click_token = "01A22B0B-3DF4-779A-A659-5B093B29117D".into(), "click_token"),
            (|i| i.order_id = "".into(), "order_id"),
            (|i| i.order_id = "a b".into(), "order_id"),
            (|i| i.amount = -1, "amount"),
            (|i| i.amount = 0, "amount"),
            (|i| i.currency = Some("XYZ".into()), "currency"),
            (|i| i.currency = Some("cny".into()), "currency"),
            (|i| i.occurred_at = "yesterday".into(), "occurred_at"),
            (|i| i.item_id = Some("12a".into()), "item_id"),
            (|i| i.refund_id = Some("r1".into()), "refund_id"),
            (|i| i.raw_status = Some("\n".into()), "raw_status"),
        ];
        for (mutate, field) in cases {
            let mut i = input();
            mutate(&mut i);
            assert_eq!(i.validate().unwrap_err().field, field);
        }
    }
}
