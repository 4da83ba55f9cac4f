//! The fleet, pushed (SPEC §8): `kapell fleet plan/apply/status` on this machine as the
//! controller, `kapell receive` on three booted systemd hosts (nspawn) with real sshd.
//! Needs root and the packages in TESTENV.md; nothing is mocked, nothing is skipped.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use support::{Footprint, Host, Net, Ssh};

const KAPELL: &str = env!("CARGO_BIN_EXE_kapell");

/// A controller: a config directory with `fleet.toml` and stacks, and its own runtime directory
/// (kapell's ControlMaster sockets), whose master connections are closed on drop.
struct Controller<'a> {
    dir: tempfile::TempDir,
    runtime: tempfile::TempDir,
    ssh: &'a Ssh,
    hosts: Vec<String>,
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} in {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.took, self.stdout, self.stderr
        )
    }
}

impl<'a> Controller<'a> {
    /// `hosts`: (name, labels as TOML inline table).
    fn new(ssh: &'a Ssh, hosts: &[(&str, &str)]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let runtime = tempfile::Builder::new().prefix("kr").tempdir_in("/tmp")?;
        // Short healthy times keep rolling updates quick in tests.
        let mut fleet = format!(
            "[defaults]\nssh_config = \"{}\"\nparallel = 16\n\n[rollout]\nmin_healthy_time = \"1s\"\n\n",
            ssh.config_path().display()
        );
        for (name, labels) in hosts {
            fleet.push_str(&format!("[hosts.{name}]\naddress = \"{name}\"\nlabels = {labels}\n\n"));
        }
        std::fs::write(dir.path().join("fleet.toml"), fleet)?;
        Ok(Controller { dir, runtime, ssh, hosts: hosts.iter().map(|(n, _)| n.to_string()).collect() })
    }

    fn write(&self, name: &str, text: &str) -> Result<()> {
        std::fs::write(self.dir.path().join(name), text).with_context(|| format!("cannot write {name}"))
    }

    fn kapell(&self, args: &[&str]) -> Result<Run> {
        let start = Instant::now();
        let out = self.command(args).output().context("cannot run kapell")?;
        Ok(run_of(out, start.elapsed()))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(KAPELL);
        cmd.env("KAPELL_CONFIG_DIR", self.dir.path())
            .env("KAPELL_RUNTIME_DIR", self.runtime.path())
            .env("KAPELL_STATE_DIR", self.runtime.path().join("state"))
            .args(args);
        cmd.stdin(Stdio::null());
        cmd
    }

    fn expect(&self, args: &[&str], code: i32) -> Result<Run> {
        let run = self.kapell(args)?;
        ensure!(run.code == Some(code), "`kapell {}` should exit {code}:\n{run}", args.join(" "));
        Ok(run)
    }

    /// The desired set hash of every host, from `fleet plan --json`.
    fn desired(&self) -> Result<BTreeMap<String, String>> {
        let plan = self.kapell(&["fleet", "plan", "--json"])?;
        let json: serde_json::Value = serde_json::from_str(&plan.stdout).with_context(|| format!("{plan}"))?;
        let mut out = BTreeMap::new();
        for host in json.as_array().context("plan is an array")? {
            let name = host["host"].as_str().unwrap_or_default().to_string();
            out.insert(name, host["desired"].as_str().unwrap_or_default().to_string());
        }
        Ok(out)
    }
}

