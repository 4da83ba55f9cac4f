//! The one escaper: how any user value is written into a unit file so that it means exactly itself.
//!
//! systemd reads a unit file line by line; a value runs to the end of its line, `%` introduces a
//! specifier, and list settings such as `ExecStart=` and `Environment=` split words on whitespace,
//! honour double quotes and C escapes. [`quote`] turns any string into one quoted word that systemd
//! (and [`unquote`], its inverse, used by the supervisor and the tests) reads back as the original
//! string. `ExecStart=` additionally gets systemd's `:` prefix from the renderer, which turns off
//! `$VAR` substitution, so `$` needs no escaping here.
//!
//! [`text`] is for the few settings that take free text verbatim (`Description=`): those do not
//! unquote, so control characters are replaced by spaces and `%` is doubled.

use std::fmt::Write as _;

/// One word, safe in any word-splitting setting and in kapell's own sections: left bare when it
/// holds only characters no setting treats specially, double-quoted and escaped otherwise.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    quote_into(&mut out, value);
    out
}

/// How long [`quote`] makes `value`, without building it: at most six bytes per character (a
/// control character as `\uNNNN`), so a value's length says little of its line's.
pub fn quoted_len(value: &str) -> usize {
    value
        .chars()
        .map(|c| match c {
            '"' | '\\' | '%' | '\n' | '\t' | '\r' => 2,
            c if c.is_control() => 6,
            c => c.len_utf8(),
        })
        .sum::<usize>()
        + 2
}

/// [`quote`], appended to `out` (lists are built in one string, without a string per word).
pub fn quote_into(out: &mut String, value: &str) {
    // A `matches!`, not a search in a string of the allowed signs: this runs for every
    // character of most values of every unit.
    let plain = |c: char| {
        c.is_ascii_alphanumeric()
            || matches!(c, '/' | '.' | '_' | ',' | ':' | '=' | '+' | '@' | '-')
            || (!c.is_ascii() && c.is_alphanumeric() && !c.is_control())
    };
    let bare = !value.is_empty() && value.chars().all(plain);
    if bare {
        out.push_str(value);
        return;
    }
    out.reserve(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '%' => out.push_str("%%"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                // systemd's C unescaping knows \xNN (a byte) and \uNNNN / \UNNNNNNNN (a code point).
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Several quoted words separated by spaces (an argument vector, a list).
pub fn quote_all<S: AsRef<str>>(values: &[S]) -> String {
    let mut out = String::with_capacity(values.iter().map(|v| v.as_ref().len() + 1).sum());
    quote_all_into(&mut out, values);
    out
}

/// [`quote_all`], appended to `out`.
pub fn quote_all_into<S: AsRef<str>>(out: &mut String, values: &[S]) {
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        quote_into(out, value.as_ref());
    }
}

/// An `ExecStart=` command line. systemd expands `$VAR` in command lines; the `:` prefix turns
/// that off, and is added only when an argument holds a `$`, so simple lines stay plain.
pub fn exec_line<S: AsRef<str>>(argv: &[S]) -> String {
    let mut out = String::with_capacity(argv.iter().map(|a| a.as_ref().len() + 1).sum::<usize>() + 1);
    exec_line_into(&mut out, argv);
    out
}

/// [`exec_line`], appended to `out`.
pub fn exec_line_into<S: AsRef<str>>(out: &mut String, argv: &[S]) {
    if argv.iter().any(|a| a.as_ref().contains('$')) {
        out.push(':');
    }
    quote_all_into(out, argv);
}

/// Free text for settings that take the rest of the line verbatim (specifiers still apply).
pub fn text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    text_into(&mut out, value);
    out
}

/// [`text`], appended to `out`.
pub fn text_into(out: &mut String, value: &str) {
    match plain_text(value) {
        Some(plain) => out.push_str(plain),
        None => out.push_str(&sanitize(value)),
    }
}

/// `value` itself when [`text`] would leave it unchanged (the common case: no copy needed).
fn plain_text(value: &str) -> Option<&str> {
    // Bytes first: most values are ASCII, and only non-ASCII text can hold a C1 control (U+0080
    // to U+009F), so only that is decoded to chars (this runs on every header line of every unit).
    // A fold over every byte rather than `any`: without the early exit the loop is vectorized,
    // and a value with a special byte is rare.
    let special = |b: u8| b.is_ascii_control() | (b == b'%');
    let has_special = value.bytes().fold(false, |found, b| found | special(b))
        || (!value.is_ascii() && value.chars().any(|c: char| c.is_control()));
    let plain = !has_special && !value.ends_with(['\\', ' ']) && !value.starts_with(char::is_whitespace);
    plain.then_some(value)
}

fn sanitize(value: &str) -> String {
    let mut out: String =
        value.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().replace('%', "%%");
    // A trailing backslash would continue the line; trailing blanks are stripped by systemd anyway.
    while out.ends_with('\\') || out.ends_with(' ') {
        out.pop();
    }
    out.trim_start().to_string()
}

/// Error from [`unquote`]: the value is not a sequence of words kapell could have written.
#[derive(Debug, PartialEq, Eq)]
pub struct UnquoteError(pub String);

impl std::fmt::Display for UnquoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UnquoteError {}

/// Splits a value into words the way systemd does for quoted, C-escaped, specifier-escaped lists.
///
/// Only the escapes [`quote`] produces plus systemd's usual single-character ones are accepted;
/// `%` must be doubled (kapell's sections are not subject to specifier expansion, but they are
/// written with the same rules so one escaper serves every line).
pub fn unquote(value: &str) -> Result<Vec<String>, UnquoteError> {
    let mut words = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut word = String::new();
        let quoted = first == '"' || first == '\'';
        let quote_char = first;
        if quoted {
            chars.next();
        }
        loop {
            let Some(c) = chars.next() else {
                if quoted {
                    return Err(UnquoteError("unterminated quote".into()));
                }
                break;
            };
            match c {
                c if quoted && c == quote_char => {
                    if chars.peek().is_some_and(|c| !c.is_ascii_whitespace()) {
                        return Err(UnquoteError("text directly after a closing quote".into()));
                    }
                    break;
                }
                c if !quoted && c.is_ascii_whitespace() => break,
                '%' => match chars.next() {
                    Some('%') => word.push('%'),
                    _ => return Err(UnquoteError("a lone '%' (specifiers are not allowed here)".into())),
                },
                '\\' => word.push(unescape_one(&mut chars)?),
                c => word.push(c),
            }
        }
        words.push(word);
    }
    Ok(words)
}

