//! Property tests (proptest): tracked links and jump URLs round-trip for any valid
//! claims, and any tampering fails verification; the input parsers never panic.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;

use linkloop::conversion::auth::{MerchantConfig, Merchants, sign_body};
use linkloop::link::{LinkClaims, MAX_LINK_CHARS, encode, verify};
use linkloop::platform::{Platform, Product, parse_product, product_page};
use linkloop::signing::Keyring;

const SECRET_A: &str = "props-secret-a-0123456789abcdef-0123456789";
const SECRET_B: &str = "props-secret-b-0123456789abcdef-0123456789";

/// A keyring with two keys, `kid` and `kid + 1`, signing with `kid`.
fn ring(kid: u8) -> Keyring {
    let other = kid.wrapping_add(1);
    Keyring::new(&[(kid, SECRET_A), (other, SECRET_B)], kid).unwrap()
}

fn platform() -> impl Strategy<Value = Platform> {
    prop::sample::select(Platform::ALL.to_vec())
}

fn token(max: usize) -> impl Strategy<Value = String> {
    prop::string::string_regex(&format!("[A-Za-z0-9_.-]{{1,{max}}}")).unwrap()
}

prop_compose! {
    /// Any claims a link can carry: any platform, any u64 item and SKU, any issue time.
    fn claims()(
        note_id in "[0-9a-f]{24}",
        creator_id in token(64),
        campaign in prop::option::of(token(32)),
        platform in platform(),
        item_id in any::<u64>(),
        sku_id in prop::option::of(any::<u64>()),
        issued_at in any::<u32>(),
    ) -> LinkClaims {
        LinkClaims { note_id, creator_id, product: Product { platform, item_id, sku_id }, campaign, issued_at }
    }
}

prop_compose! {
    /// Products as [`parse_product`] builds them: item and SKU ids of 1 to 19 digits
    /// without a leading zero, and no SKU on JD (the JD id already is the SKU).
    fn product()(
        platform in platform(),
        item_id in 1..=9_999_999_999_999_999_999u64,
        sku_id in prop::option::of(1..=9_999_999_999_999_999_999u64),
    ) -> Product {
        Product { platform, item_id, sku_id: if platform == Platform::Jd { None } else { sku_id } }
    }
}

/// Schemes and share-text openings for URL-shaped parser input.
const PREFIXES: [&str; 8] =
    ["", "https://", "http://", "//", "tbopen://", "openapp.jdmobile://", "xhsdiscover://", "【淘宝】https://"];
/// Trusted, short-link, RED, look-alike and IP hosts for URL-shaped parser input.
const HOSTS: [&str; 12] = [
    "item.taobao.com",
    "h5.m.taobao.com",
    "detail.tmall.com",
    "detail.m.tmall.com",
    "item.jd.com",
    "item.m.jd.com",
    "www.xiaohongshu.com",
    "m.tb.cn",
    "evil.example",
    "xn--tobao-ura.com",
    "127.0.0.1",
    "[::1]",
];

