//! Marketplace platforms: the one place that knows Taobao, Tmall and JD.
//!
//! Owns: turning a pasted product URL or share text into a [`Product`]
//! (`parse_product`), and building the canonical product page for a product
//! (`product_page`). Never does I/O, never follows short links, never guesses.
//!
//! Module map:
//! - `error`: [`InputError`] and its stable [`InputErrorKind`] codes.
//! - `scan`: finds URL candidates in share text; `token`: recognises 淘口令/京口令.
//! - `address`: vets one URL (scheme, user info, port, dot segments, host normalisation).
//! - `taobao` (Taobao and Tmall) and `jd`: exact trusted hosts and their URL forms.
//! - `forms` and `id`: where ids sit in a URL, and what a valid id is.
//!
//! How input is read, in order:
//! 1. More than [`MAX_INPUT_BYTES`] bytes is `TooLong`; nothing but whitespace is `Empty`.
//! 2. Input starting with a foreign scheme (`javascript:`, `data:`, `file:`, …) is
//!    `UnsupportedScheme`, whatever it contains.
//! 3. A single scheme-less token, `//host/path` or `host.tld/path`, is read as `https://…`
//!    (trust is still decided on the parsed host, so `evil.com/item.taobao.com` is untrusted).
//! 4. URL candidates are found in the text (see `scan`). The first one that is a product
//!    page on an exact trusted host wins. Otherwise the error reported is the first short
//!    or affiliate link; else `ShareToken` when the text has a 淘口令/京口令 outside the URLs;
//!    else the first candidate's own error (`UntrustedHost`, `NotProduct`, `Malformed`, …);
//!    with no candidate at all, `NotProduct`. A bare number is never taken as an item id.
//!
//! Trust: only the exact hosts listed in `taobao` and `jd` yield an id, compared after
//! lowercasing and dropping one trailing dot. Look-alikes (`item.taobao.com.evil.cn`,
//! `evil.cn/item.taobao.com`, punycode hosts, IP addresses) are `UntrustedHost`; user info
//! (`item.taobao.com@evil.cn`), non-default ports and dot segments are `Malformed`.

// No panics from input: enforce the absence of the usual sources in this module tree.
#![warn(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod address;
mod error;
mod forms;
mod id;
mod jd;
mod scan;
mod taobao;
mod token;

pub use error::{InputError, InputErrorKind};

pub(crate) use address::{Address, Scheme};
pub(crate) use error::quote as quote_for_message;
pub(crate) use id::parse_note_id;
pub(crate) use scan::{leading_foreign_scheme, url_candidates, whole_input_url};

use std::fmt;

/// A marketplace linkloop can send shoppers to. Stable wire names: `taobao`, `tmall`, `jd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Taobao (item.taobao.com and its mobile forms).
    Taobao,
    /// Tmall, including Tmall Global (detail.tmall.com, detail.tmall.hk).
    Tmall,
    /// JD (item.jd.com, item.jd.hk and mobile forms). The item id is JD's SKU id.
    Jd,
}

impl Platform {
    /// Every platform, in wire-code order.
    pub const ALL: [Platform; 3] = [Platform::Taobao, Platform::Tmall, Platform::Jd];

    /// Wire name (`taobao`, `tmall`, `jd`), used in APIs, Redis keys and docs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Platform::Taobao => "taobao",
            Platform::Tmall => "tmall",
            Platform::Jd => "jd",
        }
    }

    /// One-byte code used in the tracked-link format v1 (docs/link-format.md). NEVER CHANGE.
    pub const fn code(self) -> u8 {
        match self {
            Platform::Taobao => 1,
            Platform::Tmall => 2,
            Platform::Jd => 3,
        }
    }

    /// Inverse of [`Platform::code`]; `None` for unknown codes.
    pub const fn from_code(code: u8) -> Option<Platform> {
        match code {
            1 => Some(Platform::Taobao),
            2 => Some(Platform::Tmall),
            3 => Some(Platform::Jd),
            _ => None,
        }
    }

    /// Parses a wire name (exact, lowercase). `None` otherwise.
    pub fn from_name(name: &str) -> Option<Platform> {
        Platform::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest input accepted by [`parse_product`] and [`crate::note::parse_note`], in bytes.
pub const MAX_INPUT_BYTES: usize = 4096;

/// Describes the hosts [`parse_product`] trusts, for `UntrustedHost` messages.
const PRODUCT_HOSTS: &str = "Taobao, Tmall or JD product";

/// A product on a marketplace: what a tracked link points at.
///
/// Built only by [`parse_product`] (or from a verified tracked link), so `item_id` is always
/// a plain id of 1 to 19 digits, never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Product {
    /// The marketplace.
    pub platform: Platform,
    /// Taobao/Tmall item id (`id=`), or JD SKU id (`/<id>.html`).
    pub item_id: u64,
    /// Taobao/Tmall `skuId` (a variant such as colour or size) when the pasted URL named
    /// one. Always `None` on JD, where the item id already is the SKU.
    pub sku_id: Option<u64>,
}

