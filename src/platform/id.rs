//! Strict id syntax: marketplace item/SKU ids and RED note ids.
//!
//! Owns: the single definition of what a valid id looks like. Never does I/O, never
//! trims, never guesses: `" 123"`, `"+123"`, `"0123"`, `"１２３"` (full-width) are all invalid.

/// Most decimal digits accepted in an item or SKU id. Every 19-digit number fits in a `u64`
/// (max `9_999_999_999_999_999_999 < u64::MAX`), so a valid id can never overflow.
pub(crate) const MAX_ID_DIGITS: usize = 19;

/// Length of a RED note id: 24 hex characters (a 12-byte object id).
pub(crate) const NOTE_ID_LEN: usize = 24;

/// Parses a marketplace id: 1 to [`MAX_ID_DIGITS`] ASCII digits, no sign, no leading zero,
/// not zero. `None` for anything else.
pub(crate) fn parse_numeric_id(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let first = *bytes.first()?;
    if bytes.len() > MAX_ID_DIGITS || first == b'0' || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    text.parse::<u64>().ok()
}

/// True when `text` has the shape of an item id but is not a valid one: all ASCII digits, but
/// with a leading zero, or too long. Used to say "malformed" rather than "not a product".
pub(crate) fn looks_numeric(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// Parses a RED note id: exactly [`NOTE_ID_LEN`] ASCII hex digits, returned lowercased.
pub(crate) fn parse_note_id(text: &str) -> Option<String> {
    if text.len() == NOTE_ID_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some(text.to_ascii_lowercase())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_ids() {
        assert_eq!(parse_numeric_id("1"), Some(1));
        assert_eq!(parse_numeric_id("878010637397"), Some(878_010_637_397));
        assert_eq!(parse_numeric_id("4611686062152172176"), Some(4_611_686_062_152_172_176));
        assert_eq!(parse_numeric_id("9999999999999999999"), Some(9_999_999_999_999_999_999));
    }

    #[test]
    fn hostile_numeric_ids() {
        for bad in [
            "",
            "0",
            "0123",
            "+123",
            "-1",
            " 123",
            "123 ",
            "12a",
            "１２３",
            "12345678901234567890",
            "18446744073709551616",
            "99999999999999999999999",
            "1_000",
            "1e9",
            "0x10",
            "١٢٣",
        ] {
            assert_eq!(parse_numeric_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn note_ids() {
        assert_eq!(parse_note_id("65682d4500000000380339a5").as_deref(), Some("65682d4500000000380339a5"));
        assert_eq!(parse_note_id("65682D4500000000380339A5").as_deref(), Some("65682d4500000000380339a5"));
        for bad in [
            "",
            "abc",
            "not-a-note-id",
            "65682d4500000000380339a",
            "65682d4500000000380339a5f",
            "65682d4500000000380339ag",
            "65682d45000000003803３9a5",
            " 65682d4500000000380339a",
        ] {
            assert_eq!(parse_note_id(bad), None, "{bad:?}");
        }
    }
}
