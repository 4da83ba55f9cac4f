//! The typed unit-file model and its one serializer (and parser, its inverse).
//!
//! A [`UnitFile`] is a header comment plus ordered sections of `Key=value` entries. Values enter
//! the model only through constructors that make them safe: [`Value::word`]/[`Value::words`] quote
//! through [`escape`], [`Value::text`] sanitizes free text, and [`Value::trusted`] is for values
//! kapell itself builds from validated parts (unit names, durations, numbers) and checks that they
//! fit on one line. So no user value can add a line, a section or a specifier to a unit.

pub mod escape;

use std::borrow::Cow;
use std::sync::Arc;

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
        // Bytes, not chars (the three are ASCII), folded without an early exit so the loop is
        // vectorized: this runs for most entries of every unit.
        let unsafe_byte = value.bytes().fold(false, |found, b| found | matches!(b, b'\n' | b'\r' | b'\0'));
        assert!(!unsafe_byte && !value.ends_with('\\'), "unsafe unit value {value:?}");
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

    /// Appends `key=value` when there is a value.
    pub fn add_opt(&mut self, key: &'static str, value: Option<impl Into<Value>>) -> &mut Self {
        if let Some(value) = value {
            self.add(key, value);
        }
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

/// A whole unit file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitFile {
    /// Comment lines written before the first section (without the leading `# `); shared, as
    /// every unit of a stack starts with the same ones.
    pub header: Arc<[String]>,
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

    /// The file's text: the only place unit text is produced.
    pub fn serialize(&self) -> String {
        let mut out = String::with_capacity(self.text_len());
        for line in self.header.iter() {
            out.push_str("# ");
            escape::text_into(&mut out, line);
            out.push('\n');
        }
        for (i, section) in self.sections.iter().enumerate() {
            if i > 0 || !self.header.is_empty() {
                out.push('\n');
            }
            out.push('[');
            out.push_str(&section.name);
            out.push_str("]\n");
            for (key, value) in &section.entries {
                out.push_str(key);
                out.push('=');
                out.push_str(value.as_str());
                out.push('\n');
            }
        }
        out
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
        unit.header = header.into();
        Ok(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialize_then_parse_is_identity() {
        let mut unit = UnitFile { header: vec!["generated".into()].into(), ..Default::default() };
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
}
