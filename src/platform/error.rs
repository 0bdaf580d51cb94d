//! The one error type for pasted input: [`InputError`] and its stable [`InputErrorKind`].
//!
//! Owns: the error codes an operator sees when a pasted URL or share text cannot be used,
//! and the helpers that build their messages. Never does I/O.
//!
//! Callers branch on [`InputError::kind`] (a small fixed set with stable snake_case codes,
//! fit for JSON error envelopes and metric labels); the message is for humans and may
//! change wording at any time. Never match on the message.

use std::fmt;

/// Longest piece of user input quoted back in a message, in characters.
const QUOTE_MAX_CHARS: usize = 64;

/// Why a pasted product URL, note URL or share text could not be used.
///
/// `Display` prints an actionable, single-line message for a content-platform operator,
/// e.g. `short link (m.tb.cn): resolve it to a product URL first`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InputError {
    kind: InputErrorKind,
    message: String,
}

/// The reason class of an [`InputError`]. The codes from [`InputErrorKind::as_str`] are
/// part of the public API: NEVER CHANGE an existing code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputErrorKind {
    /// Nothing but whitespace was given.
    Empty,
    /// The input is longer than [`super::MAX_INPUT_BYTES`] bytes.
    TooLong,
    /// A short link (`m.tb.cn`, `e.tb.cn`, `s.click.taobao.com/<code>`, `u.jd.com`, `3.cn`,
    /// `xhslink.com`): it must be resolved (followed) to the real URL first. linkloop never
    /// follows links.
    ShortLink,
    /// An affiliate, coupon or ad click link (`s.click.taobao.com/t?e=…`, `uland.taobao.com`,
    /// `click.simba.taobao.com`, `union-click.jd.com`): its target is opaque.
    AffiliateLink,
    /// A share token (淘口令 / 京口令) with no usable URL: only the app can resolve it.
    ShareToken,
    /// A trusted marketplace (or RED) URL that is not a product (or note) page: a shop,
    /// coupon, search, topic or profile page, or text with no link at all.
    NotProduct,
    /// A URL whose host is not one of the exact hosts linkloop trusts.
    UntrustedHost,
    /// A URL with a scheme other than `http`, `https` or a supported app scheme.
    UnsupportedScheme,
    /// A URL or id that is broken or hostile: user info before the host, a non-default port,
    /// dot segments, an id that is not a plain decimal (or 24-hex note) id, conflicting ids.
    Malformed,
}

// === impl InputErrorKind ===

impl InputErrorKind {
    /// Stable snake_case code: `empty`, `too_long`, `short_link`, `affiliate_link`,
    /// `share_token`, `not_product`, `untrusted_host`, `unsupported_scheme`, `malformed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            InputErrorKind::Empty => "empty",
            InputErrorKind::TooLong => "too_long",
            InputErrorKind::ShortLink => "short_link",
            InputErrorKind::AffiliateLink => "affiliate_link",
            InputErrorKind::ShareToken => "share_token",
            InputErrorKind::NotProduct => "not_product",
            InputErrorKind::UntrustedHost => "untrusted_host",
            InputErrorKind::UnsupportedScheme => "unsupported_scheme",
            InputErrorKind::Malformed => "malformed",
        }
    }
}

impl fmt::Display for InputErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl InputError ===

impl InputError {
    /// Builds an error. `message` must read well on its own and say what to do next.
    pub(crate) fn new(kind: InputErrorKind, message: impl Into<String>) -> InputError {
        InputError { kind, message: message.into() }
    }

    /// The reason class, for branching and for metrics.
    pub fn kind(&self) -> InputErrorKind {
        self.kind
    }

    /// The human-readable message (same text as `Display`).
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn empty(what: &str) -> InputError {
        InputError::new(InputErrorKind::Empty, format!("input is empty: paste {what}"))
    }