impl Drop for Controller<'_> {
    fn drop(&mut self) {
        // Close kapell's master connections (ControlPersist) to our hosts.
        for host in &self.hosts {
            let _ = Command::new("ssh")
                .arg("-F")
                .arg(self.ssh.config_path())
                .arg("-o")
                .arg(format!("ControlPath={}/ssh/%C", self.runtime.path().display()))
                .args(["-O", "exit", host])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn run_of(out: Output, took: Duration) -> Run {
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took,
    }
}

/// Three hosts on a private net with sshd and kapell: web1, web2 (role=web), db1 (role=db).
fn boot_fleet(net: &Net, ssh: &Ssh) -> Result<Vec<Host>> {
    let mut hosts = vec![
        Host::builder().name("web1").net(net, 11).ssh(ssh).kapell(KAPELL).start()?,
        Host::builder().name("web2").net(net, 12).ssh(ssh).kapell(KAPELL).start()?,
        Host::builder().name("db1").net(net, 13).ssh(ssh).kapell(KAPELL).start()?,
    ];
    for host in &mut hosts {
        host.wait_running()?;
        host.wait_ssh()?;
    }
    Ok(hosts)
}

const FLEET_HOSTS: &[(&str, &str)] =
    &[("web1", "{ role = \"web\" }"), ("web2", "{ role = \"web\" }"), ("db1", "{ role = \"db\" }")];

/// `shop.web` on role=web, `data.db` on db1, `agent.node` everywhere (or where `agent_hosts` says).
fn stacks(c: &Controller, web_arg: &str, agent_hosts: Option<&str>) -> Result<()> {
    c.write(
        "shop.toml",
        &format!(
            "[services.web]\nexec = [\"/bin/sleep\", \"{web_arg}\"]\nplacement = {{ labels = {{ role = \"web\" }} }}\n\n\
             [services.cache]\nexec = [\"/bin/sleep\", \"7000001\"]\nplacement = {{ labels = {{ role = \"web\" }} }}\n"
        ),
    )?;
    c.write("data.toml", "[services.db]\nexec = [\"/bin/sleep\", \"7000002\"]\nplacement = { hosts = [\"db1\"] }\n")?;
    let placement = match agent_hosts {
        Some(hosts) => format!("{{ hosts = {hosts} }}"),
        None => "{ global = true }".to_string(),
    };
    c.write("agent.toml", &format!("[services.node]\nexec = [\"/bin/sleep\", \"7000003\"]\nplacement = {placement}\n"))
}

fn prop(host: &Host, unit: &str, prop: &str) -> Result<String> {
    Ok(host.systemctl_ok(&["show", "-p", prop, "--value", unit])?.trim().to_string())
}

/// MainPID of each unit, each of which must be active.
fn pids(host: &Host, units: &[&str]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for unit in units {
        let state = prop(host, unit, "ActiveState")?;
        ensure!(state == "active", "{}: {unit} is {state}", host.name());
        out.insert(unit.to_string(), prop(host, unit, "MainPID")?);
    }
    Ok(out)
}

const WEB_UNITS: &[&str] =
    &["agent.target", "shop.target", "shop-web.service", "shop-cache.service", "agent-node.service"];
const DB_UNITS: &[&str] = &["agent.target", "data.target", "data-db.service", "agent-node.service"];

fn units_of(host: &Host) -> &'static [&'static str] {
    if host.name() == "db1" { DB_UNITS } else { WEB_UNITS }
}