fn unescape_one(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<char, UnquoteError> {
    let hex = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>, n: usize| {
        let digits: String = chars.by_ref().take(n).collect();
        u32::from_str_radix(&digits, 16)
            .ok()
            .filter(|_| digits.len() == n)
            .and_then(char::from_u32)
            .ok_or_else(|| UnquoteError(format!("bad escape \\{digits}")))
    };
    match chars.next() {
        Some('n') => Ok('\n'),
        Some('t') => Ok('\t'),
        Some('r') => Ok('\r'),
        Some('a') => Ok('\x07'),
        Some('b') => Ok('\x08'),
        Some('f') => Ok('\x0c'),
        Some('v') => Ok('\x0b'),
        Some('s') => Ok(' '),
        Some(c @ ('\\' | '"' | '\'')) => Ok(c),
        Some('x') => hex(chars, 2),
        Some('u') => hex(chars, 4),
        Some('U') => hex(chars, 8),
        Some(c) => Err(UnquoteError(format!("unknown escape \\{c}"))),
        None => Err(UnquoteError("trailing backslash".into())),
    }
}

#[cfg(test)]
mod tests {

    /// The length [`quote`] gives, told without building it: the length checks rely on it.
    #[test]
    fn quoted_len_is_the_quoted_length() {
        for value in ["a\u{1}b", "\"%\\\n\t\r", "snow ☃ and \u{7f}\u{85}", "", "x y"] {
            assert_eq!(quoted_len(value), quote(value).len(), "{value:?}");
        }
        assert!(quoted_len("plain") >= quote("plain").len());
    }
    use super::*;

    #[test]
    fn quote_round_trips_nasty_values() {
        for v in [
            "",
            "plain",
            "a b",
            "say \"hi\"",
            "100%",
            "$HOME",
            "back\\slash",
            "line\nbreak",
            "tab\t",
            "\x01\x7f",
            "ünïcødé ✓",
            "'single'",
        ] {
            let q = quote(v);
            assert!(!q.contains('\n'), "{q:?} spans lines");
            assert_eq!(unquote(&q).expect("unquote"), vec![v.to_string()], "{q}");
        }
    }

    #[test]
    fn bare_words_are_exactly_letters_digits_and_the_plain_signs() {
        // Every ASCII character, C1 controls, other Unicode letters, digits and signs.
        let chars = (0u32..0x80).chain([0x85, 0x9f, 0xa0, 0xe9, 0x3b1, 0x663, 0x2028, 0x4e2d, 0x1f600]);
        for c in chars.filter_map(char::from_u32) {
            let bare = quote(&c.to_string()) == c.to_string();
            let expected = (c.is_alphanumeric() && !c.is_control()) || "/._,:=+@-".contains(c);
            assert_eq!(bare, expected, "{c:?}");
        }
        assert_eq!(quote(""), "\"\"");
    }

    #[test]
    fn text_keeps_plain_text_and_mends_the_rest() {
        assert_eq!(text("a web front (shop.web)"), "a web front (shop.web)");
        assert_eq!(text("caf\u{e9} 100%"), "caf\u{e9} 100%%");
        assert_eq!(text("a\u{85}b\tc"), "a b c");
        assert_eq!(text(" lead and trail \\"), "lead and trail");
    }

    #[test]
    fn quote_doubles_percent() {
        assert_eq!(quote("50%d"), "\"50%%d\"");
        assert_eq!(quote("/usr/bin/x"), "/usr/bin/x");
        assert_eq!(quote(";"), "\";\"");
        assert_eq!(quote(""), "\"\"");
    }

    #[test]
    fn exec_lines_disable_substitution_only_when_needed() {
        assert_eq!(exec_line(&["/bin/echo", "hi"]), "/bin/echo hi");
        assert_eq!(exec_line(&["/bin/echo", "$HOME"]), ":/bin/echo \"$HOME\"");
    }

    #[test]
    fn text_is_one_line_without_specifiers() {
        assert_eq!(text("a\nb %n \\"), "a b %%n");
        // Controls anywhere: C0, DEL and C1 (U+0085 is a line break to some readers); other
        // non-ASCII text stays as it is.
        assert_eq!(text("a\x7fb\u{85}c\u{9f}d"), "a b c d");
        assert_eq!(text("ünïcødé ✓ \u{a0}x"), "ünïcødé ✓ \u{a0}x");
        assert_eq!(text("x\u{2028}y"), "x\u{2028}y");
    }

    #[test]
    fn unquote_splits_words() {
        assert_eq!(unquote(r#""a b" c  "d""#).expect("ok"), vec!["a b", "c", "d"]);
        assert!(unquote("\"open").is_err());
        assert!(unquote("50%").is_err());
    }
}
