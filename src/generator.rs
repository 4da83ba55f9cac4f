//! The systemd generator (systemd.generator(7)): at boot and on every `daemon-reload`, systemd
//! runs `kapell-generator normal-dir [early-dir late-dir]`, which renders every valid stack of
//! `/etc/kapell` into normal-dir. No network, no D-Bus, no writes outside normal-dir. A broken
//! stack is reported and skipped; the others are still generated; the exit status says whether
//! anything was skipped.

use crate::config;
use crate::host_units;
use crate::names::FLEET_UNITS_FILE;
use crate::render::RenderOptions;
use crate::unitset;
use crate::unitset::markers::stack_of_text;
use crate::unitset::{OutputFile, Refusal, Strategy};
use crate::validate::UnitSearchPath;
use anyhow::{Context, Result, bail};
use std::collections::HashSet;
use std::io::Write as _;
use std::path::Path;

/// Runs the generator. `args` are the arguments after the program name.
pub fn main(args: &[String]) -> Result<()> {
    // The generator is a process of its own that exits when done: its threads may be placed.
    crate::parallel::keep_the_caller_on_its_core();
    // Nor does it live long enough for huge pages to pay: where transparent huge pages are on
    // for every mapping (`always`, as on RHEL), the allocator's arenas would be backed by 2 MiB
    // pages from their first small allocation, for twice the peak RSS (docs/benchmarks.md).
    let _ = nix::sys::prctl::set_thp_disable(true);
    let mut log = Log::open(args.iter().any(|a| a == "--no-kmsg"));
    let dirs: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let Some(normal_dir) = dirs.first() else {
        bail!("usage: kapell-generator [--no-kmsg] normal-dir [early-dir late-dir]");
    };
    let config_dir = config::config_dir_from_env();
    let failed = generate(Path::new(normal_dir.as_str()), &config_dir, &host_units::received_dir(), &mut log)?;
    if failed > 0 {
        bail!("{failed} stack(s) or unit(s) were not generated (see the messages above)");
    }
    Ok(())
}

/// Renders what this host runs ([`crate::host_units`]: its stacks, and the unit set a fleet
/// controller installed, which survives reboots this way) into `out`; returns the number of
/// stacks skipped for errors.
///
/// Each unit is written by the thread that rendered it, as soon as it is rendered, so the
/// rendered text is never all in memory at once. Local units first; then the received ones,
/// less those a local unit shadows.
///
/// Made for the generator process, which exits right after: the parsed stacks are not freed
/// (tens of thousands of small allocations, for memory the kernel takes back at exit anyway).
pub fn generate(out: &Path, config_dir: &Path, fleet_dir: &Path, log: &mut Log) -> Result<usize> {
    let checked = crate::host::load(config_dir, &[], &UnitSearchPath::for_generator())
        .with_context(|| format!("cannot read {}", config_dir.display()))?;
    for d in &checked.diagnostics {
        if d.is_error() { log.error(&d.to_string()) } else { log.warning(&d.to_string()) }
    }
    let context = || format!("cannot write units into {}", out.display());
    let writer = unitset::Writer::open(out, Strategy::GeneratorDir).with_context(context)?;
    let written = host_units::render_local_each(
        config_dir,
        &checked,
        |_| true,
        &RenderOptions::default(),
        |file| writer.install(&file).map(|_| file.into_path()),
    );
    let mut local = written.into_iter().collect::<Result<Vec<String>>>().with_context(context)?;
    let refused_local = writer.refusals();
    if !refused_local.is_empty() {
        let stacks = stacks_of(&refused_local);
        let files = host_units::render_local(
            config_dir,
            &checked,
            |s| stacks.contains(s.name.as_str()),
            &RenderOptions::default(),
        );
        let gone = take_out(&writer, &files, &stacks, &refused_local, log).with_context(context)?;
        local.retain(|path| !gone.contains(path));
    }
    // Looked up only against a received set or units from an earlier run, so a boot (neither)
    // does not index every unit it just wrote.
    let local_set = std::cell::OnceCell::new();
    let is_local =
        |path: &str| local_set.get_or_init(|| local.iter().map(String::as_str).collect::<HashSet<_>>()).contains(path);
    let claims = host_units::StackClaims::of(config_dir, &checked);
    let (received, left_out) = host_units::received_share(fleet_dir, is_local, &claims);
    for message in &left_out {
        log.error(message);
    }
    for file in &received {
        writer.install(file).with_context(context)?;
    }
    let refused = writer.refusals();
    let refused_received = &refused[refused_local.len()..];
    let gone = if refused_received.is_empty() {
        HashSet::new()
    } else {
        take_out(&writer, &received, &stacks_of(refused_received), refused_received, log).with_context(context)?
    };
    // The paths move out of the files, written now: no copy per received unit.
    let from_fleet: HashSet<String> =
        received.into_iter().map(OutputFile::into_path).filter(|path| !gone.contains(path)).collect();
    for refusal in &refused {
        log.error(&refusal.why);
    }
    writer.finish(|path| is_local(path) || from_fleet.contains(path)).with_context(context)?;
    // Not a unit: without it `kapell apply` goes by the received set's names alone, as before
    // there was one, so a failure to write it is said and takes no unit away.
    if let Err(e) = record_fleet_units(out, &from_fleet) {
        log.error(&format!("cannot write {}: {e:#}", out.join(FLEET_UNITS_FILE).display()));
    }
    for name in &checked.failed {
        log.error(&format!("stack {name} skipped: it has errors"));
    }
    let failed = checked.failed.len() + refused.len();
    std::mem::forget(checked);
    std::mem::forget(local_set);
    std::mem::forget(local);
    Ok(failed)
}

