//! kapell never shadows a unit it does not own: a generated unit name that already exists in
//! systemd's search path (and is not marked as kapell's) is an error.

use super::ProducedUnit;
use crate::diagnostics::Diagnostic;
use crate::unitset::markers::is_kapell_unit;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::OnceLock;

/// systemd's unit directories, listed once into one index (a generator run does a handful of
/// `readdir`s and one lookup per unit, not one `stat` or one lookup per directory): on first
/// use, or beforehand on another thread ([`UnitSearchPath::list`]) while the stacks are parsed.
pub struct UnitSearchPath {
    dirs: Vec<PathBuf>,
    /// Every file name in `dirs`, with the directories that hold it, in search order.
    names: OnceLock<HashMap<String, Vec<usize>>>,
}

impl UnitSearchPath {
    /// The system directories, or `KAPELL_UNIT_PATH` (colon-separated) when set, for tests.
    pub fn from_env() -> Self {
        match std::env::var_os("KAPELL_UNIT_PATH") {
            Some(list) => Self::new(std::env::split_paths(&list).filter(|p| !p.as_os_str().is_empty()).collect()),
            None => Self::new(crate::names::foreign_unit_dirs().map(PathBuf::from).collect()),
        }
    }

    /// [`Self::from_env`] as the generator sees it: without `generator.early` and
    /// `generator.late`, which systemd empties before a reload and other generators fill while
    /// kapell's runs beside them. A stack would be skipped or not by the luck of that race;
    /// `kapell check` and `kapell apply`, which run after it, report such a clash every time.
    pub fn for_generator() -> Self {
        const RACING: [&str; 2] = ["/run/systemd/generator.early", "/run/systemd/generator.late"];
        let mut path = Self::from_env();
        if std::env::var_os("KAPELL_UNIT_PATH").is_none() {
            path.dirs.retain(|d| !RACING.iter().any(|r| d.as_path() == std::path::Path::new(r)));
        }
        path
    }

    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Self { dirs, names: OnceLock::new() }
    }

    /// Lists the directories now, if no thread has yet. A lookup that comes while another
    /// thread lists them waits for that listing rather than making its own.
    pub fn list(&self) {
        self.names();
    }

    /// The path of an existing unit file named `name` that kapell does not own.
    pub fn foreign_unit(&self, name: &str) -> Option<PathBuf> {
        self.foreign_units(name).next()
    }

    /// Every existing unit file named `name` that kapell does not own, in search order.
    pub fn foreign_units<'a>(&'a self, name: &'a str) -> impl Iterator<Item = PathBuf> + 'a {
        let dirs = self.names().get(name).map(Vec::as_slice).unwrap_or_default();
        dirs.iter().map(move |&i| self.dirs[i].join(name)).filter(|path| !is_kapell_unit(path))
    }

    /// The index, listed by whichever thread asks first.
    fn names(&self) -> &HashMap<String, Vec<usize>> {
        self.names.get_or_init(|| index(&self.dirs))
    }
}

/// A directory that is another one of the path under a second name (`/lib/systemd/system` is
/// `/usr/lib/systemd/system` where `/lib` links to `usr/lib`, as on every merged-/usr system) is
/// listed once, under the name that comes first: that is the path a clash is reported at.
fn index(dirs: &[PathBuf]) -> HashMap<String, Vec<usize>> {
    use std::os::unix::fs::MetadataExt as _;
    let mut names: HashMap<String, Vec<usize>> = HashMap::new();
    let mut listed = HashSet::new();
    for (i, dir) in dirs.iter().enumerate() {
        let Ok(meta) = std::fs::metadata(dir) else { continue };
        if !listed.insert((meta.dev(), meta.ino())) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for name in entries.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()) {
            names.entry(name).or_default().push(i);
        }
    }
    names
}

