//! One URL candidate → a vetted [`Address`]: scheme, lowercased host, path and query.
//!
//! Owns: URL syntax checks shared by every platform and by RED note parsing. Parsing uses
//! the WHATWG rules of the `url` crate, so a URL means here what it means in the shopper's
//! browser (`https://evil.cn\@item.taobao.com/` has host `evil.cn`). On top of that it
//! rejects what a product link never has: user info (`user@host`), a non-default port, dot
//! segments (`/a/../b`), whitespace or control characters. It does not decide trust: the
//! platform modules compare [`Address::host`] against their exact host lists. Never does I/O.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use url::Url;

use super::error::{InputError, quote};

/// The schemes a pasted link may have. Everything else is
/// [`super::InputErrorKind::UnsupportedScheme`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// `http:`
    Http,
    /// `https:` (also used for scheme-relative `//host/...` input).
    Https,
    /// `tbopen:` — Taobao app link; wraps a web URL in its `h5Url` parameter.
    TbOpen,
    /// `taobao:` — Taobao app link with a web-style host and path.
    Taobao,
    /// `tmall:` — Tmall app link (`tmall://page.tm/itemDetail?id=…`).
    Tmall,
    /// `openapp.jdmobile:` — JD app link (`item.jd.com/<id>.html` or `virtual?params={…}`).
    JdOpenApp,
    /// `xhsdiscover:` — RED app link (`item/<note id>`, `video_feed/<note id>`).
    XhsDiscover,
}

impl Scheme {
    /// Every supported scheme name, lowercase. Longer names first, so that a suffix match in
    /// the share-text scanner prefers `https` over `http`.
    pub(crate) const NAMES: [(&'static str, Scheme); 7] = [
        ("openapp.jdmobile", Scheme::JdOpenApp),
        ("xhsdiscover", Scheme::XhsDiscover),
        ("tbopen", Scheme::TbOpen),
        ("taobao", Scheme::Taobao),
        ("tmall", Scheme::Tmall),
        ("https", Scheme::Https),
        ("http", Scheme::Http),
    ];

    /// Looks a scheme name up, ASCII case-insensitively.
    pub(crate) fn from_name(name: &str) -> Option<Scheme> {
        Scheme::NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, s)| *s)
    }

    /// True for `http` and `https`.
    pub(crate) fn is_web(self) -> bool {
        matches!(self, Scheme::Http | Scheme::Https)
    }
}

/// A syntactically clean absolute URL. The host is lowercased and has no trailing dot; it is
/// NOT yet trusted.
#[derive(Debug, Clone)]
pub(crate) struct Address {
    scheme: Scheme,
    host: String,
    url: Url,
}

