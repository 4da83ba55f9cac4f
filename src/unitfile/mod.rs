//! Unit files: [`UnitText`], the one place unit text is written, and [`UnitFile`], the model
//! that unit text is read back into (`kapell run`, the probers, `kapell status`).
//!
//! A unit is a header comment plus sections of `Key=value` entries, in order. Values reach the
//! text only in ways that make them safe: [`SectionText::word`]/[`SectionText::words`] quote
//! through [`escape`], [`SectionText::text`] sanitizes free text, and [`SectionText::line`] is for
//! values kapell itself builds from validated parts (unit names, durations, numbers) and checks
//! that they fit on one line. So no user value can add a line, a section or a specifier to a unit.

pub mod escape;

use std::fmt::Write as _;

/// Unit text, written entry by entry as it is built: a header, then sections one after another,
/// each begun once and written whole ([`UnitText::section`]).
///
/// Writing straight into the text spares a rendered unit a model of its own: the generator
/// renders thousands of units at every boot, each of some thirty entries, and each entry in a
/// model was a vector slot and often a string of its own (docs/decisions.md).
#[derive(Default)]
pub struct UnitText {
    text: String,
}

impl UnitText {
    /// A unit starting with `header`, one comment line each (without the leading `# `).
    pub fn new<S: AsRef<str>>(header: &[S]) -> Self {
        let mut text = String::with_capacity(1024);
        for line in header {
            text.push_str("# ");
            escape::text_into(&mut text, line.as_ref());
            text.push('\n');
        }
        Self { text }
    }

    /// Begins the section `[name]`; its entries are written through what this returns. A unit
    /// begins each section once (a reader of the unit sees only the first of two of one name).
    pub fn section(&mut self, name: &str) -> SectionText<'_> {
        let header = ["[", name, "]\n"].concat();
        debug_assert!(
            !self.text.starts_with(&header) && !self.text.contains(&["\n", &header].concat()),
            "section [{name}] begun twice"
        );
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        self.text.push_str(&header);
        SectionText { text: &mut self.text }
    }

    /// The whole text.
    pub fn finish(self) -> String {
        self.text
    }
}

/// The entries of the section a [`UnitText`] began last: one `key=value` line each. Keys are
/// kapell's own, or validated setting names passed through from a stack file.
pub struct SectionText<'a> {
    text: &'a mut String,
}

impl SectionText<'_> {
    /// `key=value` for a value kapell built from validated parts. Panics unless the value fits on
    /// one line ([`check_trusted`]).
    pub fn line(&mut self, key: &str, value: &str) -> &mut Self {
        self.checked(key, |text| text.push_str(value))
    }

    /// `key=value` for a number, duration or size kapell formats itself, checked as
    /// [`SectionText::line`] checks.
    pub fn display(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        self.checked(key, |text| write!(text, "{value}").expect("formatting into a string"))
    }

    /// `key=` one user string as one quoted word ([`escape::quote`]).
    pub fn word(&mut self, key: &str, value: &str) -> &mut Self {
        self.entry(key, |text| escape::quote_into(text, value))
    }

    /// `key=` each element one quoted word: an argument vector or a list.
    pub fn words<S: AsRef<str>>(&mut self, key: &str, values: &[S]) -> &mut Self {
        self.entry(key, |text| escape::quote_all_into(text, values))
    }

    /// `key=` an `ExecStart=`-style command line ([`escape::exec_line`]) between kapell's own
    /// `prefix` and `suffix` (`+`, ` --instance %i`); the whole line is checked as
    /// [`SectionText::line`] checks.
    pub fn exec<S: AsRef<str>>(&mut self, key: &str, prefix: &str, argv: &[S], suffix: &str) -> &mut Self {
        self.checked(key, |text| {
            text.push_str(prefix);
            escape::exec_line_into(text, argv);
            text.push_str(suffix);
        })
    }

    /// `key=` free text, for settings that do not unquote (`Description=`).
    pub fn text(&mut self, key: &str, value: &str) -> &mut Self {
        self.entry(key, |text| escape::text_into(text, value))
    }

    /// [`SectionText::entry`], with the value written checked by [`check_trusted`].
    fn checked(&mut self, key: &str, value: impl FnOnce(&mut String)) -> &mut Self {
        let start = self.text.len() + key.len() + 1;
        self.entry(key, value);
        check_trusted(&self.text[start..self.text.len() - 1]);
        self
    }

    fn entry(&mut self, key: &str, value: impl FnOnce(&mut String)) -> &mut Self {
        self.text.push_str(key);
        self.text.push('=');
        value(self.text);
        self.text.push('\n');
        self
    }
}