/// Lists the units written from the received set in [`FLEET_UNITS_FILE`], for `kapell apply`:
/// which units systemd loaded from the fleet is what this run wrote, not what the received set
/// says later, nor what a name says (a local stack that shadowed the fleet's stack of its name
/// at boot runs under the same unit names). Written at every run, empty without a received set:
/// a missing list means a generator older than it, and `kapell apply` cannot tell from it that
/// a unit is local.
fn record_fleet_units(out: &Path, from_fleet: &HashSet<String>) -> Result<()> {
    let path = out.join(FLEET_UNITS_FILE);
    let mut names: Vec<&str> = from_fleet.iter().map(String::as_str).filter(|p| !p.contains('/')).collect();
    names.sort_unstable();
    let text: String = names.iter().map(|n| format!("{n}\n")).collect();
    if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    Ok(crate::atomic_file::replace(&path, text.as_bytes(), crate::atomic_file::Durability::Volatile)?)
}

/// The stacks of the units that were not written.
fn stacks_of(refused: &[Refusal]) -> HashSet<String> {
    refused.iter().filter_map(|r| r.stack.clone()).collect()
}

/// A unit kapell did not write, because another generator's file has its name, leaves its stack
/// wired to that file: the stack's target would want it, its services order after it. So the
/// stack goes as a whole, as a stack with errors does: every file of `files` that belongs to
/// `stacks` and was written in this run is removed, links first (none is left dangling). The
/// other generator's files stay. Returns the paths taken out.
fn take_out(
    writer: &unitset::Writer,
    files: &[OutputFile],
    stacks: &HashSet<String>,
    refused: &[Refusal],
    log: &mut Log,
) -> Result<HashSet<String>> {
    // A link belongs to the stack of the unit it points to (`../<unit>`).
    let stack_of_unit: std::collections::HashMap<&str, String> = files
        .iter()
        .filter_map(|f| match f {
            OutputFile::Unit { name, text } => Some((name.as_str(), stack_of_text(text)?)),
            OutputFile::Link { .. } => None,
        })
        .collect();
    let in_stacks = |file: &&OutputFile| {
        let unit = match file {
            OutputFile::Unit { name, .. } => name.as_str(),
            OutputFile::Link { target, .. } => target.rsplit('/').next().unwrap_or(target),
        };
        stack_of_unit.get(unit).is_some_and(|s| stacks.contains(s))
    };
    let theirs: HashSet<&str> = refused.iter().map(|r| r.path.as_str()).collect();
    let (links, units): (Vec<&OutputFile>, Vec<&OutputFile>) =
        files.iter().filter(in_stacks).partition(|f| matches!(f, OutputFile::Link { .. }));
    let mut gone = HashSet::new();
    for file in links.into_iter().chain(units) {
        if !theirs.contains(file.path()) {
            writer.remove(file.path())?;
        }
        gone.insert(file.path().to_string());
    }
    let mut names: Vec<&String> = stacks.iter().collect();
    names.sort();
    for name in names {
        log.error(&format!("stack {name} skipped: one of its units is not kapell's (see above)"));
    }
    Ok(gone)
}

