//! Generator benchmark (docs/benchmarks.md): `kapell-generator` on 1,000 and 10,000 services, in
//! stacks of 10 and in one stack.
//!
//!     cargo bench --bench generator
//!
//! Writes synthetic stacks (containers and native services, each requiring the one before and
//! wanting the one before that, with health checks, limits, replicas and secrets) into a
//! temporary config directory, then runs the release binary as systemd would
//! (`kapell-generator normal-dir early-dir late-dir`, a fresh empty normal-dir each run) and
//! prints wall time and peak RSS (after one uncounted warm-up run per row). Not a test: nothing
//! asserts. On a machine shared with other work, `nice -n -20` on the benchmark binary (as root)
//! keeps the generator from waiting for a core.
//!
//! The output directories are on tmpfs (`/dev/shm`), as systemd's generator directories are
//! (`/run/systemd/generator`): on this machine's disk a file creation costs ~0.4 ms, which would
//! measure the disk, not kapell.
//!
//! Beside wall time it prints CPU time (user + system, all threads, from `getrusage`), which a
//! busy machine inflates far less than wall time: this 2-core VM is shared, and a run whose
//! wall time is well above its CPU time ÷ 2 was waiting for a core.
//!
//! Peak RSS is measured in a separate run through a probe process (this benchmark run again
//! with `--rss-probe`), whose only child is that one generator run: `getrusage(RUSAGE_CHILDREN)`
//! is a maximum over every child ever waited for, so measuring in the benchmark itself would
//! report the largest row for every later one.

use nix::sys::resource::{UsageWho, getrusage};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const RUNS: usize = 21;

/// One service `svc<j>` of a synthetic stack, in the shape of the comparison: every
/// service requires the one before it.
fn service_text(j: usize) -> String {
    let mut s = format!("\n[services.svc{j}]\n");
    if j.is_multiple_of(2) {
        s.push_str("image = \"registry.example.com/app:1.0\"\ncommand = [\"serve\", \"--port\", \"8080\"]\n");
        s.push_str("env = { MODE = \"production\", SHARD = \"1\" }\nports = [\"8080\"]\nvolumes = [\"data:/data\"]\n");
        s.push_str("health = { cmd = [\"check\"], interval = \"5s\" }\nmemory_max = \"256M\"\n");
    } else {
        s.push_str("exec = [\"/usr/local/bin/worker\", \"--queue\", \"jobs\"]\nuser = \"nobody\"\n");
        s.push_str("env = { QUEUE = \"jobs\" }\nrestart = \"always\"\nrestart_delay = \"2s\"\n");
    }
    if j > 0 {
        s.push_str(&format!("requires = [\"svc{}\"]\n", j - 1));
    }
    if j > 1 {
        s.push_str(&format!("wants = [\"svc{}\"]\n", j - 2));
    }
    if j % 10 == 4 {
        s.push_str("replicas = 3\n");
    }
    if j % 10 == 2 {
        s.push_str("secrets = [\"token\"]\n");
    }
    s
}

fn stack_text(i: usize, services: usize) -> String {
    let mut s = format!("description = \"synthetic stack {i}\"\n");
    for j in 0..services {
        s.push_str(&service_text(j));
    }
    s.push_str("\n[secrets.token]\nfile = \"/etc/kapell/secrets/token\"\n");
    s
}

/// CPU time (user + system) of every child waited for so far.
fn children_cpu() -> Duration {
    let to = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(Duration::ZERO, |u| to(u.user_time()) + to(u.system_time()))
}

/// Runs the generator once into a fresh `out`.
fn generate(generator: &Path, config: &Path, out: &Path, work: &Path) -> Duration {
    std::fs::create_dir_all(out).expect("out dir");
    let start = Instant::now();
    let status = Command::new(generator)
        .env("KAPELL_CONFIG_DIR", config)
        .env("KAPELL_FLEET_UNITS_DIR", work.join("no-fleet"))
        .args(["--no-kmsg"])
        .arg(out)
        .arg(work.join("early"))
        .arg(work.join("late"))
        .status()
        .expect("run generator");
    let elapsed = start.elapsed();
    assert!(status.success(), "generator failed");
    elapsed
}

/// The probe: one generator run, then its peak RSS in KiB on stdout.
fn rss_probe(args: &[String]) {
    let [generator, config, out, work] = args else { panic!("usage: --rss-probe GENERATOR CONFIG OUT WORK") };
    generate(Path::new(generator), Path::new(config), Path::new(out), Path::new(work));
    let kib = getrusage(UsageWho::RUSAGE_CHILDREN).map(|u| u.max_rss()).unwrap_or(0);
    println!("{kib}");
}

