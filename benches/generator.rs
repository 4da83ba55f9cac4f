//! Generator benchmark: `kapell-generator` on 1,000 and 10,000 services, in stacks of 10 and in
//! one stack, side by side with Podman's Quadlet on equivalent units and with a C floor that
//! writes the same files and does nothing else. See docs/benchmarks.md for the method and results.
//!
//!     cargo bench --bench generator -- --quadlet /path/to/quadlet   (or KAPELL_BENCH_QUADLET)
//!
//! Without a Quadlet binary its columns are left empty (docs/benchmarks.md says how to build one
//! from Podman's source). Each row writes synthetic input into a temporary directory on tmpfs
//! (`/dev/shm`, as systemd's generator directories are on `/run`): for kapell, stacks whose
//! services require the one before and want the one before that, containers and native services
//! alternating, with health checks, limits, replicas and secrets; for Quadlet, one `.container`
//! file per service with the same image, command, environment, ports, volume, dependencies,
//! health check, limit and restart policy, and one `.network` per stack (kapell gives each stack
//! a network). The floor (`benches/floor.c`, compiled here with `cc -O2`) writes exactly the
//! files kapell wrote, read from a manifest: one `openat`+`write`+`close` per unit, one `symlink`
//! per link, on one thread.
//!
//! The three tools run in turn, run after run (after one uncounted warm-up each), each into a
//! fresh empty output directory, so a burst of load on this shared machine hits all three
//! alike; each run starts with the next tool, so none always runs right after the same one. Printed per row: median wall time (and min), median CPU time (user + system of the
//! child, from `getrusage`), peak RSS, the ratios, and the load average before and after the
//! row. Peak RSS is measured in a separate run through a probe process (this benchmark again
//! with `--rss-probe`) whose only child is that one run: `getrusage(RUSAGE_CHILDREN)` keeps the
//! maximum over every child ever waited for. Not a test: nothing asserts but that each tool did
//! its job.

use nix::sys::resource::{UsageWho, getrusage};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One service `svc<j>` of a synthetic stack: every service requires the one before it.
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

/// The Quadlet equivalent of `svc<j>` of stack `s<i>`: a `.container` (Quadlet runs only
/// containers; a native service becomes a container running the same command).
fn quadlet_container(i: usize, j: usize) -> String {
    let mut s = format!("[Unit]\nDescription=s{i}.svc{j}\n");
    if j > 0 {
        s.push_str(&format!("Requires=s{i}-svc{}.service\nAfter=s{i}-svc{}.service\n", j - 1, j - 1));
    }
    if j > 1 {
        s.push_str(&format!("Wants=s{i}-svc{}.service\nAfter=s{i}-svc{}.service\n", j - 2, j - 2));
    }
    s.push_str("\n[Container]\n");
    if j.is_multiple_of(2) {
        s.push_str("Image=registry.example.com/app:1.0\nExec=serve --port 8080\n");
        s.push_str("Environment=MODE=production SHARD=1\nPublishPort=8080\nVolume=data:/data\n");
        s.push_str("HealthCmd=check\nHealthInterval=5s\n");
    } else {
        s.push_str("Image=registry.example.com/worker:1.0\nExec=/usr/local/bin/worker --queue jobs\nUser=nobody\n");
        s.push_str("Environment=QUEUE=jobs\n");
    }
    if j % 10 == 2 {
        s.push_str("Secret=token\n");
    }
    s.push_str(&format!("Network=s{i}.network\n\n[Service]\n"));
    if j.is_multiple_of(2) {
        s.push_str("MemoryMax=256M\n");
    } else {
        s.push_str("Restart=always\nRestartSec=2s\n");
    }
    s.push_str(&format!("\n[Install]\nWantedBy=s{i}.target\n"));
    s
}

/// One row's input, for every tool.
struct Row {
    services: usize,
    per_stack: usize,
    label: &'static str,
    kapell_config: PathBuf,
    quadlet_dir: PathBuf,
    manifest: PathBuf,
}

