//! Names and paths, in one place: how a stack or service name is spelled, which unit names and
//! container names kapell derives from it, and where systemd keeps unit files.
//!
//! A fleet controller renders units that a peer's generator, `kapell apply`, `kapell status` and
//! the supervisor later look up by name, so every one of them builds names here and nowhere
//! else: the two sides must agree byte for byte.

use std::fmt;

/// Stack and service names are at most this long (they become unit and container names).
pub const MAX_NAME_LEN: usize = 32;

/// Is `s` a valid stack or service name: `[a-z][a-z0-9-]{0,31}`?
pub fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= MAX_NAME_LEN
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Checks a stack or service name; `kind` ("stack", "service") names it in the message.
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    if is_name(name) {
        Ok(())
    } else {
        Err(format!(
            "invalid {kind} name {name:?}: use a lowercase letter followed by up to {} lowercase letters, digits or '-'",
            MAX_NAME_LEN - 1
        ))
    }
}

/// A validated stack or service name as the model holds it. It reads as a `&str` everywhere; its
/// equality comparisons are counted in the crate's tests ([`crate::lookups`]), so a linear scan
/// by name inside a loop over services shows up as quadratic work. (Hash-map probes through
/// `Borrow<str>` and ordered comparisons are not counted: they are the indexes.)
#[derive(Debug, Clone, Default)]
pub struct Name(String);

// Hashing and ordering are the string's (so `Borrow<str>` lookups agree); only equality counts.
impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

impl Name {
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<std::path::Path> for Name {
    fn as_ref(&self) -> &std::path::Path {
        self.0.as_ref()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<Name> for String {
    fn from(n: Name) -> Self {
        n.0
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        crate::lookups::count();
        self.0 == other.0
    }
}

impl Eq for Name {}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        crate::lookups::count();
        self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        crate::lookups::count();
        self.0 == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        crate::lookups::count();
        &self.0 == other
    }
}

impl PartialEq<Name> for String {
    fn eq(&self, other: &Name) -> bool {
        crate::lookups::count();
        *self == other.0
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        crate::lookups::count();
        *self == other.0
    }
}

/// `<stack>.target`.
pub fn target_unit(stack: &str) -> String {
    format!("{stack}.target")
}

/// The unit file of a service: `<stack>-<service>.service`, or the template
/// `<stack>-<service>@.service` of a replicated one.
pub fn service_file(stack: &str, service: &str, replicated: bool) -> String {
    if replicated { format!("{stack}-{service}@.service") } else { format!("{stack}-{service}.service") }
}

/// The unit that runs: `<stack>-<service>.service`, or the instance `<stack>-<service>@<n>.service`.
pub fn service_unit(stack: &str, service: &str, instance: Option<&str>) -> String {
    match instance {
        Some(i) => format!("{stack}-{service}@{i}.service"),
        None => format!("{stack}-{service}.service"),
    }
}

/// The units a service runs: the plain unit, or instances `1..=n` of its template.
pub fn running_units(stack: &str, service: &str, replicas: Option<u32>) -> Vec<String> {
    match replicas {
        Some(n) => (1..=n).map(|i| service_unit(stack, service, Some(&i.to_string()))).collect(),
        None => vec![service_unit(stack, service, None)],
    }
}

/// The template file of an instance: `<prefix>@<i>.service` → `<prefix>@.service`.
pub fn template_of(unit: &str) -> Option<String> {
    let (prefix, rest) = unit.split_once('@')?;
    let instance = rest.strip_suffix(".service")?;
    (!instance.is_empty()).then(|| format!("{prefix}@.service"))
}

/// The Docker container of a service: `kapell-<stack>-<service>[-<n>]`.
pub fn container_name(stack: &str, service: &str, instance: Option<&str>) -> String {
    match instance {
        Some(i) => format!("kapell-{stack}-{service}-{i}"),
        None => format!("kapell-{stack}-{service}"),
    }
}

/// One service as the command line names it: `STACK.SERVICE`, plus the instance (replica number)
/// of a replicated service. What `kapell run` and `kapell logs` are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    pub stack: String,
    pub service: String,
    /// The replica number (`%i` of the template unit).
    pub instance: Option<String>,
}

impl ServiceRef {
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

    /// The unit systemd runs.
    pub fn unit_name(&self) -> String {
        service_unit(&self.stack, &self.service, self.instance.as_deref())
    }

