//! RED (Xiaohongshu / rednote) notes: turning a pasted note URL, app link, share text or bare
//! id into a [`NoteId`].
//!
//! Owns: the note id syntax and the RED URL forms. Shares scanning, URL vetting and errors
//! with [`crate::platform`]. Never does I/O, never follows `xhslink.com` short links, never
//! takes a 24-hex id from a page that is not a note (topic pages and profiles have such ids
//! too).
//!
//! Accepted forms (exact hosts only: `www.xiaohongshu.com`, `xiaohongshu.com`,
//! `www.rednote.com`, `rednote.com`):
//!
//! | form | source |
//! |---|---|
//! | `65682d4500000000380339a5` | the bare id (24 hex characters, any case) |
//! | `https://<host>/explore/<id>` | web note page |
//! | `https://<host>/discovery/item/<id>` | web share button (`?xhsshare=pc_web…`) |
//! | `https://<host>/website-login/captcha?redirectPath=<note URL, encoded once>` | captcha interstitial |
//! | `xhsdiscover://item/<id>`, `xhsdiscover://video_feed/<id>` | app links |
//! | share text containing one of the URLs above | app "copy link" text |
//!
//! `xhslink.com` links are `ShortLink`; other RED pages (topics, profiles) are `NotProduct`.

use std::fmt;

use crate::platform::{
    Address, InputError, Scheme, leading_foreign_scheme, needs_resolving, parse_note_id, prepare,
    quote_for_message as quote, url_candidates, whole_input_url,
};

/// Hosts serving note pages.
const NOTE_HOSTS: [&str; 4] = ["www.xiaohongshu.com", "xiaohongshu.com", "www.rednote.com", "rednote.com"];

/// RED's short-link hosts.
const SHORT_HOSTS: [&str; 2] = ["xhslink.com", "www.xhslink.com"];

/// Domains of RED: other pages there are `NotProduct`, not `UntrustedHost`.
const FAMILY: [&str; 3] = ["xiaohongshu.com", "rednote.com", "xhslink.com"];

/// Path prefixes followed by exactly one note id segment.
const NOTE_PATHS: [&str; 2] = ["/explore/", "/discovery/item/"];

/// What `parse_note` accepts, for messages.
const NOTE_ACCEPTS: &str = "RED note URLs, xhsdiscover:// links, note ids and share text";

/// A RED note id: always exactly 24 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NoteId(String);

