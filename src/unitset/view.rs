//! What a unit set says about stacks: which services a stack has, which unit file each service
//! has and with what text, and which units run (the instances of a replicated service).
//!
//! The same view is built from the files kapell renders now ([`UnitSet::from_rendered`]) and from
//! the files the generator wrote into systemd's generator directory at the last reload
//! ([`UnitSet::read_dir`]), so the two can be compared. Everything is read from the unit files
//! themselves (the `X-Kapell-*` markers, the target's `Wants=`), never from names.

use super::OutputFile;
use super::markers::{self, CONTAINER_SECTION, SERVICE_KEY, STACK_KEY};
use crate::unitfile::UnitFile;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// The stacks of a unit set, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitSet {
    pub stacks: BTreeMap<String, StackUnits>,
}

/// One stack's units. Services are looked up by name and by running unit through indexes, so a
/// stack of 10,000 services costs no more per service than a stack of ten.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackUnits {
    pub name: String,
    /// Every unit file of the stack (its target and its services'), name → text.
    pub files: BTreeMap<String, String>,
    /// In the order the files came (file order when rendered, name order when read back).
    services: Vec<ServiceUnits>,
    /// Service name → index in `services`.
    by_name: HashMap<String, usize>,
    /// Running unit → index in `services`.
    by_unit: HashMap<String, usize>,
}

/// One service's unit file and the units that run from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceUnits {
    pub name: String,
    /// `<stack>-<service>.service`, or the template `<stack>-<service>@.service`.
    pub file: String,
    pub text: String,
    /// The plain unit, or the template's instances that the stack target wants.
    pub running: Vec<String>,
    /// Run by the container supervisor (`kapell run`), as opposed to a native process.
    pub container: bool,
}

impl StackUnits {
    pub fn new(name: &str) -> Self {
        Self { name: name.to_string(), ..Default::default() }
    }

    /// `<stack>.target`.
    pub fn target(&self) -> String {
        crate::names::target_unit(&self.name)
    }

    /// The services, in order.
    pub fn services(&self) -> &[ServiceUnits] {
        &self.services
    }

    /// Every unit that runs, service by service.
    pub fn running(&self) -> impl Iterator<Item = (&ServiceUnits, &str)> {
        self.services.iter().flat_map(|s| s.running.iter().map(move |u| (s, u.as_str())))
    }

    pub fn service(&self, name: &str) -> Option<&ServiceUnits> {
        crate::lookups::count();
        self.by_name.get(name).map(|&i| &self.services[i])
    }

    /// The service a running unit belongs to.
    pub fn service_of(&self, unit: &str) -> Option<&ServiceUnits> {
        crate::lookups::count();
        self.by_unit.get(unit).map(|&i| &self.services[i])
    }

    /// Adds a service, or merges its running units into the service of the same name.
    pub fn add_service(&mut self, service: ServiceUnits) {
        let index = match self.by_name.get(&service.name) {
            Some(&i) => i,
            None => {
                self.by_name.insert(service.name.clone(), self.services.len());
                self.services.push(ServiceUnits { running: Vec::new(), ..service.clone() });
                self.services.len() - 1
            }
        };
        for unit in service.running {
            self.add_running(index, unit);
        }
    }

    fn add_running(&mut self, index: usize, unit: String) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.by_unit.entry(unit.clone()) {
            e.insert(index);
            self.services[index].running.push(unit);
        }
    }
}

impl UnitSet {
    /// The view of freshly rendered files (links are ignored: they follow from the target).
    pub fn from_rendered(files: &[OutputFile]) -> Self {
        Self::from_texts(files.iter().filter_map(|f| match f {
            OutputFile::Unit { name, text } => Some((name.clone(), text.clone())),
            OutputFile::Link { .. } => None,
        }))
    }

