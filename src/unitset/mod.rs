//! Unit sets: the files kapell renders for a host, as one value that can be written, read back
//! and compared.
//!
//! - [`OutputFile`]: one unit file or `*.wants/` link, relative to a unit directory;
//! - [`markers`]: the `X-Kapell-*` keys that say a unit is kapell's (nothing else is ever
//!   replaced or removed);
//! - [`UnitSet`]: the stack/service view of a set (which service has which file, which units
//!   run), built from rendered files or read back from a directory;
//! - [`diff`]: what changes between two sets, file by file;
//! - [`write`]: installing a set into a directory, with the strategy the directory needs;
//! - [`read_files`]: a set installed in a directory, as files.
//!
//! The renderer produces sets, the generator and `kapell generate` write them, `kapell apply`
//! and `kapell status` compare and read them; a fleet controller and `kapell receive` do the same
//! per host.

pub mod lookup;
pub mod markers;
mod view;
mod write;

#[cfg(test)]
pub(crate) use view::tests as view_tests;
pub use view::{ServiceUnits, StackUnits, UnitSet};
pub use write::{Refusal, Strategy, Writer, write};

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// One file of a unit set, relative to the unit directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum OutputFile {
    Unit {
        name: String,
        text: String,
    },
    /// A `*.wants/` symlink: `path` (e.g. `multi-user.target.wants/todo.target`) → `target`.
    Link {
        path: String,
        target: String,
    },
}

impl OutputFile {
    /// A unit file `name` holding `text`.
    pub fn unit(name: impl Into<String>, text: impl Into<String>) -> OutputFile {
        OutputFile::Unit { name: name.into(), text: text.into() }
    }

    /// A symlink at `path` pointing at `target`.
    pub fn link(path: impl Into<String>, target: impl Into<String>) -> OutputFile {
        OutputFile::Link { path: path.into(), target: target.into() }
    }

    /// The path relative to the unit directory.
    pub fn path(&self) -> &str {
        match self {
            OutputFile::Unit { name, .. } => name,
            OutputFile::Link { path, .. } => path,
        }
    }

    /// [`OutputFile::path`], taken out of the file.
    pub fn into_path(self) -> String {
        match self {
            OutputFile::Unit { name, .. } => name,
            OutputFile::Link { path, .. } => path,
        }
    }

    /// What the file holds: a unit's text, or a link's target.
    pub fn content(&self) -> &str {
        match self {
            OutputFile::Unit { text, .. } => text,
            OutputFile::Link { target, .. } => target,
        }
    }
}

/// What turns one set of files into another, by path (sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// In the new set only.
    pub added: Vec<String>,
    /// In both, with different content (or a unit became a link, or back).
    pub changed: Vec<String>,
    /// In the old set only.
    pub removed: Vec<String>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// The changes from `old` to `new`, in O(n log n).
pub fn diff(old: &[OutputFile], new: &[OutputFile]) -> Diff {
    let old: BTreeMap<&str, &OutputFile> = old.iter().map(|f| (f.path(), f)).collect();
    let new: BTreeMap<&str, &OutputFile> = new.iter().map(|f| (f.path(), f)).collect();
    let mut d = Diff::default();
    for (path, file) in &new {
        match old.get(path) {
            None => d.added.push(path.to_string()),
            Some(before) if before != file => d.changed.push(path.to_string()),
            Some(_) => {}
        }
    }
    d.removed = old.keys().filter(|p| !new.contains_key(*p)).map(|p| p.to_string()).collect();
    d
}

/// The files of a unit set installed in `dir` (units, and links in its `*.wants/` and
/// `*.requires/` directories), sorted by path. A missing directory is an empty set.
pub fn read_files(dir: &Path) -> Result<Vec<OutputFile>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with('.') || name == crate::names::CATALOG_FILE || name == crate::names::CATALOG_HOST_FILE {
            continue; // temporary files of an install in progress; discovery's catalog
        }
        if path.is_dir() && crate::names::is_link_dir(&name) {
            for link in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                if let Ok(target) = std::fs::read_link(link.path()) {
                    let rel = format!("{name}/{}", link.file_name().to_string_lossy());
                    out.push(OutputFile::Link { path: rel, target: target.to_string_lossy().into_owned() });
                }
            }
        } else if path.is_file() {
            let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            out.push(OutputFile::Unit { name, text });
        }
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str, text: &str) -> OutputFile {
        OutputFile::unit(name, text)
    }

    #[test]
    fn diff_by_path_and_content() {
        let link = |t: &str| OutputFile::link("multi-user.target.wants/a.target", t);
        let old = [unit("a.target", "1"), unit("a-x.service", "x"), unit("a-y.service", "y"), link("../a.target")];
        let new = [unit("a.target", "1"), unit("a-x.service", "x2"), unit("a-z.service", "z"), link("../b.target")];
        let d = diff(&old, &new);
        assert_eq!(d.added, ["a-z.service"]);
        assert_eq!(d.changed, ["a-x.service", "multi-user.target.wants/a.target"]);
        assert_eq!(d.removed, ["a-y.service"]);
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn reads_back_what_was_written() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let files = vec![
            unit("a-x.service", "[Unit]\nX-Kapell-Stack=a\n"),
            unit("a.target", "[Unit]\nX-Kapell-Stack=a\n"),
            OutputFile::link("multi-user.target.wants/a.target", "../a.target"),
        ];
        write(dir.path(), &files, Strategy::Replace)?;
        assert_eq!(read_files(dir.path())?, files);
        assert!(read_files(&dir.path().join("missing"))?.is_empty());
        Ok(())
    }
}
