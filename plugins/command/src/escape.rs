//! Making a command's output safe to log: every control character is written as a visible
//! escape, so no raw ESC (terminal colours, cursor moves, title changes), CR (a line that
//! overwrites the one before it on a terminal) or other control byte from a child reaches the
//! operator's terminal or a log parser. Everything else, backslashes included, is unchanged.

use std::borrow::Cow;
use std::fmt::Write;

/// `line` with each control character (C0, DEL, C1: Unicode's `Cc`) escaped: `\t`, `\r`,
/// `\n` by name, others as `\x1b` (below U+0080) or `\u{9b}` (C1).
pub fn escape_controls(line: &str) -> Cow<'_, str> {
    if !line.chars().any(char::is_control) {
        return Cow::Borrowed(line);
    }
    let mut escaped = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        match c {
            '\t' => escaped.push_str("\\t"),
            '\r' => escaped.push_str("\\r"),
            '\n' => escaped.push_str("\\n"),
            c if c.is_control() && (c as u32) < 0x80 => {
                let _ = write!(escaped, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(escaped, "\\u{{{:x}}}", c as u32);
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible_escapes() {
        assert_eq!(
            escape_controls("\u{1b}[31mred\u{1b}[0m\rover\twritten\u{7}\u{0}\u{7f}\u{9b}2J"),
            "\\x1b[31mred\\x1b[0m\\rover\\twritten\\x07\\x00\\x7f\\u{9b}2J"
        );
    }

    #[test]
    fn printable_text_is_borrowed_unchanged() {
        for line in ["plain", "C:\\path\\x1b is text", "naïve ünïcödé ✓", ""] {
            assert!(matches!(escape_controls(line), Cow::Borrowed(l) if l == line), "{line}");
        }
    }

    #[test]
    fn no_control_character_survives() {
        let every: String = (0..=0x10ffff_u32).filter_map(char::from_u32).collect();
        assert!(!escape_controls(&every).chars().any(char::is_control));
    }
}