    /// The kapell units of a unit directory (files carrying the owner marker), except those named
    /// in `exclude`. A missing directory is an empty set; other units are not read past their
    /// text, and nothing is ever written.
    pub fn read_dir(dir: &Path, exclude: &BTreeSet<String>) -> Result<Self> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
        };
        let mut texts = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Units are regular files; symlinks there are other generators' aliases and masks.
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            if !is_file || exclude.contains(&name) || !(name.ends_with(".service") || name.ends_with(".target")) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
            if markers::is_kapell_text(&text) {
                texts.push((name, text));
            }
        }
        texts.sort();
        Ok(Self::from_texts(texts))
    }

    /// Groups unit texts by their stack and service markers and works out the running units of
    /// templates from the stack target's `Wants=`.
    pub(crate) fn from_texts(texts: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut set = UnitSet::default();
        let mut wants: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, text) in texts {
            let Ok(unit) = UnitFile::parse(&text) else { continue };
            let Some(section) = unit.get_section("Unit") else { continue };
            let Some(stack_name) = section.get(STACK_KEY).map(str::to_string) else { continue };
            let stack = set.stacks.entry(stack_name.clone()).or_insert_with(|| StackUnits::new(&stack_name));
            stack.files.insert(name.clone(), text.clone());
            match section.get(SERVICE_KEY) {
                Some(service) => stack.add_service(ServiceUnits {
                    name: service.to_string(),
                    running: if name.ends_with("@.service") { Vec::new() } else { vec![name.clone()] },
                    file: name,
                    text,
                    container: unit.get_section(CONTAINER_SECTION).is_some(),
                }),
                None if name == stack.target() => {
                    let list = section.get_all("Wants").flat_map(str::split_whitespace).map(str::to_string).collect();
                    wants.insert(stack_name, list);
                }
                None => {}
            }
        }
        for (stack_name, wanted) in wants {
            let Some(stack) = set.stacks.get_mut(&stack_name) else { continue };
            // Template file → service, so each wanted instance finds its template in one lookup.
            let templates: HashMap<String, usize> = stack
                .services
                .iter()
                .enumerate()
                .filter(|(_, s)| s.file.ends_with("@.service"))
                .map(|(i, s)| (s.file.clone(), i))
                .collect();
            for unit in wanted {
                if let Some(&i) = crate::names::template_of(&unit).and_then(|t| templates.get(&t)) {
                    stack.add_running(i, unit);
                }
            }
        }
        set
    }

    /// This set with what `other` adds: its stacks, its services, its instances (for showing
    /// both what the stack files say and what still runs).
    pub fn merged(&self, other: &UnitSet) -> UnitSet {
        let mut out = self.clone();
        for (name, theirs) in &other.stacks {
            let ours = out.stacks.entry(name.clone()).or_insert_with(|| StackUnits::new(name));
            for (file, text) in &theirs.files {
                ours.files.entry(file.clone()).or_insert_with(|| text.clone());
            }
            for service in &theirs.services {
                ours.add_service(service.clone());
            }
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn target(stack: &str, wants: &str) -> (String, String) {
        (
            format!("{stack}.target"),
            format!("# generated\n\n[Unit]\nDescription=x\nWants={wants}\nX-Kapell-Stack={stack}\n"),
        )
    }

    pub(crate) fn service(stack: &str, file: &str, service: &str, exec: &str) -> (String, String) {
        (
            file.to_string(),
            format!("[Unit]\nX-Kapell-Stack={stack}\nX-Kapell-Service={service}\n\n[Service]\nExecStart={exec}\n"),
        )
    }

    #[test]
    fn groups_by_marker_and_expands_template_instances() {
        let set = UnitSet::from_texts([
            target("shop", "shop-db.service shop-web@1.service shop-web@2.service shop-webx@1.service"),
            service("shop", "shop-db.service", "db", "/bin/db"),
            service("shop", "shop-web@.service", "web", "/bin/web"),
            ("other.service".into(), "[Unit]\nDescription=not ours\n".into()),
        ]);
        assert_eq!(set.stacks.len(), 1);
        let shop = &set.stacks["shop"];
        assert_eq!(shop.files.len(), 3);
        let running: Vec<&str> = shop.running().map(|(_, u)| u).collect();
        assert_eq!(running, ["shop-db.service", "shop-web@1.service", "shop-web@2.service"]);
        assert_eq!(shop.service_of("shop-web@2.service").map(|s| s.name.as_str()), Some("web"));
        assert_eq!(shop.service("db").map(|s| s.file.as_str()), Some("shop-db.service"));
        assert!(shop.services().iter().all(|s| !s.container));
    }

    #[test]
    fn merging_adds_services_and_instances_once() {
        let a = UnitSet::from_texts([target("s", "s-w@1.service"), service("s", "s-w@.service", "w", "/bin/w")]);
        let b = UnitSet::from_texts([
            target("s", "s-w@1.service s-w@2.service"),
            service("s", "s-w@.service", "w", "/bin/w2"),
            service("s", "s-x.service", "x", "/bin/x"),
        ]);
        let m = a.merged(&b);
        let running: Vec<&str> = m.stacks["s"].running().map(|(_, u)| u).collect();
        assert_eq!(running, ["s-w@1.service", "s-w@2.service", "s-x.service"]);
        assert_eq!(m.stacks["s"].service("w").map(|s| s.text.contains("/bin/w\n")), Some(true), "ours wins");
    }

    #[test]
    fn reads_only_marked_regular_files_not_excluded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |(name, text): (String, String)| std::fs::write(dir.path().join(name), text).expect("write");
        write(target("a", "a-x.service"));
        write(service("a", "a-x.service", "x", "/bin/x"));
        write(service("fleet", "fleet-y.service", "y", "/bin/y"));
        write(("foreign.service".into(), "[Unit]\nDescription=fstab\n".into()));
        std::os::unix::fs::symlink("/dev/null", dir.path().join("masked.service")).expect("symlink");
        let exclude = BTreeSet::from(["fleet-y.service".to_string()]);
        let set = UnitSet::read_dir(dir.path(), &exclude).expect("read");
        assert_eq!(set.stacks.keys().collect::<Vec<_>>(), ["a"]);
        let missing = UnitSet::read_dir(&dir.path().join("nope"), &exclude).expect("missing dir");
        assert!(missing.stacks.is_empty());
    }
}
