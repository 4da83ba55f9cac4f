//! How kapell recognizes its own units: the `X-Kapell-*` keys every unit it renders carries. They
//! decide what kapell may replace or remove (only its own units, never anyone else's), so they are
//! spelled here and only here: the renderer writes them, everything else reads them.

use std::path::Path;

/// `[Unit]` key naming the stack a unit belongs to; present in every kapell unit.
pub const STACK_KEY: &str = "X-Kapell-Stack";
/// `[Unit]` key naming the service of a service unit (absent from the stack target).
pub const SERVICE_KEY: &str = "X-Kapell-Service";
/// The section of a container service's unit that carries everything the supervisor needs.
pub const CONTAINER_SECTION: &str = "X-Kapell-Container";
/// The section of a service's unit that carries its health check (containers and native alike).
pub const HEALTH_SECTION: &str = "X-Kapell-Health";
/// Prefix of every kapell key; the `[services.*.systemd]` pass-through may not set them.
pub const KEY_PREFIX: &str = "X-Kapell";

/// Does a unit's text carry the owner marker (`X-Kapell-Stack=` at the start of a line of its
/// `[Unit]` section, blanks allowed around `=` as systemd allows them)?
pub fn is_kapell_text(text: &str) -> bool {
    stack_of_text(text).is_some()
}

/// The stack a unit's text names with `X-Kapell-Stack=` in its `[Unit]` section, if any: where
/// kapell writes it, and the only place every reader looks (a key of that name in another
/// section, as another tool may write, makes no unit kapell's).
pub fn stack_of_text(text: &str) -> Option<String> {
    let mut in_unit = false;
    text.lines().find_map(|l| {
        let l = l.trim_start();
        if l.starts_with('[') {
            in_unit = l.trim_end() == "[Unit]";
            return None;
        }
        let value = l.strip_prefix(STACK_KEY)?.trim_start().strip_prefix('=')?;
        in_unit.then(|| value.trim().to_string())
    })
}

/// A unit kapell wrote carries the owner marker in its text. (`/dev/null` masks are not ours.)
pub fn is_kapell_unit(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| is_kapell_text(&text))
}

/// Is `rel` (relative to a unit directory) a kapell unit, or a `*.wants/` link to one? Used to
/// decide what kapell may remove: nothing else is ever touched.
pub fn is_kapell_link_or_unit(dir: &Path, rel: &str) -> bool {
    let path = dir.join(rel);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => {
            // A wants link made by kapell points at a sibling unit of `dir` that kapell owns. A
            // dangling link says nothing of whose it is (another generator's link to a unit of
            // its own, an operator's): it stays. [`super::write`] removes a stale link before
            // the unit it points to, so kapell leaves none dangling.
            let Ok(target) = std::fs::read_link(&path) else { return false };
            let Some(name) = target.file_name() else { return false };
            target.starts_with("..") && is_kapell_unit(&dir.join(name))
        }
        Ok(m) if m.is_file() => is_kapell_unit(&path),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_is_a_whole_key() {
        assert!(!is_kapell_text("[Service]\nX-Kapell-Stack=todo\n"), "only in [Unit]");
        assert!(!is_kapell_text("X-Kapell-Stack=todo\n"), "before any section");
        assert_eq!(
            stack_of_text("[Unit]\nA=1\n[Service]\nX-Kapell-Stack=no\n[Unit]\nX-Kapell-Stack = todo \n"),
            Some("todo".into())
        );
        assert!(is_kapell_text("[Unit]\nX-Kapell-Stack=todo\n"));
        assert!(is_kapell_text("[Unit]\n  X-Kapell-Stack = todo\n"), "systemd allows blanks around `=`");
        assert!(!is_kapell_text("[Unit]\nX-Kapell-StackX=todo\n"));
        assert!(!is_kapell_text("[Unit]\nDescription=X-Kapell-Stack=todo\n"));
    }
}
