//! Fleet benchmark (docs/benchmarks.md): `kapell fleet apply` on booted systemd hosts with sshd, side by
//! side with a bare parallel `ssh` + `tar` + `systemctl` loop and with Ansible, on the same hosts
//! in one run; then the curve of a cold apply over 8, 16 and 32 hosts.
//!
//!     cargo bench --bench fleet        # as root, with the packages of .ci/deps
//!
//! Not a test, and CI does not run it: nothing asserts a time, but every run is checked to have
//! done the job (all units active, the changed one running its new command) before it counts.
//!
//! What it does:
//! - boots `KAPELL_BENCH_HOSTS` (default 32) nspawn hosts with the test rig (`tests/support`),
//!   all started first and then waited for; the first 8 get Python (Ansible needs it on the
//!   managed host): a copy of what `apt-get install python3` adds to the rig's base tree, built
//!   once in `/var/tmp/kapell-bench/python-root`;
//! - installs `ansible-core` from PyPI into a venv, once, in `/var/tmp/kapell-bench/ansible-venv`;
//! - on 8 hosts × 10 native services (`/bin/sleep`), for each tool in turn — the bare loop,
//!   kapell, Ansible — times a cold apply, a no-op apply and an apply where one service changed,
//!   each tool with unit names of its own and the previous tool's units stopped and removed
//!   first, so every tool's cold apply is cold;
//! - counts the bytes each run puts on the wire per host (the counters of the hosts' own veths:
//!   nothing else talks to these hosts during a run);
//! - then, for kapell, where the time of a no-op goes (the ssh round trip, `kapell receive` on
//!   the peer, the rest), and the cold-apply curve over 8, 16 and 32 hosts (`parallel = 32`);
//! - prints everything as markdown; every host, bridge and ssh master connection is gone at the
//!   end (the rig's hosts drop, masters get `ssh -O exit`).
//!
//! The bare loop is a hand-written job for exactly this task, one background job per host:
//! `tar c <10 unit files> | ssh HOST 'tar x -C /etc/systemd/system && systemctl daemon-reload
//! && systemctl start <10 units>'` (for the change: `systemctl restart <the changed unit>`), with
//! `ControlMaster=auto` and `ControlPersist`, like kapell and Ansible. It has no no-op detection:
//! its no-op is the cold run again. Ansible runs a playbook of `copy` (10 unit files),
//! `systemd: daemon_reload` (when a file changed) and `systemd: state=started` per unit
//! (`restarted` for a changed file), with `pipelining = True`, `ControlPersist`, `forks = 32`
//! and no fact gathering.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use support::{Footprint, Host, Net, Ssh};

const KAPELL_BUILT: &str = env!("CARGO_BIN_EXE_kapell");

/// The kapell binary the controller runs and the hosts get: this build's, or
/// `KAPELL_BENCH_KAPELL` (to compare another build on the same rig and load).
fn kapell_bin() -> String {
    std::env::var("KAPELL_BENCH_KAPELL").unwrap_or_else(|_| KAPELL_BUILT.to_string())
}
/// Kept between runs: the Ansible venv and the Python tree for the hosts.
const WORK: &str = "/var/tmp/kapell-bench";
const SERVICES: usize = 10;
/// The service whose command changes in the "one service changed" run.
const CHANGED: usize = 3;
/// Hosts of the side-by-side comparison.
const COMPARE: usize = 8;
const CURVE: &[usize] = &[8, 16, 32, 64];

fn main() {
    match run() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("fleet bench failed: {e:#}");
            std::process::exit(1);
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn run() -> Result<()> {
    ensure!(nix::unistd::Uid::effective().is_root(), "the fleet benchmark boots hosts: run it as root");
    let host_count = env_usize("KAPELL_BENCH_HOSTS", 64).clamp(COMPARE, 200);
    let noop_runs = env_usize("KAPELL_BENCH_NOOP_RUNS", 5).max(1);
    let ansible = std::env::var_os("KAPELL_BENCH_NO_ANSIBLE").is_none();
    std::fs::create_dir_all(WORK)?;
    let python_root = if ansible { Some(python_root()?) } else { None };
    let ansible_bin = if ansible { Some(ansible_venv()?) } else { None };

    raise_inotify_limit()?;
    // ssh masters fork away from their client; as the subreaper this process adopts them, so
    // their CPU time is counted as the controller's (see `Kapell::apply_watched`).
    nix::sys::prctl::set_child_subreaper(true).context("cannot become the subreaper")?;
    let net = Net::new()?;
    let ssh = Ssh::new()?;
    let booted = Instant::now();
    let hosts = boot(&net, &ssh, host_count, python_root.as_deref())?;
    let footprint = hosts.iter().fold(Footprint::new().net(&net), Footprint::host);
    let mut out = String::new();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    writeln!(
        out,
        "{host_count} hosts booted in {:.1}s on {} cores (load average {}).\n",
        booted.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    )?;
    eprintln!("{out}");

    let result = (|| -> Result<()> {
        let eight: Vec<&Host> = hosts.iter().take(COMPARE).collect();
        let mut table = Table::default();
        bare_loop(&ssh, &eight, noop_runs, &mut table)?;
        clean(&eight, "bare")?;
        let breakdown = kapell_side(&ssh, &eight, noop_runs, &mut table)?;
        if let Some(bin) = &ansible_bin {
            ansible_side(&ssh, &eight, bin, &mut table)?;
            clean(&eight, "ans")?;
        }
        out.push_str(&table.markdown(COMPARE));
        out.push_str(&breakdown);
        out.push_str(&curve(&ssh, &hosts)?);
        Ok(())
    })();
    drop_all(hosts);
    drop(ssh);
    drop(net);
    result?;
    footprint.assert_gone().context("the benchmark left something behind")?;
    println!("{out}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Hosts

fn host_name(i: usize) -> String {
    format!("h{:02}", i + 1)
}

/// Each booted systemd takes several inotify instances, and the kernel's default of 128 per user
/// (all of root's processes on the machine, other tests' hosts included) runs out near 20 hosts:
/// their systemd then dies with "Too many open files". Raised, never lowered.
fn raise_inotify_limit() -> Result<()> {
    const PATH: &str = "/proc/sys/fs/inotify/max_user_instances";
    const WANT: u64 = 1024;
    let now: u64 = std::fs::read_to_string(PATH)?.trim().parse()?;
    if now < WANT {
        eprintln!("raising fs.inotify.max_user_instances from {now} to {WANT} (32 systemd hosts need more than 128)");
        std::fs::write(PATH, WANT.to_string()).with_context(|| format!("cannot raise {PATH}"))?;
    }
    Ok(())
}

/// Starts every host, then waits for each: they boot side by side.
fn boot(net: &Net, ssh: &Ssh, count: usize, python: Option<&Path>) -> Result<Vec<Host>> {
    let mut hosts = Vec::with_capacity(count);
    for i in 0..count {
        let index = u8::try_from(10 + i).context("too many hosts")?;
        let mut builder = Host::builder().name(&host_name(i)).net(net, index).ssh(ssh).kapell(kapell_bin());
        if let (Some(python), true) = (python, i < COMPARE) {
            builder = builder.before_boot(move |root| copy_tree(python, root));
        }
        hosts.push(builder.start()?);
    }
    for host in &mut hosts {
        host.wait_running()?;
    }
    for host in &hosts {
        host.wait_ssh()?;
    }
    Ok(hosts)
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let mut src = from.as_os_str().to_owned();
    src.push("/.");
    support::run_ok(Command::new("cp").args(["-a", "--no-preserve=xattr"]).arg(src).arg(to))?;
    Ok(())
}

/// Stops the hosts side by side (each takes seconds to power off).
fn drop_all(hosts: Vec<Host>) {
    std::thread::scope(|s| {
        for host in hosts {
            s.spawn(move || drop(host));
        }
    });
}

/// Runs `f` on every host at once; the first error wins.
fn each_host<T: Send>(hosts: &[&Host], f: impl Fn(&Host) -> Result<T> + Sync) -> Result<Vec<T>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = hosts.iter().map(|h| s.spawn(|| f(h))).collect();
        handles.into_iter().map(|h| h.join().map_err(|_| anyhow::anyhow!("a thread panicked"))?).collect()
    })
}

