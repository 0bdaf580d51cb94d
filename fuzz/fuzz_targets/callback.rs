//! Conversion callbacks: `Merchants::authenticate` on a signature header and raw body taken
//! from the input, then the body through `serde_json::from_slice::<ConversionInput>` and
//! `validate`, as `POST /v1/conversions` does; the body also as a postback query.
//!
//! Input layout: `header 0x00 body` (no NUL: all of it is the body, with a correct header).
//! Oracle: never panics; a correctly signed body authenticates, a one-byte change does not;
//! whatever validates satisfies the documented field rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linkloop::config::KeyConfig;
use linkloop::conversion::auth::{MerchantConfig, Merchants, sign_body};
use linkloop::conversion::{ConversionInput, MAX_AMOUNT};
use linkloop::platform::Platform;

const SECRET: &str = "merchant-secret-one-0123456789abcdef-0123";
const NOW: u64 = 1_796_000_000;

fn merchants() -> Merchants {
    let m = MerchantConfig {
        id: "tmall-shop".into(),
        platforms: vec![Platform::Taobao, Platform::Tmall],
        attribution_window_days: None,
        secrets: vec![KeyConfig { kid: 1, secret: secrecy::SecretString::from(SECRET.to_owned()) }],
    };
    Merchants::new(&[m], 7, 300).expect("valid merchant config")
}

fuzz_target!(|data: &[u8]| {
    let merchants = merchants();
    let (header, body) = match data.iter().position(|b| *b == 0) {
        Some(i) => (Some(String::from_utf8_lossy(&data[..i]).into_owned()), &data[i + 1..]),
        None => (None, data),
    };
    let good = sign_body(SECRET.as_bytes(), 1, NOW, body);
    // The fuzzed header (and the same text as a merchant id): any outcome but a panic.
    if let Some(h) = &header {
        let _ = merchants.authenticate(Some("tmall-shop"), Some(h), body, NOW);
        let _ = merchants.authenticate(Some(h), Some(&good), body, NOW);
    }
    // The true signature passes; one changed byte does not.
    assert!(merchants.authenticate(Some("tmall-shop"), Some(&good), body, NOW).is_ok());
    if let Some((first, tail)) = body.split_first() {
        let mut changed = vec![first ^ 0x01];
        changed.extend_from_slice(tail);
        assert!(merchants.authenticate(Some("tmall-shop"), Some(&good), &changed, NOW).is_err());
    }
    // The handler's next steps on the authenticated body.
    if let Ok(input) = serde_json::from_slice::<ConversionInput>(body)
        && let Ok(conv) = input.validate()
    {
        assert!((0..=MAX_AMOUNT).contains(&conv.amount));
        assert_eq!(
            uuid::Uuid::parse_str(&conv.click_token).map(|u| u.hyphenated().to_string()).ok().as_deref(),
            Some(conv.click_token.as_str())
        );
        assert!(!conv.order_id.is_empty() && conv.order_id.len() <= 64);
        assert!(conv.raw_status.bytes().all(|b| (0x20..0x7f).contains(&b)));
        assert_eq!(conv.fingerprint().len(), 64);
    }
    // The postback form: the body as a query string.
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let _ = merchants.authenticate_postback(&params, NOW);
});