/// The life of a fleet: plan, apply, a no-op, one change, a placement change, status, a host
/// powered off during an apply, and a reboot that brings the received set back by itself.
#[test]
fn fleet_apply_converges_changes_only_what_changed_and_survives_a_dead_host() -> Result<()> {
    let net = Net::new()?;
    let ssh = Ssh::new()?;
    let mut hosts = boot_fleet(&net, &ssh)?;
    let footprint = hosts.iter().fold(Footprint::new().net(&net), Footprint::host);
    let c = Controller::new(&ssh, FLEET_HOSTS)?;
    stacks(&c, "7000000", None)?;

    let plan = c.expect(&["fleet", "plan"], 0)?;
    ensure!(plan.stdout.contains("web1 (web1): 5 to add, 0 to change, 0 to remove"), "{plan}");
    ensure!(plan.stdout.contains("db1 (db1): 4 to add"), "{plan}");
    ensure!(plan.stdout.contains("add     shop-web.service"), "{plan}");

    eprintln!("$ kapell fleet plan\n{}", plan.stdout);
    let first = c.expect(&["fleet", "apply"], 0)?;
    eprintln!("$ kapell fleet apply\n{}", first.stdout);
    for host in &hosts {
        ensure!(first.stdout.lines().any(|l| l.starts_with(host.name()) && l.contains("converged")), "{first}");
    }
    let before: Vec<_> = hosts.iter().map(|h| pids(h, units_of(h))).collect::<Result<_>>()?;
    ensure!(prop(&hosts[2], "shop-web.service", "LoadState")? == "not-found", "db1 must not run shop");
    eprintln!("timing: fleet apply, 3 hosts cold {:?}", first.took);

    let noop = c.expect(&["fleet", "apply"], 0)?;
    ensure!(noop.stdout.matches("up to date").count() >= 3, "{noop}");
    let after: Vec<_> = hosts.iter().map(|h| pids(h, units_of(h))).collect::<Result<_>>()?;
    ensure!(before == after, "a no-op apply restarted units: {before:?} -> {after:?}");
    eprintln!("timing: fleet apply, 3 hosts no-op {:?}", noop.took);

    // One service changed: restarted on web1 and web2 only.
    stacks(&c, "7000099", None)?;
    let plan = c.expect(&["fleet", "plan"], 0)?;
    ensure!(
        plan.stdout.contains("change  shop-web.service") && plan.stdout.contains("+ExecStart=/bin/sleep 7000099"),
        "{plan}"
    );
    ensure!(plan.stdout.contains("db1 (db1): up to date"), "{plan}");
    let change = c.expect(&["fleet", "apply"], 0)?;
    eprintln!("$ kapell fleet plan (one service changed)\n{}\n$ kapell fleet apply\n{}", plan.stdout, change.stdout);
    let now: Vec<_> = hosts.iter().map(|h| pids(h, units_of(h))).collect::<Result<_>>()?;
    for (i, host) in hosts.iter().enumerate() {
        for unit in units_of(host).iter().filter(|u| u.ends_with(".service")) {
            let moved = before[i][*unit] != now[i][*unit];
            ensure!(moved == (*unit == "shop-web.service"), "{}: {unit} restarted: {moved}\n{change}", host.name());
        }
    }

    // Placement narrowed: agent leaves web2 only.
    stacks(&c, "7000099", Some("[\"web1\", \"db1\"]"))?;
    let narrowed = c.expect(&["fleet", "apply"], 0)?;
    ensure!(prop(&hosts[1], "agent-node.service", "LoadState")? == "not-found", "{narrowed}");
    ensure!(prop(&hosts[1], "agent-node.service", "ActiveState")? == "inactive", "{narrowed}");
    ensure!(
        pids(&hosts[0], &["agent-node.service"])?
            == BTreeMap::from([("agent-node.service".to_string(), now[0]["agent-node.service"].clone())])
    );

    // Status: every host's services, as JSON and as a table.
    let status = c.expect(&["fleet", "status", "--json"], 0)?;
    let json: serde_json::Value = serde_json::from_str(&status.stdout)?;
    let web1 =
        json["hosts"].as_array().and_then(|a| a.iter().find(|h| h["host"] == "web1")).context("web1 in status")?;
    ensure!(web1["drifted"] == false, "{status}");
    ensure!(
        web1["units"].as_array().is_some_and(|u| u.iter().any(|u| u["service"] == "web" && u["active"] == "active"))
    );
    let table = c.expect(&["fleet", "status"], 0)?;
    eprintln!("$ kapell fleet status\n{}", table.stdout);
    ensure!(table.stdout.lines().next().is_some_and(|l| l.starts_with("HOST") && l.contains("GOAL")), "{table}");

    // A set edited by hand on a peer is one this controller did not push: reported, left alone,
    // and replaced only with --force.
    let cache = hosts[1].root().join("etc/kapell/received/current/shop-cache.service");
    let text = std::fs::read_to_string(&cache)?;
    std::fs::write(&cache, format!("{text}# edited on web2 by hand\n"))?;
    let refused = c.expect(&["fleet", "apply"], 3)?;
    ensure!(
        refused.stdout.contains("web2: this host runs set") && refused.stdout.contains("did not push"),
        "{refused}"
    );
    ensure!(std::fs::read_to_string(&cache)?.contains("edited on web2 by hand"), "the edited set was overwritten");
    let forced = c.expect(&["fleet", "apply", "--force"], 0)?;
    ensure!(!std::fs::read_to_string(&cache)?.contains("by hand"), "--force did not replace the set:\n{forced}");

    // On the peer, `kapell status` shows the received services, marked as the fleet's.
    let peer = hosts[0].exec_ok(&["kapell", "status"])?;
    ensure!(
        peer.lines().any(|l| l.starts_with("shop (fleet)") && l.contains("shop-web.service") && l.contains("active")),
        "{peer}"
    );

    // web2 powered off during an apply: the others converge in their own time, the report
    // names web2 and why, the exit status is 3; once back, the next apply converges it.
    hosts[1].poweroff()?;
    stacks(&c, "7000123", Some("[\"web1\", \"db1\"]"))?;
    let partial = c.expect(&["fleet", "apply"], 3)?;
    let row = partial.stdout.lines().find(|l| l.starts_with("web2 ") && l.contains("FAILED")).context("web2 row")?;
    ensure!(partial.stdout.contains("web2: cannot reach web2 over ssh"), "{row}\n{partial}");
    ensure!(partial.stdout.lines().any(|l| l.starts_with("web1 ") && l.contains("converged")), "{partial}");
    ensure!(partial.took < Duration::from_secs(15), "a dead host slowed the apply down: {partial}");
    hosts[1].start_again()?;
    hosts[1].wait_ssh()?;
    let back = c.expect(&["fleet", "apply"], 0)?;
    ensure!(back.stdout.lines().any(|l| l.starts_with("web2 ") && l.contains("converged")), "{back}");
    ensure!(prop(&hosts[1], "shop-web.service", "ExecStart")?.contains("7000123"), "web2 runs the old web");

    // A reboot brings the received set up with no controller involved.
    hosts[0].reboot()?;
    pids(&hosts[0], &["shop-web.service", "shop-cache.service", "agent-node.service"])?;
    ensure!(hosts[0].exec_ok(&["readlink", "/etc/kapell/received/current"])?.starts_with('g'));

    drop(c);
    drop(hosts);
    drop(net);
    footprint.assert_gone()
}