/// The 10 units of `prefix` are active on every host, and the changed one runs `changed_arg`.
fn check_running(hosts: &[&Host], prefix: &str, changed_arg: Option<&str>) -> Result<()> {
    each_host(hosts, |host| {
        let units: Vec<String> = (0..SERVICES).map(|i| format!("{prefix}-svc{i}.service")).collect();
        let mut args = vec!["systemctl", "is-active"];
        args.extend(units.iter().map(String::as_str));
        let states = host.exec(&args)?;
        let states = String::from_utf8_lossy(&states.stdout).into_owned();
        ensure!(
            states.lines().filter(|l| *l == "active").count() == SERVICES,
            "{}: not all {prefix} units are active: {states}",
            host.name()
        );
        if let Some(arg) = changed_arg {
            let unit = format!("{prefix}-svc{CHANGED}.service");
            let exec = host.exec_ok(&["systemctl", "show", "-p", "ExecStart", "--value", &unit])?;
            ensure!(exec.contains(arg), "{}: {unit} does not run the changed command: {exec}", host.name());
        }
        Ok(())
    })
    .map(drop)
}

/// Stops and removes the plain unit files `<prefix>-svcN.service` on every host.
fn clean(hosts: &[&Host], prefix: &str) -> Result<()> {
    each_host(hosts, |host| {
        let units: Vec<String> = (0..SERVICES).map(|i| format!("{prefix}-svc{i}.service")).collect();
        let script = format!(
            "systemctl stop {0}; cd /etc/systemd/system && rm -f {0} && systemctl daemon-reload",
            units.join(" ")
        );
        host.exec_ok(&["sh", "-c", &script]).map(drop)
    })
    .map(drop)
}

/// Bytes and packets on the wire (both directions) to `hosts`, from their veths' counters.
#[derive(Clone, Copy, Default)]
struct Wire {
    bytes: u64,
    packets: u64,
}

fn wire(hosts: &[&Host]) -> Option<Wire> {
    let mut sum = Wire::default();
    for host in hosts {
        let dir = PathBuf::from(format!("/sys/class/net/vb-{}/statistics", host.id()));
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok()?.trim().parse::<u64>().ok();
        sum.bytes += read("rx_bytes")? + read("tx_bytes")?;
        sum.packets += read("rx_packets")? + read("tx_packets")?;
    }
    Some(sum)
}

/// CPU time used by everything in the hosts' cgroups (sshd, `kapell receive`, systemd, the
/// generator, the services), in microseconds.
fn peer_cpu_usec(hosts: &[&Host]) -> Option<u64> {
    let mut sum = 0;
    for host in hosts {
        let stat = std::fs::read_to_string(format!("/sys/fs/cgroup/unified/{}/cpu.stat", host.cgroup())).ok()?;
        sum += stat.lines().find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())?;
    }
    Some(sum)
}

/// (busy, total) jiffies of the whole machine, from /proc/stat.
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some((total - idle, total))
}

/// One timed run: wall time, what went over the wire per host, the CPU the peers used (per host),
/// and how busy the whole machine was (other users' work included).
#[derive(Clone, Copy)]
struct Sample {
    took: Duration,
    per_host: Option<Wire>,
    peer_cpu: Option<Duration>,
    busy: Option<f64>,
}

fn measure(hosts: &[&Host], f: impl FnOnce() -> Result<()>) -> Result<Sample> {
    let before = wire(hosts);
    let cpu_before = peer_cpu_usec(hosts);
    let jiffies_before = machine_jiffies();
    let start = Instant::now();
    f()?;
    let took = start.elapsed();
    let jiffies_after = machine_jiffies();
    let cpu_after = peer_cpu_usec(hosts);
    // Let the last ACKs land before reading the counters.
    std::thread::sleep(Duration::from_millis(200));
    let n = hosts.len() as u64;
    let per_host = match (before, wire(hosts)) {
        (Some(a), Some(b)) => Some(Wire { bytes: (b.bytes - a.bytes) / n, packets: (b.packets - a.packets) / n }),
        _ => None,
    };
    let peer_cpu = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some(Duration::from_micros((b - a) / n)),
        _ => None,
    };
    let busy = match (jiffies_before, jiffies_after) {
        (Some(a), Some(b)) if b.1 > a.1 => Some((b.0 - a.0) as f64 / (b.1 - a.1) as f64),
        _ => None,
    };
    Ok(Sample { took, per_host, peer_cpu, busy })
}

/// The median (by time) of `runs` samples.
fn median(mut samples: Vec<Sample>) -> Sample {
    samples.sort_by_key(|s| s.took);
    samples[samples.len() / 2]
}

