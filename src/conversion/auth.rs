//! Merchant authentication for conversion callbacks (Stripe / Standard Webhooks style).
//!
//! Each request carries `Linkloop-Merchant: {merchant_id}` and
//! `Linkloop-Signature: t={unix_seconds},k={kid},v1={hex}` where
//! `hex = lowercase hex of HMAC-SHA256(secret[kid], "{t}." || raw_body)`.
//! The signature is checked on the raw bytes, before any JSON parsing, in
//! constant time; `t` must be within the tolerance window (default 300 s) of
//! our clock. A replay inside the window is harmless: idempotency (see
//! `docs/conversions.md`) returns the original result without counting again.
//!
//! The postback form signs a canonical query instead of a body ([`canonical_query`]).

use std::collections::HashMap;
use std::sync::Arc;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::config::KeyConfig;
use crate::platform::Platform;
use crate::signing::Keyring;

/// Header naming the merchant.
pub const MERCHANT_HEADER: &str = "linkloop-merchant";
/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "linkloop-signature";
/// The `WWW-Authenticate` challenge of a callback's `401` (RFC 9110 §11.6.1): the
/// signature scheme this module checks, by its header's name.
pub const SIGNATURE_CHALLENGE: &str = "Linkloop-Signature realm=\"linkloop\"";

/// `[[merchants]]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantConfig {
    /// Merchant id, `[A-Za-z0-9_.-]{1,64}`.
    pub id: String,
    /// Platforms whose clicks this merchant may report on.
    pub platforms: Vec<Platform>,
    /// Attribution window for this merchant, days. Default: the global `attribution_window_days`.
    #[serde(default)]
    pub attribution_window_days: Option<u32>,
    /// Active secrets by kid (several during rotation), each at least 32 bytes.
    pub secrets: Vec<KeyConfig>,
}

/// A configured merchant.
#[derive(Debug)]
pub struct Merchant {
    /// Merchant id.
    pub id: String,
    /// Platforms it may report on.
    pub platforms: Vec<Platform>,
    /// Attribution window, ms.
    pub window_ms: u64,
    keys: Keyring,
}

/// Why a callback's authentication failed; `code()` is the API error code (401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Linkloop-Merchant` or `Linkloop-Signature` header.
    #[error(
        "missing merchant or signature (Linkloop-Merchant and Linkloop-Signature headers; on /v1/postback, the merchant, t, k and sig query parameters)"
    )]
    Missing,
    /// The merchant id is not configured.
    #[error("unknown merchant")]
    UnknownMerchant,
    /// The signature header is not `t=…,k=…,v1=…`.
    #[error(
        "malformed signature: expected the Linkloop-Signature header t=<unix seconds>,k=<kid>,v1=<hex> (on /v1/postback: query parameters t=<unix seconds>, k=<kid>, sig=<hex>)"
    )]
    Malformed,
    /// `t` is outside the tolerance window.
    #[error("timestamp outside the tolerance window")]
    Stale,
    /// The signature does not match (or its kid is not active).
    #[error("signature does not match")]
    Mismatch,
}

impl AuthError {
    /// Stable API error code.
    pub const fn code(self) -> &'static str {
        match self {
            AuthError::Missing => "missing_signature",
            AuthError::UnknownMerchant => "unknown_merchant",
            AuthError::Malformed => "malformed_signature",
            AuthError::Stale => "stale_timestamp",
            AuthError::Mismatch => "bad_signature",
        }
    }
}

/// All configured merchants by id.
#[derive(Debug, Default)]
pub struct Merchants {
    by_id: HashMap<String, Arc<Merchant>>,
    /// Tolerance of the signature timestamp, seconds.
    pub tolerance_s: u64,
}

impl Merchants {
    /// Builds the registry. Errors: a bad id, an empty platform list, a bad keyring.
    pub fn new(configs: &[MerchantConfig], default_window_days: u32, tolerance_s: u64) -> anyhow::Result<Merchants> {
        let mut by_id = HashMap::new();
        for c in configs {
            if c.id.is_empty()
                || c.id.len() > 64
                || !c.id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            {
                anyhow::bail!("merchants: id {:?} must be [A-Za-z0-9_.-]{{1,64}}", c.id);
            }
            if c.platforms.is_empty() {
                anyhow::bail!("merchants.{}: platforms must not be empty", c.id);
            }
            let pairs: Vec<(u8, Vec<u8>)> =
                c.secrets.iter().map(|k| (k.kid, k.secret.expose_secret().as_bytes().to_vec())).collect();
            let active = c.secrets.iter().map(|k| k.kid).max().unwrap_or(0);
            let keys = Keyring::new(&pairs, active).map_err(|e| anyhow::anyhow!("merchants.{}.secrets: {e}", c.id))?;
            let days = c.attribution_window_days.unwrap_or(default_window_days);
            if days == 0 || days > default_window_days {
                anyhow::bail!(
                    "merchants.{}: attribution_window_days must be 1..={default_window_days} (click records are kept for the global window + grace)",
                    c.id
                );
            }
            let days = u64::from(days);
            let m = Merchant { id: c.id.clone(), platforms: c.platforms.clone(), window_ms: days * 86_400_000, keys };
            if by_id.insert(c.id.clone(), Arc::new(m)).is_some() {
                anyhow::bail!("merchants: id {:?} appears twice", c.id);
            }
        }
        Ok(Merchants { by_id, tolerance_s })
    }

