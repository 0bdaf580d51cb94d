//! `jump::verify` on arbitrary input.
//!
//! The first byte picks a mode:
//! - even: the rest (lossy UTF-8) is a jump URL;
//! - odd: the rest is turned into a click (platform, item, SKU, token, time, page form),
//!   built with `jump::build` and verified, so the round trip is fuzzed too.
//!
//! Oracle: whatever verifies is exactly what `jump::build` writes for its claims (desktop
//! or mobile page). One known, reported deviation is tolerated so the run goes on: the
//! `?`/`&` before `ll_v=` may be the other one (tests/api/props.rs `jump_separator_swap_fails`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use linkloop::platform::{Platform, Product};

#[path = "common.rs"]
mod common;

fn take<const N: usize>(data: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = N.min(data.len());
    out[..n].copy_from_slice(&data[..n]);
    *data = &data[n..];
    out
}

/// The URL with the separator before `ll_v=` set to what `build` writes.
fn normalise_separator(url: &str) -> String {
    match url.rfind("ll_v=") {
        Some(at) if at > 0 => {
            let page = &url[..at - 1];
            let sep = if page.contains('?') { '&' } else { '?' };
            format!("{page}{sep}{}", &url[at..])
        }
        _ => url.to_owned(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else { return };
    let keys = common::ring(1);
    if mode % 2 == 0 {
        let url = String::from_utf8_lossy(rest);
        if let Ok(c) = linkloop::jump::verify(&url, &keys) {
            let signer = common::ring(c.kid);
            let built: Vec<String> = [false, true]
                .iter()
                .map(|m| linkloop::jump::build(&c.product, *m, &c.click_token, c.ts_ms, &signer))
                .collect();
            let url = normalise_separator(&url);
            assert!(built.contains(&url), "verified {url} is not what build writes: {built:?}");
        }
        return;
    }
    let [p, m, k] = take::<3>(&mut rest);
    let item = u64::from_le_bytes(take::<8>(&mut rest));
    let sku = u64::from_le_bytes(take::<8>(&mut rest));
    let token = uuid::Uuid::from_bytes(take::<16>(&mut rest));
    let ts_ms = u64::from_le_bytes(take::<8>(&mut rest));
    let platform = Platform::ALL[usize::from(p % 3)];
    let sku_id = (m & 2 != 0).then_some(sku);
    let product = Product { platform, item_id: item, sku_id };
    let signer = common::ring(k);
    let url = linkloop::jump::build(&product, m & 1 != 0, &token, ts_ms, &signer);
    let verified = linkloop::jump::verify(&url, &keys);
    // Products that `parse_product` can produce (ids of 1..=19 digits, no JD SKU) round-trip.
    let valid_id = |id: u64| (1..=9_999_999_999_999_999_999).contains(&id);
    if valid_id(item) && sku_id.is_none_or(valid_id) && !(platform == Platform::Jd && sku_id.is_some()) {
        let c = verified.unwrap_or_else(|e| panic!("{url} does not verify: {e}"));
        assert_eq!((c.product, c.click_token, c.ts_ms), (product, token, ts_ms), "{url}");
    }
});
