//! Share text → URL candidates, plus the whole-input forms (`//host/…`, `host/path`, and
//! a leading foreign scheme such as `javascript:`).
//!
//! Owns: finding where URLs start and stop inside pasted text. Share text from the apps glues
//! URLs to CJK text (`【淘宝】https://m.tb.cn/h.x「标题」`, `http://xhslink.com/x，复制`), so a
//! URL starts at the scheme found before `://` and stops at the first whitespace, control or
//! non-ASCII character (CJK punctuation, full-width characters, typographic quotes, emoji),
//! or at one of `" ' < > \` [ ] { } | ^ \`. Non-CJK letters inside the host part
//! (`item.tаobao.com` with a Cyrillic `а`) are kept, so a look-alike host is judged whole. Trailing `. , ; : ! ?` and an unbalanced `)` are
//! dropped. One exception: a JD app link's `params={…}` carries a raw JSON object (sometimes
//! with typographic quotes), which is kept whole up to its matching `}`.
//! Never does I/O, never decides trust: every candidate is vetted by `address`.

use std::ops::Range;

use super::address::Scheme;

/// Most URL candidates examined in one input; later ones are ignored (input is at most
/// 4 KiB, and real share text has one or two URLs).
pub(crate) const MAX_CANDIDATES: usize = 16;

/// Schemes that are rejected outright when the whole input starts with them, even without
/// `//`, so that `javascript:…('https://item.taobao.com/…')` never yields a product.
const FOREIGN_SCHEMES: [&str; 12] =
    ["javascript", "vbscript", "data", "file", "blob", "about", "mailto", "tel", "sms", "intent", "ftp", "filesystem"];

/// One URL found in the text, as a slice of it, and where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate<'a> {
    /// The URL text, from its scheme to its last character.
    pub(crate) text: &'a str,
    /// Byte range of `text` in the input.
    pub(crate) span: Range<usize>,
}

/// Every URL candidate in `text`, in order, at most [`MAX_CANDIDATES`]. A `://` inside an
/// earlier candidate (a nested URL) does not start a new one.
pub(crate) fn url_candidates(text: &str) -> Vec<Candidate<'_>> {
    let mut out = Vec::new();
    let mut covered = 0usize;
    let mut from = 0usize;
    while out.len() < MAX_CANDIDATES {
        let Some(sep) = find_separator(text, from) else {
            break;
        };
        from = sep + 3;
        if sep < covered {
            continue;
        }
        let Some((start, scheme)) = scheme_start(text, sep, covered) else {
            continue;
        };
        let keep_json = scheme == Some(Scheme::JdOpenApp);
        let end = trim_trailing(text, sep + 3, url_end(text, sep + 3, keep_json));
        covered = covered.max(end);
        // (No let-chain: the workspace's rust-version is 1.85.)
        if let Some(url) = text.get(start..end).filter(|_| end > sep + 3) {
            out.push(Candidate { text: url, span: start..end });
        }
    }
    out
}

