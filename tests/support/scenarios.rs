//! Several tests over one booted rig: a test binary with `harness = false` lists its scenarios
//! and calls [`run`], which boots the rig once (only if a scenario is selected), runs each
//! selected scenario on it in turn, and tears the rig down at the end, which libtest cannot do
//! for a shared fixture (statics are never dropped, so a rig kept in one would outlive the test).
//!
//! Each scenario is a test of its own: it is selected by name as libtest does
//! (`cargo test --test fleet -- NAME`, `--exact`, `--skip NAME`, `--list`), its failure (an
//! error or a panic) is reported and does not stop the others, and the binary fails if any did.
//! Scenarios run one after another (they share hosts), each after the rig's `reset`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use anyhow::Result;

/// One named test over the shared rig `R`.
pub struct Scenario<R> {
    pub name: &'static str,
    pub test: fn(&mut R) -> Result<()>,
}

/// Runs the scenarios selected by the command line; exits the process with libtest's statuses
/// (0 all passed, 101 a scenario failed or the rig could not be booted or torn down).
pub fn run<R>(
    scenarios: &[Scenario<R>],
    boot: impl FnOnce() -> Result<R>,
    reset: impl Fn(&mut R) -> Result<()>,
    teardown: impl FnOnce(R) -> Result<()>,
) -> ! {
    let args = Args::parse();
    let selected: Vec<&Scenario<R>> = scenarios.iter().filter(|s| args.selects(s.name)).collect();
    if args.list {
        for s in &selected {
            println!("{}: test", s.name);
        }
        std::process::exit(0);
    }
    println!("\nrunning {} tests", selected.len());
    if selected.is_empty() {
        println!("\ntest result: ok. 0 passed; 0 failed; {} filtered out\n", scenarios.len());
        std::process::exit(0);
    }
    let started = Instant::now();
    let mut rig = match boot() {
        Ok(rig) => rig,
        Err(e) => {
            eprintln!("cannot boot the rig: {e:?}");
            std::process::exit(101);
        }
    };
    let mut failures = Vec::new();
    for s in &selected {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            reset(&mut rig).map_err(|e| e.context("cannot reset the rig before the test"))?;
            (s.test)(&mut rig)
        }));
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("Error: {e:?}")),
            Err(panic) => Some(format!(
                "panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)")
            )),
        };
        println!("test {} ... {}", s.name, if failure.is_some() { "FAILED" } else { "ok" });
        if let Some(f) = failure {
            failures.push((s.name, f));
        }
    }
    if let Err(e) = teardown(rig) {
        failures.push(("(teardown)", format!("Error: {e:?}")));
    }
    if !failures.is_empty() {
        println!("\nfailures:\n");
        for (name, why) in &failures {
            println!("---- {name} ----\n{why}\n");
        }
        println!("failures:");
        for (name, _) in &failures {
            println!("    {name}");
        }
    }
    let failed = failures.iter().filter(|(n, _)| *n != "(teardown)").count();
    println!(
        "\ntest result: {}. {} passed; {failed} failed; {} filtered out; finished in {:.2}s\n",
        if failures.is_empty() { "ok" } else { "FAILED" },
        selected.len() - failed,
        scenarios.len() - selected.len(),
        started.elapsed().as_secs_f64()
    );
    std::process::exit(if failures.is_empty() { 0 } else { 101 });
}

/// The part of libtest's command line that selects tests; its other options (`--nocapture`,
/// `--test-threads N`, …) are accepted and have no effect here.
#[derive(Default)]
struct Args {
    filters: Vec<String>,
    skip: Vec<String>,
    exact: bool,
    list: bool,
    /// `--ignored`: no scenario is ignored, so none runs.
    ignored: bool,
}

impl Args {
    fn parse() -> Args {
        let mut args = Args::default();
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--exact" => args.exact = true,
                "--list" => args.list = true,
                "--ignored" => args.ignored = true,
                "--skip" => args.skip.extend(it.next()),
                // Options that take a value as the next argument.
                "--test-threads" | "--format" | "--color" | "--logfile" | "-Z" => {
                    it.next();
                }
                a if a.starts_with('-') => {}
                _ => args.filters.push(arg),
            }
        }
        args
    }

    fn selects(&self, name: &str) -> bool {
        let matches = |f: &String| if self.exact { name == f } else { name.contains(f.as_str()) };
        !self.ignored
            && (self.filters.is_empty() || self.filters.iter().any(matches))
            && !self.skip.iter().any(|s| name.contains(s))
    }
}
