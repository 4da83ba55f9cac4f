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
use std::io::Write as _;
use std::path::Path;

/// Runs the generator. `args` are the arguments after the program name.
pub fn main(args: &[String]) -> Result<()> {
    one_malloc_arena();
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

/// glibc gives every thread that allocates its own malloc arena, and an arena keeps the memory
/// freed in it. The generator's worker threads parse, render and write in turns, so with one
/// arena the memory one phase freed serves the next: the peak of one stack of 10,000 services
/// is about 2.7 MiB lower (docs/benchmarks.md), with no measurable cost in time (each thread's
/// tcache still serves most small allocations without the arena's lock).
fn one_malloc_arena() {
    // mallopt only sets a tunable of glibc's allocator; it runs before any thread starts.
    #[expect(unsafe_code, reason = "an FFI call that sets an allocator tunable")]
    let _ = unsafe { nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1) };
}

/// Renders what this host runs ([`crate::host_units`]: its stacks, and the unit set a fleet
/// controller installed, which survives reboots this way) into `out`; returns the number of
/// stacks skipped for errors.
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
    let local = host_units::render_local(config_dir, &checked, |_| true, &RenderOptions::default());
    let (files, left_out) = host_units::with_received(local, fleet_dir);
    for message in &left_out {
        log.error(message);
    }
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