fn peak_rss_mib(generator: &Path, config: &Path, out: &Path, work: &Path) -> f64 {
    let me = std::env::current_exe().expect("current exe");
    let output =
        Command::new(me).arg("--rss-probe").args([generator, config, out, work]).output().expect("run the RSS probe");
    let text = String::from_utf8_lossy(&output.stdout);
    let kib: f64 = text.lines().last().and_then(|l| l.trim().parse().ok()).expect("probe output");
    let _ = std::fs::remove_dir_all(out);
    kib / 1024.0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--rss-probe") {
        return rss_probe(&args[i + 1..]);
    }
    let kapell = Path::new(env!("CARGO_BIN_EXE_kapell"));
    let work = tempfile::tempdir_in("/dev/shm").expect("tempdir on tmpfs");
    let generator = work.path().join("kapell-generator");
    std::os::unix::fs::symlink(kapell, &generator).expect("symlink");

    println!("kapell-generator, {RUNS} runs per row, fresh normal-dir per run (release build, output on tmpfs)\n");
    println!(
        "{:<34} {:>8} {:>9} {:>8} {:>12} {:>10} {:>11}",
        "input", "min ms", "median ms", "max ms", "median CPU ms", "peak RSS", "µs/service"
    );
    // (services, services per stack, label, the Quadlet figure)
    let rows = [
        (1_000, 10, "1,000 services, stacks of 10", 244),
        (10_000, 10, "10,000 services, stacks of 10", 2_244),
        (1_000, 1_000, "1,000 services in one stack", 235),
        (10_000, 10_000, "10,000 services in one stack", 2_278),
    ];
    let mut medians = Vec::new();
    for (services, per_stack, label, _) in rows {
        let config: PathBuf = work.path().join(format!("config-{services}-{per_stack}"));
        std::fs::create_dir_all(&config).expect("config dir");
        for i in 0..services / per_stack {
            std::fs::write(config.join(format!("s{i}.toml")), stack_text(i, per_stack)).expect("write stack");
        }
        // One run that is not counted: the stack files just written and the binary come into
        // the page cache, as they are at every boot after the first.
        let warm = work.path().join(format!("warm-{services}-{per_stack}"));
        generate(&generator, &config, &warm, work.path());
        std::fs::remove_dir_all(&warm).expect("cleanup");
        let mut times: Vec<Duration> = Vec::new();
        let mut cpu: Vec<Duration> = Vec::new();
        for run in 0..RUNS {
            let out = work.path().join(format!("out-{services}-{per_stack}-{run}"));
            let before = children_cpu();
            times.push(generate(&generator, &config, &out, work.path()));
            cpu.push(children_cpu().saturating_sub(before));
            if run == 0 {
                let files = std::fs::read_dir(&out).expect("out").count();
                assert!(files > services, "expected a unit per service, found {files} entries");
            }
            std::fs::remove_dir_all(&out).expect("cleanup");
        }
        let rss = peak_rss_mib(&generator, &config, &work.path().join("out-rss"), work.path());
        times.sort();
        cpu.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let median = times[RUNS / 2];
        medians.push(ms(median));
        println!(
            "{label:<34} {:>8.1} {:>9.1} {:>8.1} {:>12.1} {:>6.1} MiB {:>11.1}",
            ms(times[0]),
            ms(median),
            ms(times[RUNS - 1]),
            ms(cpu[RUNS / 2]),
            rss,
            median.as_secs_f64() * 1e6 / services as f64
        );
    }
    println!("\ntargets (docs/benchmarks.md): 1,000 services ≤ 20 ms and < 30 MiB; 10,000 ≤ 200 ms; linear.");
    println!(
        "linearity, median 10,000 ÷ 1,000: {:.1}× in stacks of 10, {:.1}× in one stack (10× is linear)",
        medians[1] / medians[0],
        medians[3] / medians[2]
    );
    println!(
        "one stack ÷ stacks of 10: {:.2}× at 1,000, {:.2}× at 10,000",
        medians[2] / medians[0],
        medians[3] / medians[1]
    );
    println!("\nQuadlet (Podman main, issue 8, same machine kind, equivalent services):");
    for (_, _, label, quadlet) in rows {
        println!("  {label:<34} {quadlet:>6} ms");
    }
}
