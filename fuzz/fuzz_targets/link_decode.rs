//! `linkloop::link::verify` on arbitrary input.
//!
//! The first byte picks a mode:
//! - even: the rest (lossy UTF-8) is a link string, verified as `/j/{link}` would be;
//! - odd: the rest is a link *body*, signed here with the right tag (`"linkloop/link/v1\0"`
//!   context, docs/link-format.md) so the strict body parser behind the MAC is reached.
//!
//! Oracle: whatever verifies re-encodes to exactly the same string (one canonical encoding
//! per claim set), and fits `MAX_LINK_CHARS`.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use linkloop::link::{MAX_LINK_CHARS, TAG_BYTES, encode, verify};

#[path = "common.rs"]
mod common;

const MAC_CONTEXT: &[u8] = b"linkloop/link/v1\0";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let link = if mode % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let kid = rest.get(1).copied().unwrap_or(1);
        let keys = common::ring(kid);
        let (_, tag) = keys.sign(&[MAC_CONTEXT, rest]);
        let mut raw = rest.to_vec();
        raw.extend_from_slice(&tag[..TAG_BYTES]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    };
    let keys = common::ring(1);
    if let Ok(claims) = verify(&link, &keys) {
        assert!(link.len() <= MAX_LINK_CHARS);
        // The kid is byte 1 of the decoded link; re-sign with it.
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&link).expect("verified link decodes");
        let again = encode(&claims, &common::ring(raw[1])).expect("verified claims encode");
        assert_eq!(again, link, "a verified link is not the canonical encoding of its claims: {claims:?}");
    }
});