/// `ssh -O exit` for every master socket in `dir`.
fn close_masters(ssh: &Ssh, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let _ = Command::new("ssh")
            .arg("-F")
            .arg(ssh.config_path())
            .arg("-o")
            .arg(format!("ControlPath={}", entry.path().display()))
            .args(["-O", "exit", "master"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn unit_text(prefix: &str, i: usize, changed: bool) -> String {
    format!(
        "[Unit]\nDescription=fleet bench {prefix} service {i}\n\n[Service]\nExecStart=/bin/sleep {}\n",
        sleep_arg(i, changed)
    )
}

fn sleep_arg(i: usize, changed: bool) -> String {
    if changed && i == CHANGED { format!("{}", 8_000_000 + i) } else { format!("{}", 7_000_000 + i) }
}

// ---------------------------------------------------------------------------------------------
// The table

#[derive(Default)]
struct Table {
    /// row → tool → sample
    cells: BTreeMap<&'static str, BTreeMap<&'static str, Sample>>,
    notes: Vec<String>,
}

const ROWS: &[&str] = &[
    "cold apply, new connections",
    "cold apply, warm master",
    "no-op apply (warm master)",
    "no-op apply, new connections",
    "one service changed (warm master)",
];
const TOOLS: &[&str] = &["bare ssh+tar+systemctl loop", "kapell fleet apply", "Ansible"];

impl Table {
    fn put(&mut self, row: &'static str, tool: &'static str, sample: Sample) {
        eprintln!(
            "  {tool}: {row}: {:.3}s{}{}{}",
            sample.took.as_secs_f64(),
            sample.per_host.map_or(String::new(), |w| format!(", {} B / {} packets per host", w.bytes, w.packets)),
            sample.peer_cpu.map_or(String::new(), |c| format!(", peer CPU {:.3}s per host", c.as_secs_f64())),
            sample.busy.map_or(String::new(), |b| format!(", machine {:.0}% busy", b * 100.0)),
        );
        self.cells.entry(row).or_default().insert(tool, sample);
    }

    fn markdown(&self, hosts: usize) -> String {
        let mut s = format!("### {hosts} hosts × {SERVICES} services: wall time (bytes on the wire per host)\n\n");
        s.push_str(&format!("| run | {} | kapell ÷ bare | Ansible ÷ kapell |\n", TOOLS.join(" | ")));
        s.push_str(&format!("| --- |{}\n", " ---: |".repeat(TOOLS.len() + 2)));
        for row in ROWS {
            let Some(cells) = self.cells.get(row) else { continue };
            let cell = |tool: &str| match cells.get(tool) {
                Some(sample) => {
                    let wire = sample.per_host.map_or(String::new(), |w| format!(" ({})", kib(w.bytes)));
                    format!("{:.2} s{wire}", sample.took.as_secs_f64())
                }
                None => "—".into(),
            };
            let ratio = |a: &str, b: &str| match (cells.get(a), cells.get(b)) {
                (Some(a), Some(b)) => format!("{:.1}×", a.took.as_secs_f64() / b.took.as_secs_f64()),
                _ => "—".into(),
            };
            s.push_str(&format!(
                "| {row} | {} | {} | {} |\n",
                TOOLS.iter().map(|t| cell(t)).collect::<Vec<_>>().join(" | "),
                ratio(TOOLS[1], TOOLS[0]),
                ratio(TOOLS[2], TOOLS[1])
            ));
        }
        s.push_str(&format!(
            "\nCPU used on each peer (sshd, receiving side, systemd, generator; mean per host) and how busy the \
             controller machine's {} cores were during the run (other users' work included):\n\n",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ));
        s.push_str(&format!("| run | {} |\n| --- |{}\n", TOOLS.join(" | "), " ---: |".repeat(TOOLS.len())));
        for row in ROWS {
            let Some(cells) = self.cells.get(row) else { continue };
            let cell = |tool: &str| match cells.get(tool) {
                Some(Sample { peer_cpu: Some(cpu), busy, .. }) => format!(
                    "{:.0} ms{}",
                    cpu.as_secs_f64() * 1000.0,
                    busy.map_or(String::new(), |b| format!(" ({:.0}% busy)", b * 100.0))
                ),
                _ => "—".into(),
            };
            s.push_str(&format!("| {row} | {} |\n", TOOLS.iter().map(|t| cell(t)).collect::<Vec<_>>().join(" | ")));
        }
        s.push('\n');
        for note in &self.notes {
            s.push_str(&format!("- {note}\n"));
        }
        s.push('\n');
        s
    }
}

fn kib(bytes: u64) -> String {
    if bytes >= 10 * 1024 {
        format!("{:.0} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

// ---------------------------------------------------------------------------------------------
// (a) The bare loop

struct BareLoop<'a> {
    ssh: &'a Ssh,
    files: tempfile::TempDir,
    control: tempfile::TempDir,
}

impl BareLoop<'_> {
    fn write_units(&self, changed: bool) -> Result<()> {
        for i in 0..SERVICES {
            std::fs::write(self.files.path().join(format!("bare-svc{i}.service")), unit_text("bare", i, changed))?;
        }
        Ok(())
    }

    /// The whole job, one background ssh per host; `then` is the systemctl part after the reload.
    fn run(&self, hosts: &[&Host], then: &str) -> Result<()> {
        let units: Vec<String> = (0..SERVICES).map(|i| format!("bare-svc{i}.service")).collect();
        let names: Vec<&str> = hosts.iter().map(|h| h.name()).collect();
        let script = format!(
            "cd {files}\n\
             for h in {hosts}; do\n\
             \x20 tar c {units} | ssh -F {config} -o ControlMaster=auto -o ControlPath={control}/%C \
             -o ControlPersist=120s \"$h\" 'tar x -C /etc/systemd/system && systemctl daemon-reload && {then}' &\n\
             \x20 pids=\"$pids $!\"\n\
             done\n\
             fail=0; for j in $pids; do wait \"$j\" || fail=1; done; exit $fail\n",
            files = self.files.path().display(),
            hosts = names.join(" "),
            units = units.join(" "),
            config = self.ssh.config_path().display(),
            control = self.control.path().display(),
        );
        support::run_ok(Command::new("bash").arg("-c").arg(script).stdin(Stdio::null()))
            .context("the bare loop failed")?;
        Ok(())
    }
}

fn bare_loop(ssh: &Ssh, hosts: &[&Host], noop_runs: usize, table: &mut Table) -> Result<()> {
    eprintln!("bare loop on {} hosts…", hosts.len());
    const TOOL: &str = TOOLS[0];
    let bare = BareLoop {
        ssh,
        files: tempfile::tempdir()?,
        control: tempfile::Builder::new().prefix("kbare").tempdir_in("/tmp")?,
    };
    let units: Vec<String> = (0..SERVICES).map(|i| format!("bare-svc{i}.service")).collect();
    let start_all = format!("systemctl start {}", units.join(" "));
    table.notes.push(format!(
        "bare loop: one background `tar c | ssh HOST 'tar x && systemctl daemon-reload && systemctl start …'` per \
         host, `ControlMaster=auto`, `ControlPersist=120s`; \"new connections\" means no master was up, \"warm \
         master\" that the previous run's masters were reused. It cannot tell that nothing changed: its no-op \
         is the whole job again (daemon-reload included); for the change it runs `systemctl restart` of the \
         changed unit. No-op rows of the bare loop and kapell are medians of {noop_runs} runs; Ansible's are \
         single runs."
    ));
    let result = (|| -> Result<()> {
        bare.write_units(false)?;
        table.put(ROWS[0], TOOL, measure(hosts, || bare.run(hosts, &start_all))?);
        check_running(hosts, "bare", None)?;
        // Its no-op is the same job again: it cannot know that nothing changed.
        let noop: Vec<Sample> =
            (0..noop_runs).map(|_| measure(hosts, || bare.run(hosts, &start_all))).collect::<Result<_>>()?;
        table.put(ROWS[2], TOOL, median(noop));
        bare.write_units(true)?;
        let restart = format!("systemctl restart bare-svc{CHANGED}.service");
        table.put(ROWS[4], TOOL, measure(hosts, || bare.run(hosts, &restart))?);
        check_running(hosts, "bare", Some(&sleep_arg(CHANGED, true)))?;
        // Cold again, over the masters the first run opened.
        clean(hosts, "bare")?;
        bare.write_units(false)?;
        table.put(ROWS[1], TOOL, measure(hosts, || bare.run(hosts, &start_all))?);
        check_running(hosts, "bare", None)?;
        // No-op over new connections.
        close_masters(ssh, bare.control.path());
        table.put(ROWS[3], TOOL, measure(hosts, || bare.run(hosts, &start_all))?);
        Ok(())
    })();
    close_masters(ssh, bare.control.path());
    result
}

// ---------------------------------------------------------------------------------------------
// kapell

/// A controller: config dir (fleet.toml, stacks), and a runtime dir for kapell's masters.
struct Kapell<'a> {
    ssh: &'a Ssh,
    dir: tempfile::TempDir,
    runtime: tempfile::TempDir,
    /// Runtime dirs replaced by `fresh_connections`, whose masters are closed on drop.
    old_runtimes: Vec<tempfile::TempDir>,
}

impl<'a> Kapell<'a> {
    fn new(ssh: &'a Ssh) -> Result<Self> {
        Ok(Kapell { ssh, dir: tempfile::tempdir()?, runtime: runtime_dir()?, old_runtimes: Vec::new() })
    }

    fn fleet(&self, hosts: &[&Host]) -> Result<()> {
        let mut text = format!("[defaults]\nssh_config = \"{}\"\nparallel = 32\n\n", self.ssh.config_path().display());
        for host in hosts {
            text.push_str(&format!("[hosts.{0}]\naddress = \"{0}\"\n\n", host.name()));
        }
        std::fs::write(self.dir.path().join("fleet.toml"), text)?;
        Ok(())
    }

    /// One stack `stack` of 10 services placed on every host; `None` removes all stacks.
    fn stack(&self, stack: Option<&str>, changed: bool) -> Result<()> {
        for entry in std::fs::read_dir(self.dir.path())? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "toml") && !path.ends_with("fleet.toml") {
                std::fs::remove_file(path)?;
            }
        }
        let Some(stack) = stack else { return Ok(()) };
        let mut text = String::new();
        for i in 0..SERVICES {
            text.push_str(&format!(
                "[services.svc{i}]\nexec = [\"/bin/sleep\", \"{}\"]\nplacement = {{ global = true }}\n\n",
                sleep_arg(i, changed)
            ));
        }
        std::fs::write(self.dir.path().join(format!("{stack}.toml")), text)?;
        Ok(())
    }

    /// `kapell fleet apply`, which must succeed; returns its stdout.
    fn apply(&self) -> Result<String> {
        let out = Command::new(kapell_bin())
            .env("KAPELL_CONFIG_DIR", self.dir.path())
            .env("KAPELL_RUNTIME_DIR", self.runtime.path())
            .env("KAPELL_STATE_DIR", self.runtime.path().join("state"))
            // All hosts at once, as the loop and Ansible do: a rolling update of a unit all 8
            // hosts run would wait min_healthy_time per batch, which is a policy, not a cost.
            .args(["fleet", "apply", "--no-rollout"])
            .stdin(Stdio::null())
            .output()
            .context("cannot run kapell")?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(
            out.status.success(),
            "kapell fleet apply failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(stdout)
    }

    /// [`Kapell::apply`], watching the controller while it runs: its peak RSS and open file
    /// descriptors, the most ssh processes it had at once and their RSS, and the CPU time of the
    /// whole controller side (kapell, its ssh clients and the ssh masters they leave behind,
    /// which this process reaps as the subreaper: see [`ControllerCost`]).
    fn apply_watched(&self) -> Result<(String, ControllerCost)> {
        let cpu_before = children_cpu();
        let child = Command::new(kapell_bin())
            .env("KAPELL_CONFIG_DIR", self.dir.path())
            .env("KAPELL_RUNTIME_DIR", self.runtime.path())
            .env("KAPELL_STATE_DIR", self.runtime.path().join("state"))
            .args(["fleet", "apply", "--no-rollout"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run kapell")?;
        let pid = child.id();
        let done = std::sync::atomic::AtomicBool::new(false);
        let (output, mut cost) = std::thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                let mut cost = ControllerCost::default();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    cost.sample(pid);
                    std::thread::sleep(Duration::from_millis(5));
                }
                cost
            });
            let output = child.wait_with_output();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            (output, watcher.join().expect("watcher"))
        });
        let out = output.context("cannot run kapell")?;
        // The masters stay until `ssh -O exit`: close them now so their CPU is counted.
        close_masters(self.ssh, &self.control_dir());
        reap_orphans();
        cost.cpu = children_cpu().saturating_sub(cpu_before);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(
            out.status.success(),
            "kapell fleet apply failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((stdout, cost))
    }

    fn timed_apply(&self, hosts: &[&Host], expect: &str) -> Result<(Sample, String)> {
        let mut stdout = String::new();
        let sample = measure(hosts, || {
            stdout = self.apply()?;
            Ok(())
        })?;
        let rows = stdout.lines().filter(|l| l.split_whitespace().nth(1) == expect.split(' ').next()).count();
        ensure!(rows >= hosts.len(), "expected every host to be `{expect}`:\n{stdout}");
        Ok((sample, stdout))
    }

    /// The next requests open new master connections.
    fn fresh_connections(&mut self) -> Result<()> {
        let old = std::mem::replace(&mut self.runtime, runtime_dir()?);
        close_masters(self.ssh, &old.path().join("ssh"));
        self.old_runtimes.push(old);
        Ok(())
    }

    fn control_dir(&self) -> PathBuf {
        self.runtime.path().join("ssh")
    }

    /// The install request `kapell fleet apply` sends to `host`, built with kapell's own code
    /// (its discovery catalog included: part of the set's hash). `hosts`: the fleet, whose
    /// addresses the catalog lists.
    fn request(&self, host: &str, hosts: &[&Host]) -> Result<Vec<u8>> {
        let set = self.set(host, hosts)?;
        request_of(kapell::fleet::protocol::Body::Install {
            set,
            known: Vec::new(),
            force: true,
            retry: false,
            confirm_within: None,
            health: None,
            same_catalog: false,
        })
    }

    /// What `kapell fleet apply` sends to a host that runs its set: a repair, naming the set.
    fn repair_request(&self, host: &str, hosts: &[&Host]) -> Result<Vec<u8>> {
        let hash = self.set(host, hosts)?.hash;
        request_of(kapell::fleet::protocol::Body::Repair { hash, health: None })
    }

    /// `host`'s set, built with kapell's own code.
    fn set(&self, host: &str, hosts: &[&Host]) -> Result<kapell::fleet::protocol::HostSet> {
        use kapell::fleet::protocol::HostSet;
        let fleet = kapell::fleet::controller::config::load(&self.dir.path().join("fleet.toml"))
            .map_err(|d| anyhow::anyhow!("fleet.toml: {} problems", d.len()))?;
        let search = kapell::validate::UnitSearchPath::from_env();
        let checked = kapell::host::load(self.dir.path(), &[], &search)?;
        let placed = kapell::fleet::controller::placement::place(&fleet, &checked.stacks)
            .map_err(|d| anyhow::anyhow!("placement: {} problems", d.len()))?;
        let ip_of = |address: &str| {
            let host = hosts.iter().find(|h| h.name() == address)?;
            host.address().map(std::net::IpAddr::V4)
        };
        let catalogs = kapell::fleet::controller::catalogs::catalogs(&fleet, &placed, ip_of)
            .map_err(|d| anyhow::anyhow!("catalogs: {} problems", d.len()))?;
        let stacks = placed.get(host).context("host not placed")?;
        let rendered = kapell::render::render_host(stacks, &kapell::render::RenderOptions::default());
        let files = std::sync::Arc::new(kapell::fleet::protocol::files_of(&rendered));
        Ok(HostSet::new(files, catalogs.text, host))
    }
}

