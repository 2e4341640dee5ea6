//! What a draft-08 topic or matcher value may contain (draft-dunglas-mercure-08 §Terminology,
//! §Subscription): valid UTF-8 without C0 (U+0000–U+001F) or C1 (U+0080–U+009F) controls,
//! U+007F, or Unicode format characters (general category `Cf`: bidirectional and zero-width
//! controls, invisible and useful for spoofing identifiers).
//!
//! UTF-8 itself is checked where the bytes are decoded (`http::dialect`); this module checks
//! the characters of a string that already is one.

/// The first character of `value` that a draft-08 topic or matcher must not contain.
pub fn forbidden_char(value: &str) -> Option<char> {
    value.chars().find(|&c| is_control(c) || is_format(c))
}

/// C0, DEL and C1.
fn is_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1F}' | '\u{7F}'..='\u{9F}')
}

/// Unicode general category `Cf` (Unicode 16.0, `DerivedGeneralCategory.txt`). The spec allows
/// a hub to refuse characters later versions add to `Cf` too; this table is the whole category.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{AD}'
            | '\u{600}'..='\u{605}'
            | '\u{61C}'
            | '\u{6DD}'
            | '\u{70F}'
            | '\u{890}'..='\u{891}'
            | '\u{8E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// How a forbidden character is named in an error message: its code point, since it is
/// invisible or would break the line.
pub fn describe(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_format_characters_are_found() {
        for bad in [
            "a\u{0}b",
            "a\nb",
            "a\u{7F}",
            "\u{85}x",
            "x\u{9F}",
            "a\u{200B}b",          // zero-width space
            "\u{202E}moc.elpmaxe", // right-to-left override
            "\u{FEFF}bom",
            "tag\u{E0041}",
        ] {
            assert!(forbidden_char(bad).is_some(), "{bad:?}");
        }
        for good in [
            "https://example.com/books/1",
            "/books/:id",
            "café/ü/日本",
            "emoji 🎉",
            "\u{A0}nbsp",
        ] {
            assert_eq!(forbidden_char(good), None, "{good:?}");
        }
        assert_eq!(describe('\u{200B}'), "U+200B");
    }
}