impl Address {
    /// Parses one URL candidate (no surrounding text). `//host/path` is read as `https:`.
    ///
    /// Errors: [`UnsupportedScheme`](super::InputErrorKind::UnsupportedScheme) for any scheme
    /// not in [`Scheme`]; [`Malformed`](super::InputErrorKind::Malformed) for an unparsable
    /// URL, a missing `//`, whitespace, user info, a non-default port, dot segments or no host.
    pub(crate) fn parse(candidate: &str) -> Result<Address, InputError> {
        let has_space = candidate.bytes().any(|b| b <= 0x20 || b == 0x7F)
            || (!candidate.is_ascii() && candidate.chars().any(|c| c.is_whitespace() || c.is_control()));
        if has_space {
            return Err(InputError::malformed("URL contains whitespace or control characters"));
        }
        let owned;
        let candidate = if candidate.starts_with("//") {
            owned = format!("https:{candidate}");
            owned.as_str()
        } else {
            candidate
        };
        let (scheme_name, rest) =
            candidate.split_once(':').ok_or_else(|| InputError::malformed("not a URL: no scheme such as https://"))?;
        let scheme = Scheme::from_name(scheme_name)
            .ok_or_else(|| InputError::unsupported_scheme(scheme_name, "http(s) URLs and app links"))?;
        let Some(after_slashes) = rest.strip_prefix("//") else {
            return Err(InputError::malformed(format!("URL {} has no '//' after the scheme", quote(candidate))));
        };
        if has_dot_segment(after_slashes) {
            return Err(InputError::malformed(format!(
                "URL {} has '.' or '..' path segments: paste the URL as the browser shows it",
                quote(candidate)
            )));
        }
        let url = Url::parse(candidate)
            .map_err(|e| InputError::malformed(format!("not a valid URL ({e}): {}", quote(candidate))))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(InputError::malformed(
                "URL has user info before the host (user@host): not allowed in a product or note link",
            ));
        }
        if let Some(port) = url.port() {
            return Err(InputError::malformed(format!(
                "URL has a non-default port (:{port}): not allowed in a product or note link"
            )));
        }
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h,
            _ => return Err(InputError::malformed("URL has no host")),
        };
        let mut host = host.to_ascii_lowercase();
        if host.ends_with('.') {
            host.pop();
        }
        Ok(Address { scheme, host, url })
    }

    /// The scheme.
    pub(crate) fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host, lowercased, trailing dot removed. IDN hosts appear in punycode (`xn--…`),
    /// so they never equal a trusted ASCII host.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// True when the host equals one of `hosts` exactly.
    pub(crate) fn host_is(&self, hosts: &[&str]) -> bool {
        hosts.contains(&self.host.as_str())
    }

    /// True when the host is one of `domains` or a subdomain of one (label-wise:
    /// `a.taobao.com` is under `taobao.com`; `evil-taobao.com` is not). A host with a
    /// punycode (`xn--`) label is never under anything: it is reported as untrusted.
    pub(crate) fn host_under(&self, domains: &[&str]) -> bool {
        let idn = self.host.split('.').any(|label| label.starts_with("xn--"));
        !idn && domains
            .iter()
            .any(|d| self.host == *d || self.host.strip_suffix(d).is_some_and(|prefix| prefix.ends_with('.')))
    }

    /// The path, percent-encoded as normalised by the URL parser (`/` when empty for web URLs).
    pub(crate) fn path(&self) -> &str {
        self.url.path()
    }

    /// The raw query without `?`, or `None`. The fragment is never part of it.
    pub(crate) fn query(&self) -> Option<&str> {
        self.url.query()
    }

    /// The percent-decoded value of query parameter `key` (keys are percent-decoded before
    /// comparing). `Ok(None)` when absent. When the key occurs more than once, all values
    /// must be equal; otherwise the URL is ambiguous and [`InputError`] `Malformed` is
    /// returned, because guessing which one the marketplace would use is not allowed.
    pub(crate) fn param(&self, key: &str) -> Result<Option<String>, InputError> {
        let mut found: Option<String> = None;
        for (k, v) in query_pairs(self.query().unwrap_or("")) {
            if k != key {
                continue;
            }
            match &found {
                None => found = Some(v.into_owned()),
                Some(prev) if *prev == v => {}
                Some(_) => {
                    return Err(InputError::malformed(format!(
                        "URL has conflicting '{key}' parameters: paste the product page URL"
                    )));
                }
            }
        }
        Ok(found)
    }
}

/// Splits a raw query on `&` into percent-decoded `(key, value)` pairs. A pair without `=`
/// has an empty value. `+` is kept as is (ids never contain it; nested URLs need it).
pub(crate) fn query_pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k), decode(v))
    })
}

/// Percent-decodes once; invalid UTF-8 becomes U+FFFD (which no id or URL check accepts).
pub(crate) fn decode(text: &str) -> Cow<'_, str> {
    if text.contains('%') { percent_decode_str(text).decode_utf8_lossy() } else { Cow::Borrowed(text) }
}