impl NoteId {
    /// The id, 24 lowercase hex characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NoteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a pasted RED note URL, `xhsdiscover://` link, share text or bare note id.
///
/// # Errors
/// An [`InputError`]: `Empty`, `TooLong`, `ShortLink` (`xhslink.com`: resolve it first),
/// `NotProduct` (a RED page that is not a note, or no link at all), `UntrustedHost`,
/// `UnsupportedScheme`, or `Malformed` (e.g. an id that is not 24 hex characters, user info,
/// a port, dot segments). Never panics.
pub fn parse_note(input: &str) -> Result<NoteId, InputError> {
    let text = prepare(input, "a RED note URL, note id or share text")?;
    if let Some(id) = parse_note_id(text) {
        return Ok(NoteId(id));
    }
    if let Some(scheme) = leading_foreign_scheme(text) {
        return Err(InputError::unsupported_scheme(scheme, NOTE_ACCEPTS));
    }
    // A lone scheme-less `//host/path` or `host.tld/path` is read as `https://…`.
    let with_scheme = whole_input_url(text);
    let text = with_scheme.as_deref().unwrap_or(text);
    let candidates = url_candidates(text);
    if candidates.is_empty() {
        return Err(no_note_link(text));
    }
    let mut first_error: Option<InputError> = None;
    for candidate in &candidates {
        match classify(candidate.text, false) {
            Ok(id) => return Ok(id),
            Err(e) => {
                let replace =
                    first_error.as_ref().is_none_or(|f| needs_resolving(e.kind()) && !needs_resolving(f.kind()));
                if replace {
                    first_error = Some(e);
                }
            }
        }
    }
    Err(first_error.unwrap_or_else(|| no_note_link(text)))
}

/// Classifies one URL. `nested` is true for the URL inside a captcha `redirectPath`, which
/// may not wrap again.
fn classify(text: &str, nested: bool) -> Result<NoteId, InputError> {
    let addr = Address::parse(text)?;
    match addr.scheme() {
        Scheme::XhsDiscover => match addr.host() {
            "item" | "video_feed" => id_segment(addr.path().strip_prefix('/').unwrap_or("")),
            other => Err(InputError::not_product(format!(
                "RED app link xhsdiscover://{} is not a note: open the note and copy its link",
                quote(other)
            ))),
        },
        Scheme::Http | Scheme::Https => classify_web(&addr, nested),
        _ => Err(InputError::unsupported_scheme(text.split(':').next().unwrap_or(""), NOTE_ACCEPTS)),
    }
}

fn classify_web(addr: &Address, nested: bool) -> Result<NoteId, InputError> {
    if addr.host_is(&SHORT_HOSTS) {
        return Err(InputError::short_link(addr.host(), "note"));
    }
    if !addr.host_is(&NOTE_HOSTS) {
        if addr.host_under(&FAMILY) {
            return Err(not_a_note(addr));
        }
        return Err(InputError::untrusted_host(addr.host(), "Xiaohongshu/RED note"));
    }
    let path = addr.path();
    if let Some(segment) = NOTE_PATHS.iter().find_map(|p| path.strip_prefix(p)) {
        return id_segment(segment);
    }
    if path == "/website-login/captcha" && !nested {
        return match addr.param("redirectPath")? {
            Some(target) if target.starts_with('/') && !target.starts_with("//") => {
                classify(&format!("https://www.xiaohongshu.com{target}"), true)
            }
            Some(target) => classify(&target, true),
            None => Err(not_a_note(addr)),
        };
    }
    Err(not_a_note(addr))
}

/// The note id in the last path segment (a trailing `/` is allowed).
fn id_segment(segment: &str) -> Result<NoteId, InputError> {
    let segment = segment.strip_suffix('/').unwrap_or(segment);
    parse_note_id(segment).map(NoteId).ok_or_else(|| {
        InputError::malformed(format!(
            "note id '{}' is not 24 hex characters: copy the note link again",
            quote(segment)
        ))
    })
}

fn not_a_note(addr: &Address) -> InputError {
    InputError::not_product(format!(
        "{}{} is a RED page but not a note (e.g. a topic or profile): open the note and copy its link",
        addr.host(),
        quote(addr.path())
    ))
}

fn no_note_link(text: &str) -> InputError {
    let id_like = text.len() >= 8 && text.bytes().all(|b| b.is_ascii_alphanumeric());
    if id_like {
        InputError::malformed("not a note id: a RED note id is 24 hex characters (0-9, a-f)")
    } else {
        InputError::not_product("no RED note link found: paste the note URL, its share text or its 24-hex id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::InputErrorKind::{self, *};

    fn note(input: &str) -> Result<String, InputErrorKind> {
        parse_note(input).map(|n| n.as_str().to_owned()).map_err(|e| e.kind())
    }

    const ID: &str = "65682d4500000000380339a5";

    #[test]
    fn forms() {
        for input in [
            ID.to_owned(),
            ID.to_ascii_uppercase(),
            format!(" {ID}\n"),
            format!("https://www.xiaohongshu.com/explore/{ID}?xsec_token=a="),
            format!("https://XiaoHongShu.com./discovery/item/{ID}/"),
            format!("https://www.rednote.com/discovery/item/{ID}"),
            format!("xhsdiscover://item/{ID}?type=video"),
            format!("XHSDISCOVER://video_feed/{ID}"),
            format!("www.xiaohongshu.com/explore/{ID}，复制"),
            format!("看看 😆 abc 😆 https://www.xiaohongshu.com/explore/{ID}，复制"),
            format!(
                "https://www.xiaohongshu.com/website-login/captcha?redirectPath=https%3A%2F%2Fwww.xiaohongshu.com%2Fexplore%2F{ID}&verifyType=1"
            ),
            format!("https://www.xiaohongshu.com/website-login/captcha?redirectPath=%2Fexplore%2F{ID}"),
        ] {
            assert_eq!(note(&input).as_deref(), Ok(ID), "{input}");
        }
        let n = parse_note(ID).map(|n| n.to_string());
        assert_eq!(n.as_deref(), Ok(ID));
    }

    #[test]
    fn hostile() {
        for (input, want) in [
            ("", Empty),
            ("   ", Empty),
            ("https://xhslink.com/a/b", ShortLink),
            ("http://xhslink.com/o/../../localhost", Malformed),
            ("https://user@xiaohongshu.com/explore/abc", Malformed),
            ("https://xiaohongshu.com:444/explore/abc", Malformed),
            ("https://xiaohongshu.com.evil.test/", UntrustedHost),
            ("https://evil.test/explore/65682d4500000000380339a5", UntrustedHost),
            ("https://www.xiaohongshu.com/discovery/item/not-a-note-id", Malformed),
            ("https://www.xiaohongshu.com/explore/65682d4500000000380339a", Malformed),
            ("https://www.xiaohongshu.com/explore/65682d4500000000380339a5/x", Malformed),
            ("https://www.xiaohongshu.com/explore/65682d4500000000380339ag", Malformed),
            ("https://www.xiaohongshu.com/user/profile/65682d4500000000380339a5", NotProduct),
            ("https://www.xiaohongshu.com/page/topics/65682d4500000000380339a5", NotProduct),
            ("https://www.xiaohongshu.com/#/explore/65682d4500000000380339a5", NotProduct),
            ("https://creator.xiaohongshu.com/explore/65682d4500000000380339a5", NotProduct),
            ("xhsdiscover://user/65682d4500000000380339a5", NotProduct),
            // A captcha wrapper may not wrap another one, nor point elsewhere.
            (
                "https://www.xiaohongshu.com/website-login/captcha?redirectPath=https%3A%2F%2Fwww.xiaohongshu.com%2Fwebsite-login%2Fcaptcha%3FredirectPath%3D%252Fexplore%252F65682d4500000000380339a5",
                NotProduct,
            ),
            (
                "https://www.xiaohongshu.com/website-login/captcha?redirectPath=https%3A%2F%2Fevil.test%2Fexplore%2F65682d4500000000380339a5",
                UntrustedHost,
            ),
            ("javascript:alert('https://www.xiaohongshu.com/explore/65682d4500000000380339a5')", UnsupportedScheme),
            ("file:///etc/passwd", UnsupportedScheme),
            ("tbopen://m.taobao.com/x", UnsupportedScheme),
            ("65682d4500000000380339a5zz", Malformed),
            ("hello world", NotProduct),
        ] {
            assert_eq!(note(input), Err(want), "{input}");
        }
        assert_eq!(note(&"a".repeat(4097)), Err(TooLong));
    }

    #[test]
    fn short_link_wins_over_other_errors_in_share_text() {
        assert_eq!(note("https://evil.test/ 😆 http://xhslink.com/GQ0MHB，复制"), Err(ShortLink));
    }
}
