//! Finding the unit file systemd started the supervisor from, the way systemd finds it.
//!
//! The supervisor learns nothing but `STACK.SERVICE` (and the instance) from its command line;
//! everything else is in the unit's `[X-Kapell-Container]` section. The unit is looked up in
//! systemd's system unit search path in precedence order, so an operator's copy in
//! `/etc/systemd/system` wins over the generator's, exactly as it does for systemd. Drop-ins
//! (`<unit>.d/*.conf`) are systemd's business: the container section is read from the unit file only.

use crate::names::{SYSTEM_UNIT_PATH, ServiceRef};
use std::path::{Path, PathBuf};

/// The unit file of `service` in `dirs` (highest precedence first), as systemd would pick it: each
/// candidate name is searched through the whole path before the next one is tried.
pub fn find_in<P: AsRef<Path>>(dirs: &[P], service: &ServiceRef) -> Option<PathBuf> {
    service
        .file_names()
        .iter()
        .find_map(|name| dirs.iter().map(|d| d.as_ref().join(name)).find(|p| p.symlink_metadata().is_ok()))
}

/// The unit file of `service` in systemd's system unit search path.
pub fn find(service: &ServiceRef) -> Result<PathBuf, String> {
    find_in(SYSTEM_UNIT_PATH, service).ok_or_else(|| {
        format!(
            "no unit file {} in systemd's unit search path (has `systemctl daemon-reload` run since the stack was written?)",
            service.file_names().join(" or ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_follows_precedence() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let dirs: Vec<PathBuf> = ["etc", "run", "generator"].iter().map(|d| tmp.path().join(d)).collect();
        for d in &dirs {
            std::fs::create_dir(d)?;
        }
        let plain = ServiceRef::new("todo.web", None)?;
        assert_eq!(find_in(&dirs, &plain), None);
        std::fs::write(dirs[2].join("todo-web.service"), "")?;
        assert_eq!(find_in(&dirs, &plain), Some(dirs[2].join("todo-web.service")));
        std::fs::write(dirs[1].join("todo-web.service"), "")?;
        assert_eq!(find_in(&dirs, &plain), Some(dirs[1].join("todo-web.service")));

        // An instance: its own file anywhere in the path beats the template, as in systemd.
        let replica = ServiceRef::new("todo.api", Some("2"))?;
        std::fs::write(dirs[0].join("todo-api@.service"), "")?;
        assert_eq!(find_in(&dirs, &replica), Some(dirs[0].join("todo-api@.service")));
        std::fs::write(dirs[2].join("todo-api@2.service"), "")?;
        assert_eq!(find_in(&dirs, &replica), Some(dirs[2].join("todo-api@2.service")));
        Ok(())
    }
}