impl Row {
    fn new(work: &Path, services: usize, per_stack: usize, label: &'static str) -> Self {
        let tag = format!("{services}-{per_stack}");
        let row = Row {
            services,
            per_stack,
            label,
            kapell_config: work.join(format!("config-{tag}")),
            quadlet_dir: work.join(format!("quadlet-{tag}")),
            manifest: work.join(format!("manifest-{tag}")),
        };
        std::fs::create_dir_all(&row.kapell_config).expect("config dir");
        std::fs::create_dir_all(&row.quadlet_dir).expect("quadlet dir");
        for i in 0..services / per_stack {
            std::fs::write(row.kapell_config.join(format!("s{i}.toml")), stack_text(i, per_stack)).expect("stack");
            std::fs::write(row.quadlet_dir.join(format!("s{i}.network")), "[Network]\n").expect("network");
            for j in 0..per_stack {
                let path = row.quadlet_dir.join(format!("s{i}-svc{j}.container"));
                std::fs::write(path, quadlet_container(i, j)).expect("container");
            }
        }
        row
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Kapell,
    Quadlet,
    Floor,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Kapell => "kapell",
            Tool::Quadlet => "quadlet",
            Tool::Floor => "floor",
        }
    }

    fn parse(name: &str) -> Tool {
        [Tool::Kapell, Tool::Quadlet, Tool::Floor].into_iter().find(|t| t.name() == name).expect("tool name")
    }
}

/// Where the tools are.
struct Tools {
    work: PathBuf,
    kapell_generator: PathBuf,
    quadlet: Option<PathBuf>,
    floor: PathBuf,
}

impl Tools {
    /// Runs `tool` once on `row`'s input into a fresh `out`; returns its wall time.
    fn run(&self, tool: Tool, row: &Row, out: &Path) -> Duration {
        std::fs::create_dir_all(out).expect("out dir");
        let mut command = match tool {
            Tool::Kapell => {
                let mut c = Command::new(&self.kapell_generator);
                c.env("KAPELL_CONFIG_DIR", &row.kapell_config)
                    .env("KAPELL_RECEIVED_DIR", self.work.join("no-fleet"))
                    .arg("--no-kmsg")
                    .arg(out)
                    .arg(self.work.join("early"))
                    .arg(self.work.join("late"));
                c
            }
            Tool::Quadlet => {
                let mut c = Command::new(self.quadlet.as_ref().expect("quadlet path"));
                c.env("QUADLET_UNIT_DIRS", &row.quadlet_dir)
                    .arg("-no-kmsg-log")
                    .arg(out)
                    .arg(self.work.join("early"))
                    .arg(self.work.join("late"));
                c
            }
            Tool::Floor => {
                let mut c = Command::new(&self.floor);
                c.arg(&row.manifest).arg(out);
                c
            }
        };
        let start = Instant::now();
        let status = command.status().expect("run the tool");
        let elapsed = start.elapsed();
        assert!(status.success(), "{} failed on {}", tool.name(), row.label);
        elapsed
    }
}

/// CPU time (user + system) of every child waited for so far.
fn children_cpu() -> Duration {
    let to = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(Duration::ZERO, |u| to(u.user_time()) + to(u.system_time()))
}

/// The files of a generator output directory as a manifest for the floor (see benches/floor.c),
/// directories first. Returns the number of files.
fn write_manifest(out: &Path, manifest: &Path) -> usize {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut visit = |sub: &str| {
        let mut entries: Vec<_> = std::fs::read_dir(out.join(sub)).expect("read out").flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for e in entries {
            let name = format!("{sub}{}", e.file_name().to_string_lossy());
            let kind = e.file_type().expect("type");
            if kind.is_dir() {
                subdirs.push(name);
            } else if kind.is_symlink() {
                let target = std::fs::read_link(e.path()).expect("link");
                files.push((b'L', name, target.to_string_lossy().into_owned().into_bytes()));
            } else {
                files.push((b'U', name, std::fs::read(e.path()).expect("unit")));
            }
        }
        subdirs
    };
    let subdirs = visit("");
    for d in subdirs {
        visit(&format!("{d}/"));
        dirs.push(d);
    }
    let mut bytes = Vec::new();
    for d in &dirs {
        bytes.extend_from_slice(b"D");
        bytes.extend_from_slice(d.as_bytes());
        bytes.extend_from_slice(b"\0\0");
    }
    for (kind, name, content) in &files {
        bytes.push(*kind);
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(content);
        bytes.push(0);
    }
    std::fs::write(manifest, bytes).expect("manifest");
    files.len()
}

/// Compiles benches/floor.c into `work`.
fn build_floor(work: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/floor.c");
    let binary = work.join("floor");
    let status = Command::new("cc").args(["-O2", "-o"]).arg(&binary).arg(&source).status().expect("run cc");
    assert!(status.success(), "cc {} failed", source.display());
    binary
}

