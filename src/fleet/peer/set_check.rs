//! What a peer accepts as a received set, checked before anything is staged: file names that are
//! systemd unit names or `<unit>.wants/<unit>` / `<unit>.requires/<unit>` links into the set,
//! units that are kapell's, and no unit that would shadow one kapell does not own, whether it is
//! a file on the search path or something only systemd knows (built-in units such as `-.slice`,
//! instances of a template, other generators' output). The hashes are checked by
//! [`crate::fleet::protocol::HostSet::verify`].

use crate::blocking::with_systemd;
use crate::fleet::protocol::{HostSet, SetFile};
use crate::names::{self, UnitNameKind};
use crate::systemd::{Systemd, UnitOrigin};
use crate::unitset::markers;
use crate::validate::UnitSearchPath;
use anyhow::Result;
use std::collections::BTreeSet;
use std::path::Path;

/// The first reason `set` cannot be installed, if any: its names ([`check_names`]), then its
/// units against what the host has. `own` are the units of the set the host runs now (what it
/// received before), which are kapell's even when systemd has lost their file (drift).
pub fn check_files(set: &HostSet, own: &BTreeSet<&str>) -> Result<()> {
    check_names(set)?;
    let search_path = UnitSearchPath::from_env();
    for (path, file) in set.files.iter() {
        if let SetFile::Unit { text, .. } = file {
            anyhow::ensure!(
                markers::is_kapell_text(text),
                "{path} is not a kapell unit (it has no {}= line)",
                markers::STACK_KEY
            );
            // A mask of a unit of the set this host runs is drift, repaired by `drift::unmask`.
            // Any other mask is the operator's, on a unit kapell does not own: lifting it would
            // remove what kapell did not write. Every file of the name counts, not only the
            // first: a mask in /etc may hide a packaged unit the set would shadow.
            for foreign in search_path.foreign_units(path) {
                let mask = std::fs::read_link(&foreign).is_ok_and(|t| t == Path::new("/dev/null"));
                match (mask, own.contains(path.as_str())) {
                    (true, true) => {}
                    (true, false) => anyhow::bail!(
                        "{path} is masked by {}, which kapell does not own; kapell does not unmask it",
                        foreign.display()
                    ),
                    (false, _) => {
                        anyhow::bail!("{path} would shadow {}, which kapell does not own", foreign.display())
                    }
                }
            }
        }
    }
    with_systemd(async |systemd| check_with_systemd(systemd, set, own).await)
}

/// Names only, no I/O: every file is a unit (a systemd unit name) or a link
/// `<unit>.wants/<unit of the set>` (or `.requires/`) pointing at `../<that unit>`.
pub fn check_names(set: &HostSet) -> Result<()> {
    let units: BTreeSet<&str> = set.units().collect();
    for (path, file) in set.files.iter() {
        match file {
            SetFile::Unit { .. } => {
                names::unit_name_kind(path).map_err(anyhow::Error::msg)?;
            }
            SetFile::Link { target } => check_link(path, target, &units)?,
        }
    }
    Ok(())
}

fn check_link(path: &str, target: &str, units: &BTreeSet<&str>) -> Result<()> {
    let shown = |why: String| {
        anyhow::anyhow!(
            "invalid link {path:?} -> {target:?}: {why} (a set links only <unit>.wants/<unit> or \
             <unit>.requires/<unit> to ../<unit> of the same set)"
        )
    };
    let (dir, name) =
        path.split_once('/').ok_or_else(|| shown("it is not in a .wants/ or .requires/ directory".into()))?;
    let owner = names::LINK_DIR_SUFFIXES
        .iter()
        .find_map(|suffix| dir.strip_suffix(suffix))
        .ok_or_else(|| shown(format!("{dir:?} is not a .wants/ or .requires/ directory")))?;
    names::unit_name_kind(owner).map_err(shown)?;
    names::unit_name_kind(name).map_err(shown)?;
    if !units.contains(name) {
        return Err(shown(format!("{name:?} is not a unit of the set")));
    }
    if target.strip_prefix("../") != Some(name) {
        return Err(shown(format!("it must point at \"../{name}\"")));
    }
    Ok(())
}

/// Asks systemd about every unit of the set: a name systemd has (loaded from a file, built in,
/// running, an alias) whose file is not kapell's is refused, and so is a template of the set
/// with an instance systemd runs from another file.
async fn check_with_systemd(systemd: &Systemd, set: &HostSet, own: &BTreeSet<&str>) -> Result<()> {
    let mut plain = Vec::new();
    let mut patterns = Vec::new();
    for unit in set.units() {
        match names::unit_name_kind(unit) {
            Ok(UnitNameKind::Template) => patterns.push(unit.replacen("@.", "@*.", 1)),
            _ => plain.push(unit),
        }
    }
    if plain.is_empty() && patterns.is_empty() {
        return Ok(());
    }
    for origin in systemd.origins(&plain).await? {
        if let Some(why) = foreign(&origin, own) {
            anyhow::bail!("{} would shadow {why}, which kapell does not own", origin.asked);
        }
    }
    let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
    for origin in systemd.loaded_matching(&patterns).await? {
        if let Some(why) = foreign(&origin, own) {
            let template = names::template_of(&origin.id).unwrap_or_else(|| origin.id.clone());
            anyhow::bail!("{template} would take over {why}, which kapell does not own");
        }
    }
    Ok(())
}