impl Product {
    /// The canonical product page; see [`product_page`].
    pub fn page(&self, mobile: bool) -> String {
        product_page(self.platform, self.item_id, self.sku_id, mobile)
    }
}

/// Parses any real-world Taobao, Tmall or JD product URL, app link or share text into a
/// [`Product`].
///
/// Accepts, among others (`tests/data/real-links.tsv` lists the forms seen in the wild):
/// `https://item.taobao.com/item.htm?id=<id>&skuId=<sku>`,
/// `https://detail.tmall.com/item.htm?id=<id>`, `https://item.jd.com/<id>.html`, their mobile
/// and global variants, `tbopen://` and `openapp.jdmobile://` app links, and share text that
/// contains such a URL (`【淘宝】https://… 「标题」`).
///
/// # Errors
/// An [`InputError`] whose [`kind`](InputError::kind) says why: `Empty`, `TooLong`,
/// `ShortLink` (resolve `m.tb.cn`/`u.jd.com`/`3.cn`/`s.click.taobao.com/<code>` first),
/// `AffiliateLink` (affiliate, coupon or ad click links), `ShareToken` (淘口令/京口令 only),
/// `NotProduct`, `UntrustedHost`, `UnsupportedScheme` or `Malformed`. Never panics.
pub fn parse_product(input: &str) -> Result<Product, InputError> {
    let text = prepare(input, "a Taobao, Tmall or JD product URL or share text")?;
    if let Some(scheme) = leading_foreign_scheme(text) {
        return Err(InputError::unsupported_scheme(scheme, PRODUCT_ACCEPTS));
    }
    // A lone scheme-less `//host/path` or `host.tld/path` is read as `https://…`.
    let with_scheme = whole_input_url(text);
    let text = with_scheme.as_deref().unwrap_or(text);
    let candidates = url_candidates(text);
    if candidates.is_empty() {
        if token::find_share_token(text, &[]).is_some() {
            return Err(InputError::share_token());
        }
        return Err(no_product_link(text));
    }
    let mut to_resolve: Option<InputError> = None;
    let mut first_error: Option<InputError> = None;
    for candidate in &candidates {
        match classify_url(candidate.text) {
            Ok(product) => return Ok(product),
            Err(e) if needs_resolving(e.kind()) => {
                to_resolve.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = to_resolve {
        return Err(e);
    }
    let spans: Vec<_> = candidates.iter().map(|c| c.span.clone()).collect();
    if token::find_share_token(text, &spans).is_some() {
        return Err(InputError::share_token());
    }
    Err(first_error.unwrap_or_else(|| no_product_link(text)))
}

/// The canonical product page for `(platform, item_id, sku_id)`: the only URLs linkloop ever
/// sends a shopper to (plus the click token and signature that the jump URL appends).
///
/// | platform | desktop (`mobile == false`) | mobile |
/// |---|---|---|
/// | Taobao | `https://item.taobao.com/item.htm?id={id}` | `https://h5.m.taobao.com/awp/core/detail.htm?id={id}` |
/// | Tmall | `https://detail.tmall.com/item.htm?id={id}` | `https://detail.m.tmall.com/item.htm?id={id}` |
/// | JD | `https://item.jd.com/{id}.html` | `https://item.m.jd.com/product/{id}.html` |
///
/// Taobao and Tmall append `&skuId={sku}` when `sku_id` is given (their item pages' own
/// parameter for a preselected SKU); JD ignores `sku_id`, as the JD id already is the SKU.
/// No other query parameter is ever added here.
pub fn product_page(platform: Platform, item_id: u64, sku_id: Option<u64>, mobile: bool) -> String {
    let (prefix, suffix) = match (platform, mobile) {
        (Platform::Taobao, false) => ("https://item.taobao.com/item.htm?id=", ""),
        (Platform::Taobao, true) => ("https://h5.m.taobao.com/awp/core/detail.htm?id=", ""),
        (Platform::Tmall, false) => ("https://detail.tmall.com/item.htm?id=", ""),
        (Platform::Tmall, true) => ("https://detail.m.tmall.com/item.htm?id=", ""),
        (Platform::Jd, false) => ("https://item.jd.com/", ".html"),
        (Platform::Jd, true) => ("https://item.m.jd.com/product/", ".html"),
    };
    // Room for the jump parameters that usually follow (see `jump::build`).
    let mut url = String::with_capacity(192);
    let mut num = itoa::Buffer::new();
    url.push_str(prefix);
    url.push_str(num.format(item_id));
    url.push_str(suffix);
    if let (Some(sku), Platform::Taobao | Platform::Tmall) = (sku_id, platform) {
        url.push_str("&skuId=");
        url.push_str(num.format(sku));
    }
    url
}

/// What [`parse_product`] accepts, for `UnsupportedScheme` messages.
const PRODUCT_ACCEPTS: &str = "http(s) product URLs, Taobao/JD app links and share text";

/// Length and emptiness checks shared by every parser; returns the trimmed input.
pub(crate) fn prepare<'a>(input: &'a str, what: &str) -> Result<&'a str, InputError> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(InputError::too_long(input.len()));
    }
    let text = input.trim();
    if text.is_empty() {
        return Err(InputError::empty(what));
    }
    Ok(text)
}

