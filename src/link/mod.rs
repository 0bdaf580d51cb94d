//! Tracked-link wire format v1: the signed token inside `/j/{link}`.
//!
//! Owns: encoding claims into a link and verifying a link back into claims.
//! The link is stateless: it carries everything the redirect needs, so the hot
//! path reads nothing from Redis. Never does I/O. Callers learn only that a
//! link is invalid; the [`InvalidLinkReason`] exists for metrics, never for
//! shoppers.
//!
//! Layout (all integers big-endian or LEB128; spec and test vectors in
//! `docs/link-format.md`):
//!
//! ```text
//! version:u8 = 1 | kid:u8 | issued_at:u32 (Unix seconds) | platform:u8 | flags:u8
//! | note_id:[u8;12] (the 24-hex RED id as bytes) | creator_len:u8 | creator:[u8]
//! | item_id:uleb128 | sku_id:uleb128 (if flags&1) | campaign_len:u8 campaign:[u8] (if flags&2)
//! | tag:[u8;16] = HMAC-SHA256(key[kid], "linkloop/link/v1\0" || everything before the tag)[..16]
//! ```
//!
//! Encoded as base64url without padding (RFC 4648 §5). One canonical encoding
//! per claim set: non-canonical base64 (padding, non-zero trailing bits),
//! non-minimal LEB128, unknown flag bits and trailing bytes are all rejected.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::platform::{Platform, Product};

pub mod mint;

use crate::signing::Keyring;
pub use mint::{MintError, MintRequest, Minted, mint};

/// Format version written in byte 0. NEVER CHANGE for v1 links in the wild.
pub const VERSION: u8 = 1;
/// Domain-separation prefix fed to the MAC before the payload. NEVER CHANGE.
const MAC_CONTEXT: &[u8] = b"linkloop/link/v1\0";
/// Tag length in bytes (128 bits).
pub const TAG_BYTES: usize = 16;
/// Longest link string accepted before decoding, in characters.
pub const MAX_LINK_CHARS: usize = 256;
/// Longest creator id, in bytes.
pub const MAX_CREATOR_BYTES: usize = 64;
/// Longest campaign, in bytes.
pub const MAX_CAMPAIGN_BYTES: usize = 32;

const FLAG_SKU: u8 = 0b01;
const FLAG_CAMPAIGN: u8 = 0b10;
/// Fixed header: version, kid, issued_at, platform, flags, note id, creator length.
const HEADER_BYTES: usize = 1 + 1 + 4 + 1 + 1 + 12 + 1;

/// What a tracked link asserts. Built by minting, returned by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkClaims {
    /// RED note id: exactly 24 lowercase hex characters.
    pub note_id: String,
    /// Creator id: 1–64 bytes of `[A-Za-z0-9_.-]`.
    pub creator_id: String,
    /// Platform, item id and optional SKU id the link sends shoppers to.
    pub product: Product,
    /// Optional campaign tag: 1–32 bytes of `[A-Za-z0-9_.-]`.
    pub campaign: Option<String>,
    /// When the link was minted, Unix seconds.
    pub issued_at: u32,
}

/// A claim that cannot be encoded; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ClaimsError {
    /// The JSON/CLI field at fault (`note_id`, `creator_id`, `campaign`).
    pub field: &'static str,
    /// What is wrong with it.
    pub message: &'static str,
}

/// Why a link failed verification: a small fixed set, for metrics labels only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidLinkReason {
    /// Too long, not base64url, or non-canonical base64.
    Encoding,
    /// Too short to hold a header and tag.
    Truncated,
    /// Version byte is not [`VERSION`].
    Version,
    /// The kid is not on the keyring.
    UnknownKey,
    /// The tag does not match.
    Signature,
    /// Signed, but the body does not parse (only a key compromise or a bug gets here).
    Layout,
}

impl InvalidLinkReason {
    /// Stable metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Encoding => "encoding",
            Self::Truncated => "truncated",
            Self::Version => "version",
            Self::UnknownKey => "unknown_key",
            Self::Signature => "signature",
            Self::Layout => "layout",
        }
    }
}

/// An invalid tracked link. Opaque on purpose: show shoppers one "invalid link" page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid tracked link")]
pub struct InvalidLink(pub InvalidLinkReason);