impl Drop for Kapell<'_> {
    fn drop(&mut self) {
        close_masters(self.ssh, &self.control_dir());
        for old in &self.old_runtimes {
            close_masters(self.ssh, &old.path().join("ssh"));
        }
    }
}

/// The TIME column of `kapell fleet apply`'s table, for the rows saying `result`.
fn host_times(stdout: &str, result: &str) -> Vec<f64> {
    stdout
        .lines()
        .filter(|l| !l.contains(':') && l.contains(result))
        .filter_map(|l| l.split_whitespace().last()?.strip_suffix('s')?.parse().ok())
        .collect()
}

fn runtime_dir() -> Result<tempfile::TempDir> {
    // Short: the ControlPath (`<dir>/ssh/<40 hex>`) must fit a unix socket path.
    Ok(tempfile::Builder::new().prefix("kb").tempdir_in("/tmp")?)
}

fn kapell_side(ssh: &Ssh, hosts: &[&Host], noop_runs: usize, table: &mut Table) -> Result<String> {
    eprintln!("kapell on {} hosts…", hosts.len());
    const TOOL: &str = TOOLS[1];
    let mut k = Kapell::new(ssh)?;
    k.fleet(hosts)?;
    k.stack(Some("bench"), false)?;
    let cold_request = k.request(hosts[0].name(), hosts)?;
    let (cold, first) = k.timed_apply(hosts, "converged")?;
    table.put(ROWS[0], TOOL, cold);
    check_running(hosts, "bench", None)?;
    let noop: Vec<Sample> =
        (0..noop_runs).map(|_| k.timed_apply(hosts, "up to date").map(|s| s.0)).collect::<Result<_>>()?;
    table.put(ROWS[2], TOOL, median(noop));
    let (noop_last, noop_out) = k.timed_apply(hosts, "up to date")?;
    k.stack(Some("bench"), true)?;
    let (change, _) = k.timed_apply(hosts, "converged")?;
    table.put(ROWS[4], TOOL, change);
    check_running(hosts, "bench", Some(&sleep_arg(CHANGED, true)))?;

    // Where a no-op's time goes, on h01, over kapell's own (warm) master.
    let breakdown = noop_breakdown(&k, hosts, noop_runs, (noop_last, &noop_out))?;

    // Cold again over warm masters: remove the stack (kapell's own removal), then apply.
    k.stack(None, false)?;
    let (removal, _) = k.timed_apply(hosts, "converged")?;
    eprintln!("  kapell: removing 10 services from each host took {:.3}s", removal.took.as_secs_f64());
    k.stack(Some("bench"), false)?;
    let (cold_warm, _) = k.timed_apply(hosts, "converged")?;
    table.put(ROWS[1], TOOL, cold_warm);
    check_running(hosts, "bench", None)?;
    k.fresh_connections()?;
    let (noop_new, _) = k.timed_apply(hosts, "up to date")?;
    table.put(ROWS[3], TOOL, noop_new);

    // Leave the hosts without kapell's units for Ansible.
    k.stack(None, false)?;
    let empty_request = k.request(hosts[0].name(), hosts)?;
    k.apply()?;
    let alone = alone_breakdown(hosts[0], &cold_request, &empty_request, noop_runs)?;
    table.notes.push(format!(
        "kapell: one `ssh … kapell receive` per host per apply (`parallel = 32`); a no-op sends a repair request \
         naming the set by its hash and gets back the state of every unit. Its removal of the 10 services from each of the {} hosts took \
         {:.2} s.",
        hosts.len(),
        removal.took.as_secs_f64()
    ));
    eprintln!("kapell's first apply:\n{first}");
    Ok(breakdown + &alone)
}

