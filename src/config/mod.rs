//! Reading stack files: TOML with spans → checked [`crate::model::Stack`]s.

pub mod document;
mod pieces;
pub mod reader;
mod service;
mod stack;
pub mod syntax;

pub use stack::{Parsed, parse_stack, parse_stack_text};

/// Stack files of at least this many bytes are parsed in pieces, in parallel (see
/// `src/config/pieces.rs`); the `stack_toml` fuzz target pads small files past it to hold the
/// pieces to the whole.
pub use pieces::FROM_BYTES as PIECES_FROM_BYTES;

use crate::diagnostics::{Diagnostic, Source};
use std::path::{Path, PathBuf};

/// Where stacks live unless `--config-dir`/`KAPELL_CONFIG_DIR` says otherwise.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/kapell";

/// The controller's fleet description; it lives beside the stacks but is not one.
pub const FLEET_FILE: &str = "fleet.toml";

/// Stack files larger than this are refused before parsing (a stack is a few KiB).
pub const MAX_STACK_FILE_SIZE: u64 = 8 * 1024 * 1024;

/// The config directory from the environment, or the default.
pub fn config_dir_from_env() -> PathBuf {
    std::env::var_os("KAPELL_CONFIG_DIR").map_or_else(|| PathBuf::from(DEFAULT_CONFIG_DIR), PathBuf::from)
}

/// The stack files of a directory (`*.toml` except `fleet.toml`), sorted. A missing directory
/// has no stacks.
pub fn stack_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let is_stack = path.extension().is_some_and(|e| e == "toml")
            && path.file_name().is_some_and(|n| n != FLEET_FILE)
            && !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        // The directory entry's type needs no `stat`; a symlink (or an unknown type) is followed.
        let is_file = |entry: &std::fs::DirEntry| match entry.file_type() {
            Ok(t) if t.is_file() => true,
            Ok(t) if t.is_dir() => false,
            _ => path.is_file(),
        };
        if is_stack && is_file(&entry) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The stack name of a file: its stem.
pub fn stack_name(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Reads and parses one stack file; a file that cannot be read is a diagnostic like any other.
pub fn load_stack(path: &Path) -> Parsed {
    let fail = |message: String| Parsed {
        name: stack_name(path),
        stack: None,
        diagnostics: vec![Diagnostic::new(&Source::new(path, ""), 0..0, message)],
    };
    // Open once and `stat` the open file: one path lookup and one `stat` per stack.
    let file = match std::fs::File::open(path).and_then(|f| f.metadata().map(|m| (f, m.len()))) {
        Ok((_, len)) if len > MAX_STACK_FILE_SIZE => {
            return fail(format!("the file is {len} bytes; stack files are limited to {MAX_STACK_FILE_SIZE} bytes"));
        }
        Ok(file) => file,
        Err(e) => return fail(format!("cannot read the file: {e}")),
    };
    match read_all(file) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => parse_stack_text(path, text),
            Err(e) => {
                let offset = e.utf8_error().valid_up_to();
                let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
                Parsed {
                    name: stack_name(path),
                    stack: None,
                    diagnostics: vec![Diagnostic::new(
                        &Source::new(path, text),
                        offset..offset,
                        "the file is not valid UTF-8",
                    )],
                }
            }
        },
        Err(e) => fail(format!("cannot read the file: {e}")),
    }
}

/// The file's `len` bytes (its size when opened). `read` is called directly, and stops at that
/// size: `File::read_to_end` would `stat` and `lseek` the file again and then read once more to
/// see the end, three system calls per stack file at every boot. (A file rewritten while it is
/// read is a torn read either way; the next reload reads it whole.)
fn read_all((mut file, len): (std::fs::File, u64)) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = vec![0; usize::try_from(len).unwrap_or(0)];
    let mut filled = 0;
    while filled < bytes.len() {
        match file.read(&mut bytes[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(filled);
    Ok(bytes)
}
