//! Writing a unit set into a directory: never a partial unit, idempotently, and without touching
//! anything kapell does not own.

use super::OutputFile;
use super::markers::{is_kapell_link_or_unit, is_kapell_text, stack_of_text};
use anyhow::{Context, Result};
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, symlinkat, unlinkat};
use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A unit at most this long is written in place in a generator directory: one page, which one
/// `write(2)` to a fresh file puts there whole or not at all.
pub const IN_PLACE_MAX: usize = 4096;

/// The mode of a unit kapell writes, less the umask: readable by all, never writable by group or
/// others whatever the umask.
const UNIT_MODE: u32 = 0o644;

/// How files reach the directory (see docs/decisions.md, "Small units are written in place").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// A live directory (`kapell generate --out`, a set installed on a peer): every file goes
    /// through a temporary file and `rename(2)`, so a reader sees the old file or the new one.
    Replace,
    /// systemd's generator output directory: systemd empties it before running generators and
    /// reads it only after they exit, and an empty unit file means "masked". So a new unit of at
    /// most [`IN_PLACE_MAX`] bytes is created with `O_CREAT|O_EXCL` and written with one
    /// `write(2)`: a kill leaves no file, an empty (masked) one, or the whole unit, never part of
    /// it, at half the system calls of a rename. Longer units, and files already there (a second
    /// run into the same directory), are replaced as in [`Strategy::Replace`].
    GeneratorDir,
}

/// Writes `files` into `dir` with `strategy`, then removes kapell's files in `dir` that are no
/// longer part of the set. Returns the paths written or removed whose content changed.
pub fn write(dir: &Path, files: &[OutputFile], strategy: Strategy) -> Result<Vec<String>> {
    let writer = Writer::open(dir, strategy)?;
    let results = crate::parallel::map(files, |file| writer.install(file));
    let mut changed = Vec::new();
    for result in results {
        if let Some(path) = result? {
            changed.push(path);
        }
    }
    let refused = writer.refused();
    let set: HashSet<&str> = files.iter().map(OutputFile::path).collect();
    changed.extend(writer.finish(|path| set.contains(path))?);
    if !refused.is_empty() {
        anyhow::bail!("{}", refused.join("\n"));
    }
    Ok(changed)
}

/// A unit set being written into a directory by whoever has its files, from any thread (the
/// generator writes each unit on the thread that rendered it): [`Writer::open`],
/// [`Writer::install`] every file of the set, then [`Writer::finish`] with the set's paths.
pub struct Writer<'a> {
    dir: &'a Path,
    /// `dir`, open: new files are created relative to it (`openat(2)`, `symlinkat(2)`), as the
    /// floor in benches/floor.c does, so the kernel does not walk `dir`'s path again per file.
    fd: OwnedFd,
    strategy: Strategy,
    /// What `dir` and its subdirectories held when opened.
    existing: HashSet<String>,
    /// Subdirectories (`*.wants/`) that exist now.
    subdirs: Mutex<HashSet<String>>,
    /// Units of the set not written because a file that is not kapell's has their name.
    refused: Mutex<Vec<Refusal>>,
}

/// A unit of the set that was not written: a file that is not kapell's has its name.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The unit's path in the directory (the other file's).
    pub path: String,
    /// The stack the unit not written belongs to (its `X-Kapell-Stack=`).
    pub stack: Option<String>,
    /// Why, as a sentence naming the file.
    pub why: String,
}