    /// The file names systemd would load the unit from, in order: for an instance the instance's
    /// own file, then the template (kapell writes only the template).
    pub fn file_names(&self) -> Vec<String> {
        match &self.instance {
            Some(_) => vec![self.unit_name(), service_file(&self.stack, &self.service, true)],
            None => vec![self.unit_name()],
        }
    }

    /// The Docker container the supervisor runs for this service.
    pub fn container_name(&self) -> String {
        container_name(&self.stack, &self.service, self.instance.as_deref())
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.stack, self.service)
    }
}

/// systemd's normal generator directory (systemd.generator(7)), where `kapell-generator` writes
/// at boot and at every daemon-reload.
pub const GENERATOR_DIR: &str = "/run/systemd/generator";

/// The generator's name in [`GENERATOR_SEARCH_PATH`].
pub const GENERATOR_NAME: &str = "kapell-generator";

/// Where systemd looks for generators, in its order (systemd.generator(7)).
pub const GENERATOR_SEARCH_PATH: &[&str] = &[
    "/run/systemd/system-generators",
    "/etc/systemd/system-generators",
    "/usr/local/lib/systemd/system-generators",
    "/usr/lib/systemd/system-generators",
    "/lib/systemd/system-generators",
];

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
    GENERATOR_DIR,
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
    "/run/systemd/generator.late",
];

/// The directories of [`SYSTEM_UNIT_PATH`] whose units kapell must never shadow: all but the
/// generator directories, which systemd rebuilds at every reload (kapell's own output is there).
pub fn foreign_unit_dirs() -> impl Iterator<Item = &'static str> {
    SYSTEM_UNIT_PATH.iter().copied().filter(|d| !d.starts_with(GENERATOR_DIR))
}

/// Where `kapell receive` keeps the unit sets a fleet controller installed: generations and the
/// `current` link the generator follows. Under `/etc`: the generator reads it at boot, before
/// `/var` is mounted (SPEC §5).
pub const RECEIVED_DIR: &str = "/etc/kapell/received";

/// The discovery catalog's file in a received generation, beside the units (not a unit: the unit
/// readers leave it out). See docs/discovery.md.
pub const CATALOG_FILE: &str = "catalog.json";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_the_length_limit() {
        assert!(is_name("todo-2"));
        assert!(is_name(&"x".repeat(MAX_NAME_LEN)));
        for bad in ["", "Todo", "2x", "a_b", "a.b", "a b", &"x".repeat(MAX_NAME_LEN + 1)] {
            assert!(!is_name(bad), "{bad}");
            assert!(check_name("stack", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unit_and_container_names() {
        assert_eq!(target_unit("todo"), "todo.target");
        assert_eq!(service_file("todo", "web", false), "todo-web.service");
        assert_eq!(service_file("todo", "web", true), "todo-web@.service");
        assert_eq!(running_units("todo", "web", Some(2)), ["todo-web@1.service", "todo-web@2.service"]);
        assert_eq!(running_units("todo", "db", None), ["todo-db.service"]);
        assert_eq!(template_of("todo-web@2.service").as_deref(), Some("todo-web@.service"));
        assert_eq!(template_of("todo-web@.service"), None);
        assert_eq!(template_of("todo-web.service"), None);
        assert_eq!(container_name("todo", "web", Some("3")), "kapell-todo-web-3");
    }

    #[test]
    fn service_refs() {
        let t = ServiceRef::new("todo.web", None).expect("valid");
        assert_eq!(t.unit_name(), "todo-web.service");
        assert_eq!(t.to_string(), "todo.web");
        let t = ServiceRef::new("todo.web", Some("3")).expect("valid");
        assert_eq!(t.unit_name(), "todo-web@3.service");
        assert_eq!(t.file_names(), ["todo-web@3.service", "todo-web@.service"]);
        assert_eq!(t.container_name(), "kapell-todo-web-3");
        let long = format!("{}.web", "x".repeat(MAX_NAME_LEN + 1));
        for bad in ["todo", "todo.", ".web", "Todo.web", "todo.web.x", "to do.web", &long] {
            assert!(ServiceRef::new(bad, None).is_err(), "{bad}");
        }
        assert!(ServiceRef::new("todo.web", Some("x")).is_err());
        assert!(ServiceRef::new("todo.web", Some("")).is_err());
    }

    #[test]
    fn foreign_dirs_leave_out_the_generator_dirs() {
        let dirs: Vec<&str> = foreign_unit_dirs().collect();
        assert!(dirs.contains(&"/etc/systemd/system") && dirs.contains(&"/usr/lib/systemd/system"));
        assert!(dirs.iter().all(|d| !d.contains("generator")));
    }
}
