//! Generator benchmark (SPEC §10): `kapell-generator` on 1,000 and 10,000 services.
//!
//!     cargo bench --bench generator
//!
//! Writes synthetic stacks (10 services each: containers and native services with dependencies,
//! health checks, limits, replicas and secrets) into a temporary config directory, then runs the
//! release binary as systemd would (`kapell-generator normal-dir early-dir late-dir`, a fresh
//! empty normal-dir each run) and prints wall time and peak RSS. Not a test: nothing asserts.
//!
//! The output directories are on tmpfs (`/dev/shm`), as systemd's generator directories are
//! (`/run/systemd/generator`): on this machine's disk a file creation costs ~0.4 ms, which would
//! measure the disk, not kapell.

use nix::sys::resource::{UsageWho, getrusage};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SERVICES_PER_STACK: usize = 10;
const RUNS: usize = 15;

fn stack_text(i: usize) -> String {
    let mut s = format!("description = \"synthetic stack {i}\"\n");
    for j in 0..SERVICES_PER_STACK {
        s.push_str(&format!("\n[services.svc{j}]\n"));
        if j % 2 == 0 {
            s.push_str("image = \"registry.example.com/app:1.0\"\ncommand = [\"serve\", \"--port\", \"8080\"]\n");
            s.push_str(
                "env = { MODE = \"production\", SHARD = \"1\" }\nports = [\"8080\"]\nvolumes = [\"data:/data\"]\n",
            );
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
        if j == 4 {
            s.push_str("replicas = 3\n");
        }
        if j == 2 {
            s.push_str("secrets = [\"token\"]\n");
        }
    }
    s.push_str("\n[secrets.token]\nfile = \"/etc/kapell/secrets/token\"\n");
    s
}

fn peak_rss_kib() -> i64 {
    getrusage(UsageWho::RUSAGE_CHILDREN).map(|u| u.max_rss()).unwrap_or(0)
}

fn main() {
    let kapell = Path::new(env!("CARGO_BIN_EXE_kapell"));
    let work = tempfile::tempdir_in("/dev/shm").expect("tempdir on tmpfs");
    let generator = work.path().join("kapell-generator");
    std::os::unix::fs::symlink(kapell, &generator).expect("symlink");

    println!("kapell-generator, {RUNS} runs each, fresh normal-dir per run (release build)\n");
    println!(
        "{:>9} {:>7} {:>9} {:>9} {:>9} {:>10} {:>12}",
        "services", "stacks", "min ms", "median ms", "max ms", "peak RSS", "µs/service"
    );
    let mut per_service = Vec::new();
    for services in [100, 1_000, 10_000] {
        let stacks = services / SERVICES_PER_STACK;
        let config = work.path().join(format!("config-{services}"));
        std::fs::create_dir_all(&config).expect("config dir");
        for i in 0..stacks {
            std::fs::write(config.join(format!("s{i}.toml")), stack_text(i)).expect("write stack");
        }
        let mut times: Vec<Duration> = Vec::new();
        for run in 0..RUNS {
            let out = work.path().join(format!("out-{services}-{run}"));
            std::fs::create_dir_all(&out).expect("out dir");
            let start = Instant::now();
            let status = Command::new(&generator)
                .env("KAPELL_CONFIG_DIR", &config)
                .args(["--no-kmsg"])
                .arg(&out)
                .arg(work.path().join("early"))
                .arg(work.path().join("late"))
                .status()
                .expect("run generator");
            times.push(start.elapsed());
            assert!(status.success(), "generator failed");
            if run == 0 {
                let files = std::fs::read_dir(&out).expect("out").count();
                assert!(files > services, "expected a unit per service, found {files} entries");
            }
            std::fs::remove_dir_all(&out).expect("cleanup");
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let median = times[RUNS / 2];
        let us_per = median.as_secs_f64() * 1e6 / services as f64;
        per_service.push(us_per);
        println!(
            "{services:>9} {stacks:>7} {:>9.1} {:>9.1} {:>9.1} {:>7.1} MiB {:>12.1}",
            ms(times[0]),
            ms(median),
            ms(times[RUNS - 1]),
            peak_rss_kib() as f64 / 1024.0,
            us_per
        );
    }
    println!("\ntargets (SPEC §10): 1,000 services < 20 ms and < 30 MiB; 10,000 < 200 ms, linear.");
    println!("linearity: µs/service at 10,000 is {:.2}× that at 1,000", per_service[2] / per_service[1]);
    println!("Podman Quadlet on this machine kind (SPEC §10): 179 ms for 1,000 units, 1.57 s for 10,000.");
}