/// Short and affiliate links beat every other finding in share text: they are what the
/// operator must act on.
pub(crate) fn needs_resolving(kind: InputErrorKind) -> bool {
    matches!(kind, InputErrorKind::ShortLink | InputErrorKind::AffiliateLink)
}

/// Classifies one URL candidate.
fn classify_url(text: &str) -> Result<Product, InputError> {
    let addr = Address::parse(text)?;
    match addr.scheme() {
        Scheme::Http | Scheme::Https => taobao::classify_web(&addr)
            .or_else(|| jd::classify_web(&addr))
            .unwrap_or_else(|| Err(InputError::untrusted_host(addr.host(), PRODUCT_HOSTS))),
        Scheme::TbOpen | Scheme::Taobao | Scheme::Tmall => taobao::classify_app(&addr),
        Scheme::JdOpenApp => jd::classify_app(&addr),
        Scheme::XhsDiscover => Err(InputError::unsupported_scheme("xhsdiscover", PRODUCT_ACCEPTS)),
    }
}

fn no_product_link(text: &str) -> InputError {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        InputError::not_product(
            "a bare number is not a product link: paste the product page URL (linkloop never guesses the platform from an id)",
        )
    } else {
        InputError::not_product(
            "no Taobao, Tmall or JD product link found: paste the product page URL or the app's share text",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InputErrorKind::*;

    fn kind(input: &str) -> Result<Product, InputErrorKind> {
        parse_product(input).map_err(|e| e.kind())
    }

    fn product(platform: Platform, item_id: u64, sku_id: Option<u64>) -> Product {
        Product { platform, item_id, sku_id }
    }

    #[test]
    fn canonical_pages() {
        use Platform::*;
        let cases = [
            (Taobao, false, None, "https://item.taobao.com/item.htm?id=7"),
            (Taobao, true, None, "https://h5.m.taobao.com/awp/core/detail.htm?id=7"),
            (Taobao, false, Some(9), "https://item.taobao.com/item.htm?id=7&skuId=9"),
            (Tmall, false, None, "https://detail.tmall.com/item.htm?id=7"),
            (Tmall, true, Some(9), "https://detail.m.tmall.com/item.htm?id=7&skuId=9"),
            (Jd, false, Some(9), "https://item.jd.com/7.html"),
            (Jd, true, None, "https://item.m.jd.com/product/7.html"),
        ];
        for (platform, mobile, sku, want) in cases {
            assert_eq!(product_page(platform, 7, sku, mobile), want);
        }
        // Every canonical page parses back to the same product.
        for platform in Platform::ALL {
            for mobile in [false, true] {
                let sku = (platform != Jd).then_some(5_915_703_371_831);
                let p = product(platform, 878_010_637_397, sku);
                assert_eq!(parse_product(&p.page(mobile)), Ok(p));
            }
        }
    }

    #[test]
    fn look_alikes_and_hostile_urls() {
        let cases = [
            ("https://item.taobao.com.evil.cn/item.htm?id=1", UntrustedHost),
            ("evil.com/item.taobao.com?id=1", UntrustedHost),
            ("https://evil.com/item.taobao.com?id=1", UntrustedHost),
            ("https://evil.com/?u=https://item.taobao.com/item.htm?id=1", UntrustedHost),
            ("https://item.taobao.com@evil.cn/item.htm?id=1", Malformed),
            ("https://evil.cn\\@item.taobao.com/item.htm?id=1", UntrustedHost),
            ("https://item.xn--tobao-ura.com/item.htm?id=1", UntrustedHost),
            ("https://xn--item-taobao-xyz.com/item.htm?id=1", Malformed), // invalid punycode
            ("https://item.tаobao.com/item.htm?id=1", UntrustedHost),     // Cyrillic 'а'
            ("看 https://ıtem.taobao.com/item.htm?id=1", UntrustedHost),  // dotless 'ı'
            ("https://item.taobao.com。evil.cn/item.htm?id=1", NotProduct), // cut at '。'
            ("https://ｉtem.taobao.com/item.htm?id=1", NotProduct),       // full-width: cut, no URL
            ("https://item.taobao.com:8080/item.htm?id=1", Malformed),
            ("https://127.0.0.1/item.htm?id=1", UntrustedHost),
            ("https://[::1]/item.htm?id=1", UntrustedHost),
            ("javascript:alert(1)", UnsupportedScheme),
            ("JavaScript:location='https://item.taobao.com/item.htm?id=1'", UnsupportedScheme),
            ("data:text/html,<a href=https://item.jd.com/1.html>", UnsupportedScheme),
            ("file:///etc/passwd", UnsupportedScheme),
            ("ftp://item.taobao.com/item.htm?id=1", UnsupportedScheme),
            ("xhsdiscover://item/65682d4500000000380339a5", UnsupportedScheme),
            ("https://item.taobao.com/item.htm?id=１２３", Malformed),
            ("https://item.taobao.com/item.htm?id=0123", Malformed),
            ("https://item.taobao.com/item.htm?id=0", Malformed),
            ("https://item.taobao.com/item.htm?id=-5", Malformed),
            ("https://item.taobao.com/item.htm?id=12345678901234567890", Malformed),
            ("https://item.taobao.com/item.htm?id=18446744073709551616", Malformed),
            ("https://item.taobao.com/item.htm?id=1e3", Malformed),
            ("https://item.taobao.com/item.htm?x=1#&id=5", NotProduct),
            ("https://item.jd.com/1234567890123456789012.html", Malformed),
            ("https://www.taobao.com/", NotProduct),
            ("878010637397", NotProduct),
            ("", Empty),
            (" \n\t　", Empty),
            ("hello", NotProduct),
        ];
        for (input, want) in cases {
            assert_eq!(kind(input), Err(want), "{input}");
        }
        assert_eq!(kind(&"x".repeat(MAX_INPUT_BYTES + 1)), Err(TooLong));
    }

    #[test]
    fn accepted_variants() {
        use Platform::*;
        let cases = [
            ("//item.taobao.com/item.htm?id=1", product(Taobao, 1, None)),
            ("item.jd.com/2.html", product(Jd, 2, None)),
            ("item.jd.com/2.html【好物】", product(Jd, 2, None)),
            ("HTTPS://DETAIL.TMALL.COM./item.htm?id=3", product(Tmall, 3, None)),
            ("https://item.jd.com:443/4.html", product(Jd, 4, None)),
            ("https://item.taobao.com/item.htm?%69d=5", product(Taobao, 5, None)),
            ("看看这个（https://item.jd.com/6.html）不错", product(Jd, 6, None)),
            ("https://m.tb.cn/h.x 然后 https://item.taobao.com/item.htm?id=7", product(Taobao, 7, None)),
            (
                "https://item.taobao.com/item.htm?id=9999999999999999999",
                product(Taobao, 9_999_999_999_999_999_999, None),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(kind(input), Ok(want), "{input}");
        }
        let at_limit = format!("{:<1$}", "https://item.jd.com/8.html", MAX_INPUT_BYTES);
        assert_eq!(kind(&at_limit), Ok(product(Jd, 8, None)));
    }

    #[test]
    fn share_text_priorities() {
        assert_eq!(kind("￥AEpabxiRg0u￥ https://evil.test/x"), Err(ShareToken));
        assert_eq!(kind("￥AEpabxiRg0u￥ https://m.tb.cn/h.x"), Err(ShortLink));
        assert_eq!(kind("https://www.taobao.com/ https://u.jd.com/x"), Err(ShortLink));
        assert_eq!(kind("https://www.taobao.com/ https://evil.test/"), Err(NotProduct));
    }

    /// A small deterministic PRNG (xorshift64*) for the property loops.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    /// Property: random byte strings (lossily made UTF-8), biased towards URL syntax, never
    /// panic either parser.
    #[test]
    fn random_bytes_never_panic() {
        const ALPHABET: &[u8] = b"https://item.taobao.com/?id=&#%@:.\\{}\"1234567890xn--";
        let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
        for round in 0..4000u32 {
            let len = usize::try_from(rng.next() % 300).unwrap_or(0);
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = rng.next();
                    if round % 2 == 0 {
                        r.to_le_bytes().first().copied().unwrap_or(0)
                    } else {
                        let i = usize::try_from(r % ALPHABET.len() as u64).unwrap_or(0);
                        ALPHABET.get(i).copied().unwrap_or(b'x')
                    }
                })
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(p) = parse_product(&text) {
                assert!(p.item_id > 0, "{text:?}");
            }
            let _ = crate::note::parse_note(&text);
        }
    }
}
