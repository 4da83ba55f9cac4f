//! A small typed reader over the TOML parser's spanned tree.
//!
//! serde would stop at the first problem; operators want every problem of a file at once. So the
//! schema walks the spanned tree itself with these helpers: each getter checks the type, records a
//! located diagnostic when it is wrong, and returns the value with its span when it is right.

use super::document::{Spanned, Table, Value};
use crate::diagnostics::{Diagnostic, Source, did_you_mean};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// The longest value (or command line) kapell takes. systemd reads unit lines of at most 1 MiB
/// and refuses the whole unit past that.
pub const MAX_VALUE_BYTES: usize = 256 * 1024;
/// The longest a value may be once escaped for a unit file ([`crate::unitfile::escape::quoted_len`]:
/// a control character takes six bytes there), leaving the rest of a 1 MiB line to its key.
const MAX_QUOTED_BYTES: usize = 1024 * 1024 - 64 * 1024;
const VALUE_LIMIT_WORDS: &str = "256 KiB (systemd reads unit lines of at most 1 MiB)";

/// Whether a value of `bytes` bytes (an argument vector: with a separator per argument) is
/// longer than [`MAX_QUOTED_BYTES`] once escaped, which `quoted` counts. Escaped, a byte takes
/// at most six bytes, and a word two quotes more (an argument's separator counts as a byte), so
/// a value that cannot reach the limit, nearly every one, is not counted: the generator reads
/// every value of every stack at every boot.
fn too_long_quoted(bytes: usize, quoted: impl FnOnce() -> usize) -> bool {
    bytes.saturating_mul(6).saturating_add(2) > MAX_QUOTED_BYTES && quoted() > MAX_QUOTED_BYTES
}

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct At<T> {
    pub value: T,
    pub span: Range<usize>,
}

/// Where diagnostics for one file are collected.
pub struct Ctx {
    pub source: Arc<Source>,
    pub diags: Vec<Diagnostic>,
    /// Where the text the TOML tree was parsed from sits in the file (a large stack file is
    /// parsed in pieces, see [`super::pieces`]): every span read from the tree goes through
    /// [`Ctx::span`], so diagnostics and the model always hold positions in the whole file.
    shift: Shift,
}

/// Maps a position in parsed text to its position in the file: positions at or after `at` move
/// `by` bytes on (a piece of the file: `at` 0; the stack's own keys, parsed as the text before
/// the services joined with the text after them: `at` is the length of the part before).
#[derive(Debug, Clone, Copy, Default)]
pub struct Shift {
    pub at: usize,
    pub by: usize,
}

impl Shift {
    fn apply(self, span: Range<usize>) -> Range<usize> {
        if span.start >= self.at { span.start + self.by..span.end + self.by } else { span }
    }
}

impl Ctx {
    pub fn new(source: Arc<Source>) -> Self {
        Self::shifted(source, Shift::default())
    }

    /// A context for a tree parsed from part of the file.
    pub fn shifted(source: Arc<Source>, shift: Shift) -> Self {
        Self { source, diags: Vec::new(), shift }
    }

    /// Where the tree this context reads was parsed from.
    pub fn shift(&self) -> Shift {
        self.shift
    }

    /// Where `value` (a key or value of the tree) is in the file.
    pub fn span<T>(&self, value: &Spanned<T>) -> Range<usize> {
        self.shift.apply(value.span())
    }

