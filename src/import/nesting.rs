//! How deeply a YAML text nests flow collections (`[…]`, `{…}`), found before the YAML parser
//! sees it: the parser's scanner does work proportional to the nesting at every token, so 40,000
//! nested `[` took half a minute, long before its own depth limit refuses the document.
//!
//! A linear pass that knows where YAML's tokens start: quoted scalars (which may span lines),
//! plain scalars (where `[` is text in block context and `'` is text everywhere), comments and
//! block scalars (`|`, `>`: their more-indented lines are text). It errs towards counting: a
//! bracket it cannot place is counted, so a text can be refused for nesting but never pass
//! with more nesting than it reports.

/// Deeper than this is refused. The parser refuses more than 128 levels of any nesting anyway;
/// a Compose file nests flows two or three levels.
pub const MAX_FLOW_NESTING: usize = 64;

#[derive(Clone, Copy, PartialEq)]
enum State {
    /// Between tokens.
    Token,
    /// In a plain scalar.
    Plain,
    /// In a quoted scalar.
    Single,
    Double,
}

/// Ok, or the line (1-based) where the nesting goes deeper than [`MAX_FLOW_NESTING`].
pub fn check(text: &str) -> Result<(), usize> {
    let mut depth = 0usize;
    let mut state = State::Token;
    // The indentation of the line that opened a block scalar: more-indented lines are its text.
    let mut block_scalar: Option<usize> = None;
    // The indentation of the line a plain scalar (in block context) started on: a
    // more-indented line continues it.
    let mut plain_indent: Option<usize> = None;
    for (number, line) in text.split('\n').enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let blank = line.trim().is_empty();
        if let Some(n) = block_scalar {
            if blank || indent > n {
                continue;
            }
            block_scalar = None;
        }
        if state == State::Plain && depth == 0 && !(blank || plain_indent.is_some_and(|p| indent > p)) {
            state = State::Token;
        }
        if state == State::Token && depth == 0 {
            plain_indent = Some(indent);
        }
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            let next = bytes.get(i + 1).copied();
            let after_space = i == 0 || bytes[i - 1] == b' ' || bytes[i - 1] == b'\t';
            match state {
                State::Single => {
                    if c == b'\'' {
                        if next == Some(b'\'') {
                            i += 1;
                        } else {
                            state = State::Token;
                        }
                    }
                }
                State::Double => match c {
                    b'\\' => i += 1,
                    b'"' => state = State::Token,
                    _ => {}
                },
                State::Plain | State::Token => {
                    let ends_value = next.is_none_or(|n| n == b' ' || n == b'\t' || n == b'\r');
                    if c == b'#' && after_space {
                        break; // a comment to the end of the line
                    } else if depth > 0 && matches!(c, b',' | b'[' | b']' | b'{' | b'}') || state == State::Token {
                        match c {
                            b'[' | b'{' => {
                                depth += 1;
                                if depth > MAX_FLOW_NESTING {
                                    return Err(number + 1);
                                }
                                state = State::Token;
                            }
                            b']' | b'}' => {
                                depth = depth.saturating_sub(1);
                                state = State::Token;
                            }
                            b',' => state = State::Token,
                            b'\'' => state = State::Single,
                            b'"' => state = State::Double,
                            b' ' | b'\t' | b'\r' => {}
                            b'-' | b'?' | b':' if ends_value => {}
                            b'|' | b'>' if depth == 0 => {
                                block_scalar = Some(indent);
                                break;
                            }
                            _ => {
                                state = State::Plain;
                                if depth == 0 {
                                    plain_indent = Some(indent);
                                }
                            }
                        }
                    } else if c == b':' && (ends_value || depth > 0 && next == Some(b',')) {
                        state = State::Token; // `key: value`: the key ends, a value may follow
                    }
                }
            }
            i += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(text: &str) -> bool {
        check(text).is_ok()
    }

    #[test]
    fn deep_flows_are_refused_on_their_line() {
        let deep = |n: usize| format!("services:\n  web:\n    command: {}{}\n", "[".repeat(n), "]".repeat(n));
        assert!(depth_ok(&deep(MAX_FLOW_NESTING)));
        assert_eq!(check(&deep(MAX_FLOW_NESTING + 1)), Err(3));
        assert_eq!(check(&deep(40_000)), Err(3));
        assert_eq!(check(&format!("a: {}", "{a: ".repeat(100))), Err(1));
    }

    #[test]
    fn brackets_in_text_are_not_nesting() {
        let text = format!(
            "a: '{0}'\nb: \"{0}\"\nc: x {0}\nd: |\n  {0}\n  ]]]\ne: # {0}\nf: it's {0}\n  'more {0}\ng: [\"{1}\", '{1}']\n",
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(depth_ok(&text), "{text}");
    }

    /// Text that would hide brackets from a careless scanner still counts them: a quote inside a
    /// plain scalar (also one continued on the next line) opens nothing, and closing brackets in
    /// strings close nothing.
    #[test]
    fn hiding_a_nest_does_not_work() {
        let nest = format!("{}{}", "[".repeat(100), "]".repeat(100));
        for text in [
            format!("a: foo\n  'bar\nb: {nest}\n"),
            format!("a: [x 'y, {nest}]\n"),
            format!("a: \"{}\"\nb: {nest}\n", "]".repeat(100)),
            format!("a: [{}]\n", "\"]\", [".repeat(100)),
            format!("a: |\n  '\nb: {nest}\n"),
        ] {
            assert!(!depth_ok(&text), "{text}");
        }
    }

    proptest::proptest! {
        /// For any document serde_yaml writes (any strings, lists nested as deep as generated),
        /// the depth found is at least the real one, and a shallow document passes.
        #[test]
        fn emitted_yaml_is_measured(
            strings in proptest::collection::vec("\\PC*|[\\x00-\\x1f\"'\\\\#\\[\\]{}:,| -]*", 1..6),
            depth in 0usize..80,
        ) {
            let mut value = serde_yaml::Value::Sequence(strings.iter().map(|s| serde_yaml::Value::from(s.as_str())).collect());
            for _ in 0..depth {
                value = serde_yaml::Value::Sequence(vec![value]);
            }
            let block = serde_yaml::to_string(&value).expect("yaml");
            let flow = serde_json::to_string(&value).expect("json");
            // serde_yaml writes nested lists in block style: no flows at all.
            proptest::prop_assert!(depth_ok(&block), "{block}");
            // JSON is YAML with every list a flow.
            proptest::prop_assert_eq!(depth_ok(&flow), depth < MAX_FLOW_NESTING, "{}", flow);
        }
    }
}
