//! Names chosen by the traced programs, made safe to show.
//!
//! A thread names itself (prctl PR_SET_NAME takes any bytes but NUL), so a
//! name is hostile input: a newline forges report lines, ESC and OSC
//! sequences retitle or clear the operator's terminal, a bidi override
//! (U+202E) reorders what follows it, and control characters are not
//! allowed in XML at all, so the SVG would not parse. [`text`] writes each
//! such character as a visible escape (`\n`, `\x1b`, `\u{202e}`), and a
//! backslash as `\\`, so every escaped name reads back unambiguously.
//! JSON needs none of this: its strings escape control characters, and the
//! name is kept as faithfully as the format allows.

use std::{borrow::Cow, fmt::Write as _};

/// True for characters that must not reach a terminal or a document raw:
/// C0/C1 controls and DEL, bidi embeddings, overrides and isolates, and the
/// line/paragraph separators some terminals and viewers break lines on.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every control character, bidi control and backslash escaped;
/// borrowed when nothing needed escaping (the usual case).
pub fn text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || unsafe_char(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The raw bytes of a name as lowercase hex, for JSON's `comm_bytes` when
/// they are not valid UTF-8 (the name itself then carries U+FFFD).
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// True when `s` passed through [`text`] holds no character a terminal or
/// an XML parser would act on (the property `cargo xtask fuzz` checks).
pub fn is_inert(s: &str) -> bool {
    !s.chars().any(unsafe_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_borrowed_as_they_are() {
        assert!(matches!(text("worker-1"), Cow::Borrowed("worker-1")));
        assert_eq!(text("a) (b"), "a) (b");
        assert_eq!(text("naïve ✓"), "naïve ✓");
    }

    #[test]
    fn newlines_escapes_and_bidi_overrides_are_made_visible() {
        assert_eq!(text("a\nFAKE line"), "a\\nFAKE line");
        assert_eq!(text("\x1b]0;pwned\x07"), "\\x1b]0;pwned\\x07");
        assert_eq!(text("\u{202e}gpj.exe"), "\\u{202e}gpj.exe");
        assert_eq!(text("\u{9b}2J"), "\\u{9b}2J");
        assert_eq!(text("del\x7f"), "del\\x7f");
    }

    #[test]
    fn a_backslash_is_doubled_so_escapes_cannot_be_faked() {
        assert_eq!(text("a\\nb"), "a\\\\nb");
        assert_ne!(text("a\\nb"), text("a\nb"));
    }

    #[test]
    fn escaped_text_is_inert() {
        for s in ["\x00\x01\x1f", "\u{2066}x\u{2069}", "\r\n\t", "\u{2028}"] {
            assert!(!is_inert(s));
            assert!(is_inert(&text(s)), "{s:?}");
        }
    }

    #[test]
    fn hex_spells_every_byte() {
        assert_eq!(hex(b"\xffA\x00"), "ff4100");
        assert_eq!(hex(b""), "");
    }
}