    /// Where `key` itself is written within `table` (for errors about the whole entry).
    pub fn key_span(&self, table: &Table<'_>, key: &str) -> Option<Range<usize>> {
        table.keys().find(|k| k.get_ref().as_ref() == key).map(|k| self.span(k))
    }

    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.diags.push(Diagnostic::new(&self.source, span, message));
    }

    pub fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.diags.push(Diagnostic::warning(&self.source, span, message));
    }

    /// Are there errors (not just warnings)?
    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(Diagnostic::is_error)
    }

    /// The number of errors so far (to tell whether a part of the file added any).
    pub fn error_count(&self) -> usize {
        self.diags.iter().filter(|d| d.is_error()).count()
    }

    /// Reports every key of `table` that is not in `known`, with a hint when one is close.
    pub fn reject_unknown_keys(&mut self, table: &Table<'_>, known: &[&str], context: &str) {
        self.reject_unknown_keys_with(table, known, context, &[]);
    }

    /// [`Ctx::reject_unknown_keys`], where a key of `habits` (another tool's name for a kapell
    /// key) gets its sentence instead of a spelling hint.
    pub fn reject_unknown_keys_with(
        &mut self,
        table: &Table<'_>,
        known: &[&str],
        context: &str,
        habits: &[(&str, &str)],
    ) {
        for key in table.keys() {
            let name = key.get_ref().as_ref();
            if known.contains(&name) {
                continue;
            }
            let hint = match habits.iter().find(|(k, _)| *k == name) {
                Some((_, habit)) => format!(": {habit}"),
                None => did_you_mean(name, known.iter().copied())
                    .map(|k| format!(" (did you mean `{k}`?)"))
                    .unwrap_or_default(),
            };
            self.error(self.span(key), format!("unknown key `{name}` in {context}{hint}"));
        }
    }

    fn type_error(&mut self, value: &Spanned<Value<'_>>, key: impl fmt::Display, expected: &str) {
        let found = value.get_ref().type_str();
        self.error(self.span(value), format!("`{key}` must be {expected}, found {found}"));
    }

    /// A string; strings containing NUL are refused everywhere (no unit file can carry one).
    /// `key` names the value in a message, and is formatted only for one (`format_args!`).
    pub fn string(&mut self, value: &Spanned<Value<'_>>, key: impl fmt::Display) -> Option<At<String>> {
        match value.get_ref() {
            Value::String(s) if s.contains('\0') => {
                self.error(self.span(value), format!("`{key}` must not contain a NUL character"));
                None
            }
            Value::String(s) if s.len() > MAX_VALUE_BYTES => {
                self.error(self.span(value), format!("`{key}` is longer than {}", VALUE_LIMIT_WORDS));
                None
            }
            Value::String(s) if too_long_quoted(s.len(), || crate::unitfile::escape::quoted_len(s)) => {
                self.error(
                    self.span(value),
                    format!(
                        "`{key}` is too long once escaped for a unit file (its control characters take six bytes \
                         each there; systemd reads unit lines of at most 1 MiB)"
                    ),
                );
                None
            }
            Value::String(s) => Some(At { value: s.to_string(), span: self.span(value) }),
            _ => {
                self.type_error(value, key, "a string");
                None
            }
        }
    }

    pub fn boolean(&mut self, value: &Spanned<Value<'_>>, key: &str) -> Option<bool> {
        match value.get_ref() {
            Value::Boolean(b) => Some(*b),
            _ => {
                self.type_error(value, key, "true or false");
                None
            }
        }
    }

    pub fn integer(&mut self, value: &Spanned<Value<'_>>, key: &str) -> Option<At<i64>> {
        let integer = value.get_ref().as_integer();
        match integer.and_then(|i| i.value()) {
            Some(n) => Some(At { value: n, span: self.span(value) }),
            // An integer all the same, beyond 64 bits.
            None if integer.is_some() => {
                self.error(self.span(value), format!("`{key}` is too large a number"));
                None
            }
            None => {
                self.type_error(value, key, "an integer");
                None
            }
        }
    }

    /// A number, integer or float (for `cpus = 2` as well as `cpus = 1.5`).
    pub fn number(&mut self, value: &Spanned<Value<'_>>, key: &str) -> Option<At<f64>> {
        let parsed = match value.get_ref() {
            Value::Float(f) => f.value(),
            Value::Integer(_) => return self.integer(value, key).map(|n| At { value: n.value as f64, span: n.span }),
            _ => None,
        };
        match parsed {
            Some(n) => Some(At { value: n, span: self.span(value) }),
            None => {
                self.type_error(value, key, "a number");
                None
            }
        }
    }

    /// An array of strings.
    pub fn strings(&mut self, value: &Spanned<Value<'_>>, key: &str) -> Option<Vec<At<String>>> {
        let Value::Array(items) = value.get_ref() else {
            self.type_error(value, key, "an array of strings");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items.iter() {
            match self.string(item, key) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A non-empty array of strings (an argument vector), one unit line in all.
    pub fn argv(&mut self, value: &Spanned<Value<'_>>, key: &str) -> Option<Vec<At<String>>> {
        let argv = self.strings(value, key)?;
        if argv.is_empty() {
            self.error(self.span(value), format!("`{key}` must not be empty"));
            return None;
        }
        let bytes = argv.iter().map(|a| a.value.len() + 1).sum::<usize>();
        let quoted = || argv.iter().map(|a| crate::unitfile::escape::quoted_len(&a.value) + 1).sum();
        if bytes > MAX_VALUE_BYTES || too_long_quoted(bytes, quoted) {
            self.error(self.span(value), format!("`{key}` is longer than {} in all", VALUE_LIMIT_WORDS));
            return None;
        }
        Some(argv)
    }

    /// A table.
    pub fn table<'a, 'i>(&mut self, value: &'a Spanned<Value<'i>>, key: &str) -> Option<&'a Table<'i>> {
        match value.get_ref() {
            Value::Table(t) => Some(t),
            _ => {
                self.type_error(value, key, "a table");
                None
            }
        }
    }

    /// A table of strings (`env = { A = "b" }`), keys with their spans.
    pub fn string_map(&mut self, value: &Spanned<Value<'_>>, key: &str) -> Option<Vec<(At<String>, At<String>)>> {
        let table = self.table(value, key)?;
        let mut out = Vec::with_capacity(table.len());
        for (k, v) in table.iter() {
            let name = At { value: k.get_ref().to_string(), span: self.span(k) };
            if let Some(s) = self.string(v, format_args!("{key}.{}", name.value)) {
                out.push((name, s));
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_QUOTED_BYTES, too_long_quoted};
    use crate::unitfile::escape::quoted_len;

    /// Values too short to reach the limit whatever they hold are not counted; values that can
    /// reach it are, one string or an argument vector, and control characters (six bytes each
    /// escaped) tip them over.
    #[test]
    fn only_values_that_can_reach_the_limit_are_counted() {
        let counted = std::cell::Cell::new(0);
        let check = |value: &str| {
            too_long_quoted(value.len(), || {
                counted.set(counted.get() + 1);
                quoted_len(value)
            })
        };
        let short = "\u{1}".repeat((MAX_QUOTED_BYTES - 2) / 6);
        assert!(!check(&short), "the longest value that cannot reach the limit");
        assert_eq!(counted.get(), 0, "and it was not counted");
        assert!(check(&format!("{short}\u{1}")), "one control character more");
        assert!(!check(&"y".repeat(200_000)), "long, but plain");
        assert_eq!(counted.get(), 2);
        // An argument vector: each argument with its separator.
        let argv = ["\u{1}".repeat(100_000), "\u{1}".repeat(100_000)];
        let bytes = argv.iter().map(|a| a.len() + 1).sum();
        assert!(too_long_quoted(bytes, || argv.iter().map(|a| quoted_len(a) + 1).sum()));
    }
}
