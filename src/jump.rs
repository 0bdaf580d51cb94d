//! Jump-URL signature v1: the query parameters linkloop appends to a product page.
//!
//! Owns: building a jump URL from `(platform, item_id, sku_id)` plus a click
//! token, and verifying one offline. The product page comes only from
//! [`crate::platform::product_page`]; nothing from a request is ever copied into
//! the URL, so there is no open redirect. Never does I/O.
//!
//! Parameters, always in this order after the product page's own query
//! (spec and test vectors in `docs/jump-url.md`):
//!
//! | name | value |
//! |---|---|
//! | `ll_v` | format version, `1` |
//! | `ll_ct` | click token, UUID v7, canonical hyphenated lowercase form (RFC 9562 §4) |
//! | `ll_ts` | click time, Unix milliseconds |
//! | `ll_kid` | key id, decimal 0–255 |
//! | `ll_sig` | base64url, no padding (RFC 4648 §5), of the first 16 bytes of HMAC-SHA256(key, message) |
//!
//! message = `"linkloop/jump/v1\0" || platform "|" item_id "|" sku_id-or-empty "|" click_token "|" ll_ts`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::platform::{self, Product};
use crate::signing::Keyring;

/// Format version carried in `ll_v`. NEVER CHANGE for v1.
pub const VERSION: u8 = 1;
const MAC_CONTEXT: &[u8] = b"linkloop/jump/v1\0";
const TAG_BYTES: usize = 16;

/// What a valid jump URL proves: linkloop issued this click token for this product at this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JumpClaims {
    /// The product the shopper was sent to.
    pub product: Product,
    /// The click token (UUID v7).
    pub click_token: Uuid,
    /// Click time, Unix milliseconds.
    pub ts_ms: u64,
    /// Key id that signed it.
    pub kid: u8,
}

/// An invalid jump URL; the reason is for diagnostics (`verify-jump` prints it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidJump {
    /// The `ll_*` parameters are missing, out of order or malformed.
    #[error("jump parameters missing or malformed")]
    Params,
    /// The part before the parameters is not a canonical product page.
    #[error("not a canonical product page")]
    Page,
    /// The key id is not on the keyring.
    #[error("unknown key id")]
    UnknownKey,
    /// The signature does not match.
    #[error("bad signature")]
    Signature,
}

/// Builds the jump URL for a click: the canonical product page (mobile form when
/// `mobile`) followed by the `ll_*` parameters, signed with the active key.
pub fn build(product: &Product, mobile: bool, click_token: &Uuid, ts_ms: u64, keys: &Keyring) -> String {
    let mut url = platform::product_page(product.platform, product.item_id, product.sku_id, mobile);
    let mut token_buf = Uuid::encode_buffer();
    let token = click_token.hyphenated().encode_lower(&mut token_buf);
    let (kid, tag) = sign(product, token, ts_ms, keys);
    url.push(if url.contains('?') { '&' } else { '?' });
    let mut num = itoa::Buffer::new();
    url.push_str("ll_v=");
    url.push_str(num.format(VERSION));
    url.push_str("&ll_ct=");
    url.push_str(token);
    url.push_str("&ll_ts=");
    url.push_str(num.format(ts_ms));
    url.push_str("&ll_kid=");
    url.push_str(num.format(kid));
    url.push_str("&ll_sig=");
    URL_SAFE_NO_PAD.encode_string(&tag[..TAG_BYTES], &mut url);
    url
}

fn sign(product: &Product, token: &str, ts_ms: u64, keys: &Keyring) -> (u8, [u8; 32]) {
    let msg = message(product, token, ts_ms);
    keys.sign(&[MAC_CONTEXT, msg.as_bytes()])
}

fn message(product: &Product, token: &str, ts_ms: u64) -> String {
    let mut num = itoa::Buffer::new();
    let mut msg = String::with_capacity(96);
    msg.push_str(product.platform.as_str());
    msg.push('|');
    msg.push_str(num.format(product.item_id));
    msg.push('|');
    if let Some(sku) = product.sku_id {
        msg.push_str(num.format(sku));
    }
    msg.push('|');
    msg.push_str(token);
    msg.push('|');
    msg.push_str(num.format(ts_ms));
    msg
}

/// Verifies a whole jump URL as linkloop issued it.
///
/// Errors: [`InvalidJump`]. The page must be byte-for-byte one of the product's
/// canonical pages (desktop or mobile), followed by exactly the five `ll_*` parameters.
pub fn verify(url: &str, keys: &Keyring) -> Result<JumpClaims, InvalidJump> {
    let at = url.rfind("ll_v=").ok_or(InvalidJump::Params)?;
    let (page, params) = url.split_at(at);
    // Exactly the separator `build` writes: `?` when the page has no query yet, else `&`.
    let page = match page.strip_suffix('&') {
        Some(p) if p.contains('?') => p,
        _ => page.strip_suffix('?').filter(|p| !p.contains('?')).ok_or(InvalidJump::Params)?,
    };
    let p = parse_params(params).ok_or(InvalidJump::Params)?;
    let product = platform::parse_product(page).map_err(|_| InvalidJump::Page)?;
    let canonical = [false, true]
        .iter()
        .any(|m| platform::product_page(product.platform, product.item_id, product.sku_id, *m) == page);
    if !canonical {
        return Err(InvalidJump::Page);
    }
    verify_parts(&product, p.token, p.ts_ms, p.kid, p.sig, keys)
}

/// Verifies the signature from its parts, for merchants that keep the
/// parameters separately. `sig` is the `ll_sig` value (base64url, 22 chars).
///
/// Errors: [`InvalidJump::Params`] for a malformed token or signature,
/// [`InvalidJump::UnknownKey`], [`InvalidJump::Signature`].
pub fn verify_parts(
    product: &Product,
    click_token: &str,
    ts_ms: u64,
    kid: u8,
    sig: &str,
    keys: &Keyring,
) -> Result<JumpClaims, InvalidJump> {
    let uuid = Uuid::try_parse(click_token).map_err(|_| InvalidJump::Params)?;
    // Only the canonical lowercase hyphenated form is signed.
    if uuid.hyphenated().to_string() != click_token {
        return Err(InvalidJump::Params);
    }
    let tag = URL_SAFE_NO_PAD.decode(sig).map_err(|_| InvalidJump::Params)?;
    if tag.len() != TAG_BYTES {
        return Err(InvalidJump::Params);
    }
    if !keys.has(kid) {
        return Err(InvalidJump::UnknownKey);
    }
    let msg = message(product, click_token, ts_ms);
    if !keys.verify(kid, &[MAC_CONTEXT, msg.as_bytes()], &tag) {
        return Err(InvalidJump::Signature);
    }
    Ok(JumpClaims { product: *product, click_token: uuid, ts_ms, kid })
}

struct Params<'a> {
    token: &'a str,
    ts_ms: u64,
    kid: u8,
    sig: &'a str,
}

fn parse_params(s: &str) -> Option<Params<'_>> {
    let mut it = s.split('&');
    let mut next = |name: &str| it.next()?.strip_prefix(name)?.strip_prefix('=');
    if next("ll_v")? != "1" {
        return None;
    }
    let token = next("ll_ct")?;
    let ts_ms = decimal(next("ll_ts")?)?;
    let kid = u8::try_from(decimal(next("ll_kid")?)?).ok()?;
    let sig = next("ll_sig")?;
    if it.next().is_some() {
        return None;
    }
    Some(Params { token, ts_ms, kid, sig })
}

/// Canonical decimal: ASCII digits, no sign, no leading zero (except "0").
fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}