/// Panics unless `value` fits on one line of a unit (no line break, no NUL, no trailing
/// backslash that would continue the line): a kapell bug, never a user error, because
/// validation rejects such input long before rendering.
fn check_trusted(value: &str) {
    // Bytes, not chars (the three are ASCII), folded without an early exit so the loop is
    // vectorized: this runs for most entries of every unit.
    let unsafe_byte = value.bytes().fold(false, |found, b| found | matches!(b, b'\n' | b'\r' | b'\0'));
    assert!(!unsafe_byte && !value.ends_with('\\'), "unsafe unit value {value:?}");
}

/// `[Name]` and its entries as read back, in order, values as written (still quoted).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    pub name: String,
    pub entries: Vec<(String, String)>,
}

impl Section {
    /// The raw values of every entry named `key`.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The raw value of the last entry named `key` (systemd semantics for single-valued keys).
    pub fn get<'a>(&'a self, key: &'a str) -> Option<&'a str> {
        self.get_all(key).last()
    }

    /// The words of the last `key=` (unquoted by the one escaper), if it is set: what kapell
    /// wrote with [`SectionText::words`].
    pub fn words(&self, key: &str) -> Result<Option<Vec<String>>, String> {
        self.get(key).map(|v| escape::unquote(v).map_err(|e| format!("{key}=: {e}"))).transpose()
    }

    /// The one word of the last `key=`, if it is set: what kapell wrote with [`SectionText::word`].
    pub fn word(&self, key: &str) -> Result<Option<String>, String> {
        match self.words(key)? {
            None => Ok(None),
            Some(mut w) if w.len() == 1 => Ok(w.pop()),
            Some(_) => Err(format!("{key}= must be one word")),
        }
    }

    /// The words of every `key=`, in order (a list written one entry per line).
    pub fn all_words(&self, key: &str) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for v in self.get_all(key) {
            out.extend(escape::unquote(v).map_err(|e| format!("{key}=: {e}"))?);
        }
        Ok(out)
    }
}

/// A whole unit file, as read back from its text ([`UnitFile::parse`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitFile {
    /// Comment lines written before the first section (without the leading `# `).
    pub header: Vec<String>,
    pub sections: Vec<Section>,
}