/// The receiving side of a cold apply on one host with nothing else going on (no ssh, no other
/// host busy): `kapell receive` installing the 10 services onto an empty set, against the bare
/// loop's remote half (`tar x`, daemon-reload, `systemctl start`).
fn alone_breakdown(host: &Host, cold: &[u8], empty: &[u8], runs: usize) -> Result<String> {
    let piped = |args: &[&str], input: &[u8]| -> Result<Duration> {
        let mut child =
            host.command(args)?.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let start = Instant::now();
        let mut stdin = child.stdin.take().context("stdin")?;
        std::io::Write::write_all(&mut stdin, input)?;
        drop(stdin);
        let out = child.wait_with_output()?;
        let took = start.elapsed();
        ensure!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(took)
    };
    let files = tempfile::tempdir()?;
    let units: Vec<String> = (0..SERVICES).map(|i| format!("bare-svc{i}.service")).collect();
    for (i, unit) in units.iter().enumerate() {
        std::fs::write(files.path().join(unit), unit_text("bare", i, false))?;
    }
    let tar = support::run_ok(Command::new("tar").arg("c").arg("-C").arg(files.path()).args(&units))?.stdout;
    let bare_script =
        format!("tar x -C /etc/systemd/system && systemctl daemon-reload && systemctl start {}", units.join(" "));
    let (mut kapell, mut bare, mut reload) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        kapell.push(piped(&["kapell", "receive"], cold)?);
        piped(&["kapell", "receive"], empty)?;
        bare.push(piped(&["sh", "-c", &bare_script], &tar)?);
        clean(&[host], "bare")?;
        reload.push(piped(&["systemctl", "daemon-reload"], b"")?);
    }
    let med = |mut v: Vec<Duration>| {
        v.sort();
        format!("{:.0} ms", v[v.len() / 2].as_secs_f64() * 1000.0)
    };
    Ok(format!(
        "### The receiving side of a cold apply, one host alone (no ssh, no other host busy; medians of {runs})\n\n\
         | what | time |\n| --- | ---: |\n\
         | `kapell receive`: 10 services (and their target) onto an empty set | {} |\n\
         | bare loop's remote half: `tar x && systemctl daemon-reload && systemctl start` 10 units | {} |\n\
         | `systemctl daemon-reload` alone (part of both) | {} |\n\n",
        med(kapell),
        med(bare),
        med(reload)
    ))
}

