//! Writing a unit set into a directory: atomically per file, idempotently, and without touching
//! anything kapell does not own.

use crate::render::OutputFile;
use crate::validate::is_kapell_link_or_unit;
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::path::Path;

/// Writes `files` into `dir` (each via a temporary file and `rename`, so a reader sees the old
/// file or the new one), then removes kapell's files in `dir` that are no longer part of the set.
/// Returns the paths written or removed whose content changed.
pub fn write(dir: &Path, files: &[OutputFile]) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut changed = Vec::new();
    for file in files {
        let path = dir.join(file.path());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let tmp = path.with_file_name(format!(
            ".{}.kapell-tmp",
            path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
        ));
        let _ = std::fs::remove_file(&tmp);
        match file {
            OutputFile::Unit { text, .. } => {
                if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
                    continue;
                }
                std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
            }
            OutputFile::Link { target, .. } => {
                if std::fs::read_link(&path).is_ok_and(|old| old == Path::new(target)) {
                    continue;
                }
                std::os::unix::fs::symlink(target, &tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
            }
        }
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot install {}", path.display()))?;
        changed.push(file.path().to_string());
    }
    changed.extend(remove_stale(dir, files)?);
    Ok(changed)
}

/// Removes kapell units and links in `dir` (one level of `*.wants/` included) that `files` lacks.
fn remove_stale(dir: &Path, files: &[OutputFile]) -> Result<Vec<String>> {
    let keep: BTreeSet<&str> = files.iter().map(OutputFile::path).collect();
    let mut removed = Vec::new();
    let mut visit = |sub: &str| -> Result<()> {
        let base = if sub.is_empty() { dir.to_path_buf() } else { dir.join(sub) };
        let Ok(entries) = std::fs::read_dir(&base) else { return Ok(()) };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if sub.is_empty() { name.clone() } else { format!("{sub}/{name}") };
            if keep.contains(rel.as_str()) || !is_kapell_link_or_unit(dir, &rel) {
                continue;
            }
            std::fs::remove_file(entry.path()).with_context(|| format!("cannot remove {}", entry.path().display()))?;
            removed.push(rel);
        }
        Ok(())
    };
    visit("")?;
    let wants: Vec<String> = std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".wants"))
                .collect()
        })
        .unwrap_or_default();
    for w in wants {
        visit(&w)?;
    }
    Ok(removed)
}
