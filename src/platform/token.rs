//! Share tokens (淘口令 / 京口令): recognising them so the operator gets the right error.
//!
//! Owns: the shape of a share token as it occurs in pasted text. A token is a run of 10 to 16
//! ASCII letters and digits mixing at least two of upper case, lower case and digits, that
//! is either
//! - wrapped: each side touches a wrapper character or the edge of the input. Wrappers are
//!   the symbols the apps use, `￥ € £ ₤ ₳ $ ( ) / :`, emoji and CJK characters
//!   (`描述￥i9CMbz0hLPo￥后`, `🎵KwaybL9lo8y🔑`, `7(￥hxWAcj3Yiqt￥)/:/`, `8/F2iBcQ6xCZB//`); or
//! - followed by a channel code: whitespace then `CZ` and digits (`0HshdpTt27g CZ3457`).
//!
//! A token can only be resolved by the Taobao/JD app, so linkloop never extracts anything
//! from it; finding one only selects the [`ShareToken`](super::InputErrorKind::ShareToken)
//! error. Text inside URL candidates is skipped. Never does I/O.

use std::ops::Range;

/// Shortest and longest token body (淘口令 are 11 characters, 京口令 up to 16).
const TOKEN_LEN: Range<usize> = 10..17;

/// Returns the first share token in `text` outside the `skip` byte ranges, if any.
pub(crate) fn find_share_token<'a>(text: &'a str, skip: &[Range<usize>]) -> Option<&'a str> {
    let bytes = text.as_bytes();
    let mut i = 0usize;
    while i < bytes.len() {
        if !bytes.get(i).is_some_and(u8::is_ascii_alphanumeric) {
            i += 1;
            continue;
        }
        let start = i;
        while bytes.get(i).is_some_and(u8::is_ascii_alphanumeric) {
            i += 1;
        }
        let end = i;
        if skip.iter().any(|r| start < r.end && r.start < end) {
            continue;
        }
        let Some(run) = text.get(start..end) else {
            continue;
        };
        if is_token_shaped(run) && (is_wrapped(text, start, end) || has_channel_code(text, end)) {
            return Some(run);
        }
    }
    None
}

fn is_token_shaped(run: &str) -> bool {
    let classes = [
        run.bytes().any(|b| b.is_ascii_uppercase()),
        run.bytes().any(|b| b.is_ascii_lowercase()),
        run.bytes().any(|b| b.is_ascii_digit()),
    ];
    TOKEN_LEN.contains(&run.len()) && classes.iter().filter(|c| **c).count() >= 2
}

/// A wrapper character: not a letter or digit, not whitespace, not URL/e-mail punctuation,
/// and not the 【】「」《》 brackets that enclose product titles.
fn is_wrapper(c: Option<char>) -> bool {
    match c {
        None => true,
        Some(c) => {
            !c.is_ascii_alphanumeric()
                && !c.is_whitespace()
                && !c.is_control()
                && !matches!(
                    c,
                    '.' | '-'
                        | '_'
                        | '='
                        | '@'
                        | '&'
                        | '%'
                        | '+'
                        | '#'
                        | '?'
                        | '\\'
                        | '"'
                        | '\''
                        | '['
                        | ']'
                        | '【'
                        | '】'
                        | '「'
                        | '」'
                        | '《'
                        | '》'
                )
        }
    }
}

fn is_wrapped(text: &str, start: usize, end: usize) -> bool {
    let before = text.get(..start).and_then(|t| t.chars().next_back());
    let after = text.get(end..).and_then(|t| t.chars().next());
    is_wrapper(before) && is_wrapper(after)
}

/// True when `text[end..]` is whitespace, `CZ`/`cz`, 3 to 6 digits, then the end, whitespace
/// or a non-alphanumeric character.
fn has_channel_code(text: &str, end: usize) -> bool {
    let Some(rest) = text.get(end..) else {
        return false;
    };
    let trimmed = rest.trim_start();
    if trimmed.len() == rest.len() {
        return false;
    }
    let Some(code) = trimmed.strip_prefix("CZ").or_else(|| trimmed.strip_prefix("cz")) else {
        return false;
    };
    let digits = code.bytes().take_while(u8::is_ascii_digit).count();
    let next = code.as_bytes().get(digits);
    (3..=6).contains(&digits) && !next.is_some_and(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_wrappers() {
        for (text, token) in [
            ("￥AEpabxiRg0u￥", "AEpabxiRg0u"),
            ("￥FDIMWEeqJYrCTRfn￥ CZ154", "FDIMWEeqJYrCTRfn"),
            ("0HshdpTt27g CZ3457", "0HshdpTt27g"),
            ("JxNFWTcR8fy CZ0001 ", "JxNFWTcR8fy"),
            ("0_0(s0jWcizeD02(/", "s0jWcizeD02"),
            ("7(￥hxWAcj3Yiqt￥)/:/", "hxWAcj3Yiqt"),
            ("8/F2iBcQ6xCZB//", "F2iBcQ6xCZB"),
            ("a:/😺yhSSc90Hk1L₤", "yhSSc90Hk1L"),
            ("£0v0nbLdondC£", "0v0nbLdondC"),
            ("₳Y5rMYReybZe₳", "Y5rMYReybZe"),
            ("描述￥i9CMbz0hLPo￥后", "i9CMbz0hLPo"),
            ("（￥OZGjcQKQkLE", "OZGjcQKQkLE"),
            ("￥2jRycicbvxe$", "2jRycicbvxe"),
            ("🎵KwaybL9lo8y🔑", "KwaybL9lo8y"),
            ("💰0v0nbLdondC💰", "0v0nbLdondC"),
            ("淘口令：(oFn2bqKbHxv)", "oFn2bqKbHxv"),
            ("復·制这段描述€08skb3DzfQC€后咑閞", "08skb3DzfQC"),
        ] {
            assert_eq!(find_share_token(text, &[]), Some(token), "{text}");
        }
    }

    #[test]
    fn not_tokens() {
        for text in [
            "京东价：￥99 内购价：￥59",
            "😆 ue7Iikt0acF70v5 😆",
            "hello everyone",
            "【iPhone15ProMax】",
            "878010637397",
            "65682d4500000000380339a5",
            "user.Abcdefghij1@mail.test",
            "ABCDEFGHIJKL",
            "abcdefghijkl",
            "Abc123xyZ89 CZ12",
            "",
        ] {
            assert_eq!(find_share_token(text, &[]), None, "{text}");
        }
    }

    #[test]
    fn skips_url_ranges() {
        let text = "https://a.test/Q68LWdnBIKy/ x";
        assert_eq!(find_share_token(text, &[0..27, 28..29]), None);
        assert_eq!(find_share_token(text, &[]), Some("Q68LWdnBIKy"));
    }
}