/// The alphabet of base64url, for character-level tampering.
const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn link_round_trips(c in claims(), kid in any::<u8>()) {
        let keys = ring(kid);
        let link = encode(&c, &keys).unwrap();
        prop_assert!(link.len() <= MAX_LINK_CHARS, "{} chars", link.len());
        prop_assert!(link.bytes().all(|b| B64URL.contains(&b)), "{link}");
        prop_assert_eq!(verify(&link, &keys), Ok(c.clone()));
        // Any key but the signer's fails: another ring, or the same kid with another secret.
        let other = Keyring::new(&[(kid, SECRET_B)], kid).unwrap();
        prop_assert!(verify(&link, &other).is_err());
    }

    #[test]
    fn any_byte_tampering_of_a_link_fails(
        c in claims(),
        kid in any::<u8>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..8),
    ) {
        let keys = ring(kid);
        let link = encode(&c, &keys).unwrap();
        let raw = URL_SAFE_NO_PAD.decode(&link).unwrap();
        let mut tampered = raw.clone();
        for (at, xor) in &edits {
            tampered[at.index(raw.len())] ^= xor;
        }
        // Edits may cancel out (same byte, same xor twice); the rest must all fail.
        prop_assume!(tampered != raw);
        prop_assert!(verify(&URL_SAFE_NO_PAD.encode(&tampered), &keys).is_err());
    }

    #[test]
    fn any_length_tampering_of_a_link_fails(
        c in claims(),
        at in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u8>(), 1..8),
        cut in 1..40usize,
    ) {
        let keys = ring(1);
        let raw = URL_SAFE_NO_PAD.decode(encode(&c, &keys).unwrap()).unwrap();
        let i = at.index(raw.len() + 1);
        let mut inserted = raw.clone();
        inserted.splice(i..i, extra.iter().copied());
        prop_assert!(verify(&URL_SAFE_NO_PAD.encode(&inserted), &keys).is_err());
        let mut removed = raw.clone();
        removed.drain(i.min(raw.len() - 1)..(i + cut).min(raw.len()));
        prop_assert!(verify(&URL_SAFE_NO_PAD.encode(&removed), &keys).is_err());
    }

    #[test]
    fn any_character_tampering_of_a_link_string_fails(
        c in claims(),
        at in any::<prop::sample::Index>(),
        replacement in any::<char>(),
        b64 in prop::sample::select(B64URL.to_vec()),
        insert in any::<char>(),
    ) {
        let keys = ring(7);
        let link = encode(&c, &keys).unwrap();
        let i = at.index(link.len());
        let with = |ch: char| format!("{}{ch}{}", &link[..i], &link[i + 1..]);
        // Replacing one character, by any other character or by another base64url one.
        if link.as_bytes()[i] != b64 {
            prop_assert!(verify(&with(char::from(b64)), &keys).is_err());
        }
        if !link[i..].starts_with(replacement) {
            prop_assert!(verify(&with(replacement), &keys).is_err());
        }
        // Inserting or deleting one character, truncating.
        let inserted = format!("{}{insert}{}", &link[..i], &link[i..]);
        prop_assert!(verify(&inserted, &keys).is_err());
        let deleted = format!("{}{}", &link[..i], &link[i + 1..]);
        prop_assert!(verify(&deleted, &keys).is_err());
        prop_assert!(verify(&link[..i], &keys).is_err());
        // Case changes and padding are tampering too.
        let upper = link.to_ascii_uppercase();
        if upper != link {
            prop_assert!(verify(&upper, &keys).is_err());
        }
        let padded = format!("{link}=");
        prop_assert!(verify(&padded, &keys).is_err());
    }

    #[test]
    fn link_verify_never_panics(s in any::<String>(), bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let keys = ring(1);
        prop_assert!(verify(&s, &keys).is_err());
        prop_assert!(verify(&URL_SAFE_NO_PAD.encode(&bytes), &keys).is_err());
    }

    #[test]
    fn jump_url_round_trips(
        p in product(),
        mobile in any::<bool>(),
        token in any::<u128>(),
        ts_ms in any::<u64>(),
        kid in any::<u8>(),
    ) {
        let keys = ring(kid);
        let token = uuid::Uuid::from_u128(token);
        let url = linkloop::jump::build(&p, mobile, &token, ts_ms, &keys);
        prop_assert!(url.starts_with(&product_page(p.platform, p.item_id, p.sku_id, mobile)), "{url}");
        let claims = linkloop::jump::verify(&url, &keys).unwrap();
        prop_assert_eq!(claims, linkloop::jump::JumpClaims { product: p, click_token: token, ts_ms, kid });
        // The other page form of the same click verifies too (the page form is not signed).
        let other_form = url.replacen(&p.page(mobile), &p.page(!mobile), 1);
        prop_assert_eq!(linkloop::jump::verify(&other_form, &keys), Ok(claims));
        let other_key = Keyring::new(&[(kid, SECRET_B)], kid).unwrap();
        prop_assert!(linkloop::jump::verify(&url, &other_key).is_err());
    }

    #[test]
    fn any_tampering_of_a_jump_url_fails(
        p in product(),
        mobile in any::<bool>(),
        token in any::<u128>(),
        ts_ms in any::<u64>(),
        at in any::<prop::sample::Index>(),
        replacement in any::<char>(),
        printable in 0x21..0x7fu8,
        insert in any::<char>(),
    ) {
        let keys = ring(3);
        let url = linkloop::jump::build(&p, mobile, &uuid::Uuid::from_u128(token), ts_ms, &keys);
        let i = at.index(url.len());
        let with = |ch: char| format!("{}{ch}{}", &url[..i], &url[i + 1..]);
        // Swapping the `?`/`&` before `ll_v=` must fail too (`jump_separator_swap_fails`).
        let swap = |_: char| false;
        if url.as_bytes()[i] != printable && !swap(char::from(printable)) {
            let t = with(char::from(printable));
            prop_assert!(linkloop::jump::verify(&t, &keys).is_err(), "{t}");
        }
        if !url[i..].starts_with(replacement) && !swap(replacement) {
            let t = with(replacement);
            prop_assert!(linkloop::jump::verify(&t, &keys).is_err(), "{t}");
        }
        let t = format!("{}{insert}{}", &url[..i], &url[i..]);
        prop_assert!(linkloop::jump::verify(&t, &keys).is_err(), "{t}");
        let t = format!("{}{}", &url[..i], &url[i + 1..]);
        prop_assert!(linkloop::jump::verify(&t, &keys).is_err(), "{t}");
        prop_assert!(linkloop::jump::verify(&url[..i], &keys).is_err());
        let extra = format!("{url}&x=1");
        prop_assert!(linkloop::jump::verify(&extra, &keys).is_err());
    }

    #[test]
    fn jump_verify_never_panics(s in any::<String>(), tail in "[a-z_=&0-9-]{0,80}") {
        let keys = ring(1);
        let _ = linkloop::jump::verify(&s, &keys);
        let _ = linkloop::jump::verify(&format!("https://item.jd.com/1.html?ll_v=1&{tail}"), &keys);
    }

    #[test]
    fn product_parser_never_panics_and_accepts_only_platform_pages(s in any::<String>()) {
        if let Ok(p) = parse_product(&s) {
            prop_assert!(p.item_id > 0);
            prop_assert_eq!(parse_product(&p.page(false)), Ok(p));
            prop_assert_eq!(parse_product(&p.page(true)), Ok(p));
        }
        if let Ok(n) = linkloop::note::parse_note(&s) {
            prop_assert!(n.as_str().len() == 24 && n.as_str().bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        }
    }

    #[test]
    fn product_parser_never_panics_on_url_shaped_input(
        prefix in prop::sample::select(PREFIXES.to_vec()),
        host in prop::sample::select(HOSTS.to_vec()),
        junk in "[a-zA-Z0-9./?&=%#@:\\\\ \\-_~一-龥]{0,120}",
        item in any::<u64>(),
    ) {
        for s in [
            format!("{prefix}{host}/{junk}"),
            format!("{prefix}{host}/item.htm?id={item}&{junk}"),
            format!("{prefix}{host}/{item}.html{junk}"),
            format!("{prefix}{junk}@{host}/item.htm?id={item}"),
            format!("{prefix}{host}{junk}/explore/{item:024x}"),
        ] {
            if let Ok(p) = parse_product(&s) {
                prop_assert!(p.item_id > 0, "{s}");
                // A product only ever comes from one of the platforms' exact hosts.
                let page = url::Url::parse(&p.page(false)).unwrap();
                prop_assert!(matches!(page.host_str(), Some("item.taobao.com" | "detail.tmall.com" | "item.jd.com")));
            }
            let _ = linkloop::note::parse_note(&s);
        }
    }

    #[test]
    fn callback_signature_round_trips_and_any_body_change_fails(
        body in prop::collection::vec(any::<u8>(), 0..300),
        at in any::<prop::sample::Index>(),
        xor in 1..=255u8,
        header in any::<String>(),
    ) {
        let merchants = merchants();
        let now = 1_796_000_000;
        let sig = sign_body(SECRET_A.as_bytes(), 1, now, &body);
        prop_assert!(merchants.authenticate(Some("m1"), Some(&sig), &body, now).is_ok());
        if !body.is_empty() {
            let mut t = body.clone();
            t[at.index(body.len())] ^= xor;
            prop_assert!(merchants.authenticate(Some("m1"), Some(&sig), &t, now).is_err());
        }
        let mut longer = body.clone();
        longer.push(b' ');
        prop_assert!(merchants.authenticate(Some("m1"), Some(&sig), &longer, now).is_err());
        // Any header string is refused without a panic (unless it is the signature).
        if header != sig {
            prop_assert!(merchants.authenticate(Some("m1"), Some(&header), &body, now).is_err());
        }
        prop_assert!(merchants.authenticate(Some(&header), Some(&sig), &body, now).is_err() || header == "m1");
    }
}

