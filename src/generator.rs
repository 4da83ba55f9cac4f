//! The systemd generator (systemd.generator(7)): at boot and on every `daemon-reload`, systemd
//! runs `kapell-generator normal-dir [early-dir late-dir]`, which renders every valid stack of
//! `/etc/kapell` into normal-dir. No network, no D-Bus, no writes outside normal-dir. A broken
//! stack is reported and skipped; the others are still generated; the exit status says whether
//! anything was skipped.

use crate::config;
use crate::render::{self, RenderOptions};
use crate::unitset;
use crate::unitset::{OutputFile, Strategy};
use crate::validate::UnitSearchPath;
use anyhow::{Context, Result, bail};
use std::collections::{BTreeSet, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The unit set a fleet controller installed on this host (`kapell receive`): the `current`
/// generation of `/etc/kapell/received` (`KAPELL_RECEIVED_DIR` for tests). The generator emits it
/// alongside the local stacks so it survives reboots; it is under `/etc` because `/var` may not
/// be mounted when generators run.
pub fn fleet_units_dir() -> PathBuf {
    crate::received_sets::emitted_dir(&crate::received_sets::received_dir())
}

/// Runs the generator. `args` are the arguments after the program name.
pub fn main(args: &[String]) -> Result<()> {
    let mut log = Log::open(args.iter().any(|a| a == "--no-kmsg"));
    let dirs: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let Some(normal_dir) = dirs.first() else {
        bail!("usage: kapell-generator [--no-kmsg] normal-dir [early-dir late-dir]");
    };
    let config_dir = config::config_dir_from_env();
    let failed = generate(Path::new(normal_dir.as_str()), &config_dir, &fleet_units_dir(), &mut log)?;
    if failed > 0 {
        bail!("{failed} stack(s) were not generated (see the messages above)");
    }
    Ok(())
}

/// Renders the host's stacks into `out`; returns the number of stacks skipped for errors.
///
/// Made for the generator process, which exits right after: the parsed stacks and rendered
/// files are not freed (tens of thousands of small allocations, some 5% of a run, for memory
/// the kernel takes back at exit anyway).
pub fn generate(out: &Path, config_dir: &Path, fleet_dir: &Path, log: &mut Log) -> Result<usize> {
    let checked = crate::host::load(config_dir, &[], &UnitSearchPath::from_env())
        .with_context(|| format!("cannot read {}", config_dir.display()))?;
    for d in &checked.diagnostics {
        if d.is_error() { log.error(&d.to_string()) } else { log.warning(&d.to_string()) }
    }
    let mut files =
        render::render_host_only(&checked.stacks, crate::host::runs_here(config_dir), &RenderOptions::default());
    files.extend(fleet_units(fleet_dir, &files, log));
    unitset::write(out, &files, Strategy::GeneratorDir)
        .with_context(|| format!("cannot write units into {}", out.display()))?;
    for name in &checked.failed {
        log.error(&format!("stack {name} skipped: it has errors"));
    }
    let failed = checked.failed.len();
    std::mem::forget(files);
    std::mem::forget(checked);
    Ok(failed)
}

/// The unit set installed by the fleet, except units a local stack already produces (local
/// wins: the operator on the host has the last word, and the conflict is logged).
fn fleet_units(dir: &Path, local: &[OutputFile], log: &mut Log) -> Vec<OutputFile> {
    let installed = match unitset::read_files(dir) {
        Ok(files) => files,
        Err(e) => {
            log.error(&format!("fleet units ignored: {e:#}"));
            return Vec::new();
        }
    };
    let local: HashSet<&str> = local.iter().map(OutputFile::path).collect();
    let mut shadowed = BTreeSet::new();
    let mut out = Vec::new();
    for file in installed {
        match &file {
            OutputFile::Unit { name, .. } if local.contains(name.as_str()) => {
                shadowed.insert(name.clone());
            }
            // The same link from both sides is one link.
            OutputFile::Link { path, .. } if local.contains(path.as_str()) => {}
            _ => out.push(file),
        }
    }
    for name in shadowed {
        log.error(&format!("fleet unit {name} ignored: a local stack produces a unit of the same name"));
    }
    out
}

/// Generator logging, as systemd's own generators do it: `/dev/kmsg` (generators run before the
/// journal is up; the journal imports kmsg later), else `/dev/console` (containers have no
/// kmsg; the console is what nspawn and the boot log show), else stderr (`--no-kmsg`, tests).
pub struct Log {
    sink: Sink,
}

enum Sink {
    Kmsg(std::fs::File),
    Console(std::fs::File),
    Stderr,
}

impl Log {
    pub fn open(no_kmsg: bool) -> Self {
        let open = |path: &str| std::fs::OpenOptions::new().write(true).open(path).ok();
        let sink = match (no_kmsg, open("/dev/kmsg")) {
            (true, _) => Sink::Stderr,
            (false, Some(kmsg)) => Sink::Kmsg(kmsg),
            (false, None) => open("/dev/console").map_or(Sink::Stderr, Sink::Console),
        };
        Self { sink }
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
        let written = message.lines().all(|line| match &mut self.sink {
            Sink::Kmsg(k) => k.write_all(format!("<{priority}>kapell-generator: {line}\n").as_bytes()).is_ok(),
            Sink::Console(c) => c.write_all(format!("kapell-generator: {line}\n").as_bytes()).is_ok(),
            Sink::Stderr => false,
        });
        if !written {
            eprintln!("kapell-generator: {message}");
        }
    }
}