/// Generator logging, as systemd's own generators do it: `/dev/kmsg` (generators run before the
/// journal is up; the journal imports kmsg later), else `/dev/console` (containers have no
/// kmsg; the console is what nspawn and the boot log show), else stderr (`--no-kmsg`, tests).
/// The sink is opened at the first message: a run with nothing to say opens nothing (opening
/// `/dev/kmsg` makes the kernel look up its log buffer, a cost at every boot for no message).
pub struct Log {
    no_kmsg: bool,
    sink: Option<Sink>,
}

enum Sink {
    Kmsg(std::fs::File),
    Console(std::fs::File),
    Stderr,
}

impl Log {
    pub fn open(no_kmsg: bool) -> Self {
        Self { no_kmsg, sink: None }
    }

    fn sink(&mut self) -> &mut Sink {
        let no_kmsg = self.no_kmsg;
        self.sink.get_or_insert_with(|| {
            let open = |path: &str| std::fs::OpenOptions::new().write(true).open(path).ok();
            if no_kmsg {
                Sink::Stderr
            } else if let Some(kmsg) = open("/dev/kmsg") {
                Sink::Kmsg(kmsg)
            } else {
                open("/dev/console").map_or(Sink::Stderr, Sink::Console)
            }
        })
    }

    pub fn error(&mut self, message: &str) {
        self.write(3, message);
    }

    pub fn warning(&mut self, message: &str) {
        self.write(4, message);
    }

