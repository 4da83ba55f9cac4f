//! Unit files: [`UnitText`], the one place unit text is written, and [`UnitFile`], the typed
//! model that unit text is read back into (and written out again through [`UnitText`]).
//!
//! A unit is a header comment plus sections of `Key=value` entries, in order. Values reach the
//! text only in ways that make them safe: [`UnitText::word`]/[`UnitText::words`] (and
//! [`Value::word`]/[`Value::words`] in the model) quote through [`escape`], [`UnitText::text`]
//! sanitizes free text, and [`UnitText::line`] (and [`Value::trusted`]) is for values kapell
//! itself builds from validated parts (unit names, durations, numbers) and checks that they fit
//! on one line. So no user value can add a line, a section or a specifier to a unit.

pub mod escape;

use std::borrow::Cow;
use std::fmt::Write as _;

/// Unit text, written entry by entry as it is built: the renderers write units with it, and
/// [`UnitFile::serialize`] writes a model with it. Sections follow one another; entries go to the
/// last one begun. Writing straight into the text spares a rendered unit its model: the
/// generator renders thousands of units at every boot, each of some thirty entries, and each entry
/// in the model was a vector slot and often a string of its own (docs/benchmarks.md).
pub struct UnitText {
    text: String,
    /// Whether anything was written before the next section header, which then gets a blank line.
    started: bool,
}

impl UnitText {
    /// A unit starting with `header`, one comment line each (without the leading `# `).
    pub fn new<S: AsRef<str>>(header: &[S]) -> Self {
        Self::with_capacity(header, 1024)
    }

    /// [`UnitText::new`], with room for `capacity` bytes of text before it grows.
    pub fn with_capacity<S: AsRef<str>>(header: &[S], capacity: usize) -> Self {
        let mut text = String::with_capacity(capacity);
        for line in header {
            text.push_str("# ");
            escape::text_into(&mut text, line.as_ref());
            text.push('\n');
        }
        Self { text, started: !header.is_empty() }
    }

    /// Begins the section `[name]`: the entries written next are its own.
    pub fn section(&mut self, name: &str) -> &mut Self {
        if self.started {
            self.text.push('\n');
        }
        self.started = true;
        self.text.push('[');
        self.text.push_str(name);
        self.text.push_str("]\n");
        self
    }

    /// `key=value` for a value kapell built from validated parts. Panics on a line break, as
    /// [`Value::trusted`] does.
    pub fn line(&mut self, key: &str, value: &str) -> &mut Self {
        check_trusted(value);
        self.entry(key, |text| text.push_str(value))
    }

    /// `key=value` for a number, duration or size kapell formats itself (checked as
    /// [`UnitText::line`] is, once written).
    pub fn display(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        let start = self.text.len() + key.len() + 1;
        self.entry(key, |text| {
            let _ = write!(text, "{value}");
        });
        check_trusted(&self.text[start..self.text.len() - 1]);
        self
    }

    /// `key=value` for a value of the model, made safe when it was made.
    pub fn value(&mut self, key: &str, value: &Value) -> &mut Self {
        self.entry(key, |text| text.push_str(value.as_str()))
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
    /// `prefix` and `suffix` (`+`, ` --instance %i`; checked as [`UnitText::line`] checks).
    pub fn exec<S: AsRef<str>>(&mut self, key: &str, prefix: &str, argv: &[S], suffix: &str) -> &mut Self {
        check_trusted(prefix);
        check_trusted(suffix);
        self.entry(key, |text| {
            text.push_str(prefix);
            escape::exec_line_into(text, argv);
            text.push_str(suffix);
        })
    }

    /// `key=` free text, for settings that do not unquote (`Description=`).
    pub fn text(&mut self, key: &str, value: &str) -> &mut Self {
        self.entry(key, |text| escape::text_into(text, value))
    }

    fn entry(&mut self, key: &str, value: impl FnOnce(&mut String)) -> &mut Self {
        self.text.push_str(key);
        self.text.push('=');
        value(&mut self.text);
        self.text.push('\n');
        self
    }

    /// The whole text.
    pub fn finish(self) -> String {
        self.text
    }
}

/// Panics unless `value` fits on one line of a unit: a kapell bug, never a user error, because
/// validation rejects such input long before rendering.
fn check_trusted(value: &str) {
    // Bytes, not chars (the three are ASCII), folded without an early exit so the loop is
    // vectorized: this runs for most entries of every unit.
    let unsafe_byte = value.bytes().fold(false, |found, b| found | matches!(b, b'\n' | b'\r' | b'\0'));
    assert!(!unsafe_byte && !value.ends_with('\\'), "unsafe unit value {value:?}");
}

/// A value as it will appear after `Key=`. Constant values (`notify`, `yes`) are borrowed, not
/// copied: a generator run builds some twenty entries for each of thousands of units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value(Cow<'static, str>);

impl Value {
    /// One user string as one quoted word.
    pub fn word(value: &str) -> Self {
        Self(escape::quote(value).into())
    }