/// Byte index of the next `://` at or after `from` (a plain byte loop: cheaper than a
/// substring searcher for inputs this short).
fn find_separator(text: &str, from: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = from;
    while let Some(&b) = bytes.get(i) {
        if b == b':' && bytes.get(i + 1) == Some(&b'/') && bytes.get(i + 2) == Some(&b'/') {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// For input that is a single token without `://`: `//host/path` becomes `https://host/path`
/// and `host.tld/path` (first segment shaped like a domain name) becomes
/// `https://host.tld/path`. Trust is decided later, on the parsed host, so
/// `evil.com/item.taobao.com?id=1` is read as host `evil.com`.
pub(crate) fn whole_input_url(trimmed: &str) -> Option<String> {
    if trimmed.contains("://") || trimmed.chars().any(char::is_whitespace) {
        return None;
    }
    if trimmed.starts_with("//") {
        return Some(format!("https:{trimmed}"));
    }
    let host_end = trimmed.find(['/', '?', '#']).unwrap_or(trimmed.len());
    let host = trimmed.get(..host_end)?;
    let last_label = host.rsplit('.').next().unwrap_or("");
    let domain_like = host.contains('.')
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && last_label.len() >= 2
        && last_label.bytes().all(|b| b.is_ascii_alphabetic());
    domain_like.then(|| format!("https://{trimmed}"))
}

/// When the whole input starts with a scheme that is neither supported nor followed by `//`
/// but is a known foreign one (`javascript:`, `data:`, `file:`, …), returns that scheme.
pub(crate) fn leading_foreign_scheme(trimmed: &str) -> Option<&str> {
    let (name, _) = trimmed.split_once(':')?;
    let known = FOREIGN_SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(name));
    known.then_some(name)
}

fn is_scheme_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

/// Finds where the scheme that ends at `sep` starts (never before `floor`). When the run of
/// scheme characters ends with a supported scheme name (`下单:https`, `xhttps`), the start is
/// moved to that name. Returns `None` when there is no scheme letter at all.
fn scheme_start(text: &str, sep: usize, floor: usize) -> Option<(usize, Option<Scheme>)> {
    let bytes = text.as_bytes();
    let mut start = sep;
    while start > floor && bytes.get(start - 1).copied().is_some_and(is_scheme_byte) {
        start -= 1;
    }
    let run = text.get(start..sep)?;
    for (name, scheme) in Scheme::NAMES {
        if run.len() >= name.len() {
            let tail_start = sep - name.len();
            if text.get(tail_start..sep).is_some_and(|t| t.eq_ignore_ascii_case(name)) {
                return Some((tail_start, Some(scheme)));
            }
        }
    }
    // Unknown scheme: start at its first letter (a scheme cannot start with a digit).
    let first_letter = run.bytes().position(|b| b.is_ascii_alphabetic())?;
    Some((start + first_letter, None))
}

/// Bit set over ASCII: bit `b` is set when byte `b` is in `bytes`. Only evaluated at compile
/// time, on ASCII literals.
const fn ascii_set(mut bytes: &[u8]) -> u128 {
    let mut set = 0u128;
    while let [b, rest @ ..] = bytes {
        set |= 1u128 << *b;
        bytes = rest;
    }
    set
}

/// ASCII that cannot be part of a URL as pasted: controls, space, and `" ' < > \` [ ] { } | ^ \`.
const TERMINATORS: u128 = ((1u128 << 33) - 1) // 0x00..=0x20: controls and space
    | (1u128 << 0x7F)
    | ascii_set(b"\"'<>`[]{}|^\\");

/// ASCII that needs a closer look: the end of the authority, IP-literal brackets, JSON.
const SPECIAL: u128 = ascii_set(b"/?#[]{");

fn in_set(set: u128, b: u8) -> bool {
    b < 0x80 && set & (1u128 << b) != 0
}

/// The byte index where the URL that continues at `from` stops. Works on bytes with bit-set
/// lookups: this loop sees every byte of the input.
fn url_end(text: &str, from: usize, keep_json: bool) -> usize {
    let Some(rest) = text.get(from..) else {
        return from;
    };
    let bytes = rest.as_bytes();
    let mut depth = 0usize;
    let mut in_authority = true;
    // `https://[::1]/`: an IP literal host keeps its brackets (and is judged untrusted).
    let ip_literal = rest.starts_with('[');
    let mut i = 0usize;
    while let Some(&b) = bytes.get(i) {
        if b >= 0x80 {
            let Some(c) = rest.get(i..).and_then(|t| t.chars().next()) else {
                return from + i;
            };
            // Inside JD's `params={…}` anything but whitespace goes (typographic quotes).
            // Elsewhere a non-ASCII letter inside the host (`item.tаobao.com` with a Cyrillic
            // 'а') is part of a look-alike host name: keep it, so the host is judged whole.
            let keep = if depth > 0 { !c.is_whitespace() } else { in_authority && c.is_alphanumeric() && !is_cjk(c) };
            if !keep {
                return from + i;
            }
            i += c.len_utf8();
            continue;
        }
        if depth > 0 {
            match b {
                b'{' => depth += 1,
                b'}' => depth -= 1,
                _ if b <= 0x20 || b == 0x7F => return from + i,
                _ => {}
            }
        } else if in_set(SPECIAL, b) {
            match b {
                b'/' | b'?' | b'#' => in_authority = false,
                b'[' | b']' if in_authority && ip_literal => {}
                b'{' if keep_json && ends_with_ignore_case(rest.get(..i), "params=") => depth = 1,
                _ => return from + i,
            }
        } else if in_set(TERMINATORS, b) {
            return from + i;
        }
        i += 1;
    }
    text.len()
}

/// CJK ideographs, kana, Hangul and full-width forms: text glued to a URL, never part of it.
fn is_cjk(c: char) -> bool {
    matches!(c, '\u{2E80}'..='\u{9FFF}' | '\u{AC00}'..='\u{D7AF}' | '\u{F900}'..='\u{FAFF}' | '\u{FF00}'..='\u{FFEF}' | '\u{20000}'..='\u{3FFFF}')
}

fn ends_with_ignore_case(text: Option<&str>, suffix: &str) -> bool {
    text.and_then(|t| t.len().checked_sub(suffix.len()).and_then(|i| t.get(i..)))
        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
}

/// Drops sentence punctuation glued to the end of a URL (`…/1.html.`), and a `)` that has no
/// `(` in the URL (`(see https://…)`). Never goes below `floor`.
fn trim_trailing(text: &str, floor: usize, mut end: usize) -> usize {
    while end > floor {
        let Some(url) = text.get(..end) else { break };
        let Some(last) = url.chars().next_back() else {
            break;
        };
        let drop = match last {
            '.' | ',' | ';' | ':' | '!' | '?' => true,
            ')' => {
                let body = text.get(floor..end).unwrap_or("");
                body.matches('(').count() < body.matches(')').count()
            }
            _ => false,
        };
        if !drop {
            break;
        }
        end -= last.len_utf8();
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(text: &str) -> Vec<&str> {
        url_candidates(text).into_iter().map(|c| c.text).collect()
    }

    #[test]
    fn glued_share_text() {
        assert_eq!(urls("【淘宝】https://m.tb.cn/h.example「商品」 ￥Abc123xyZ89￥"), ["https://m.tb.cn/h.example"]);
        assert_eq!(
            urls("16:06【淘宝】https://m.tb.cn/h.58QQm4s?tk=q68LWdnBIKy CZ3457 「x」"),
            ["https://m.tb.cn/h.58QQm4s?tk=q68LWdnBIKy"]
        );
        assert_eq!(urls("😆 http://xhslink.com/GQ0MHB，复制本条信息"), ["http://xhslink.com/GQ0MHB"]);
        assert_eq!(
            urls("👉领券+下单：https://union-click.jd.com/jdc?d=WWJ9yu"),
            ["https://union-click.jd.com/jdc?d=WWJ9yu"]
        );
        assert_eq!(urls("see (https://item.jd.com/1.html). ok"), ["https://item.jd.com/1.html"]);
        assert_eq!(urls("x下单:HTTPS://a.test/b"), ["HTTPS://a.test/b"]);
        assert_eq!(urls("evilhttps://a.test/b"), ["https://a.test/b"]);
        // Look-alike letters stay in the host; CJK text glued to a host does not.
        assert_eq!(urls("https://item.tаobao.com/item.htm?id=1看看"), ["https://item.tаobao.com/item.htm?id=1"]);
        assert_eq!(urls("https://m.tb.cn看看"), ["https://m.tb.cn"]);
    }

    #[test]
    fn json_and_nested() {
        assert_eq!(
            urls(r#"[CQ:json,data={"jumpUrl":"https://item.m.jd.com/product/1.html?u=p"}][分享] https://x.test/"#),
            ["https://item.m.jd.com/product/1.html?u=p", "https://x.test/"]
        );
        // Nested "://" inside a URL does not start a second candidate.
        assert_eq!(
            urls("https://linkst.m.jd.com/ul/ul.action?openApp.jdMobile://virtual?params=%7B%7D"),
            ["https://linkst.m.jd.com/ul/ul.action?openApp.jdMobile://virtual?params=%7B%7D"]
        );
        // JD app link JSON is kept whole, typographic quotes included.
        let jd = "openApp.jdMobile://virtual?params={“skuId”:”1“,”des”:”productDetail”}";
        assert_eq!(urls(&format!("{jd} 好物")), [jd]);
        // Elsewhere a brace ends the URL.
        assert_eq!(urls("https://a.test/x?params={1}"), ["https://a.test/x?params="]);
    }

    #[test]
    fn hostile_text_never_panics_and_finds_nothing_odd() {
        for text in [
            "://",
            ":///",
            "1://x",
            "😺://x",
            "https://",
            "https://。",
            "https://)",
            "openapp.jdmobile://virtual?params={{{{",
            "openapp.jdmobile://virtual?params={}}}}",
            "a://b://c://d",
        ] {
            let found = urls(text);
            assert!(found.iter().all(|u| u.contains("://")), "{text}: {found:?}");
        }
        assert!(urls("1://x").is_empty());
        assert!(urls("https://。").is_empty());
        let many = "https://a.test/ ".repeat(100);
        assert_eq!(urls(&many).len(), MAX_CANDIDATES);
    }

    #[test]
    fn whole_input_forms() {
        assert_eq!(
            whole_input_url("//item.taobao.com/item.htm?id=1").as_deref(),
            Some("https://item.taobao.com/item.htm?id=1")
        );
        assert_eq!(
            whole_input_url("evil.com/item.taobao.com?id=1").as_deref(),
            Some("https://evil.com/item.taobao.com?id=1")
        );
        for not_url in
            ["8/F2iBcQ6xCZB//", "0_0(s0jWcizeD02(/", "16.06/x", "a b.com/x", "￥AEpabxiRg0u￥", "https://x.test"]
        {
            assert_eq!(whole_input_url(not_url), None, "{not_url}");
        }
        assert_eq!(leading_foreign_scheme("JavaScript:alert(1)"), Some("JavaScript"));
        assert_eq!(leading_foreign_scheme("data:text/html,x"), Some("data"));
        assert_eq!(leading_foreign_scheme("a:/😺yhSSc90Hk1L₤"), None);
        assert_eq!(leading_foreign_scheme("Note:https://x.test"), None);
    }
}