    pub(crate) fn too_long(len: usize) -> InputError {
        InputError::new(
            InputErrorKind::TooLong,
            format!("input is {len} bytes, over the {} byte limit: paste just the URL", super::MAX_INPUT_BYTES),
        )
    }

    pub(crate) fn short_link(host: &str, target: &str) -> InputError {
        InputError::new(
            InputErrorKind::ShortLink,
            format!("short link ({}): resolve it to a {target} URL first", quote(host)),
        )
    }

    pub(crate) fn affiliate_link(host: &str) -> InputError {
        InputError::new(
            InputErrorKind::AffiliateLink,
            format!("affiliate/ad link ({}): resolve it to a product URL first", quote(host)),
        )
    }

    pub(crate) fn share_token() -> InputError {
        InputError::new(
            InputErrorKind::ShareToken,
            "share token (淘口令/京口令): open it in the app and copy the product URL",
        )
    }

    pub(crate) fn not_product(message: impl Into<String>) -> InputError {
        InputError::new(InputErrorKind::NotProduct, message)
    }

    pub(crate) fn untrusted_host(host: &str, hosts_of: &str) -> InputError {
        let idn = host.split('.').any(|label| label.starts_with("xn--"));
        let hint = if idn { " (an internationalised, punycode `xn--` name: possibly a look-alike)" } else { "" };
        InputError::new(InputErrorKind::UntrustedHost, format!("host {} is not a {hosts_of} host{hint}", quote(host)))
    }

    pub(crate) fn unsupported_scheme(scheme: &str, accepted: &str) -> InputError {
        InputError::new(
            InputErrorKind::UnsupportedScheme,
            format!("unsupported scheme '{}:': only {accepted} are accepted", quote(scheme)),
        )
    }

    pub(crate) fn malformed(message: impl Into<String>) -> InputError {
        InputError::new(InputErrorKind::Malformed, message)
    }
}

/// Shortens user-controlled text for quoting in a message: at most [`QUOTE_MAX_CHARS`]
/// characters, control characters replaced, so a message stays one readable line.
pub(crate) fn quote(text: &str) -> String {
    let mut out: String =
        text.chars().take(QUOTE_MAX_CHARS).map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect();
    if text.chars().nth(QUOTE_MAX_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [InputErrorKind; 9] = [
        InputErrorKind::Empty,
        InputErrorKind::TooLong,
        InputErrorKind::ShortLink,
        InputErrorKind::AffiliateLink,
        InputErrorKind::ShareToken,
        InputErrorKind::NotProduct,
        InputErrorKind::UntrustedHost,
        InputErrorKind::UnsupportedScheme,
        InputErrorKind::Malformed,
    ];

    #[test]
    fn codes_are_stable() {
        let codes: Vec<&str> = ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            codes,
            [
                "empty",
                "too_long",
                "short_link",
                "affiliate_link",
                "share_token",
                "not_product",
                "untrusted_host",
                "unsupported_scheme",
                "malformed"
            ]
        );
    }

    #[test]
    fn display_is_the_message() {
        let e = InputError::short_link("m.tb.cn", "product");
        assert_eq!(e.kind(), InputErrorKind::ShortLink);
        assert_eq!(e.to_string(), "short link (m.tb.cn): resolve it to a product URL first");
        assert_eq!(e.message(), e.to_string());
        let e = InputError::untrusted_host("example.com", "Taobao, Tmall or JD product");
        assert_eq!(e.to_string(), "host example.com is not a Taobao, Tmall or JD product host");
    }

    #[test]
    fn quote_truncates_and_strips_controls() {
        let long = "x".repeat(500);
        let q = quote(&long);
        assert_eq!(q.chars().count(), QUOTE_MAX_CHARS + 1);
        assert!(q.ends_with('…'));
        assert_eq!(quote("a\nb\u{0}"), "a\u{FFFD}b\u{FFFD}");
        // Multi-byte characters are never split.
        let cjk = "淘".repeat(100);
        assert!(quote(&cjk).starts_with("淘淘"));
    }
}