/// True when the path (of `authority/path?query#fragment`) has a `.` or `..` segment, in
/// plain or percent-encoded form. The URL parser would silently resolve them, hiding what
/// was pasted.
fn has_dot_segment(after_slashes: &str) -> bool {
    let authority_end = after_slashes.find(['/', '\\', '?', '#']).unwrap_or(after_slashes.len());
    let Some(rest) = after_slashes.get(authority_end..) else {
        return false;
    };
    let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
    let Some(path) = rest.get(..path_end) else {
        return false;
    };
    path.split(['/', '\\'])
        .any(|seg| [".", "%2e", "..", ".%2e", "%2e.", "%2e%2e"].iter().any(|dot| seg.eq_ignore_ascii_case(dot)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::InputErrorKind;

    fn kind(s: &str) -> Option<InputErrorKind> {
        Address::parse(s).err().map(|e| e.kind())
    }

    #[test]
    fn clean_urls() {
        let a = Address::parse("HTTPS://Item.TaoBao.com./item.htm?id=1#x");
        let a = a.as_ref().map(|a| (a.scheme(), a.host(), a.path(), a.query()));
        assert_eq!(a.ok(), Some((Scheme::Https, "item.taobao.com", "/item.htm", Some("id=1"))));
        let a = Address::parse("//item.jd.com/1.html").map(|a| (a.scheme(), a.host().to_owned()));
        assert_eq!(a.ok(), Some((Scheme::Https, "item.jd.com".to_owned())));
        let a = Address::parse("https://item.jd.com:443/1.html").map(|a| a.host().to_owned());
        assert_eq!(a.ok().as_deref(), Some("item.jd.com"));
        let a = Address::parse("openApp.jdMobile://Item.JD.com/1.html").map(|a| (a.scheme(), a.host().to_owned()));
        assert_eq!(a.ok(), Some((Scheme::JdOpenApp, "item.jd.com".to_owned())));
    }

    #[test]
    fn hostile_urls() {
        use InputErrorKind::*;
        let cases = [
            ("https://item.taobao.com@evil.cn/item.htm?id=1", Malformed),
            ("https://user:pw@item.taobao.com/item.htm?id=1", Malformed),
            ("https://item.taobao.com:8443/item.htm?id=1", Malformed),
            ("https://item.taobao.com/a/../item.htm?id=1", Malformed),
            ("https://item.taobao.com/%2e%2E/item.htm?id=1", Malformed),
            ("https://item.taobao.com/./item.htm?id=1", Malformed),
            ("https://item.taobao.com\\..\\item.htm?id=1", Malformed),
            ("https://item.taobao.com/item.htm?id=1 2", Malformed),
            ("https://item.taobao.com/item.htm?id=1\u{0}", Malformed),
            ("https:item.taobao.com/item.htm?id=1", Malformed),
            ("https://", Malformed),
            ("https://[::1", Malformed),
            ("javascript://item.taobao.com/%0aalert(1)", UnsupportedScheme),
            ("file:///etc/passwd", UnsupportedScheme),
            ("data:text/html,hi", UnsupportedScheme),
            ("ftp://item.taobao.com/item.htm?id=1", UnsupportedScheme),
            ("item.taobao.com/item.htm?id=1", Malformed),
            ("no scheme", Malformed),
        ];
        for (input, want) in cases {
            assert_eq!(kind(input), Some(want), "{input}");
        }
        // Dots inside a query or a file name are fine.
        assert_eq!(kind("https://item.jd.com/1.html?a=../b"), None);
        assert_eq!(kind("https://item.jd.com/a..b/1.html"), None);
    }

    #[test]
    fn backslash_and_idn_hosts_are_what_a_browser_sees() {
        let h = Address::parse("https://evil.cn\\@item.taobao.com/item.htm?id=1");
        assert_eq!(h.map(|a| a.host().to_owned()).ok().as_deref(), Some("evil.cn"));
        let h = Address::parse("https://item.tаobao.com/item.htm?id=1"); // Cyrillic 'а'
        let host = h.map(|a| a.host().to_owned()).unwrap_or_default();
        assert!(host.contains("xn--"), "{host}");
    }

    #[test]
    fn host_under_is_label_wise() {
        let a = Address::parse("https://evil-taobao.com/").ok();
        assert_eq!(a.map(|a| a.host_under(&["taobao.com"])), Some(false));
        let a = Address::parse("https://a.b.taobao.com/").ok();
        assert_eq!(a.map(|a| a.host_under(&["taobao.com"])), Some(true));
        let a = Address::parse("https://item.taobao.com.evil.cn/").ok();
        assert_eq!(a.map(|a| a.host_under(&["taobao.com"])), Some(false));
        let a = Address::parse("https://ıtem.taobao.com/").ok();
        assert_eq!(a.map(|a| a.host_under(&["taobao.com"])), Some(false));
    }

    #[test]
    fn params() {
        let a = Address::parse("https://x.test/p?%69d=5&id=5&skuId=&b").ok();
        let got = a.as_ref().map(|a| (a.param("id").ok(), a.param("skuId").ok()));
        assert_eq!(got, Some((Some(Some("5".to_owned())), Some(Some(String::new())))));
        let a = Address::parse("https://x.test/p?id=5&%69d=6").ok();
        let kind = a.and_then(|a| a.param("id").err()).map(|e| e.kind());
        assert_eq!(kind, Some(InputErrorKind::Malformed));
        let a = Address::parse("https://x.test/p?x=1#id=7").ok();
        assert_eq!(a.map(|a| a.param("id").ok()), Some(Some(None)));
    }
}