/// Encodes and signs `claims` with the keyring's active key.
///
/// Returns the link string (base64url, no padding; about 71 characters for a
/// 24-hex note, 10-character creator and 12-digit item).
/// Errors: [`ClaimsError`] naming the field when a claim is outside its shape.
pub fn encode(claims: &LinkClaims, keys: &Keyring) -> Result<String, ClaimsError> {
    let note = decode_note_hex(&claims.note_id)
        .ok_or(ClaimsError { field: "note_id", message: "must be a 24-character hex RED note id" })?;
    check_token(&claims.creator_id, MAX_CREATOR_BYTES)
        .map_err(|message| ClaimsError { field: "creator_id", message })?;
    if let Some(c) = &claims.campaign {
        check_token(c, MAX_CAMPAIGN_BYTES).map_err(|message| ClaimsError { field: "campaign", message })?;
    }
    let mut flags = 0;
    if claims.product.sku_id.is_some() {
        flags |= FLAG_SKU;
    }
    if claims.campaign.is_some() {
        flags |= FLAG_CAMPAIGN;
    }
    let mut buf = Vec::with_capacity(HEADER_BYTES + 64 + TAG_BYTES);
    buf.push(VERSION);
    buf.push(keys.active_kid());
    buf.extend_from_slice(&claims.issued_at.to_be_bytes());
    buf.push(claims.product.platform.code());
    buf.push(flags);
    buf.extend_from_slice(&note);
    push_bytes(&mut buf, claims.creator_id.as_bytes());
    push_uleb(&mut buf, claims.product.item_id);
    if let Some(sku) = claims.product.sku_id {
        push_uleb(&mut buf, sku);
    }
    if let Some(c) = &claims.campaign {
        push_bytes(&mut buf, c.as_bytes());
    }
    let (_, tag) = keys.sign(&[MAC_CONTEXT, &buf]);
    buf.extend_from_slice(&tag[..TAG_BYTES]);
    Ok(URL_SAFE_NO_PAD.encode(&buf))
}

/// Verifies a link string and returns its claims.
///
/// Order: length and base64 checks, version, kid, then the tag in constant time,
/// then the strict body parse. Errors: [`InvalidLink`] with the reason.
pub fn verify(link: &str, keys: &Keyring) -> Result<LinkClaims, InvalidLink> {
    use InvalidLinkReason as R;
    if link.len() > MAX_LINK_CHARS {
        return Err(InvalidLink(R::Encoding));
    }
    let raw = URL_SAFE_NO_PAD.decode(link).map_err(|_| InvalidLink(R::Encoding))?;
    if raw.len() < HEADER_BYTES + 2 + TAG_BYTES {
        return Err(InvalidLink(R::Truncated));
    }
    if raw[0] != VERSION {
        return Err(InvalidLink(R::Version));
    }
    let kid = raw[1];
    if !keys.has(kid) {
        return Err(InvalidLink(R::UnknownKey));
    }
    let (body, tag) = raw.split_at(raw.len() - TAG_BYTES);
    if !keys.verify(kid, &[MAC_CONTEXT, body], tag) {
        return Err(InvalidLink(R::Signature));
    }
    parse_body(body).ok_or(InvalidLink(R::Layout))
}

fn parse_body(body: &[u8]) -> Option<LinkClaims> {
    let mut r = Reader(body);
    let _version = r.u8()?;
    let _kid = r.u8()?;
    let issued_at = u32::from_be_bytes(r.take(4)?.try_into().ok()?);
    let platform = Platform::from_code(r.u8()?)?;
    let flags = r.u8()?;
    if flags & !(FLAG_SKU | FLAG_CAMPAIGN) != 0 {
        return None;
    }
    let note = r.take(12)?;
    let note_id = encode_hex(note);
    let creator_id = r.token(MAX_CREATOR_BYTES)?;
    let item_id = r.uleb()?;
    let sku_id = if flags & FLAG_SKU != 0 { Some(r.uleb()?) } else { None };
    let campaign = if flags & FLAG_CAMPAIGN != 0 { Some(r.token(MAX_CAMPAIGN_BYTES)?) } else { None };
    if !r.0.is_empty() {
        return None;
    }
    Some(LinkClaims { note_id, creator_id, product: Product { platform, item_id, sku_id }, campaign, issued_at })
}

/// Checks the `[A-Za-z0-9_.-]{1,max}` shape shared by creator ids and campaigns.
fn check_token(s: &str, max: usize) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.len() > max {
        return Err("too long");
    }
    if !s.bytes().all(is_token_byte) {
        return Err("may contain only letters, digits, '_', '.' and '-'");
    }
    Ok(())
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