/// `jump::verify` accepts only the separator `build` writes before `ll_v=` (`&` after a
/// page with a query, else `?`); found by this suite, fixed in `jump::verify`.
#[test]
fn jump_separator_swap_fails() {
    let keys = ring(1);
    let token = uuid::Uuid::from_u128(1);
    for platform in Platform::ALL {
        for mobile in [false, true] {
            let p = Product { platform, item_id: 5, sku_id: None };
            let url = linkloop::jump::build(&p, mobile, &token, 7, &keys);
            let at = url.find("ll_v=").unwrap() - 1;
            let other = if &url[at..=at] == "?" { "&" } else { "?" };
            let tampered = format!("{}{other}{}", &url[..at], &url[at + 1..]);
            assert!(linkloop::jump::verify(&tampered, &keys).is_err(), "{tampered} verifies");
        }
    }
}

fn merchants() -> Merchants {
    let key = |kid: u8, s: &str| linkloop::config::KeyConfig { kid, secret: secrecy::SecretString::from(s.to_owned()) };
    let m = MerchantConfig {
        id: "m1".into(),
        platforms: vec![Platform::Taobao],
        attribution_window_days: None,
        secrets: vec![key(1, SECRET_A), key(2, SECRET_B)],
    };
    Merchants::new(&[m], 7, 300).unwrap()
}