impl<'a> Writer<'a> {
    pub fn open(dir: &'a Path, strategy: Strategy) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // One listing up front instead of a failed open/unlink/mkdir per file: at boot the
        // generator writes thousands of files into an empty directory, and syscalls are its cost.
        let (existing, subdirs) = list(dir);
        let fd =
            openat(nix::fcntl::AT_FDCWD, dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
                .with_context(|| format!("cannot open {}", dir.display()))?;
        Ok(Self { dir, fd, strategy, existing, subdirs: Mutex::new(subdirs), refused: Mutex::default() })
    }

    /// Installs one file of the set unless it is already there with the same content; returns
    /// its path if it changed.
    pub fn install(&self, file: &OutputFile) -> Result<Option<String>> {
        if let Some((sub, _)) = file.path().rsplit_once('/') {
            let mut subdirs = self.subdirs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !subdirs.contains(sub) {
                let path = self.dir.join(sub);
                std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
                subdirs.insert(sub.to_string());
            }
        }
        self.install_file(file)
    }

    /// Why units of the set were not written: a file that is not kapell's (another generator's
    /// unit, an operator's file) already had each one's name, and is left as it is.
    pub fn refused(&self) -> Vec<String> {
        self.refusals().into_iter().map(|r| r.why).collect()
    }

    /// [`Writer::refused`], with the path and the stack of each unit not written.
    pub fn refusals(&self) -> Vec<Refusal> {
        self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Removes `rel`, a file of the set this writer wrote (a unit, or a link: remove links
    /// first, so that none is left dangling); one already gone is no error.
    pub fn remove(&self, rel: &str) -> Result<()> {
        match unlinkat(&self.fd, rel, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", self.path(rel).display())),
        }
    }

    /// Removes kapell's files that are not in the set (`in_set` tells, by path); returns their
    /// paths.
    pub fn finish(self, in_set: impl Fn(&str) -> bool) -> Result<Vec<String>> {
        // Only what was there before can be stale; at boot normal-dir starts empty, and listing the
        // thousands of files just written would find nothing to remove.
        if self.existing.is_empty() { Ok(Vec::new()) } else { remove_stale(self.dir, in_set) }
    }

    /// [`Writer::install`] once the file's subdirectory exists.
    fn install_file(&self, file: &OutputFile) -> Result<Option<String>> {
        let rel = file.path();
        let mut exists = self.existing.contains(rel);
        if self.strategy == Strategy::GeneratorDir && !exists {
            match file {
                OutputFile::Unit { text, .. } if text.len() <= IN_PLACE_MAX => {
                    if self.write_new(rel, text.as_bytes())? {
                        return Ok(Some(rel.to_string()));
                    }
                    // Another generator, running beside this one, wrote it meanwhile.
                    exists = true;
                }
                // symlink(2) is atomic by itself: the link is there whole or not at all.
                OutputFile::Link { target, .. } => match symlinkat(target.as_str(), &self.fd, rel) {
                    Ok(()) => return Ok(Some(rel.to_string())),
                    Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(e).with_context(|| format!("cannot create {}", self.path(rel).display())),
                },
                // A longer unit goes through a rename; a unit another generator writes at the
                // same moment can still be lost to it (generators run side by side), as before.
                OutputFile::Unit { .. } => {}
            }
        }
        let path = self.path(rel);
        let tmp_rel = match rel.rsplit_once('/') {
            Some((sub, name)) => format!("{sub}/.{name}.kapell-tmp"),
            None => format!(".{rel}.kapell-tmp"),
        };
        let tmp = self.path(&tmp_rel);
        if self.existing.contains(&tmp_rel) {
            let _ = std::fs::remove_file(&tmp); // left by an interrupted run
        }
        match file {
            OutputFile::Unit { text, .. } => {
                if exists {
                    let old = std::fs::read(&path).unwrap_or_default();
                    if old == text.as_bytes() {
                        return Ok(None);
                    }
                    // Only kapell's own units are replaced (an empty file is a mask: not ours).
                    if !is_kapell_text(&String::from_utf8_lossy(&old)) {
                        let why = format!(
                            "{} is not kapell's (no X-Kapell-Stack= in it: another generator's unit, or a file put \
                             there by hand): it is left as it is, and kapell's unit of that name is not written",
                            path.display()
                        );
                        let refusal = Refusal { path: rel.to_string(), stack: stack_of_text(text), why };
                        self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(refusal);
                        return Ok(None);
                    }
                }
                write_file(&tmp, text.as_bytes()).with_context(|| format!("cannot write {}", tmp.display()))?;
            }
            OutputFile::Link { target, .. } => {
                if exists && std::fs::read_link(&path).is_ok_and(|old| old == Path::new(target)) {
                    return Ok(None);
                }
                std::os::unix::fs::symlink(target, &tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
            }
        }
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot install {}", path.display()))?;
        Ok(Some(rel.to_string()))
    }

    /// Creates `rel` with the whole of `bytes` in one `write(2)`; `false` if it already exists
    /// (then the caller replaces it). A short write is an error: the file is removed so that no
    /// partial unit stays behind.
    fn write_new(&self, rel: &str, bytes: &[u8]) -> Result<bool> {
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC;
        let mut file = match openat(&self.fd, rel, flags, Mode::from_bits_truncate(UNIT_MODE)) {
            Ok(fd) => std::fs::File::from(fd),
            Err(nix::errno::Errno::EEXIST) => return Ok(false),
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", self.path(rel).display())),
        };
        match file.write(bytes) {
            Ok(n) if n == bytes.len() => Ok(true),
            result => {
                let _ = unlinkat(&self.fd, rel, UnlinkatFlags::NoRemoveDir);
                let why =
                    result.map_or_else(|e| e.to_string(), |n| format!("only {n} of {} bytes written", bytes.len()));
                anyhow::bail!("cannot write {}: {why}", self.path(rel).display())
            }
        }
    }

    /// The path of `rel` in the directory (for errors and for replacing files).
    fn path(&self, rel: &str) -> PathBuf {
        child(self.dir, rel)
    }
}

/// Writes `path` whole, created with the mode of a unit created in place (0644 less the umask).
fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(UNIT_MODE).open(path)?.write_all(bytes)
}

/// `dir/rel`, by concatenation: the same path as `dir.join(rel)` for the relative, normalized
/// names of a unit set, without `join`'s component parsing (it runs twice per file).
fn child(dir: &Path, rel: &str) -> PathBuf {
    let dir = dir.as_os_str();
    let mut path = OsString::with_capacity(dir.len() + 1 + rel.len());
    path.push(dir);
    if !dir.as_encoded_bytes().ends_with(b"/") {
        path.push("/");
    }
    path.push(rel);
    PathBuf::from(path)
}

/// The names in `dir` and in its subdirectories (as paths relative to `dir`), and the
/// subdirectories; nothing if `dir` does not exist.
fn list(dir: &Path) -> (HashSet<String>, HashSet<String>) {
    let (mut names, mut subdirs) = (HashSet::new(), HashSet::new());
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            for inner in std::fs::read_dir(entry.path()).into_iter().flatten().flatten() {
                names.insert(format!("{name}/{}", inner.file_name().to_string_lossy()));
            }
            subdirs.insert(name.clone());
        }
        names.insert(name);
    }
    (names, subdirs)
}

/// Removes kapell units and links in `dir` (one level of `*.wants/` included) not `in_set`.
fn remove_stale(dir: &Path, in_set: impl Fn(&str) -> bool) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let mut visit = |sub: &str| -> Result<()> {
        let base = if sub.is_empty() { dir.to_path_buf() } else { dir.join(sub) };
        let Ok(entries) = std::fs::read_dir(&base) else { return Ok(()) };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if sub.is_empty() { name.clone() } else { format!("{sub}/{name}") };
            if in_set(&rel) || !is_kapell_link_or_unit(dir, &rel) {
                continue;
            }
            std::fs::remove_file(entry.path()).with_context(|| format!("cannot remove {}", entry.path().display()))?;
            removed.push(rel);
        }
        Ok(())
    };
    // Links first, while the units they point to are still there to say they are kapell's.
    let wants: Vec<String> = std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| crate::names::is_link_dir(n))
                .collect()
        })
        .unwrap_or_default();
    for w in wants {
        visit(&w)?;
    }
    visit("")?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str) -> OutputFile {
        OutputFile::unit(name, format!("[Unit]\nDescription={name}\nX-Kapell-Stack=s\n"))
    }

    /// A small new unit is created in place relative to the open directory, in a subdirectory
    /// too; an existing one is left to the caller to replace; a failure names the whole path.
    #[test]
    fn a_new_unit_is_created_in_place_relative_to_the_directory() -> Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("multi-user.target.wants"))?;
        let writer = Writer::open(dir.path(), Strategy::GeneratorDir)?;
        let rel = "multi-user.target.wants/a.service";
        assert!(writer.write_new(rel, b"[Unit]\n")?, "created");
        assert_eq!(std::fs::read(dir.path().join(rel))?, b"[Unit]\n");
        assert!(!writer.write_new(rel, b"[Unit]\nDescription=again\n")?, "already there: the caller replaces it");
        assert_eq!(std::fs::read(dir.path().join(rel))?, b"[Unit]\n", "left as it was");
        let missing = dir.path().join("no-such.wants/b.service");
        let error = writer.write_new("no-such.wants/b.service", b"x").expect_err("no such directory");
        assert!(error.to_string().contains(&missing.display().to_string()), "{error:#}");
        Ok(())
    }

    /// A unit of the set whose name a file that is not kapell's already has (another
    /// generator's, running beside kapell's) is not written: that file stays, the refusal says
    /// why, and the rest of the set is written.
    #[test]
    fn a_unit_that_is_not_kapells_is_never_replaced() -> Result<()> {
        for strategy in [Strategy::GeneratorDir, Strategy::Replace] {
            let dir = tempfile::tempdir()?;
            let theirs = "[Service]\nExecStart=/bin/theirs\n";
            std::fs::write(dir.path().join("kernel-command-line.service"), theirs)?;
            let writer = Writer::open(dir.path(), strategy)?;
            for name in ["kernel-command-line.service", "kernel.target"] {
                writer.install(&unit(name))?;
            }
            let refused = writer.refused();
            assert_eq!(refused.len(), 1, "{strategy:?}: {refused:?}");
            assert!(refused[0].contains("kernel-command-line.service is not kapell's"), "{refused:?}");
            assert_eq!(std::fs::read_to_string(dir.path().join("kernel-command-line.service"))?, theirs);
            assert_eq!(std::fs::read_to_string(dir.path().join("kernel.target"))?, unit("kernel.target").content());
        }
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("a.service"), "")?;
        let error = write(dir.path(), &[unit("a.service")], Strategy::Replace).expect_err("a mask is not kapell's");
        assert!(error.to_string().contains("a.service is not kapell's"), "{error:#}");
        assert_eq!(std::fs::read(dir.path().join("a.service"))?, b"", "the mask stays");
        Ok(())
    }

    /// Files installed from several threads at once, into a directory holding an earlier set:
    /// what changed is reported, the earlier set's leftovers go, and files and links that are
    /// not kapell's stay (a dangling link too: it may be another generator's).
    #[test]
    fn a_writer_shared_by_threads_installs_the_set_and_removes_only_kapells_leftovers() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let wants = dir.path().join("multi-user.target.wants");
        std::fs::create_dir(&wants)?;
        std::fs::write(dir.path().join("old.target"), "[Unit]\nX-Kapell-Stack=old\n")?;
        std::os::unix::fs::symlink("../old.target", wants.join("old.target"))?;
        std::fs::write(dir.path().join("foreign.service"), "[Service]\nExecStart=/bin/true\n")?;
        // Another generator's links: to its own unit here, and to one it did not write here.
        std::os::unix::fs::symlink("../foreign.service", wants.join("foreign.service"))?;
        let requires = dir.path().join("local-fs.target.requires");
        std::fs::create_dir(&requires)?;
        std::os::unix::fs::symlink("../systemd-remount-fs.service", requires.join("systemd-remount-fs.service"))?;
        let same = unit("same.service");
        std::fs::write(dir.path().join("same.service"), same.content())?;

        let mut files: Vec<OutputFile> = (0..64).map(|i| unit(&format!("s-{i}.service"))).collect();
        files.push(unit("s.target"));
        files.push(OutputFile::link("multi-user.target.wants/s.target", "../s.target"));
        files.push(OutputFile::link("sockets.target.wants/s-0.service", "../s-0.service"));
        files.push(same);
        let writer = Writer::open(dir.path(), Strategy::GeneratorDir)?;
        let halves = files.split_at(files.len() / 2);
        let changed = std::thread::scope(|scope| {
            let other = scope.spawn(|| halves.1.iter().map(|f| writer.install(f)).collect::<Vec<_>>());
            let mine: Vec<_> = halves.0.iter().map(|f| writer.install(f)).collect();
            mine.into_iter()
                .chain(other.join().expect("thread"))
                .filter_map(|r| r.transpose())
                .collect::<Result<Vec<_>>>()
        })?;
        assert_eq!(changed.len(), files.len() - 1, "all but the unchanged unit: {changed:?}");
        let set: HashSet<&str> = files.iter().map(OutputFile::path).collect();
        let removed = writer.finish(|path| set.contains(path))?;
        assert_eq!(removed, ["multi-user.target.wants/old.target", "old.target"], "the link first");

        let (names, _) = list(dir.path());
        let mut names: Vec<String> = names.into_iter().filter(|n| !crate::names::is_link_dir(n)).collect();
        names.sort();
        let mut want: Vec<String> = files.iter().map(|f| f.path().to_string()).collect();
        want.extend(
            [
                "foreign.service",
                "multi-user.target.wants/foreign.service",
                "local-fs.target.requires/systemd-remount-fs.service",
            ]
            .map(String::from),
        );
        want.sort();
        assert_eq!(names, want);
        assert_eq!(
            std::fs::read_link(dir.path().join("sockets.target.wants/s-0.service"))?,
            Path::new("../s-0.service")
        );
        // Created in place relative to the open directory: the whole unit, not writable by group
        // or others.
        let written = dir.path().join("s-1.service");
        assert_eq!(std::fs::read_to_string(&written)?, unit("s-1.service").content());
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&written)?.permissions());
        assert_eq!(mode & 0o022, 0, "group or others may write {mode:o}");
        Ok(())
    }
}
