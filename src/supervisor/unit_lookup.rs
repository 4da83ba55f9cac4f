//! Finding the unit file systemd started the supervisor from, the way systemd finds it.
//!
//! The supervisor learns nothing but `STACK.SERVICE` (and the instance) from its command line;
//! everything else is in the unit's `[X-Kapell-Container]` section. The unit is looked up in
//! systemd's system unit search path in precedence order, so an operator's copy in
//! `/etc/systemd/system` wins over the generator's, exactly as it does for systemd. Drop-ins
//! (`<unit>.d/*.conf`) are systemd's business: the container section is read from the unit file only.

use std::path::{Path, PathBuf};

/// systemd's system unit search path (systemd.unit(5)), highest precedence first.
pub const SYSTEM_UNIT_PATH: &[&str] = &[
    "/etc/systemd/system.control",
    "/run/systemd/system.control",
    "/run/systemd/transient",
    "/run/systemd/generator.early",
    "/etc/systemd/system",
    "/etc/systemd/system.attached",
    "/run/systemd/system",
    "/run/systemd/system.attached",
    "/run/systemd/generator",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
    "/run/systemd/generator.late",
];

/// The service a supervisor runs: `STACK.SERVICE`, plus the instance of a replicated service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub stack: String,
    pub service: String,
    /// The replica number (`%i` of the template unit).
    pub instance: Option<String>,
}

impl Target {
    /// Parses `STACK.SERVICE` and checks the instance is a replica number.
    pub fn new(name: &str, instance: Option<&str>) -> Result<Self, String> {
        let (stack, service) = name
            .split_once('.')
            .filter(|(s, v)| is_name(s) && is_name(v))
            .ok_or_else(|| format!("{name:?} is not STACK.SERVICE (lower-case names, e.g. todo.web)"))?;
        if let Some(i) = instance
            && (i.is_empty() || !i.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(format!("instance {i:?} is not a replica number"));
        }
        Ok(Self { stack: stack.to_string(), service: service.to_string(), instance: instance.map(str::to_string) })
    }

    /// The unit systemd runs: `<stack>-<service>.service` or `<stack>-<service>@<n>.service`.
    pub fn unit_name(&self) -> String {
        match &self.instance {
            Some(i) => format!("{}-{}@{i}.service", self.stack, self.service),
            None => format!("{}-{}.service", self.stack, self.service),
        }
    }

    /// The file names systemd would load the unit from, in order: for an instance the instance's
    /// own file, then the template (kapell writes only the template).
    pub fn file_names(&self) -> Vec<String> {
        match &self.instance {
            Some(_) => vec![self.unit_name(), format!("{}-{}@.service", self.stack, self.service)],
            None => vec![self.unit_name()],
        }
    }
}

/// Stack and service names as kapell validates them (`[a-z][a-z0-9-]*`).
fn is_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The unit file of `target` in `dirs` (highest precedence first), as systemd would pick it: each
/// candidate name is searched through the whole path before the next one is tried.
pub fn find_in<P: AsRef<Path>>(dirs: &[P], target: &Target) -> Option<PathBuf> {
    target
        .file_names()
        .iter()
        .find_map(|name| dirs.iter().map(|d| d.as_ref().join(name)).find(|p| p.symlink_metadata().is_ok()))
}

/// The unit file of `target` in systemd's system unit search path.
pub fn find(target: &Target) -> Result<PathBuf, String> {
    find_in(SYSTEM_UNIT_PATH, target).ok_or_else(|| {
        format!(
            "no unit file {} in systemd's unit search path (has `systemctl daemon-reload` run since the stack was written?)",
            target.file_names().join(" or ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::new("todo.web", None).expect("valid");
        assert_eq!(t.unit_name(), "todo-web.service");
        let t = Target::new("todo.web", Some("3")).expect("valid");
        assert_eq!(t.unit_name(), "todo-web@3.service");
        assert_eq!(t.file_names(), ["todo-web@3.service", "todo-web@.service"]);
        for bad in ["todo", "todo.", ".web", "Todo.web", "todo.web.x", "to do.web"] {
            assert!(Target::new(bad, None).is_err(), "{bad}");
        }
        assert!(Target::new("todo.web", Some("x")).is_err());
        assert!(Target::new("todo.web", Some("")).is_err());
    }

    #[test]
    fn lookup_follows_precedence() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let dirs: Vec<PathBuf> = ["etc", "run", "generator"].iter().map(|d| tmp.path().join(d)).collect();
        for d in &dirs {
            std::fs::create_dir(d)?;
        }
        let plain = Target::new("todo.web", None)?;
        assert_eq!(find_in(&dirs, &plain), None);
        std::fs::write(dirs[2].join("todo-web.service"), "")?;
        assert_eq!(find_in(&dirs, &plain), Some(dirs[2].join("todo-web.service")));
        std::fs::write(dirs[1].join("todo-web.service"), "")?;
        assert_eq!(find_in(&dirs, &plain), Some(dirs[1].join("todo-web.service")));

        // An instance: its own file anywhere in the path beats the template, as in systemd.
        let replica = Target::new("todo.api", Some("2"))?;
        std::fs::write(dirs[0].join("todo-api@.service"), "")?;
        assert_eq!(find_in(&dirs, &replica), Some(dirs[0].join("todo-api@.service")));
        std::fs::write(dirs[2].join("todo-api@2.service"), "")?;
        assert_eq!(find_in(&dirs, &replica), Some(dirs[2].join("todo-api@2.service")));
        Ok(())
    }
}
