//! Text from outside (a Compose file, fleet.toml, a peer's answer, a journal line) made safe to
//! show: one line of printable characters. The one place that decides what a terminal or a
//! comment may receive as-is; everything kapell prints or writes into a comment that it did not
//! write itself goes through [`printable`].

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters that a terminal or an editor would act on instead of showing: control characters
/// (newlines, escapes, DEL, C1), line and paragraph separators, and the bidirectional overrides
/// that reorder what is shown.
fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` on one line with every unprintable character written as a visible escape (`\n`,
/// `\u{1b}`): unchanged (borrowed) when there is none.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unprintable) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unprintable(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A text of several lines that kapell composed (a failure reason with journal lines under it):
/// each line shown with [`printable`], the line breaks kept.
pub fn printable_lines(text: &str) -> String {
    text.lines().map(|line| printable(line).into_owned()).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::{printable, printable_lines};

    #[test]
    fn each_line_is_shown_printable_and_the_breaks_stay() {
        assert_eq!(printable_lines("failed\n  journal: \u{1b}[2Jx"), "failed\n  journal: \\u{1b}[2Jx");
    }

    #[test]
    fn unprintable_characters_become_visible_escapes() {
        assert_eq!(printable("web1"), "web1");
        assert_eq!(printable("a\nb\tc\r"), "a\\nb\\tc\\r");
        assert_eq!(printable("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(printable("x\u{7f}\u{85}\u{2028}\u{202e}y"), "x\\u{7f}\\u{85}\\u{2028}\\u{202e}y");
        assert_eq!(printable("ünïcödé ✓"), "ünïcödé ✓");
    }

    proptest::proptest! {
        /// Whatever goes in, what comes out is one line without a control character.
        #[test]
        fn output_is_one_printable_line(text in "\\PC*|[\\x00-\\x1f\\x7f-\\u{9f}\\u{2028}\\u{202e}a-z]*") {
            let out = printable(&text);
            proptest::prop_assert!(!out.chars().any(|c| c.is_control() || c == '\u{2028}' || c == '\u{202e}'), "{out:?}");
        }
    }
}
