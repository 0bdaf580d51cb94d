//! `platform::parse_product` and `note::parse_note` on arbitrary (lossy UTF-8) text.
//!
//! Oracle: never panics; a product has a non-zero item id, both of its canonical pages
//! parse back to it, and they live on the platforms' own hosts; a note id is 24 lowercase hex.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linkloop::platform::parse_product;

const PAGE_HOSTS: [&str; 6] =
    ["item.taobao.com", "h5.m.taobao.com", "detail.tmall.com", "detail.m.tmall.com", "item.jd.com", "item.m.jd.com"];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(p) = parse_product(&text) {
        assert!(p.item_id > 0, "{text:?}");
        assert!(p.platform != linkloop::platform::Platform::Jd || p.sku_id.is_none(), "{text:?}");
        for mobile in [false, true] {
            let page = p.page(mobile);
            assert_eq!(parse_product(&page), Ok(p), "{text:?} -> {page}");
            let host = url::Url::parse(&page).expect("canonical page parses").host_str().map(str::to_owned);
            assert!(host.as_deref().is_some_and(|h| PAGE_HOSTS.contains(&h)), "{page}");
        }
    }
    if let Ok(n) = linkloop::note::parse_note(&text) {
        let s = n.as_str();
        assert!(s.len() == 24 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')), "{text:?} -> {s}");
    }
});