fn decode_note_hex(s: &str) -> Option<[u8; 12]> {
    let b = s.as_bytes();
    if b.len() != 24 {
        return None;
    }
    let mut out = [0u8; 12];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = hex_val(pair[0])?;
        let lo = hex_val(pair[1])?;
        out[i] = hi << 4 | lo;
    }
    Some(out)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn encode_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

fn push_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    // Lengths are checked to be <= 64 by the callers.
    buf.push(u8::try_from(b.len()).unwrap_or(u8::MAX));
    buf.extend_from_slice(b);
}

fn push_uleb(buf: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            buf.push(byte);
            return;
        }
        buf.push(byte | 0x80);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn token(&mut self, max: usize) -> Option<String> {
        let len = usize::from(self.u8()?);
        let bytes = self.take(len)?;
        let s = std::str::from_utf8(bytes).ok()?;
        check_token(s, max).ok()?;
        Some(s.to_owned())
    }

    /// Minimal-length unsigned LEB128, at most 10 bytes, no overflow.
    fn uleb(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let byte = self.u8()?;
            let low = u64::from(byte & 0x7f);
            if i == 9 && low > 1 {
                return None;
            }
            v |= low << (7 * i);
            if byte & 0x80 == 0 {
                // A final zero byte after the first is a non-minimal encoding.
                if i > 0 && byte == 0 {
                    return None;
                }
                return Some(v);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::new(&[(1, [7u8; 32]), (2, [9u8; 32])], 1).unwrap()
    }

    fn claims() -> LinkClaims {
        LinkClaims {
            note_id: "65682d4500000000380339a5".into(),
            creator_id: "c000000001".into(),
            product: Product { platform: Platform::Taobao, item_id: 567873872517, sku_id: None },
            campaign: None,
            issued_at: 1_790_000_000,
        }
    }

    #[test]
    fn round_trip_and_size() {
        let link = encode(&claims(), &ring()).unwrap();
        assert!(link.len() <= 97, "{} chars", link.len());
        assert_eq!(verify(&link, &ring()).unwrap(), claims());
        let mut c = claims();
        c.product.sku_id = Some(4611686062152172176);
        c.campaign = Some("spring-2026".into());
        c.product.platform = Platform::Tmall;
        let link = encode(&c, &ring()).unwrap();
        assert_eq!(verify(&link, &ring()).unwrap(), c);
    }

    #[test]
    fn every_single_bit_flip_fails() {
        let link = encode(&claims(), &ring()).unwrap();
        let raw = URL_SAFE_NO_PAD.decode(&link).unwrap();
        for i in 0..raw.len() * 8 {
            let mut t = raw.clone();
            t[i / 8] ^= 1 << (i % 8);
            assert!(verify(&URL_SAFE_NO_PAD.encode(&t), &ring()).is_err(), "bit {i}");
        }
        for n in 0..link.len() {
            assert!(verify(&link[..n], &ring()).is_err());
        }
    }

    #[test]
    fn non_canonical_forms_fail() {
        let link = encode(&claims(), &ring()).unwrap();
        assert_eq!(verify(&format!("{link}="), &ring()), Err(InvalidLink(InvalidLinkReason::Encoding)));
        assert!(verify(&format!("{link}A"), &ring()).is_err());
        let other = Keyring::new(&[(1, [8u8; 32])], 1).unwrap();
        assert_eq!(verify(&link, &other), Err(InvalidLink(InvalidLinkReason::Signature)));
        let only2 = Keyring::new(&[(2, [9u8; 32])], 2).unwrap();
        assert_eq!(verify(&link, &only2), Err(InvalidLink(InvalidLinkReason::UnknownKey)));
        let mut r = Reader(&[0x80, 0x00]);
        assert_eq!(r.uleb(), None);
        let mut r = Reader(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(r.uleb(), Some(u64::MAX));
        let mut r = Reader(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]);
        assert_eq!(r.uleb(), None);
    }

    #[test]
    fn bad_claims_name_the_field() {
        let mut c = claims();
        c.note_id = "65682D4500000000380339A5".into();
        assert_eq!(encode(&c, &ring()).unwrap_err().field, "note_id");
        let mut c = claims();
        c.creator_id = "a b".into();
        assert_eq!(encode(&c, &ring()).unwrap_err().field, "creator_id");
        let mut c = claims();
        c.campaign = Some("x".repeat(33));
        assert_eq!(encode(&c, &ring()).unwrap_err().field, "campaign");
    }
}