/// The probe process: one run of a tool, then its peak RSS in KiB on stdout.
fn rss_probe(args: &[String]) {
    let [tool, services, per_stack, work, quadlet] = args else {
        panic!("usage: --rss-probe TOOL SERVICES PER-STACK WORK QUADLET")
    };
    let work = PathBuf::from(work);
    let tools = Tools {
        kapell_generator: work.join("kapell-generator"),
        quadlet: Some(PathBuf::from(quadlet)),
        floor: work.join("floor"),
        work: work.clone(),
    };
    let (services, per_stack) = (services.parse().expect("services"), per_stack.parse().expect("per stack"));
    let tag = format!("{services}-{per_stack}");
    let row = Row {
        services,
        per_stack,
        label: "probe",
        kapell_config: work.join(format!("config-{tag}")),
        quadlet_dir: work.join(format!("quadlet-{tag}")),
        manifest: work.join(format!("manifest-{tag}")),
    };
    let out = work.join(format!("out-rss-{}", tool));
    tools.run(Tool::parse(tool), &row, &out);
    let _ = std::fs::remove_dir_all(&out);
    let kib = getrusage(UsageWho::RUSAGE_CHILDREN).map(|u| u.max_rss()).unwrap_or(0);
    println!("{kib}");
}

fn peak_rss_mib(tools: &Tools, tool: Tool, row: &Row) -> f64 {
    let me = std::env::current_exe().expect("current exe");
    let quadlet = tools.quadlet.clone().unwrap_or_default();
    let output = Command::new(me)
        .arg("--rss-probe")
        .args([tool.name(), &row.services.to_string(), &row.per_stack.to_string()])
        .arg(&tools.work)
        .arg(quadlet)
        .output()
        .expect("run the RSS probe");
    let text = String::from_utf8_lossy(&output.stdout);
    let kib: f64 = text.lines().last().and_then(|l| l.trim().parse().ok()).expect("probe output");
    kib / 1024.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Median and minimum of a sample, in ms.
fn median_min(mut sample: Vec<Duration>) -> (f64, f64) {
    sample.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(sample[sample.len() / 2]), ms(sample[0]))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--rss-probe") {
        return rss_probe(&args[i + 1..]);
    }
    let quadlet = args
        .iter()
        .position(|a| a == "--quadlet")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var("KAPELL_BENCH_QUADLET").ok())
        .map(PathBuf::from);
    let runs: usize = std::env::var("KAPELL_BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(11);
    let work = tempfile::tempdir_in("/dev/shm").expect("tempdir on tmpfs");
    let kapell_generator = work.path().join("kapell-generator");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kapell-generator"), &kapell_generator).expect("symlink");
    let tools = Tools {
        work: work.path().to_path_buf(),
        kapell_generator,
        floor: build_floor(work.path()),
        quadlet: quadlet.clone(),
    };
    let mut with: Vec<Tool> = vec![Tool::Kapell, Tool::Floor];
    match &quadlet {
        Some(q) => {
            let version = Command::new(q).arg("-version").output().expect("run quadlet");
            println!("Quadlet: {} ({})", q.display(), String::from_utf8_lossy(&version.stdout).trim());
            with.insert(0, Tool::Quadlet);
        }
        None => println!("Quadlet: not given (--quadlet PATH or KAPELL_BENCH_QUADLET); its columns stay empty"),
    }
    println!("{runs} runs per row and tool, in turn, fresh output directory per run, output on tmpfs\n");
    println!(
        "{:<30} {:>14} {:>14} {:>14} {:>8} {:>8} {:>20} {:>9} {:>9} {:>9} {:>17}",
        "input",
        "Quadlet ms",
        "kapell ms",
        "C floor ms",
        "Q÷kapell",
        "kapell÷C",
        "CPU ms Q / k / C",
        "RSS Q",
        "RSS kapell",
        "RSS C",
        "load before→after"
    );
    println!("{:<30} {:>14} {:>14} {:>14}", "", "median (min)", "median (min)", "median (min)");
    let shapes = [
        (1_000, 10, "1,000 services, stacks of 10"),
        (10_000, 10, "10,000 services, stacks of 10"),
        (1_000, 1_000, "1,000 services in one stack"),
        (10_000, 10_000, "10,000 services in one stack"),
    ];
    for (services, per_stack, label) in shapes {
        let row = Row::new(work.path(), services, per_stack, label);
        // Warm-up: inputs and binaries into the page cache; kapell's output becomes the floor's manifest.
        let reference = work.path().join("reference");
        tools.run(Tool::Kapell, &row, &reference);
        let files = write_manifest(&reference, &row.manifest);
        assert!(files > services, "expected a unit per service, found {files} files");
        std::fs::remove_dir_all(&reference).expect("cleanup");
        for &tool in &with {
            if tool != Tool::Kapell {
                let out = work.path().join("warm");
                tools.run(tool, &row, &out);
                std::fs::remove_dir_all(&out).expect("cleanup");
            }
        }
        let load_before = load_average();
        let mut wall: Vec<Vec<Duration>> = vec![Vec::new(); 3];
        let mut cpu: Vec<Vec<Duration>> = vec![Vec::new(); 3];
        for run in 0..runs {
            // Each run starts with the next tool, so every tool follows every other equally
            // often: a tool that runs after Quadlet (two cores busy for its Go runtime) pays
            // for what Quadlet leaves behind no more than the others do.
            for &tool in with.iter().cycle().skip(run % with.len()).take(with.len()) {
                let out = work.path().join(format!("out-{}-{run}", tool.name()));
                let before = children_cpu();
                wall[tool as usize].push(tools.run(tool, &row, &out));
                cpu[tool as usize].push(children_cpu().saturating_sub(before));
                std::fs::remove_dir_all(&out).expect("cleanup");
            }
        }
        let load_after = load_average();
        let cell = |tool: Tool| {
            let sample = wall[tool as usize].clone();
            if sample.is_empty() {
                (f64::NAN, String::from("—"))
            } else {
                let (median, min) = median_min(sample);
                (median, format!("{median:.1} ({min:.1})"))
            }
        };
        let (q, q_text) = cell(Tool::Quadlet);
        let (k, k_text) = cell(Tool::Kapell);
        let (c, c_text) = cell(Tool::Floor);
        let cpu_ms = |tool: Tool| {
            let sample = cpu[tool as usize].clone();
            if sample.is_empty() { "—".to_string() } else { format!("{:.1}", median_min(sample).0) }
        };
        let cpu_text = format!("{} / {} / {}", cpu_ms(Tool::Quadlet), cpu_ms(Tool::Kapell), cpu_ms(Tool::Floor));
        let rss = |tool: Tool| {
            if with.contains(&tool) { format!("{:.1} MiB", peak_rss_mib(&tools, tool, &row)) } else { "—".into() }
        };
        let ratio = |x: f64| if x.is_nan() { "—".to_string() } else { format!("{x:.1}×") };
        println!(
            "{label:<30} {q_text:>14} {k_text:>14} {c_text:>14} {:>8} {:>8} {:>20} {:>9} {:>9} {:>9} {:>17}",
            ratio(q / k),
            format!("{:.2}×", k / c),
            cpu_text,
            rss(Tool::Quadlet),
            rss(Tool::Kapell),
            rss(Tool::Floor),
            format!("{load_before} → {load_after}")
        );
        let _ = std::io::stdout().flush();
    }
    println!("\ntargets (docs/benchmarks.md): kapell ≥ 10× faster than Quadlet and ≤ 1.5× the C floor in every row;");
    println!("peak RSS ≤ Quadlet's. Load average is the machine's (1, 5, 15 min), shared with other work.");
    parse_table(runs);
}