    /// Looks a merchant up by id.
    pub fn get(&self, id: &str) -> Option<Arc<Merchant>> {
        self.by_id.get(id).cloned()
    }

    /// Authenticates a callback: merchant header, signature header, raw body, now (Unix s).
    ///
    /// Errors: [`AuthError`].
    pub fn authenticate(
        &self,
        merchant: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now_s: u64,
    ) -> Result<Arc<Merchant>, AuthError> {
        let (Some(id), Some(sig)) = (merchant, signature) else { return Err(AuthError::Missing) };
        let m = self.get(id).ok_or(AuthError::UnknownMerchant)?;
        let parsed = parse_signature_header(sig).ok_or(AuthError::Malformed)?;
        if now_s.abs_diff(parsed.t) > self.tolerance_s {
            return Err(AuthError::Stale);
        }
        let t = parsed.t.to_string();
        if m.keys.verify(parsed.kid, &[t.as_bytes(), b".", body], &parsed.mac) {
            Ok(m)
        } else {
            Err(AuthError::Mismatch)
        }
    }

    /// Authenticates a postback: `params` are the decoded query pairs, including
    /// `merchant`, `t`, `k` and `sig` (hex HMAC over [`canonical_query`]).
    ///
    /// Errors: [`AuthError`].
    pub fn authenticate_postback(&self, params: &[(String, String)], now_s: u64) -> Result<Arc<Merchant>, AuthError> {
        let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let (Some(id), Some(sig)) = (get("merchant"), get("sig")) else { return Err(AuthError::Missing) };
        // Each signing parameter exactly once, checked before any copy is used: with two
        // `merchant`s (or `t`s, `k`s) the key and the checked values would depend on which
        // copy a reader takes.
        if ["merchant", "t", "k", "sig"].iter().any(|name| params.iter().filter(|(k, _)| k == name).count() != 1) {
            return Err(AuthError::Malformed);
        }
        let m = self.get(id).ok_or(AuthError::UnknownMerchant)?;
        let t: u64 = get("t").and_then(|t| t.parse().ok()).ok_or(AuthError::Malformed)?;
        let kid: u8 = get("k").and_then(|k| k.parse().ok()).ok_or(AuthError::Malformed)?;
        let mac = hex::decode(sig).ok().filter(|m| m.len() == 32).ok_or(AuthError::Malformed)?;
        if now_s.abs_diff(t) > self.tolerance_s {
            return Err(AuthError::Stale);
        }
        let canonical = canonical_query(params);
        if m.keys.verify(kid, &[canonical.as_bytes()], &mac) { Ok(m) } else { Err(AuthError::Mismatch) }
    }
}

struct ParsedSignature {
    t: u64,
    kid: u8,
    mac: Vec<u8>,
}

fn parse_signature_header(h: &str) -> Option<ParsedSignature> {
    let (mut t, mut kid, mut mac) = (None, None, None);
    for part in h.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "t" if t.is_none() => t = Some(v.parse().ok()?),
            "k" if kid.is_none() => kid = Some(v.parse().ok()?),
            "v1" if mac.is_none() => mac = Some(hex::decode(v).ok().filter(|m| m.len() == 32)?),
            _ => return None,
        }
    }
    Some(ParsedSignature { t: t?, kid: kid?, mac: mac? })
}

/// Characters left unescaped in the canonical query: RFC 3986 unreserved (`A-Z a-z 0-9 - . _ ~`).
const QUERY_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The postback's canonical query: every pair except `sig`, sorted by name then
/// value, each name and value percent-encoded (RFC 3986 unreserved kept, UTF-8,
/// uppercase hex), joined as `name=value` with `&`.
pub fn canonical_query(params: &[(String, String)]) -> String {
    let mut pairs: Vec<(&str, &str)> =
        params.iter().filter(|(k, _)| k != "sig").map(|(k, v)| (k.as_str(), v.as_str())).collect();
    pairs.sort_unstable();
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.extend(utf8_percent_encode(k, QUERY_ESCAPE));
        out.push('=');
        out.extend(utf8_percent_encode(v, QUERY_ESCAPE));
    }
    out
}