/// What systemd has under `origin`'s name that is not kapell's, described; `None` if nothing or
/// kapell's own. Masks are left to the search-path check (a mask of the set's own unit is drift).
fn foreign(origin: &UnitOrigin, own: &BTreeSet<&str>) -> Option<String> {
    if !origin.is_known() || origin.load_state == "masked" {
        return None;
    }
    let fragment = Path::new(&origin.fragment_path);
    if !origin.fragment_path.is_empty() && markers::is_kapell_unit(fragment) {
        return None;
    }
    // A unit the host received before whose generated file was deleted by hand is still
    // kapell's: drift that the install repairs.
    let received =
        own.contains(origin.id.as_str()) || names::template_of(&origin.id).is_some_and(|t| own.contains(t.as_str()));
    if received && (origin.fragment_path.is_empty() || !fragment.exists()) {
        return None;
    }
    let what = if origin.id != origin.asked {
        format!("{} (an alias of {})", origin.asked, origin.id)
    } else {
        origin.id.clone()
    };
    Some(match origin.fragment_path.as_str() {
        "" => format!("systemd's {what} ({}, {})", origin.load_state, origin.active_state),
        file => format!("systemd's {what} (from {file})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unitset::OutputFile;

    fn unit(name: &str) -> OutputFile {
        OutputFile::unit(name, "[Unit]\nX-Kapell-Stack=a\n")
    }

    fn names_of(files: &[OutputFile]) -> Result<()> {
        check_names(&HostSet::from_rendered(files))
    }

    #[test]
    fn units_templates_instances_and_links_of_the_set_pass() {
        names_of(&[
            unit("a.target"),
            unit("a-web@.service"),
            unit("a-web@1.service"),
            unit("a-db.service"),
            OutputFile::link("multi-user.target.wants/a.target", "../a.target"),
            OutputFile::link("a.target.requires/a-db.service", "../a-db.service"),
            OutputFile::link("a.target.wants/a-web@1.service", "../a-web@1.service"),
        ])
        .expect("a valid set");
    }

    #[test]
    fn anything_else_is_refused_with_its_name() {
        let cases: &[(&[OutputFile], &str)] = &[
            (&[unit("")], "an empty name"),
            (&[unit("current")], "\"current\" is not a systemd unit name"),
            (&[unit("confirmed")], "\"confirmed\""),
            (&[unit("pending.json")], "`.json` is not a unit type"),
            (&[unit(".staging-g1-x.service")], "starts with `.`"),
            (&[unit("x.wants")], "`.wants` is not a unit type"),
            (&[unit("..")], "\"..\""),
            (&[unit("a/b.service")], "'/' is not allowed"),
            (&[unit("a\0.service")], "'\\0' is not allowed"),
            (&[unit("a\u{1b}.service")], "'\\u{1b}' is not allowed"),
            (&[unit(&format!("{}.service", "x".repeat(300)))], "longer than 255"),
            (&[unit("a.target"), OutputFile::link("a.target", "../a.target")], "not in a .wants/ or .requires/"),
            (&[unit("a.target"), OutputFile::link("x.d/a.target", "../a.target")], "\"x.d\" is not a .wants/"),
            (
                &[unit("a.target"), OutputFile::link("multi-user.target.wants/b.target", "../b.target")],
                "not a unit of the set",
            ),
            (&[unit("a.target"), OutputFile::link("multi-user.target.wants/a.target", "/etc/passwd")], "must point at"),
            (
                &[unit("a.target"), OutputFile::link("x.wants/a.target", "../a.target")],
                "\"x\" is not a systemd unit name",
            ),
            (&[unit("a.target"), OutputFile::link("a.target.wants/../a.target", "../a.target")], "\"../a.target\""),
            (&[unit("a.target"), OutputFile::link("m.target.wants/x/a.target", "../a.target")], "\"x/a.target\""),
        ];
        for (files, want) in cases {
            let e = names_of(files).expect_err("refused").to_string();
            assert!(e.contains(want), "{files:?}: {e}");
        }
    }

    #[test]
    fn systemds_units_are_foreign_unless_kapell_wrote_them() {
        let own = BTreeSet::from(["a-x.service"]);
        let origin = |asked: &str, id: &str, load: &str, active: &str, fragment: &str| UnitOrigin {
            asked: asked.into(),
            id: id.into(),
            load_state: load.into(),
            active_state: active.into(),
            fragment_path: fragment.into(),
        };
        assert_eq!(foreign(&origin("a.service", "a.service", "not-found", "inactive", ""), &own), None);
        assert_eq!(foreign(&origin("a.service", "a.service", "masked", "inactive", "/etc/x"), &own), None);
        let builtin = foreign(&origin("-.slice", "-.slice", "loaded", "active", ""), &own).expect("foreign");
        assert_eq!(builtin, "systemd's -.slice (loaded, active)");
        let instance = origin("getty@tty1.service", "getty@tty1.service", "loaded", "active", "/x/getty@.service");
        assert_eq!(foreign(&instance, &own).expect("foreign"), "systemd's getty@tty1.service (from /x/getty@.service)");
        let alias = origin("dbus-x.service", "real.service", "loaded", "active", "/x/real.service");
        assert!(foreign(&alias, &own).expect("foreign").contains("an alias of real.service"));
        // A running unit of the received set whose generated file was deleted: drift.
        let deleted = origin("a-x.service", "a-x.service", "loaded", "active", "/nonexistent/a-x.service");
        assert_eq!(foreign(&deleted, &own), None);
        // Kapell's own generated file.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("b.service");
        std::fs::write(&file, "[Unit]\nX-Kapell-Stack=b\n").expect("write");
        let generated = origin("b.service", "b.service", "loaded", "active", &file.to_string_lossy());
        assert_eq!(foreign(&generated, &own), None);
        std::fs::write(&file, "[Unit]\n").expect("write");
        assert!(foreign(&generated, &own).is_some());
    }
}