    /// An argument vector or list: each element one quoted word.
    pub fn words<S: AsRef<str>>(values: &[S]) -> Self {
        Self(escape::quote_all(values).into())
    }

    /// Free text for settings that do not unquote (`Description=`).
    pub fn text(value: &str) -> Self {
        Self(escape::text(value).into())
    }

    /// A value kapell built from validated parts. Panics on a line break: that is a kapell bug,
    /// never a user error, because validation rejects such input long before rendering.
    pub fn trusted(value: impl Into<Cow<'static, str>>) -> Self {
        let value = value.into();
        check_trusted(&value);
        Self(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&'static str> for Value {
    fn from(value: &'static str) -> Self {
        Self::trusted(value)
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Self::trusted(value)
    }
}

/// `[Name]` and its entries, in order. Names and keys kapell writes are constants, borrowed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    pub name: Cow<'static, str>,
    pub entries: Vec<(Cow<'static, str>, Value)>,
}

impl Section {
    /// Appends `key=value`.
    pub fn add(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<Value>) -> &mut Self {
        self.entries.push((key.into(), value.into()));
        self
    }

    /// The raw values of every entry named `key`.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The raw value of the last entry named `key` (systemd semantics for single-valued keys).
    pub fn get<'a>(&'a self, key: &'a str) -> Option<&'a str> {
        self.get_all(key).last()
    }

    /// The words of the last `key=` (unquoted by the one escaper), if it is set: what kapell
    /// wrote with [`Value::words`].
    pub fn words(&self, key: &str) -> Result<Option<Vec<String>>, String> {
        self.get(key).map(|v| escape::unquote(v).map_err(|e| format!("{key}=: {e}"))).transpose()
    }

    /// The one word of the last `key=`, if it is set: what kapell wrote with [`Value::word`].
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
    /// The section named `name`, created at the end if missing.
    pub fn section(&mut self, name: &'static str) -> &mut Section {
        let index = match self.sections.iter().position(|s| s.name == name) {
            Some(index) => index,
            None => {
                self.sections.push(Section { name: Cow::Borrowed(name), entries: Vec::new() });
                self.sections.len() - 1
            }
        };
        &mut self.sections[index]
    }

    pub fn get_section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The file's text, written by [`UnitText`].
    pub fn serialize(&self) -> String {
        let mut out = UnitText::with_capacity(&self.header, self.text_len());
        for section in &self.sections {
            out.section(&section.name);
            for (key, value) in &section.entries {
                out.value(key, value);
            }
        }
        out.finish()
    }

    /// The length of [`Self::serialize`]'s text when no header line needs escaping (escaping
    /// only shortens a line), so the text is built in one allocation.
    fn text_len(&self) -> usize {
        let header: usize = self.header.iter().map(|l| l.len() + 3).sum();
        let sections: usize = self
            .sections
            .iter()
            .map(|s| s.name.len() + 4 + s.entries.iter().map(|(k, v)| k.len() + v.as_str().len() + 2).sum::<usize>())
            .sum();
        header + sections
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
                unit.sections.push(Section { name: name.to_string().into(), entries: Vec::new() });
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("line {}: expected Key=value, found {line:?}", n + 1));
            };
            let Some(section) = unit.sections.last_mut() else {
                return Err(format!("line {}: assignment outside of a section", n + 1));
            };
            section.entries.push((key.trim().to_string().into(), Value(value.trim().to_string().into())));
        }
        unit.header = header;
        Ok(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialize_then_parse_is_identity() {
        let mut unit = UnitFile { header: vec!["generated".into()], ..Default::default() };
        unit.section("Unit").add("Description", Value::text("a\nb"));
        unit.section("Service").add("ExecStart", Value::words(&["/bin/echo", "x y", "%"]));
        let text = unit.serialize();
        assert_eq!(text, "# generated\n\n[Unit]\nDescription=a b\n\n[Service]\nExecStart=/bin/echo \"x y\" \"%%\"\n");
        assert_eq!(UnitFile::parse(&text).expect("parse"), unit);
    }

    #[test]
    fn sections_read_back_the_words_written() {
        let mut section = Section::default();
        section.add("Image", Value::word("a b")).add("Cmd", Value::words(&["x", "%"]));
        section.add("Port", Value::word("80")).add("Port", Value::word("443"));
        assert_eq!(section.word("Image"), Ok(Some("a b".to_string())));
        assert_eq!(section.words("Cmd"), Ok(Some(vec!["x".to_string(), "%".to_string()])));
        assert_eq!(section.word("Cmd"), Err("Cmd= must be one word".to_string()));
        assert_eq!(section.all_words("Port"), Ok(vec!["80".to_string(), "443".to_string()]));
        assert_eq!(section.word("Missing"), Ok(None));
    }

    #[test]
    #[should_panic(expected = "unsafe unit value")]
    fn trusted_values_cannot_break_lines() {
        let _ = Value::trusted("a\n[Service]");
    }

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
            .value("SourcePath", &Value::text("/p"));
        let text = unit.finish();
        assert_eq!(
            text,
            "# from /etc/kapell/100%%.toml\n# two lines\n\n[Unit]\nDescription=a b %%i\nPartOf=s.target\n\n\
             [Service]\nExecStart=+:/bin/echo \"$HOME\" \"x y\" --instance %i\nEnvironment=\"A=b c\"\n\
             X-Args=1 \"\" \"\\\"q\\\"\"\nTimeoutStopSec=1500ms\nSourcePath=/p\n"
        );
        let back = UnitFile::parse(&text).expect("parse");
        let service = back.get_section("Service").expect("section");
        assert_eq!(service.word("Environment"), Ok(Some("A=b c".to_string())));
        assert_eq!(service.words("X-Args"), Ok(Some(vec!["1".to_string(), String::new(), "\"q\"".to_string()])));
        assert_eq!(back.sections.len(), 2);
        // Without a header, the first section starts the text.
        let mut bare = UnitText::new::<&str>(&[]);
        bare.section("Resolve").line("Domains", "~kapell");
        assert_eq!(bare.finish(), "[Resolve]\nDomains=~kapell\n");
    }

    #[test]
    #[should_panic(expected = "unsafe unit value")]
    fn unit_text_lines_cannot_break() {
        UnitText::new::<&str>(&[]).section("Unit").line("Wants", "a.service\n[Service]");
    }

    #[test]
    #[should_panic(expected = "unsafe unit value")]
    fn unit_text_formatted_values_cannot_break() {
        UnitText::new::<&str>(&[]).section("Unit").display("Wants", format_args!("a\\"));
    }

    #[test]
    #[should_panic(expected = "unsafe unit value")]
    fn unit_text_command_lines_cannot_break_around_the_words() {
        UnitText::new::<&str>(&[]).section("Service").exec("ExecStart", "", &["/bin/true"], "\n[Install]");
    }
}
