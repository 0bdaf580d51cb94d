//! Keys shared by the fuzz targets: the published test-vector keys (docs/link-format.md),
//! so the seed corpus's links and jump URLs verify and the fuzzer starts past the MAC.

use linkloop::signing::Keyring;

pub const VECTOR_SECRET_1: &str = "linkloop-test-vector-key-0001-0123456789abcdef";
pub const VECTOR_SECRET_2: &str = "linkloop-test-vector-key-0002-0123456789abcdef";

/// Kids 1 and 2, signing with `active` (1 or 2; anything else signs with 1).
pub fn ring(active: u8) -> Keyring {
    let active = if active == 2 { 2 } else { 1 };
    Keyring::new(&[(1, VECTOR_SECRET_1), (2, VECTOR_SECRET_2)], active).expect("valid test keyring")
}