impl UnitFile {
    /// The first section named `name`.
    pub fn get_section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Reads unit-file text back into the model, following systemd's syntax (comments, sections,
    /// `Key=value` with surrounding blanks trimmed, backslash line continuation).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut unit = UnitFile::default();
        let mut header = Vec::new();
        let mut lines = text.lines().enumerate();
        while let Some((n, line)) = lines.next() {
            let mut line = line.trim().to_string();
            while line.ends_with('\\') {
                line.pop();
                line.push(' ');
                match lines.next() {
                    Some((_, next)) => line.push_str(next.trim()),
                    None => break,
                }
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#').or_else(|| line.strip_prefix(';')) {
                if unit.sections.is_empty() {
                    header.push(comment.strip_prefix(' ').unwrap_or(comment).to_string());
                }
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                unit.sections.push(Section { name: name.to_string(), entries: Vec::new() });
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("line {}: expected Key=value, found {line:?}", n + 1));
            };
            let Some(section) = unit.sections.last_mut() else {
                return Err(format!("line {}: assignment outside of a section", n + 1));
            };
            section.entries.push((key.trim().to_string(), value.trim().to_string()));
        }
        unit.header = header;
        Ok(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way of writing an entry, read back by the parser as what was written; sections
    /// separated by one blank line, the header escaped as free text.
    #[test]
    fn unit_text_reads_back_as_written() {
        let mut unit = UnitText::new(&["from /etc/kapell/100%.toml", "two\nlines"]);
        unit.section("Unit").text("Description", "a\tb %i").line("PartOf", "s.target");
        unit.section("Service")
            .exec("ExecStart", "+", &["/bin/echo", "$HOME", "x y"], " --instance %i")
            .word("Environment", "A=b c")
            .words("X-Args", &["1", "", "\"q\""])
            .display("TimeoutStopSec", crate::quantity::Duration(1_500_000))
            .word("Port", "80")
            .word("Port", "443");
        let text = unit.finish();
        assert_eq!(
            text,
            "# from /etc/kapell/100%%.toml\n# two lines\n\n[Unit]\nDescription=a b %%i\nPartOf=s.target\n\n\
             [Service]\nExecStart=+:/bin/echo \"$HOME\" \"x y\" --instance %i\nEnvironment=\"A=b c\"\n\
             X-Args=1 \"\" \"\\\"q\\\"\"\nTimeoutStopSec=1500ms\nPort=80\nPort=443\n"
        );
        let back = UnitFile::parse(&text).expect("parse");
        assert_eq!(back.header, ["from /etc/kapell/100%%.toml", "two lines"]);
        assert_eq!(back.sections.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["Unit", "Service"]);
        let service = back.get_section("Service").expect("section");
        assert_eq!(service.word("Environment"), Ok(Some("A=b c".to_string())));
        assert_eq!(service.words("X-Args"), Ok(Some(vec!["1".to_string(), String::new(), "\"q\"".to_string()])));
        assert_eq!(service.word("X-Args"), Err("X-Args= must be one word".to_string()));
        assert_eq!(service.all_words("Port"), Ok(vec!["80".to_string(), "443".to_string()]));
        assert_eq!(service.get("Port"), Some("443"), "the last of a single-valued key");
        assert_eq!(service.word("Missing"), Ok(None));
        // Without a header, the first section starts the text.
        let mut bare = UnitText::default();
        bare.section("Resolve").line("Domains", "~kapell");
        assert_eq!(bare.finish(), "[Resolve]\nDomains=~kapell\n");
    }

    #[test]
    fn parse_follows_systemd_syntax() -> Result<(), String> {
        let unit = UnitFile::parse("# c\n; d\n[Unit]\n  Description = a\\\n  b\n# not a header\n[Service]\nX=1=2\n")?;
        assert_eq!(unit.header, ["c", "d"]);
        assert_eq!(unit.get_section("Unit").and_then(|s| s.get("Description")), Some("a b"));
        assert_eq!(unit.get_section("Service").and_then(|s| s.get("X")), Some("1=2"));
        assert!(UnitFile::parse("X=1\n").is_err(), "an assignment outside of a section");
        assert!(UnitFile::parse("[Unit]\nno equals sign\n").is_err());
        Ok(())
    }

    #[test]
    #[should_panic(expected = "unsafe unit value")]
    fn unit_text_lines_cannot_break() {
        UnitText::default().section("Unit").line("Wants", "a.service\n[Service]");
    }

    #[test]
    #[should_panic(expected = "unsafe unit value")]
    fn unit_text_formatted_values_cannot_break() {
        UnitText::default().section("Unit").display("Wants", format_args!("a\\"));
    }

    #[test]
    #[should_panic(expected = "unsafe unit value")]
    fn unit_text_command_lines_cannot_break_around_the_words() {
        UnitText::default().section("Service").exec("ExecStart", "", &["/bin/true"], "\n[Install]");
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "begun twice")]
    fn a_section_is_begun_once() {
        let mut unit = UnitText::default();
        unit.section("Service").line("Type", "notify");
        unit.section("X-Kapell-Health").line("Tcp", "80");
        unit.section("Service");
    }
}
