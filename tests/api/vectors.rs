//! The test vectors published in docs/link-format.md and docs/jump-url.md are
//! what the code computes (a merchant checks their verifier against them).

use linkloop::link::{LinkClaims, encode, verify};
use linkloop::platform::{Platform, Product};
use linkloop::signing::Keyring;

pub const VECTOR_SECRET_1: &str = "linkloop-test-vector-key-0001-0123456789abcdef";
pub const VECTOR_SECRET_2: &str = "linkloop-test-vector-key-0002-0123456789abcdef";

fn ring(active: u8) -> Keyring {
    Keyring::new(&[(1, VECTOR_SECRET_1), (2, VECTOR_SECRET_2)], active).unwrap()
}

pub fn link_vectors() -> Vec<(LinkClaims, u8, String)> {
    let v1 = LinkClaims {
        note_id: "65682d4500000000380339a5".into(),
        creator_id: "creator_01".into(),
        product: Product { platform: Platform::Taobao, item_id: 533000737918, sku_id: None },
        campaign: None,
        issued_at: 1_790_000_000,
    };
    let v2 = LinkClaims {
        note_id: "6976204a000000000b0100ff".into(),
        creator_id: "5e0000000000000001000abc".into(),
        product: Product { platform: Platform::Tmall, item_id: 43724784272, sku_id: Some(4611686062152172176) },
        campaign: Some("double11".into()),
        issued_at: 1_796_000_000,
    };
    let v3 = LinkClaims {
        note_id: "693014dd000000001d03f43f".into(),
        creator_id: "c".into(),
        product: Product { platform: Platform::Jd, item_id: 100012043978, sku_id: None },
        campaign: None,
        issued_at: 1_796_018_486,
    };
    [(v1, 1), (v2, 2), (v3, 1)]
        .into_iter()
        .map(|(c, kid)| {
            let s = encode(&c, &ring(kid)).unwrap();
            (c, kid, s)
        })
        .collect()
}

pub fn jump_vectors() -> Vec<String> {
    let token: uuid::Uuid = "01a22b0b-3df4-779a-a659-5b093b29117d".parse().unwrap();
    let ts = 1_796_018_486_772;
    let taobao = Product { platform: Platform::Taobao, item_id: 533000737918, sku_id: None };
    let tmall = Product { platform: Platform::Tmall, item_id: 43724784272, sku_id: Some(4611686062152172176) };
    let jd = Product { platform: Platform::Jd, item_id: 100012043978, sku_id: None };
    vec![
        linkloop::jump::build(&taobao, false, &token, ts, &ring(1)),
        linkloop::jump::build(&taobao, true, &token, ts, &ring(1)),
        linkloop::jump::build(&tmall, false, &token, ts, &ring(2)),
        linkloop::jump::build(&jd, true, &token, ts, &ring(1)),
    ]
}

#[test]
fn documented_link_vectors_match() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/link-format.md")).unwrap();
    let vectors = link_vectors();
    for (c, kid, link) in &vectors {
        println!("{kid} {c:?} {link}");
    }
    for (claims, _, link) in vectors {
        assert!(doc.contains(&link), "docs/link-format.md lacks vector {link}");
        assert_eq!(verify(&link, &ring(1)).unwrap(), claims);
    }
}

#[test]
fn documented_jump_vectors_match() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/jump-url.md")).unwrap();
    for url in jump_vectors() {
        println!("{url}");
    }
    for url in jump_vectors() {
        assert!(doc.contains(&url), "docs/jump-url.md lacks vector {url}");
        assert!(linkloop::jump::verify(&url, &ring(1)).is_ok());
    }
}