    /// One record per line; on kmsg with a syslog priority (3 err, 4 warning) so it shows in
    /// `journalctl -k -p err`.
    fn write(&mut self, priority: u8, message: &str) {
        let sink = self.sink();
        let written = message.lines().all(|line| match sink {
            Sink::Kmsg(k) => k.write_all(format!("<{priority}>kapell-generator: {line}\n").as_bytes()).is_ok(),
            Sink::Console(c) => c.write_all(format!("kapell-generator: {line}\n").as_bytes()).is_ok(),
            Sink::Stderr => false,
        });
        if !written {
            eprintln!("kapell-generator: {message}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A received unit that a local stack also produces is left out (the local one is written),
    /// the others are written beside the local units, and a unit of an earlier run that neither
    /// produces now is removed.
    #[test]
    fn received_units_join_the_local_ones_less_the_shadowed_and_stale_units_go() -> Result<()> {
        let root = tempfile::tempdir()?;
        let (config, fleet, out) = (root.path().join("config"), root.path().join("fleet"), root.path().join("out"));
        for dir in [&config, &fleet, &out] {
            std::fs::create_dir(dir)?;
        }
        // An earlier run wrote `a-old.service`; the stack no longer has that service.
        std::fs::write(
            config.join("a.toml"),
            "[services.web]\nexec = [\"/bin/true\"]\n[services.old]\nexec = [\"/bin/true\"]\n",
        )?;
        assert_eq!(generate(&out, &config, &fleet, &mut Log::open(true))?, 0);
        assert!(out.join("a-old.service").exists());
        // Without a received set, only the stale unit goes (the units just written are looked up
        // for the first time there).
        std::fs::write(config.join("a.toml"), "[services.web]\nexec = [\"/bin/true\"]\n")?;
        assert_eq!(generate(&out, &config, &fleet, &mut Log::open(true))?, 0);
        assert!(!out.join("a-old.service").exists(), "the stale unit is removed");
        assert!(out.join("a-web.service").exists() && out.join("a.target").exists(), "the current units stay");
        std::fs::write(
            config.join("a.toml"),
            "[services.web]\nexec = [\"/bin/true\"]\n[services.old]\nexec = [\"/bin/true\"]\n",
        )?;
        assert_eq!(generate(&out, &config, &fleet, &mut Log::open(true))?, 0);
        std::fs::write(config.join("a.toml"), "[services.web]\nexec = [\"/bin/true\"]\n")?;
        std::fs::write(fleet.join("a-web.service"), "[Service]\nExecStart=/bin/false\n")?;
        std::fs::write(fleet.join("b.target"), "[Unit]\nDescription=from the fleet\n")?;

        assert_eq!(generate(&out, &config, &fleet, &mut Log::open(true))?, 0);
        let mut names: Vec<String> = std::fs::read_dir(&out)?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_>>()?;
        names.sort();
        assert_eq!(names, [FLEET_UNITS_FILE, "a-web.service", "a.target", "b.target", "multi-user.target.wants"]);
        let web = std::fs::read_to_string(out.join("a-web.service"))?;
        assert!(web.contains("ExecStart=/bin/true") && !web.contains("/bin/false"), "the local unit wins:\n{web}");
        assert_eq!(std::fs::read_to_string(out.join("b.target"))?, "[Unit]\nDescription=from the fleet\n");
        // The list names what came from the fleet: not `a-web.service`, the local one.
        assert_eq!(std::fs::read_to_string(out.join(FLEET_UNITS_FILE))?, "b.target\n");

        // Every received unit shadowed: the list is there, and empty (the local units are local).
        std::fs::remove_file(fleet.join("b.target"))?;
        assert_eq!(generate(&out, &config, &fleet, &mut Log::open(true))?, 0);
        assert_eq!(std::fs::read_to_string(out.join(FLEET_UNITS_FILE))?, "");
        // No received set: an empty list (none would mean a generator older than the list).
        std::fs::remove_file(fleet.join("a-web.service"))?;
        assert_eq!(generate(&out, &config, &fleet, &mut Log::open(true))?, 0);
        assert_eq!(std::fs::read_to_string(out.join(FLEET_UNITS_FILE))?, "");
        Ok(())
    }

    /// A unit another generator wrote first (its file has no `X-Kapell-Stack=`) is left as it
    /// is, and the stack it would belong to is not generated at all, local or received: no target
    /// of kapell's wants the other generator's unit. Every other stack is written.
    #[test]
    fn a_stack_whose_unit_another_generator_wrote_is_left_out_whole() -> Result<()> {
        let root = tempfile::tempdir()?;
        let (config, fleet, out) = (root.path().join("config"), root.path().join("fleet"), root.path().join("out"));
        for dir in [&config, &fleet, &out, &fleet.join("multi-user.target.wants")] {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(
            config.join("a.toml"),
            "[services.db]\nexec = [\"/bin/true\"]\n[services.web]\nexec = [\"/bin/true\"]\nrequires = [\"db\"]\n",
        )?;
        std::fs::write(config.join("b.toml"), "[services.web]\nexec = [\"/bin/true\"]\n")?;
        // A received stack `f`, whose unit `f-x.service` another generator also wrote.
        std::fs::write(fleet.join("f.target"), "[Unit]\nX-Kapell-Stack=f\nWants=f-x.service\n")?;
        std::fs::write(fleet.join("f-x.service"), "[Unit]\nX-Kapell-Stack=f\n[Service]\nExecStart=/bin/true\n")?;
        std::fs::write(fleet.join("g.target"), "[Unit]\nX-Kapell-Stack=g\n")?;
        std::os::unix::fs::symlink("../f.target", fleet.join("multi-user.target.wants/f.target"))?;
        std::os::unix::fs::symlink("../g.target", fleet.join("multi-user.target.wants/g.target"))?;
        let theirs = "[Service]\nExecStart=/usr/bin/other\n";
        std::fs::write(out.join("a-web.service"), theirs)?;
        std::fs::write(out.join("f-x.service"), theirs)?;

        assert_eq!(generate(&out, &config, &fleet, &mut Log::open(true))?, 2, "two units not written");
        let mut names = Vec::new();
        for entry in walkdir(&out)? {
            names.push(entry);
        }
        names.sort();
        assert_eq!(
            names,
            [
                FLEET_UNITS_FILE,
                "a-web.service",
                "b-web.service",
                "b.target",
                "f-x.service",
                "g.target",
                "multi-user.target.wants",
                "multi-user.target.wants/b.target",
                "multi-user.target.wants/g.target",
            ]
        );
        assert_eq!(std::fs::read_to_string(out.join("a-web.service"))?, theirs, "the other generator's unit stays");
        assert_eq!(std::fs::read_to_string(out.join("f-x.service"))?, theirs, "the other generator's unit stays");
        // The fleet's units written: `f`'s were taken out.
        assert_eq!(std::fs::read_to_string(out.join(FLEET_UNITS_FILE))?, "g.target\n");
        Ok(())
    }

    /// Every path under `dir`, relative to it.
    fn walkdir(dir: &Path) -> Result<Vec<String>> {
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_dir() {
                paths.extend(walkdir(&entry.path())?.into_iter().map(|p| format!("{name}/{p}")));
            }
            paths.push(name);
        }
        Ok(paths)
    }
}