/// Times the parts of a no-op on one host: the ssh round trip alone, `kapell receive` over ssh,
/// and `kapell receive` run on the host directly; plus request and reply sizes.
fn noop_breakdown(k: &Kapell, all: &[&Host], runs: usize, noop: (Sample, &str)) -> Result<String> {
    let (host, hosts) = (all[0], all.len());
    let (noop_wall, noop_out) = (noop.0.took, noop.1);
    let request = k.request(host.name(), all)?;
    let repair = k.repair_request(host.name(), all)?;
    let control = format!("ControlPath={}/%C", k.control_dir().display());
    let ssh_cmd = || {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F").arg(k.ssh.config_path());
        cmd.args(["-o", &control, "-o", "ControlMaster=no", "-T", "--", host.name()]);
        cmd
    };
    let time = |f: &mut dyn FnMut() -> Result<usize>| -> Result<(Duration, usize)> {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..runs {
            let start = Instant::now();
            size = f()?;
            times.push(start.elapsed());
        }
        times.sort();
        Ok((times[times.len() / 2], size))
    };
    let piped = |mut cmd: Command, input: &[u8]| -> Result<usize> {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let mut stdin = child.stdin.take().context("stdin")?;
        std::io::Write::write_all(&mut stdin, input)?;
        drop(stdin);
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let error = serde_json::from_slice::<serde_json::Value>(&out.stdout).map(|v| v["error"].is_null());
        ensure!(out.status.success() && error.unwrap_or(true), "{text}{}", String::from_utf8_lossy(&out.stderr));
        Ok(out.stdout.len())
    };
    let (ssh_true, _) = time(&mut || {
        let mut cmd = ssh_cmd();
        cmd.arg("true");
        piped(cmd, b"")
    })?;
    let (ssh_fresh, _) = time(&mut || {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F").arg(k.ssh.config_path());
        cmd.args(["-o", "ControlMaster=no", "-o", "ControlPath=none", "-T", "--", host.name(), "true"]);
        piped(cmd, b"")
    })?;
    // The same over the connection a confirmation makes: kapell's own ssh command line.
    let fleet = kapell::fleet::controller::config::load(&k.dir.path().join("fleet.toml"))
        .map_err(|d| anyhow::anyhow!("fleet.toml: {} problems", d.len()))?;
    let transport =
        kapell::fleet::controller::ssh::Ssh::with_control_dir(&fleet.defaults, k.runtime.path().join("bench-ssh"))?;
    let (ssh_confirmation, _) = time(&mut || {
        let mut cmd = transport.command(host.name(), true);
        cmd.arg("true");
        piped(cmd, b"")
    })?;
    let (ssh_g, _) = time(&mut || {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F").arg(k.ssh.config_path()).args(["-G", "--", host.name()]);
        piped(cmd, b"")
    })?;
    let generator_alone = "d=$(mktemp -d) && /usr/lib/systemd/system-generators/kapell-generator \"$d\" \"$d\" \"$d\"; \
                           rc=$?; rm -rf \"$d\"; exit $rc";
    let (generator, _) = time(&mut || piped(host.command(&["sh", "-c", generator_alone])?, b""))?;
    let (over_ssh, reply) = time(&mut || {
        let mut cmd = ssh_cmd();
        cmd.args(["kapell", "receive"]);
        piped(cmd, &request)
    })?;
    let (on_peer, _) = time(&mut || piped(host.command(&["kapell", "receive"])?, &request))?;
    let (repair_over_ssh, repair_reply) = time(&mut || {
        let mut cmd = ssh_cmd();
        cmd.args(["kapell", "receive"]);
        piped(cmd, &repair)
    })?;
    let (repair_on_peer, _) = time(&mut || piped(host.command(&["kapell", "receive"])?, &repair))?;
    let (start_only, _) = time(&mut || piped(host.command(&["kapell", "--version"])?, b""))?;
    let status = br#"{"version":1,"request":"status"}"#;
    let (status_peer, _) = time(&mut || piped(host.command(&["kapell", "receive"])?, status))?;
    let (reload, _) = time(&mut || piped(host.command(&["systemctl", "daemon-reload"])?, b"").or(Ok(0)))?;
    let host_times = host_times(noop_out, "up to date");
    let slowest = host_times.iter().copied().fold(0.0, f64::max);
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let mut s = String::from("### Where a kapell no-op's time goes (one host, medians)\n\n");
    s.push_str("| part | time |\n| --- | ---: |\n");
    s.push_str(&format!("| `ssh HOST true` over kapell's warm master | {} |\n", ms(ssh_true)));
    s.push_str(&format!("| `ssh HOST true` over a new connection, ssh's own key exchange | {} |\n", ms(ssh_fresh)));
    s.push_str(&format!(
        "| `ssh HOST true` over a new connection as a confirmation makes it (the fastest key exchange first) | {} |\n",
        ms(ssh_confirmation)
    ));
    s.push_str(&format!("| `ssh -G HOST` (no connection: ssh's configuration read) | {} |\n", ms(ssh_g)));
    s.push_str(&format!(
        "| `ssh HOST kapell receive` (repair request: what a no-op sends) over the warm master | {} |\n",
        ms(repair_over_ssh)
    ));
    s.push_str(&format!("| `kapell receive` (repair request) on the peer, no ssh | {} |\n", ms(repair_on_peer)));
    s.push_str(&format!(
        "| `ssh HOST kapell receive` (no-op install, the set sent) over the warm master | {} |\n",
        ms(over_ssh)
    ));
    s.push_str(&format!("| `kapell receive` (no-op install) on the peer, no ssh | {} |\n", ms(on_peer)));
    s.push_str(&format!("| `kapell receive` (status request) on the peer, no ssh | {} |\n", ms(status_peer)));
    s.push_str(&format!("| `kapell --version` on the peer (process start) | {} |\n", ms(start_only)));
    s.push_str(&format!("| `kapell fleet apply` no-op on all {} hosts at once: wall | {} |\n", hosts, ms(noop_wall)));
    s.push_str(&format!(
        "| … of which the slowest host's request, as kapell reported it | {:.0} ms |\n",
        slowest * 1000.0
    ));
    s.push_str(&format!(
        "| … so the controller's own work (read, render, hash, print) is at most | {:.0} ms |\n",
        (noop_wall.as_secs_f64() - slowest) * 1000.0
    ));
    s.push_str(&format!(
        "| for scale: `systemctl daemon-reload` on the peer (runs kapell's generator; a no-op skips it) | {} |\n",
        ms(reload)
    ));
    s.push_str(&format!(
        "| kapell's generator alone on the peer ({SERVICES} received services; part of every daemon-reload) | {} |\n",
        ms(generator)
    ));
    s.push_str(&format!(
        "\nA no-op sends a repair request of {} bytes (the set named by its hash; with the fleet's health word, as \
         `fleet apply` sends it, a few hundred more) and gets a reply of {} bytes (the hashes and every unit's state). \
         An install of the same set is {} bytes (the {SERVICES} services and their target, with hashes, and the \
         fleet's catalog), its reply {} bytes; only a status reply carries the files.\n\n",
        repair.len(),
        repair_reply,
        request.len(),
        reply
    ));
    Ok(s)
}