pub fn check_foreign_units(units: &[ProducedUnit<'_>], search_path: &UnitSearchPath, errors: &mut Vec<Diagnostic>) {
    for unit in units {
        let Some(path) = search_path.foreign_unit(&unit.name) else { continue };
        let (name, path) = (&unit.name, path.display());
        let message = match unit.service {
            None => format!(
                "stack `{}` would produce `{name}`, which already exists as {path} and is not kapell's; rename the stack (the file)",
                unit.stack.name
            ),
            Some(service) => format!(
                "service `{}` would produce `{name}`, which already exists as {path} and is not kapell's; rename the service",
                service.name
            ),
        };
        errors.push(Diagnostic::new(&unit.stack.source, unit.span(), message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generator leaves out exactly the two directories it races with (unless a test gives
    /// its own path).
    #[test]
    fn the_generator_leaves_out_the_directories_it_races_with() {
        if std::env::var_os("KAPELL_UNIT_PATH").is_some() {
            return;
        }
        let all = UnitSearchPath::from_env().dirs;
        let generator = UnitSearchPath::for_generator().dirs;
        assert_eq!(all.len(), generator.len() + 2, "{generator:?}");
        for dir in ["/run/systemd/generator.early", "/run/systemd/generator.late"] {
            assert!(all.contains(&PathBuf::from(dir)) && !generator.contains(&PathBuf::from(dir)), "{dir}");
        }
    }

    #[test]
    fn the_first_unit_kapell_does_not_own_is_found_in_search_order() -> std::io::Result<()> {
        let root = tempfile::tempdir()?;
        let (etc, usr, missing) = (root.path().join("etc"), root.path().join("usr"), root.path().join("none"));
        std::fs::create_dir(&etc)?;
        std::fs::create_dir(&usr)?;
        std::fs::write(etc.join("web.service"), "[Unit]\nX-Kapell-Stack=shop\n")?;
        std::fs::write(usr.join("web.service"), "[Unit]\nDescription=the distribution's\n")?;
        std::fs::write(etc.join("ours.service"), "[Unit]\nX-Kapell-Stack=shop\n")?;
        std::fs::write(usr.join("theirs.service"), "[Service]\n")?;
        std::os::unix::fs::symlink("/dev/null", etc.join("masked.service"))?;
        std::fs::write(usr.join("masked.service"), "[Service]\n")?;
        let path = UnitSearchPath::new(vec![missing, etc.clone(), usr.clone()]);
        assert_eq!(path.foreign_unit("web.service"), Some(usr.join("web.service")), "kapell's own copy is passed over");
        assert_eq!(path.foreign_unit("theirs.service"), Some(usr.join("theirs.service")));
        // A mask, and the file it hides: every file of the name, in search order.
        let all: Vec<PathBuf> = path.foreign_units("masked.service").collect();
        assert_eq!(all, [etc.join("masked.service"), usr.join("masked.service")]);
        assert_eq!(path.foreign_unit("ours.service"), None);
        assert_eq!(path.foreign_unit("absent.service"), None);
        Ok(())
    }

    /// A directory that is another one of the path under a second name (a merged /usr's
    /// `/lib/systemd/system`) is listed once, and a clash is reported under the first name.
    #[test]
    fn a_directory_reached_twice_is_listed_once() -> std::io::Result<()> {
        let root = tempfile::tempdir()?;
        let (usr, lib, etc) = (root.path().join("usr"), root.path().join("lib"), root.path().join("etc"));
        std::fs::create_dir(&usr)?;
        std::fs::create_dir(&etc)?;
        std::os::unix::fs::symlink("usr", &lib)?;
        std::fs::write(usr.join("theirs.service"), "[Service]\n")?;
        std::fs::write(etc.join("theirs.service"), "[Service]\n")?;
        let path = UnitSearchPath::new(vec![usr.clone(), lib, etc.clone()]);
        // Listed on another thread first, as the generator does while it parses.
        std::thread::scope(|scope| {
            scope.spawn(|| path.list());
        });
        assert_eq!(path.foreign_unit("theirs.service"), Some(usr.join("theirs.service")));
        let listed = path.names.get().expect("listed before the lookup");
        assert_eq!(listed["theirs.service"], [0, 2], "usr and etc, not usr's second name");
        Ok(())
    }
}