/// The part of the generator's work that its TOML reading is: the same stack texts parsed into
/// the spanned tree the schema reads (src/config/document.rs), and into the `toml` crate's, in
/// this process, on one thread, in turn; a file of one stack is parsed whole here (the generator
/// cuts a large one into pieces first).
fn parse_table(runs: usize) {
    println!("\nparsing the stack files alone, one thread, {runs} rounds in turn:\n");
    println!("{:<30} {:>18} {:>18} {:>8}", "input", "toml crate ms", "kapell ms", "ratio");
    println!("{:<30} {:>18} {:>18}", "", "median (min)", "median (min)");
    for (services, per_stack, label) in
        [(1_000, 10, "1,000 services, stacks of 10"), (1_000, 1_000, "1,000 services in one stack")]
    {
        let texts: Vec<String> = (0..services / per_stack).map(|i| stack_text(i, per_stack)).collect();
        let (mut toml_crate, mut kapell) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let start = Instant::now();
            for text in &texts {
                let (tree, errors) = toml::de::DeTable::parse_recoverable(text);
                assert!(errors.is_empty() && !tree.get_ref().is_empty());
            }
            toml_crate.push(start.elapsed());
            let start = Instant::now();
            for text in &texts {
                let (tree, errors) = kapell::config::document::parse(text);
                assert!(errors.is_empty() && !tree.is_empty());
            }
            kapell.push(start.elapsed());
        }
        let (t, t_min) = median_min(toml_crate);
        let (k, k_min) = median_min(kapell);
        println!(
            "{label:<30} {:>18} {:>18} {:>7.1}×",
            format!("{t:.2} ({t_min:.2})"),
            format!("{k:.2} ({k_min:.2})"),
            t / k
        );
    }
}