fn request_of(body: kapell::fleet::protocol::Body) -> Result<Vec<u8>> {
    use kapell::fleet::protocol::{Request, VERSION};
    Ok(serde_json::to_vec(&Request { version: VERSION, body })?)
}

// ---------------------------------------------------------------------------------------------
// (b) Ansible

/// Installs ansible-core into a venv once; returns the venv's bin dir.
fn ansible_venv() -> Result<PathBuf> {
    let venv = Path::new(WORK).join("ansible-venv");
    let bin = venv.join("bin");
    if !bin.join("ansible-playbook").is_file() {
        eprintln!("installing ansible-core from PyPI into {}…", venv.display());
        support::run_ok(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        support::run_ok(Command::new(bin.join("pip")).args(["install", "--quiet", "ansible-core"]))?;
    }
    Ok(bin)
}

/// What `apt-get install python3` adds to the rig's base tree (Ansible's modules run in Python on
/// the managed host), built once: an overlay on the base, apt in a chroot, the upper dir kept.
fn python_root() -> Result<PathBuf> {
    let root = Path::new(WORK).join("python-root");
    if root.join("usr/bin/python3").exists() {
        return Ok(root);
    }
    let base = support::base_tree()?;
    eprintln!("building {} (python3 for the Ansible hosts)…", root.display());
    let script = format!(
        r#"set -eu
work={work}/python-build
rm -rf "$work" {root}
mkdir -p "$work/upper" "$work/work" "$work/merged"
mount -t overlay overlay -o lowerdir={base},upperdir="$work/upper",workdir="$work/work" "$work/merged"
trap 'umount "$work/merged/proc" 2>/dev/null; umount "$work/merged"; rm -rf "$work"' EXIT
cp /etc/resolv.conf "$work/merged/etc/resolv.conf"
mount -t proc proc "$work/merged/proc"
chroot "$work/merged" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
  sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 >/dev/null'
umount "$work/merged/proc"
umount "$work/merged"
trap 'rm -rf "$work"' EXIT
cd "$work/upper"
rm -rf var/lib/apt/lists var/cache/apt var/log etc/resolv.conf
find . -type c -delete
mv "$work/upper" {root}
"#,
        work = WORK,
        root = root.display(),
        base = base.display()
    );
    support::run_ok(Command::new("bash").arg("-c").arg(script))?;
    Ok(root)
}

struct Ansible<'a> {
    ssh: &'a Ssh,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Ansible<'_> {
    fn write(&self, hosts: &[&Host], changed: bool) -> Result<()> {
        let dir = self.dir.path();
        std::fs::create_dir_all(dir.join("units"))?;
        std::fs::create_dir_all(dir.join("cp"))?;
        let units: Vec<String> = (0..SERVICES).map(|i| format!("ans-svc{i}.service")).collect();
        for (i, unit) in units.iter().enumerate() {
            std::fs::write(dir.join("units").join(unit), unit_text("ans", i, changed))?;
        }
        let names: Vec<&str> = hosts.iter().map(|h| h.name()).collect();
        std::fs::write(dir.join("inventory"), format!("[bench]\n{}\n", names.join("\n")))?;
        std::fs::write(
            dir.join("ansible.cfg"),
            format!(
                "[defaults]\nforks = 32\nhost_key_checking = True\ngathering = explicit\n\
                 interpreter_python = /usr/bin/python3\nretry_files_enabled = False\n\n\
                 [ssh_connection]\npipelining = True\n\
                 ssh_args = -F {} -o ControlMaster=auto -o ControlPersist=120s\ncontrol_path_dir = {}\n",
                self.ssh.config_path().display(),
                dir.join("cp").display()
            ),
        )?;
        let list = units.iter().map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(", ");
        std::fs::write(
            dir.join("playbook.yml"),
            format!(
                r#"- hosts: bench
  gather_facts: false
  vars:
    units: [{list}]
  tasks:
    - name: unit files
      ansible.builtin.copy:
        src: "units/{{{{ item }}}}"
        dest: "/etc/systemd/system/{{{{ item }}}}"
        mode: "0644"
      loop: "{{{{ units }}}}"
      register: copied
    - name: daemon-reload
      ansible.builtin.systemd:
        daemon_reload: true
      when: copied.changed
    - name: started (restarted where the file changed)
      ansible.builtin.systemd:
        name: "{{{{ item.item }}}}"
        state: "{{{{ 'restarted' if item.changed else 'started' }}}}"
      loop: "{{{{ copied.results }}}}"
      loop_control:
        label: "{{{{ item.item }}}}"
"#
            ),
        )?;
        Ok(())
    }

    fn run(&self) -> Result<()> {
        let dir = self.dir.path();
        let out = Command::new(self.bin.join("ansible-playbook"))
            .current_dir(dir)
            .env("ANSIBLE_CONFIG", dir.join("ansible.cfg"))
            .env("ANSIBLE_HOME", dir.join("home"))
            .env("ANSIBLE_LOCAL_TEMP", dir.join("tmp"))
            .args(["-i", "inventory", "playbook.yml"])
            .stdin(Stdio::null())
            .output()?;
        ensure!(
            out.status.success(),
            "ansible-playbook failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

fn ansible_side(ssh: &Ssh, hosts: &[&Host], bin: &Path, table: &mut Table) -> Result<()> {
    eprintln!("Ansible on {} hosts…", hosts.len());
    const TOOL: &str = TOOLS[2];
    let a = Ansible { ssh, dir: tempfile::tempdir()?, bin: bin.to_owned() };
    let result = (|| -> Result<()> {
        a.write(hosts, false)?;
        table.put(ROWS[0], TOOL, measure(hosts, || a.run())?);
        check_running(hosts, "ans", None)?;
        table.put(ROWS[2], TOOL, measure(hosts, || a.run())?);
        a.write(hosts, true)?;
        table.put(ROWS[4], TOOL, measure(hosts, || a.run())?);
        check_running(hosts, "ans", Some(&sleep_arg(CHANGED, true)))?;
        Ok(())
    })();
    close_masters(ssh, &a.dir.path().join("cp"));
    let version = Command::new(bin.join("ansible")).arg("--version").output().ok();
    let version = version.map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string());
    table.notes.push(format!(
        "Ansible: {} (pipelining, ControlPersist, forks = 32, no fact gathering); its first task opens the \
         master connections, so its \"cold\" already reuses them from the second task on.",
        version.unwrap_or_default()
    ));
    result
}

// ---------------------------------------------------------------------------------------------
// The curve

/// What the controller side of one `kapell fleet apply` cost.
#[derive(Default)]
struct ControllerCost {
    /// CPU time of kapell, its ssh clients and the ssh masters.
    cpu: Duration,
    /// Peak RSS of the kapell process (VmHWM), KiB.
    kapell_rss_kib: u64,
    /// Most file descriptors kapell had open at once.
    fds: usize,
    /// Most ssh processes at once under kapell, and their summed RSS then (KiB).
    ssh_processes: usize,
    ssh_rss_kib: u64,
}

impl ControllerCost {
    /// One look at the controller process `pid` and its children.
    fn sample(&mut self, pid: u32) {
        let status = |pid: &str, key: &str| -> u64 {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                })
                .unwrap_or(0)
        };
        let me = pid.to_string();
        self.kapell_rss_kib = self.kapell_rss_kib.max(status(&me, "VmHWM:"));
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        self.fds = self.fds.max(fds);
        let children: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|c| c.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect();
        if children.len() > self.ssh_processes {
            self.ssh_processes = children.len();
            self.ssh_rss_kib = children.iter().map(|c| status(c, "VmRSS:")).sum();
        }
    }
}

/// CPU time (user + system) of every child of this process waited for so far.
fn children_cpu() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    let to = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(Duration::ZERO, |u| to(u.user_time()) + to(u.system_time()))
}

