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

/// Stack names kapell keeps for itself: discovery names every host `<host>.host.kapell`, which a
/// stack named `host` would share with its services (`<service>.host.kapell`).
pub const RESERVED_STACK_NAMES: &[&str] = &["host"];

/// Checks a stack name: [`check_name`], and not one of [`RESERVED_STACK_NAMES`].
pub fn check_stack_name(name: &str) -> Result<(), String> {
    check_name("stack", name)?;
    if RESERVED_STACK_NAMES.contains(&name) {
        return Err(format!(
            "the stack name {name:?} is reserved: discovery names every host <host>.host.kapell, which the \
             services of such a stack would share"
        ));
    }
    Ok(())
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

/// A service as people and the command line name it: `<stack>.<service>` (read back by
/// [`ServiceRef::new`]).
pub fn qualified(stack: &str, service: &str) -> String {
    [stack, ".", service].concat()
}

/// `<stack>.target`.
pub fn target_unit(stack: &str) -> String {
    [stack, ".target"].concat()
}

/// The unit file of a service: `<stack>-<service>.service`, or the template
/// `<stack>-<service>@.service` of a replicated one.
pub fn service_file(stack: &str, service: &str, replicated: bool) -> String {
    // `concat` sizes the string once; these names are made for every service on every run.
    [stack, "-", service, if replicated { "@.service" } else { ".service" }].concat()
}

/// The unit that runs: `<stack>-<service>.service`, or the instance `<stack>-<service>@<n>.service`.
pub fn service_unit(stack: &str, service: &str, instance: Option<&str>) -> String {
    match instance {
        Some(i) => [stack, "-", service, "@", i, ".service"].concat(),
        None => [stack, "-", service, ".service"].concat(),
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
        Some(i) => ["kapell-", stack, "-", service, "-", i].concat(),
        None => ["kapell-", stack, "-", service].concat(),
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

/// The unit types systemd knows (systemd.unit(5)): the suffix of every unit name.
pub const UNIT_SUFFIXES: &[&str] =
    &["service", "socket", "device", "mount", "automount", "swap", "target", "path", "timer", "slice", "scope"];

/// The longest unit name systemd accepts (`UNIT_NAME_MAX` less its NUL).
pub const MAX_UNIT_NAME_LEN: usize = 255;

/// What a unit name names: a plain unit, a template (`foo@.service`) or an instance
/// (`foo@bar.service`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitNameKind {
    Plain,
    Template,
    Instance,
}

/// Checks a unit name by systemd's rules (`unit_name_is_valid()`): a non-empty prefix of ASCII
/// letters, digits and `:-_.\`, an optional `@instance` (which may hold `@` too), and a unit
/// type suffix; at most [`MAX_UNIT_NAME_LEN`] bytes. A leading `.` is refused as well: systemd
/// would take `.x.service`, but hidden names are how kapell's own stores mark their temporary
/// files, so no received or rendered unit may have one.
pub fn unit_name_kind(name: &str) -> Result<UnitNameKind, String> {
    let shown = |why: &str| format!("{name:?} is not a systemd unit name: {why}");
    if name.is_empty() {
        return Err("an empty name is not a systemd unit name".to_string());
    }
    if name.len() > MAX_UNIT_NAME_LEN {
        let start: String = name.chars().take(40).collect();
        return Err(format!("{start:?}… is not a systemd unit name: longer than {MAX_UNIT_NAME_LEN} bytes"));
    }
    let Some((stem, suffix)) = name.rsplit_once('.') else {
        return Err(shown(&format!("it has no unit type suffix (.{})", UNIT_SUFFIXES.join(", ."))));
    };
    if !UNIT_SUFFIXES.contains(&suffix) {
        return Err(shown(&format!("`.{suffix}` is not a unit type (.{})", UNIT_SUFFIXES.join(", ."))));
    }
    if name.starts_with('.') {
        return Err(shown("it starts with `.`"));
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || ":-_.\\".contains(c);
    let (prefix, instance) = match stem.split_once('@') {
        Some((prefix, instance)) => (prefix, Some(instance)),
        None => (stem, None),
    };
    if prefix.is_empty() {
        return Err(shown("the part before the type suffix or `@` is empty"));
    }
    if let Some(bad) = prefix.chars().chain(instance.unwrap_or("").chars()).find(|&c| !valid(c) && c != '@') {
        return Err(shown(&format!("{bad:?} is not allowed (only ASCII letters, digits and `:-_.\\@`)")));
    }
    if let Some(bad) = prefix.chars().find(|&c| !valid(c)) {
        return Err(shown(&format!("{bad:?} is not allowed before the instance")));
    }
    Ok(match instance {
        None => UnitNameKind::Plain,
        Some("") => UnitNameKind::Template,
        Some(_) => UnitNameKind::Instance,
    })
}

/// Is `name` a systemd unit name ([`unit_name_kind`])?
pub fn is_unit_name(name: &str) -> bool {
    unit_name_kind(name).is_ok()
}

/// The directories of a unit directory that hold dependency links (`<unit>.wants/<unit>`,
/// `<unit>.requires/<unit>`): what kapell writes, reads back, and accepts from a fleet.
pub const LINK_DIR_SUFFIXES: &[&str] = &[".wants", ".requires"];

/// Is `name` a dependency-link directory ([`LINK_DIR_SUFFIXES`])?
pub fn is_link_dir(name: &str) -> bool {
    LINK_DIR_SUFFIXES.iter().any(|suffix| name.ends_with(suffix))
}

/// systemd's normal generator directory (systemd.generator(7)), where `kapell-generator` writes
/// at boot and at every daemon-reload.
pub const GENERATOR_DIR: &str = "/run/systemd/generator";

/// The generator's list, in its output directory, of the units it wrote from the received set at
/// its last run (one name per line; written at every run, empty without a received set).
/// Hidden: systemd loads no file whose name starts with a dot.
pub const FLEET_UNITS_FILE: &str = ".kapell-fleet-units";

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
/// generator directory kapell writes to (its own output is there, rebuilt at every reload).
/// `generator.early` and `generator.late` hold other generators' units, and count.
pub fn foreign_unit_dirs() -> impl Iterator<Item = &'static str> {
    SYSTEM_UNIT_PATH.iter().copied().filter(|d| *d != GENERATOR_DIR)
}

/// The host-wide prober of native services' health checks (see docs/health.md).
pub const PROBER_UNIT: &str = "kapell-prober.service";

/// Where `kapell receive` keeps the unit sets a fleet controller installed: generations and the
/// `current` link the generator follows. Under `/etc`: the generator reads it at boot, before
/// `/var` is mounted (see docs/decisions.md).
pub const RECEIVED_DIR: &str = "/etc/kapell/received";

/// The discovery catalog's file in a received generation, beside the units (not a unit: the unit
/// readers leave it out). See docs/discovery.md.
pub const CATALOG_FILE: &str = "catalog.json";

/// Beside [`CATALOG_FILE`]: the name the fleet gives this host, one line. The catalog is the
/// same for every host of a fleet; this says which of its instances are this host's own.
pub const CATALOG_HOST_FILE: &str = "catalog-host";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kapells_own_generator_directory_is_not_foreign() {
        let foreign: Vec<&str> = foreign_unit_dirs().collect();
        assert!(!foreign.contains(&GENERATOR_DIR), "{foreign:?}");
        for other in ["/run/systemd/generator.early", "/run/systemd/generator.late", "/usr/lib/systemd/system"] {
            assert!(foreign.contains(&other), "{other} missing from {foreign:?}");
        }
    }

    #[test]
    fn names_and_the_length_limit() {
        assert!(is_name("todo-2"));
        assert!(is_name(&"x".repeat(MAX_NAME_LEN)));
        for bad in ["", "Todo", "2x", "a_b", "a.b", "a b", &"x".repeat(MAX_NAME_LEN + 1)] {
            assert!(!is_name(bad), "{bad}");
            assert!(check_name("stack", bad).is_err(), "{bad}");
        }
        assert!(check_stack_name("hosts").is_ok());
        assert!(check_stack_name("host").is_err_and(|e| e.contains("reserved")));
        assert!(check_name("service", "host").is_ok(), "only a stack name is reserved");
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
    fn unit_names_follow_systemds_rules() {
        for (name, kind) in [
            ("a.service", UnitNameKind::Plain),
            ("-.slice", UnitNameKind::Plain),
            ("init.scope", UnitNameKind::Plain),
            ("dev-sda1.device", UnitNameKind::Plain),
            ("a.b_c:d\\x2d.mount", UnitNameKind::Plain),
            ("shop-web@.service", UnitNameKind::Template),
            ("getty@tty1.service", UnitNameKind::Instance),
            ("a@b@c.timer", UnitNameKind::Instance),
        ] {
            assert_eq!(unit_name_kind(name), Ok(kind), "{name}");
        }
        let long = format!("{}.service", "x".repeat(MAX_UNIT_NAME_LEN - 8));
        assert!(is_unit_name(&long));
        let too_long = format!("{}.service", "x".repeat(MAX_UNIT_NAME_LEN - 7));
        for bad in [
            "",
            ".",
            "..",
            "current",
            "confirmed",
            "pending.json",
            "last-install.json",
            ".staging-g1-abc",
            ".staging-g1-abc.service",
            ".a.service",
            "x.wants",
            "x.requires",
            "a.service.d",
            ".service",
            "@.service",
            "@a.service",
            "a/b.service",
            "../a.service",
            "a b.service",
            "a\0.service",
            "a\n.service",
            "a\u{1b}[31m.service",
            "a\u{e9}.service",
            "a*.service",
            "a.SERVICE",
            &too_long,
        ] {
            assert!(unit_name_kind(bad).is_err(), "{bad:?}");
        }
        assert!(unit_name_kind(&too_long).expect_err("long").contains("longer than 255"));
        assert!(unit_name_kind("x.wants").expect_err("x").contains("`.wants` is not a unit type"));
    }

    proptest::proptest! {
        /// Whatever a name holds, an accepted one is a single path component without a leading
        /// dot, of systemd's characters, with a unit type suffix.
        #[test]
        fn accepted_unit_names_are_safe_file_names(name in "\\PC{0,12}|[a-z@.\\-]{0,12}\\.(service|target|wants)") {
            if is_unit_name(&name) {
                proptest::prop_assert!(!name.starts_with('.') && !name.contains('/') && !name.contains('\0'));
                proptest::prop_assert!(name.chars().all(|c| c.is_ascii_graphic()));
                let typed = UNIT_SUFFIXES.iter().any(|s| name.ends_with(&format!(".{s}")));
                proptest::prop_assert!(typed);
            }
        }
    }
}
