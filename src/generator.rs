//! The systemd generator (systemd.generator(7)): at boot and on every `daemon-reload`, systemd
//! runs `kapell-generator normal-dir [early-dir late-dir]`, which renders every valid stack of
//! `/etc/kapell` into normal-dir. No network, no D-Bus, no writes outside normal-dir. A broken
//! stack is reported and skipped; the others are still generated; the exit status says whether
//! anything was skipped.

use crate::config;
use crate::host_units;
use crate::render::RenderOptions;
use crate::unitset;
use crate::unitset::Strategy;
use crate::validate::UnitSearchPath;
use anyhow::{Context, Result, bail};
use std::collections::HashSet;
use std::io::Write as _;
use std::path::Path;

/// Runs the generator. `args` are the arguments after the program name.
pub fn main(args: &[String]) -> Result<()> {
    let mut log = Log::open(args.iter().any(|a| a == "--no-kmsg"));
    let dirs: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let Some(normal_dir) = dirs.first() else {
        bail!("usage: kapell-generator [--no-kmsg] normal-dir [early-dir late-dir]");
    };
    let config_dir = config::config_dir_from_env();
    let failed = generate(Path::new(normal_dir.as_str()), &config_dir, &host_units::received_dir(), &mut log)?;
    if failed > 0 {
        bail!("{failed} stack(s) were not generated (see the messages above)");
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
    let checked = crate::host::load(config_dir, &[], &UnitSearchPath::from_env())
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
    let mut set = written.into_iter().collect::<Result<HashSet<String>>>().with_context(context)?;
    let (received, left_out) = host_units::received_share(fleet_dir, |path| set.contains(path));
    for message in &left_out {
        log.error(message);
    }
    for file in received {
        writer.install(&file).with_context(context)?;
        set.insert(file.into_path());
    }
    writer.finish(|path| set.contains(path)).with_context(context)?;
    for name in &checked.failed {
        log.error(&format!("stack {name} skipped: it has errors"));
    }
    let failed = checked.failed.len();
    std::mem::forget(checked);
    Ok(failed)
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