/// Signs a callback body: the `Linkloop-Signature` header value for `secret`, `kid` and time `t`.
pub fn sign_body(secret: &[u8], kid: u8, t: u64, body: &[u8]) -> String {
    format!("t={t},k={kid},v1={}", hex::encode(hmac_bytes(secret, &[t.to_string().as_bytes(), b".", body])))
}

/// Signs a postback: the `sig` value for the canonical query of `params`.
pub fn sign_postback(secret: &[u8], params: &[(String, String)]) -> String {
    hex::encode(hmac_bytes(secret, &[canonical_query(params).as_bytes()]))
}

fn hmac_bytes(secret: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::Mac;
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else { return [0; 32] };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    const S1: &str = "merchant-secret-one-0123456789abcdef-0123";
    const S2: &str = "merchant-secret-two-0123456789abcdef-0123";

    fn merchants() -> Merchants {
        let c = MerchantConfig {
            id: "m1".into(),
            platforms: vec![Platform::Taobao],
            attribution_window_days: None,
            secrets: vec![
                KeyConfig { kid: 1, secret: SecretString::from(S1.to_owned()) },
                KeyConfig { kid: 2, secret: SecretString::from(S2.to_owned()) },
            ],
        };
        Merchants::new(&[c], 7, 300).unwrap()
    }

    #[test]
    fn signature_checks() {
        let m = merchants();
        let body = br#"{"a":1}"#;
        let now = 1_796_000_000;
        let ok = sign_body(S1.as_bytes(), 1, now, body);
        assert!(m.authenticate(Some("m1"), Some(&ok), body, now).is_ok());
        // Rotation: kid 2 is also active.
        let ok2 = sign_body(S2.as_bytes(), 2, now, body);
        assert!(m.authenticate(Some("m1"), Some(&ok2), body, now + 300).is_ok());
        assert_eq!(m.authenticate(Some("m1"), Some(&ok2), body, now + 301).unwrap_err(), AuthError::Stale);
        assert_eq!(m.authenticate(Some("m1"), Some(&ok), body, now - 301).unwrap_err(), AuthError::Stale);
        let wrong = sign_body(b"wrong-secret-0123456789abcdef-0123456789", 1, now, body);
        assert_eq!(m.authenticate(Some("m1"), Some(&wrong), body, now).unwrap_err(), AuthError::Mismatch);
        assert_eq!(m.authenticate(Some("m1"), Some(&ok), br#"{"a": 1}"#, now).unwrap_err(), AuthError::Mismatch);
        assert_eq!(m.authenticate(Some("m2"), Some(&ok), body, now).unwrap_err(), AuthError::UnknownMerchant);
        assert_eq!(m.authenticate(None, Some(&ok), body, now).unwrap_err(), AuthError::Missing);
        assert_eq!(m.authenticate(Some("m1"), Some("t=1,v1=zz"), body, now).unwrap_err(), AuthError::Malformed);
        assert_eq!(
            m.authenticate(Some("m1"), Some(&format!("{ok},x=1")), body, now).unwrap_err(),
            AuthError::Malformed
        );
    }

    #[test]
    fn postback_canonical_query_and_signature() {
        let mut p: Vec<(String, String)> = [("t", "1796000000"), ("merchant", "m1"), ("k", "1"), ("order_id", "A B/é")]
            .into_iter()
            .map(|(a, b)| (a.into(), b.into()))
            .collect();
        assert_eq!(canonical_query(&p), "k=1&merchant=m1&order_id=A%20B%2F%C3%A9&t=1796000000");
        let sig = sign_postback(S1.as_bytes(), &p);
        p.push(("sig".into(), sig));
        let m = merchants();
        assert!(m.authenticate_postback(&p, 1_796_000_100).is_ok());
        // A signing parameter twice, even signed over and with the same value: refused.
        for name in ["merchant", "t", "k"] {
            let mut twice: Vec<(String, String)> = p.iter().filter(|(k, _)| k != "sig").cloned().collect();
            let copy = twice.iter().find(|(k, _)| k == name).cloned().unwrap();
            twice.push(copy);
            let sig = sign_postback(S1.as_bytes(), &twice);
            twice.push(("sig".into(), sig));
            assert_eq!(m.authenticate_postback(&twice, 1_796_000_100).unwrap_err(), AuthError::Malformed, "{name}");
        }
        // Two different merchants, the first unknown: still malformed, not a lookup of either.
        let mut two: Vec<(String, String)> = p.iter().filter(|(k, _)| k != "sig").cloned().collect();
        two.insert(0, ("merchant".into(), "nosuch".into()));
        let sig = sign_postback(S1.as_bytes(), &two);
        two.push(("sig".into(), sig));
        assert_eq!(m.authenticate_postback(&two, 1_796_000_100).unwrap_err(), AuthError::Malformed);
        p[3].1 = "A B/e".into();
        assert_eq!(m.authenticate_postback(&p, 1_796_000_100).unwrap_err(), AuthError::Mismatch);
    }
}