/// Waits for the orphans this process adopted as the subreaper (ssh masters that `-O exit`
/// ended), so their CPU time is in [`children_cpu`]; gives up after a second.
fn reap_orphans() {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        match waitpid(None::<nix::unistd::Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(10)),
            Ok(_) => {}
            Err(_) => return, // no children left
        }
    }
}

fn curve(ssh: &Ssh, hosts: &[Host]) -> Result<String> {
    let mut s = String::from(
        "### kapell: cold apply over more hosts (`parallel = 32`, new connections, 10 services each)\n\n\
         | hosts | cold apply | wall ÷ hosts | fastest / slowest host | peer CPU, all hosts | machine busy | no-op \
         (warm master) | removal (warm master) |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut costs = Vec::new();
    for &n in CURVE.iter().filter(|&&n| n <= hosts.len()) {
        eprintln!("kapell on {n} hosts…");
        let subset: Vec<&Host> = hosts.iter().take(n).collect();
        let k = Kapell::new(ssh)?;
        k.fleet(&subset)?;
        let stack = format!("curve{n}");
        k.stack(Some(&stack), false)?;
        let (cold, cold_out) = k.timed_apply(&subset, "converged")?;
        let times = host_times(&cold_out, "converged");

        let fastest = times.iter().copied().fold(f64::MAX, f64::min);
        let slowest = times.iter().copied().fold(0.0, f64::max);
        check_running(&subset, &stack, None)?;
        let (noop, _) = k.timed_apply(&subset, "up to date")?;
        k.stack(None, false)?;
        let (removal, _) = k.timed_apply(&subset, "converged")?;
        // The controller's own cost, on a second cold apply (another controller, another stack,
        // new connections; the hosts run the empty set the removal left, which any controller
        // may replace), so the timing above stays free of the watcher.
        let k2 = Kapell::new(ssh)?;
        k2.fleet(&subset)?;
        k2.stack(Some(&format!("cost{n}")), false)?;
        let (cost_out, cost) = k2.apply_watched()?;
        ensure!(host_times(&cost_out, "converged").len() >= n, "not every host converged:\n{cost_out}");
        k2.stack(None, false)?;
        k2.apply()?;
        costs.push((n, cost));
        let secs = cold.took.as_secs_f64();
        eprintln!("  {n} hosts: cold {secs:.3}s, no-op {:.3}s", noop.took.as_secs_f64());
        s.push_str(&format!(
            "| {n} | {secs:.2} s | {:.0} ms | {fastest:.2} s / {slowest:.2} s | {} | {} | {:.2} s | {:.2} s |\n",
            secs * 1000.0 / n as f64,
            cold.peer_cpu.map_or("—".into(), |c| format!("{:.1} s", c.as_secs_f64() * n as f64)),
            cold.busy.map_or("—".into(), |b| format!("{:.0}%", b * 100.0)),
            noop.took.as_secs_f64(),
            removal.took.as_secs_f64()
        ));
    }
    s.push_str(
        "\n### The controller's cost per host in flight (cold apply, new connections)\n\n\
         | hosts | controller CPU (kapell + ssh) | per host | kapell peak RSS | ssh processes at once | their RSS | \
         kapell's open fds (peak) |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (n, c) in &costs {
        s.push_str(&format!(
            "| {n} | {:.2} s | {:.1} ms | {:.1} MiB | {} | {:.1} MiB | {} |\n",
            c.cpu.as_secs_f64(),
            c.cpu.as_secs_f64() * 1000.0 / *n as f64,
            c.kapell_rss_kib as f64 / 1024.0,
            c.ssh_processes,
            c.ssh_rss_kib as f64 / 1024.0,
            c.fds
        ));
    }
    s.push('\n');
    if CURVE.iter().any(|&n| n > hosts.len()) {
        s.push_str(&format!("(Only {} hosts were booted: KAPELL_BENCH_HOSTS.)\n\n", hosts.len()));
    }
    Ok(s)
}
