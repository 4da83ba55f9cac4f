//! Files replaced whole. The new content goes to a hidden temporary file beside the old one
//! (`.NAME.tmp-PID`), then rename(2) puts it in place: a reader sees the old file or the new
//! one, never half of either, and a writer killed half-way leaves only its temporary file.
//! Every state and report file kapell writes goes through here (unit files have their own
//! writer, [`crate::unitset`], which never replaces a file it does not own).

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// What marks a temporary file of [`replace`] in its name (after a leading `.`).
const TEMP_MARK: &str = ".tmp-";

/// Whether a replaced file must survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// State that a later run acts on, across a power loss too: the file and its directory are
    /// fsynced before [`replace`] returns.
    Durable,
    /// Never torn, but a crash may lose it: a report that is written again, or state under
    /// `/run`, which a reboot clears anyway.
    Volatile,
}

/// Replaces `path` with `bytes` (its directory is created if need be).
pub fn replace(path: &Path, bytes: &[u8], durability: Durability) -> std::io::Result<()> {
    write(path, bytes, durability, false)
}

/// [`replace`], the new file taking the mode of the one it replaces (a file an operator keeps
/// at 0600 stays so).
pub fn replace_keeping_mode(path: &Path, bytes: &[u8], durability: Durability) -> std::io::Result<()> {
    write(path, bytes, durability, true)
}

/// Whether `name` (a file name) is a temporary file [`replace`] left, killed before its rename.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMP_MARK)
}

fn write(path: &Path, bytes: &[u8], durability: Durability, keep_mode: bool) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = temporary(dir, path);
    let written = (|| {
        // A new file of our own (O_EXCL: never through a symlink someone put at the name), with
        // the old file's mode from the start when it is kept, so its text is never readable by
        // more than the old file's.
        let old_mode = keep_mode.then(|| std::fs::metadata(path).ok()).flatten().map(|m| m.permissions());
        let _ = std::fs::remove_file(&tmp); // a killed writer's, of a reused PID
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(old_mode.as_ref().map_or(0o666, |p| p.mode() & 0o7777))
            .open(&tmp)?;
        file.write_all(bytes)?;
        if let Some(mode) = old_mode {
            file.set_permissions(mode)?; // exactly, whatever the umask took away
        }
        if durability == Durability::Durable {
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    if durability == Durability::Durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn temporary(dir: &Path, path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    dir.join(format!(".{name}{TEMP_MARK}{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_and_no_temporary_file_stays() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("sub/state.json");
        replace(&path, b"one", Durability::Durable).expect("write");
        replace(&path, b"two", Durability::Volatile).expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        let names: Vec<String> = std::fs::read_dir(dir.path().join("sub"))
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["state.json"]);
        assert!(is_temporary(&temporary(dir.path(), &path).file_name().expect("name").to_string_lossy()));
        assert!(!is_temporary("state.json") && !is_temporary(".hidden"));
    }

    #[test]
    fn the_mode_is_kept_only_when_asked() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("stack.toml");
        std::fs::write(&path, "old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        replace_keeping_mode(&path, b"new", Durability::Volatile).expect("write");
        assert_eq!(std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o600);
        replace(&path, b"newer", Durability::Volatile).expect("write");
        assert_ne!(std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_failed_rename_leaves_the_old_file_and_no_temporary_one() {
        let dir = tempfile::tempdir().expect("dir");
        // A directory where the file should go: the rename fails.
        let path = dir.path().join("taken");
        std::fs::create_dir(path.join("x").parent().expect("p")).expect("mkdir");
        std::fs::write(path.join("keep"), "x").expect("write");
        assert!(replace(&path, b"new", Durability::Durable).is_err());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["taken"]);
    }

    /// A symlink at the temporary file's name is replaced, never written through, and a kept
    /// mode holds from the first byte.
    #[test]
    fn a_symlink_at_the_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().expect("dir");
        let (path, victim) = (dir.path().join("stack.toml"), dir.path().join("victim"));
        std::fs::write(&path, "old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(&victim, "untouched").expect("write");
        std::os::unix::fs::symlink(&victim, temporary(dir.path(), &path)).expect("plant");
        replace_keeping_mode(&path, b"new", Durability::Durable).expect("write");
        assert_eq!(std::fs::read(&victim).expect("read"), b"untouched");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        assert_eq!(std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o600);
    }
}
