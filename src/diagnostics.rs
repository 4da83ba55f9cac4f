//! Problems found in an operator's files, located as `file:line:col`.
//!
//! Every error about a stack file is a [`Diagnostic`]: a path, a byte span into the file's text and a
//! message. Line and column are computed only when printing, so the parser and validator deal in
//! byte offsets (what the TOML parser gives) and never in lines.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file's path and text, shared by every diagnostic about it.
#[derive(Debug)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Arc<Self> {
        Arc::new(Self { path: path.into(), text: text.into() })
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// How bad a problem is. An error keeps its stack from rendering; a warning does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in one file.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub source: Arc<Source>,
    pub span: Range<usize>,
    pub message: String,
    pub severity: Severity,
}

impl Diagnostic {
    pub fn new(source: &Arc<Source>, span: Range<usize>, message: impl Into<String>) -> Self {
        Self { source: Arc::clone(source), span, message: message.into(), severity: Severity::Error }
    }

    pub fn warning(source: &Arc<Source>, span: Range<usize>, message: impl Into<String>) -> Self {
        Self { severity: Severity::Warning, ..Self::new(source, span, message) }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    pub fn path(&self) -> &Path {
        &self.source.path
    }

    pub fn line_col(&self) -> (usize, usize) {
        self.source.line_col(self.span.start)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, col) = self.line_col();
        let prefix = if self.is_error() { "" } else { "warning: " };
        // The message may quote the file (a key, a host name): shown printable, never obeyed.
        let path = self.source.path.display().to_string();
        let (path, message) = (crate::printable::printable(&path), crate::printable::printable(&self.message));
        write!(f, "{path}:{line}:{col}: {prefix}{message}")
    }
}

/// Sorts diagnostics the way an operator reads a file: by path, then position.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by(|a, b| (&a.source.path, a.span.start).cmp(&(&b.source.path, b.span.start)));
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    let len = word.chars().count();
    candidates
        .into_iter()
        // The distance is at least the difference in length: skip the costly comparison then.
        .filter(|c| c.chars().count().abs_diff(len) <= limit)
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters() {
        let src = Source::new("s.toml", "a = 1\nbé = \"x\"\n");
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(6), (2, 1));
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(src.line_col(12), (2, 6));
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        assert_eq!(did_you_mean("requies", ["requires", "wants"]), Some("requires"));
        assert_eq!(did_you_mean("zzz", ["requires", "wants"]), None);
    }
}
