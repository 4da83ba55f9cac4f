//! Secrets: systemd credentials made visible to the container, read-only, at `/run/secrets/<name>`.
//!
//! The unit loads each secret as a credential (`LoadCredential=` / `SetCredentialEncrypted=`), so
//! systemd puts it in `$CREDENTIALS_DIRECTORY/<name>`: readable by root only and gone when the unit
//! stops. The supervisor copies each one into a per-container directory on a memory filesystem
//! (`/run/kapell/secrets/<container>/`, or `$KAPELL_SECRETS_DIR/<container>/` when dockerd sees
//! the host's files under another path) and Docker bind-mounts the copies read-only. The copy is
//! what lets a non-root container user read its secret: it is owned by the service's numeric
//! `user` (mode 0400), or world-readable inside the container (0444, as Docker's own secrets are)
//! when the user is a name or unset. Secret values are never logged, never on a command line, never
//! on disk; the copies are removed when the supervisor ends.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Where secrets are staged unless `KAPELL_SECRETS_DIR` says otherwise.
pub const DEFAULT_STAGING_DIR: &str = "/run/kapell/secrets";

/// Where a secret appears inside the container.
pub fn container_path(name: &str) -> String {
    format!("/run/secrets/{name}")
}

/// The staged copies of one container's secrets; dropping it removes them.
#[derive(Debug, Default)]
pub struct Staged {
    dir: Option<PathBuf>,
    /// `(host file, path in the container)` for each secret.
    pub mounts: Vec<(PathBuf, String)>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir
            && let Err(e) = std::fs::remove_dir_all(dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            log::warn!("cannot remove the staged secrets in {}: {e}", dir.display());
        }
    }
}

/// [`DEFAULT_STAGING_DIR`], or `KAPELL_SECRETS_DIR`.
fn staging_dir() -> PathBuf {
    std::env::var_os("KAPELL_SECRETS_DIR").map_or_else(|| PathBuf::from(DEFAULT_STAGING_DIR), PathBuf::from)
}

/// Removes what a supervisor that could not clean up (killed) left staged for `container`.
pub fn remove_staged(container: &str) -> Result<(), String> {
    let dir = staging_dir().join(container);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("cannot remove the staged secrets in {}: {e}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// Stages `names` for `container` from `$CREDENTIALS_DIRECTORY`; nothing to do without secrets.
pub fn stage(names: &[String], container: &str, user: Option<&str>) -> Result<Staged, String> {
    if names.is_empty() {
        return Ok(Staged::default());
    }
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from).ok_or_else(|| {
        format!("secret `{}`: $CREDENTIALS_DIRECTORY is not set (the unit must load it with LoadCredential=)", names[0])
    })?;
    let base = staging_dir();
    create_private_dir_all(&base)?;
    check_memory_fs(&base)?;
    stage_in(&base, &credentials, names, container, numeric_owner(user))
}

/// Stages into `base/<container>/`, replacing what an earlier run left there.
pub fn stage_in(
    base: &Path,
    credentials: &Path,
    names: &[String],
    container: &str,
    owner: Option<(u32, Option<u32>)>,
) -> Result<Staged, String> {
    let dir = base.join(container);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("cannot remove stale secrets in {}: {e}", dir.display()));
        }
        _ => {}
    }
    std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // From here on, dropping `staged` removes the directory again.
    let mut staged = Staged { dir: Some(dir.clone()), mounts: Vec::new() };
    for name in names {
        let from = credentials.join(name);
        let value = std::fs::read(&from).map_err(|e| {
            format!(
                "secret `{name}`: cannot read the credential {}: {e} (is LoadCredential= set for it?)",
                from.display()
            )
        })?;
        let to = dir.join(name);
        let mode = if owner.is_some() { 0o400 } else { 0o444 };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&to)
            .map_err(|e| format!("secret `{name}`: cannot create {}: {e}", to.display()))?;
        file.write_all(&value).map_err(|e| format!("secret `{name}`: cannot write {}: {e}", to.display()))?;
        // The umask may have narrowed the mode.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("secret `{name}`: cannot chmod {}: {e}", to.display()))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), gid)
                .map_err(|e| format!("secret `{name}`: cannot give {} to uid {uid}: {e}", to.display()))?;
        }
        staged.mounts.push((to, container_path(name)));
    }
    Ok(staged)
}

/// `uid[:gid]` when the service's `user` is numeric; names resolve only inside the image.
fn numeric_owner(user: Option<&str>) -> Option<(u32, Option<u32>)> {
    let user = user?;
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid = u.parse().ok()?;
    match g {
        Some(g) => Some((uid, Some(g.parse().ok()?))),
        None => Some((uid, None)),
    }
}

fn create_private_dir_all(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// Secrets must not reach a disk: the staging directory has to be on tmpfs or ramfs.
fn check_memory_fs(dir: &Path) -> Result<(), String> {
    use nix::sys::statfs::{TMPFS_MAGIC, statfs};
    // linux/magic.h; nix names TMPFS_MAGIC but not this one.
    const RAMFS_MAGIC: u32 = 0x8584_58f6;
    let fs = statfs(dir).map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
    let kind = fs.filesystem_type();
    if kind == TMPFS_MAGIC || u32::try_from(kind.0).is_ok_and(|k| k == RAMFS_MAGIC) {
        Ok(())
    } else {
        Err(format!(
            "{} is not on a memory filesystem (tmpfs or ramfs); secrets are never written to disk",
            dir.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn owners() {
        assert_eq!(numeric_owner(None), None);
        assert_eq!(numeric_owner(Some("postgres")), None);
        assert_eq!(numeric_owner(Some("999")), Some((999, None)));
        assert_eq!(numeric_owner(Some("999:998")), Some((999, Some(998))));
        assert_eq!(numeric_owner(Some("999:staff")), None);
    }

    #[test]
    fn staging_copies_and_cleans_up() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let (creds, base) = (tmp.path().join("creds"), tmp.path().join("stage"));
        std::fs::create_dir_all(&creds)?;
        std::fs::create_dir_all(&base)?;
        std::fs::write(creds.join("db_password"), "s3cret\n")?;
        // A leftover of a killed supervisor is replaced.
        std::fs::create_dir_all(base.join("kapell-todo-db"))?;
        std::fs::write(base.join("kapell-todo-db/old"), "x")?;

        let staged = stage_in(&base, &creds, &["db_password".into()], "kapell-todo-db", None)?;
        let file = base.join("kapell-todo-db/db_password");
        assert_eq!(staged.mounts, vec![(file.clone(), "/run/secrets/db_password".to_string())]);
        assert_eq!(std::fs::read_to_string(&file)?, "s3cret\n");
        assert_eq!(std::fs::metadata(&file)?.mode() & 0o777, 0o444);
        assert!(!base.join("kapell-todo-db/old").exists());
        drop(staged);
        assert!(!base.join("kapell-todo-db").exists());

        let me = std::fs::metadata(tmp.path())?.uid();
        let staged = stage_in(&base, &creds, &["db_password".into()], "kapell-todo-db", Some((me, None)))?;
        assert_eq!(std::fs::metadata(&staged.mounts[0].0)?.mode() & 0o777, 0o400);

        let err = stage_in(&base, &creds, &["missing".into()], "kapell-todo-x", None).expect_err("missing");
        assert!(err.contains("secret `missing`"), "{err}");
        assert!(!base.join("kapell-todo-x").exists(), "a failed staging leaves nothing behind");
        Ok(())
    }
}