/// Keys: an unknown and a changed host key are refused with a clear message; the forced-command
/// pin lets `kapell receive` through and nothing else; a set that would shadow `ssh.service` is
/// refused by the peer and nothing changes.
#[test]
fn host_keys_are_verified_and_the_pinned_key_runs_only_kapell_receive() -> Result<()> {
    let net = Net::new()?;
    let ssh = Ssh::new()?;
    let hosts = boot_fleet(&net, &ssh)?;
    let footprint = hosts.iter().fold(Footprint::new().net(&net), Footprint::host);
    let c = Controller::new(&ssh, FLEET_HOSTS)?;
    stacks(&c, "7000000", None)?;
    c.expect(&["fleet", "apply"], 0)?;

    // Unknown key: a known_hosts without web1.
    let known = std::fs::read_to_string(ssh.known_hosts_path())?;
    let without: String = known.lines().filter(|l| !l.contains("web1")).map(|l| format!("{l}\n")).collect();
    let unknown = c.dir.path().join("known_unknown");
    std::fs::write(&unknown, without)?;
    let refused = with_known_hosts(&c, &ssh, &unknown)?;
    ensure!(refused.code == Some(3), "{refused}");
    ensure!(refused.stdout.contains("the host key of web1 is not in known_hosts: refusing to connect"), "{refused}");

    // Changed key: web1's entry replaced by another key.
    let other = c.dir.path().join("other_key");
    support::run_ok(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&other))?;
    let other_pub = std::fs::read_to_string(other.with_extension("pub"))?;
    let fields: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    let changed: String = known
        .lines()
        .map(|l| {
            if l.contains("web1") {
                format!("{} {}\n", l.split_whitespace().next().unwrap_or(""), fields.join(" "))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let changed_path = c.dir.path().join("known_changed");
    std::fs::write(&changed_path, changed)?;
    let refused = with_known_hosts(&c, &ssh, &changed_path)?;
    ensure!(refused.code == Some(3), "{refused}");
    ensure!(refused.stdout.contains("the host key of web1 has CHANGED"), "{refused}");
    // The other hosts are not held up by web1's refusal.
    ensure!(refused.stdout.lines().any(|l| l.starts_with("db1 ") && !l.contains("FAILED")), "{refused}");

    // Without the pin, the same key may forward ports (so the refusal below is the pin's doing).
    let open =
        support::run(ssh.command("db1").args(["-o", "ControlMaster=no", "-W", "127.0.0.1:22"]).stdin(Stdio::null()))?;
    ensure!(String::from_utf8_lossy(&open.stdout).starts_with("SSH-2.0"), "forwarding before the pin failed");

    // The pin: db1 accepts our key only for `kapell receive`.
    let pubkey = std::fs::read_to_string(ssh.key_path().with_extension("pub"))?;
    let pinned = format!("restrict,command=\"kapell receive\" {pubkey}");
    std::fs::write(hosts[2].root().join("root/.ssh/authorized_keys"), pinned)?;
    let sneaky =
        support::run(ssh.command("db1").args(["-o", "ControlMaster=no", "cat", "/etc/hostname"]).stdin(Stdio::null()))?;
    let said = String::from_utf8_lossy(&sneaky.stdout);
    ensure!(!said.contains("db1\n") || said.contains("error"), "the pinned key ran cat: {said}");
    ensure!(said.contains("this key may only run `kapell receive`"), "{said}");
    let forward =
        support::run(ssh.command("db1").args(["-o", "ControlMaster=no", "-W", "127.0.0.1:22"]).stdin(Stdio::null()))?;
    ensure!(!forward.status.success(), "port forwarding got through the pin");
    let said = String::from_utf8_lossy(&forward.stderr);
    ensure!(
        said.contains("prohibited") || said.contains("forwarding failed"),
        "{}",
        String::from_utf8_lossy(&forward.stderr)
    );
    // kapell's own requests still work through the pin.
    stacks(&c, "7000001", None)?;
    c.expect(&["fleet", "apply", "--on", "db1"], 0)?;

    // A set that would shadow ssh.service: refused, nothing changes.
    let unit = "[Unit]\nX-Kapell-Stack=evil\nX-Kapell-Service=ssh\n[Service]\nExecStart=/bin/true\n";
    let sum = sha256_hex(unit.as_bytes());
    let mut set =
        serde_json::json!({ "files": { "ssh.service": { "kind": "unit", "text": unit, "sha256": sum } }, "hash": "" });
    let hash =
        kapell::fleet::protocol::HostSet { files: serde_json::from_value(set["files"].clone())?, hash: String::new() }
            .compute_hash();
    set["hash"] = serde_json::Value::String(hash);
    let request = serde_json::json!({ "version": 1, "request": "install", "set": set }).to_string();
    let before = hosts[0].exec_ok(&["readlink", "/etc/kapell/received/current"])?;
    let mut child = ssh
        .command("web1")
        .args(["-o", "ControlMaster=no", "kapell", "receive"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, request.as_bytes())?;
    let out = child.wait_with_output()?;
    let reply = String::from_utf8_lossy(&out.stdout);
    ensure!(
        reply.contains("ssh.service would shadow /lib/systemd/system/ssh.service")
            || reply.contains("ssh.service would shadow /usr/lib/systemd/system/ssh.service"),
        "{reply}"
    );
    ensure!(hosts[0].exec_ok(&["readlink", "/etc/kapell/received/current"])? == before, "the current set changed");
    ensure!(prop(&hosts[0], "ssh.service", "ActiveState")? == "active", "sshd was touched");

    drop(c);
    drop(hosts);
    drop(net);
    footprint.assert_gone()
}

/// `kapell fleet apply` with a known_hosts of its own and a fresh runtime dir (no master
/// connection to reuse, so the key is checked).
fn with_known_hosts(c: &Controller, ssh: &Ssh, known: &Path) -> Result<Run> {
    let dir = tempfile::tempdir()?;
    let fleet = std::fs::read_to_string(c.dir.path().join("fleet.toml"))?
        .replace("[defaults]\n", &format!("[defaults]\nknown_hosts = \"{}\"\n", known.display()));
    std::fs::write(dir.path().join("fleet.toml"), fleet)?;
    for entry in std::fs::read_dir(c.dir.path())? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".toml") && name != "fleet.toml" {
            std::fs::copy(entry.path(), dir.path().join(&name))?;
        }
    }
    let runtime = tempfile::Builder::new().prefix("kr").tempdir_in("/tmp")?;
    // The test ssh config names its own known_hosts; ours must win, so drop that line.
    let config = std::fs::read_to_string(ssh.config_path())?
        .lines()
        .filter(|l| !l.contains("UserKnownHostsFile"))
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    let config_path = dir.path().join("ssh_config");
    std::fs::write(&config_path, config)?;
    let fleet = std::fs::read_to_string(dir.path().join("fleet.toml"))?
        .replace(&ssh.config_path().display().to_string(), &config_path.display().to_string());
    std::fs::write(dir.path().join("fleet.toml"), fleet)?;
    let start = Instant::now();
    let out = Command::new(KAPELL)
        .env("KAPELL_CONFIG_DIR", dir.path())
        .env("KAPELL_RUNTIME_DIR", runtime.path())
        .env("KAPELL_STATE_DIR", c.runtime.path().join("state"))
        .args(["fleet", "apply"])
        .stdin(Stdio::null())
        .output()?;
    let run = run_of(out, start.elapsed());
    for host in ["web1", "web2", "db1"] {
        let _ = Command::new("ssh")
            .arg("-F")
            .arg(&config_path)
            .arg("-o")
            .arg(format!("ControlPath={}/ssh/%C", runtime.path().display()))
            .args(["-O", "exit", host])
            .stderr(Stdio::null())
            .status();
    }
    Ok(run)
}

fn sha256_hex(bytes: &[u8]) -> String {
    kapell::fleet::protocol::sha256(bytes)
}

/// The pusher and the peers' `kapell receive` killed with SIGKILL at random moments, 50 times:
/// every peer always holds a complete old or new set (its files hash to one of the sets pushed),
/// and the next apply converges every host.
#[test]
fn killed_pushes_never_leave_a_mixed_set() -> Result<()> {
    let net = Net::new()?;
    let ssh = Ssh::new()?;
    let hosts = boot_fleet(&net, &ssh)?;
    let footprint = hosts.iter().fold(Footprint::new().net(&net), Footprint::host);
    let c = Controller::new(&ssh, FLEET_HOSTS)?;
    stacks(&c, "7000000", None)?;
    c.expect(&["fleet", "apply"], 0)?;
    let mut known: BTreeMap<String, Vec<String>> = c.desired()?.into_iter().map(|(h, s)| (h, vec![s])).collect();
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..50 {
        stacks(&c, &format!("{}", 7100000 + round), None)?;
        for (host, hash) in c.desired()? {
            known.entry(host).or_default().push(hash);
        }
        let mut child = c.command(&["fleet", "apply"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        std::thread::sleep(Duration::from_millis(next() % 900));
        if round % 2 == 1 {
            // Kill a peer's receive (by the PID its lock records) as well as the pusher.
            let host = &hosts[(next() % 3) as usize];
            if let Ok(text) = std::fs::read_to_string(host.root().join("run/kapell/lock"))
                && let Some(pid) = text.strip_prefix("PID ").and_then(|t| t.split_whitespace().next())
            {
                let _ = host.exec(&["kill", "-KILL", pid]);
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        for host in &hosts {
            let dir = host.root().join("etc/kapell/received/current");
            let Ok(set) = kapell::fleet::peer::generations::read_set(&dir) else { continue };
            ensure!(
                known[host.name()].contains(&set.hash),
                "round {round}: {} holds a set that was never pushed (a mix?)",
                host.name()
            );
        }
    }
    let last = c.expect(&["fleet", "apply"], 0)?;
    for host in &hosts {
        pids(host, units_of(host))?;
        ensure!(prop(host, "agent-node.service", "ActiveState")? == "active", "{last}");
    }
    let noop = c.expect(&["fleet", "apply"], 0)?;
    ensure!(noop.stdout.matches("up to date").count() >= 3, "not converged after the kills:\n{noop}");

    drop(c);
    drop(hosts);
    drop(net);
    footprint.assert_gone()
}
