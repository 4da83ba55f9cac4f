//! The systemd generator (systemd.generator(7)): at boot and on every `daemon-reload`, systemd
//! runs `kapell-generator normal-dir [early-dir late-dir]`, which renders every valid stack of
//! `/etc/kapell` into normal-dir. No network, no D-Bus, no writes outside normal-dir. A broken
//! stack is reported and skipped; the others are still generated; the exit status says whether
//! anything was skipped.

use crate::config;
use crate::render::{self, OutputFile, RenderOptions};
use crate::unitset;
use crate::validate::UnitSearchPath;
use anyhow::{Context, Result, bail};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The unit set a fleet controller installed on this host (`kapell receive`): the `current`
/// generation of `/etc/kapell/received` (`KAPELL_RECEIVED_DIR` for tests). The generator emits it
/// alongside the local stacks so it survives reboots; it is under `/etc` because `/var` may not
/// be mounted when generators run.
pub fn fleet_units_dir() -> PathBuf {
    crate::fleet::received::Store::open().current_dir()
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
pub fn generate(out: &Path, config_dir: &Path, fleet_dir: &Path, log: &mut Log) -> Result<usize> {
    let checked = config::load_host(config_dir, &[], &UnitSearchPath::from_env())
        .with_context(|| format!("cannot read {}", config_dir.display()))?;
    for d in &checked.diagnostics {
        if d.is_error() { log.error(&d.to_string()) } else { log.warning(&d.to_string()) }
    }
    let options = RenderOptions::default();
    let rendered =
        crate::parallel::map(&checked.stacks, |stack| render::render_stack(stack, &checked.stacks, &options));
    let mut files: Vec<OutputFile> = rendered.into_iter().flatten().collect();
    files.extend(fleet_units(fleet_dir, &files, log));
    unitset::write(out, &files).with_context(|| format!("cannot write units into {}", out.display()))?;
    for name in &checked.failed {
        log.error(&format!("stack {name} skipped: it has errors"));
    }
    Ok(checked.failed.len())
}

/// The unit set installed by the fleet, except units a local stack already produces (local
/// wins: the operator on the host has the last word, and the conflict is logged).
fn fleet_units(dir: &Path, local: &[OutputFile], log: &mut Log) -> Vec<OutputFile> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if local.iter().any(|f| f.path() == name) {
            log.error(&format!("fleet unit {name} ignored: a local stack produces a unit of the same name"));
            continue;
        }
        if path.is_dir() && name.ends_with(".wants") {
            for link in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                if let Ok(target) = std::fs::read_link(link.path()) {
                    let rel = format!("{name}/{}", link.file_name().to_string_lossy());
                    out.push(OutputFile::Link { path: rel, target: target.to_string_lossy().into_owned() });
                }
            }
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            out.push(OutputFile::Unit { name, text });
        }
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
