//! Names across a fleet (tests/support): this machine is the controller, three booted hosts with
//! systemd-resolved and sshd run `kapell receive`. The catalog travels in each host's set, the
//! peer starts `kapell dns`, and from h1 a native process and a container both resolve
//! `db.data.kapell` to h3 and reach db there; placed on two hosts, both answer; with the
//! controller gone, the names keep resolving, also after the responder restarts. The seed
//! scenario across hosts: SQLite on h3, queried through the proxy on h1 that finds it by name.
//! An instance only its own host can check (`cmd`) follows the controller's word between
//! pushes, which the federation daemon sends with every pass, moving nothing else.

mod support;

use anyhow::{Context, Result, ensure};
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::dns::{OUTSIDE, UpstreamServer, getent, nslookup, start_upstream};
use support::{Dockerd, Flavor, HOST_DOCKER_HOST, Host, Net, Ssh, eventually};

const KAPELL: &str = env!("CARGO_BIN_EXE_kapell");
const IMAGE: &str = "kapell-test/busybox:1";

/// db answers every connection with the name of the host it runs on; its TCP check is what
/// every host's responder probes.
fn data(db_hosts: &str) -> String {
    format!(
        "[services.db]\nexec = [\"/usr/bin/socat\", \"TCP-LISTEN:15432,fork,reuseaddr\", \"SYSTEM:hostname\"]\n\
         health = {{ tcp = 15432, interval = \"1s\" }}\non_unhealthy = \"ignore\"\n\
         placement = {{ hosts = [{db_hosts}] }}\n"
    )
}

/// How long a change may take to reach a resolver: two probe intervals of db's check (docs/discovery.md),
/// the answers' TTL (a resolver's cache), the responder's ticks, and room for a loaded machine.
/// Only the order of events is judged here; dns.rs prints the time a change takes.
const TWO_INTERVALS: Duration = Duration::from_secs(2 + 2 + 1 + 5);

const WEB: &str = r#"[services.web]
exec = ["/bin/sleep", "infinity"]
placement = { hosts = ["h1", "h2"] }

[services.client]
image = "kapell-test/busybox:1"
command = ["sleep", "1000000"]
placement = { hosts = ["h1"] }
"#;

/// Every address `getent ahostsv4 NAME` lists on `host`.
fn addresses(host: &Host, name: &str) -> Result<BTreeSet<String>> {
    let out = host.exec(&["getent", "ahostsv4", name])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect())
}

/// Three booted hosts (h1, h2, h3) with systemd-resolved, sshd and kapell-dns.service, and this
/// machine as their controller: fleet.toml and the stacks in `dir`, its runtime and state in
/// `runtime`. Fields drop in order: the controller first, then the hosts, then their network.
struct Rig {
    runtime: Option<tempfile::TempDir>,
    dir: tempfile::TempDir,
    hosts: Vec<Host>,
    _ssh: Ssh,
    _upstream: UpstreamServer,
    net: Net,
}

impl Rig {
    /// Boots the hosts; `defaults` are extra lines of fleet.toml's `[defaults]`. Hosts are named
    /// by their ssh aliases (their `ip` comes from ssh's HostName).
    fn boot(defaults: &str) -> Result<Rig> {
        let net = Net::new()?;
        let upstream = start_upstream(net.gateway())?;
        let ssh = Ssh::new()?;
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut hosts = Vec::new();
        for (i, name) in ["h1", "h2", "h3"].iter().enumerate() {
            let builder = Host::builder()
                .name(name)
                .flavor(Flavor::Resolved)
                .net(&net, 2 + i as u8)
                .dns_server(net.gateway())
                .ssh(&ssh)
                .kapell(KAPELL)
                .install_file("/etc/systemd/system/kapell-dns.service", repo.join("units/kapell-dns.service"), 0o644)
                .install_file(
                    "/etc/systemd/system.conf.d/kapell-test.conf",
                    format!("[Manager]\nDefaultEnvironment=DOCKER_HOST={HOST_DOCKER_HOST}\n"),
                    0o644,
                );
            hosts.push(builder.start()?);
        }
        for host in &mut hosts {
            host.wait_running()?;
            host.wait_ssh()?;
        }
        let dir = tempfile::tempdir()?;
        let runtime = tempfile::Builder::new().prefix("kr").tempdir_in("/tmp")?;
        let mut fleet = format!("[defaults]\nssh_config = \"{}\"\n{defaults}\n", ssh.config_path().display());
        for name in ["h1", "h2", "h3"] {
            fleet.push_str(&format!("[hosts.{name}]\naddress = \"{name}\"\n\n"));
        }
        std::fs::write(dir.path().join("fleet.toml"), fleet)?;
        Ok(Rig { runtime: Some(runtime), dir, hosts, _ssh: ssh, _upstream: upstream, net })
    }

    /// The `ip` of host `i` (0: h1).
    fn ip(&self, i: u8) -> String {
        self.net.address(2 + i).to_string()
    }

    /// Writes a stack (or fleet.toml) into the controller's configuration directory.
    fn write(&self, file: &str, text: &str) -> Result<()> {
        Ok(std::fs::write(self.dir.path().join(file), text)?)
    }

    /// `kapell` on the controller, not started yet.
    fn command(&self, args: &[&str]) -> Result<Command> {
        let runtime = self.runtime.as_ref().context("the controller is gone")?.path();
        let mut command = Command::new(KAPELL);
        command
            .env("KAPELL_CONFIG_DIR", self.dir.path())
            .env("KAPELL_RUNTIME_DIR", runtime)
            .env("KAPELL_STATE_DIR", runtime.join("state"))
            .args(args)
            .stdin(Stdio::null());
        Ok(command)
    }

    /// Runs `kapell ARGS` on the controller, which must succeed; its stdout.
    fn kapell(&self, args: &[&str]) -> Result<String> {
        let out = self.command(args)?.output()?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        ensure!(out.status.success(), "kapell {}: {text}", args.join(" "));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The controller is gone: nothing asks the hosts any more, and what it remembered is lost.
    fn forget_controller(&mut self) {
        self.runtime = None;
    }
}

#[test]
fn a_service_on_another_host_resolves_and_answers_from_hosts_and_containers() -> Result<()> {
    let mut rig = Rig::boot("")?;
    let dockerd = Dockerd::start_in_host(&rig.hosts[0], rig.net.gateway())?;
    dockerd.import_busybox(IMAGE)?;
    rig.write("data.toml", &data("\"h3\""))?;
    rig.write("web.toml", WEB)?;
    rig.kapell(&["fleet", "apply", "--no-rollout"])?;
    let h1 = &rig.hosts[0];
    let ips: Vec<String> = (0..3).map(|i| rig.ip(i)).collect();
    let ip = |i: u8| ips[usize::from(i)].clone();

    // The peer started the responder with the catalog it received.
    let catalog = h1.exec_ok(&["sh", "-c", "cat /etc/kapell/received/current/catalog.json"])?;
    ensure!(catalog.contains(&format!("\"ip\":\"{}\"", ip(2))), "h3's ip in h1's catalog: {catalog}");
    ensure!(h1.show("kapell-dns.service", "ActiveState")? == "active", "kapell-dns on h1");
    ensure!(h1.systemctl_ok(&["is-enabled", "kapell-dns.service"])?.trim() == "enabled");

    // From h1: a native process resolves db to h3 and reaches it through its port.
    eventually("db.data.kapell from h1", Duration::from_secs(20), || Ok(getent(h1, "db.data.kapell")? == Some(ip(2))))?;
    let answer = h1.exec_ok(&["socat", "-T5", "-", "TCP:db.data.kapell:15432"])?;
    ensure!(answer.trim() == "h3", "db answered {answer:?}");
    ensure!(addresses(h1, "web.web.kapell")? == BTreeSet::from([ip(0), ip(1)]), "web on h1 and h2");
    ensure!(getent(h1, "outside.test")? == Some(OUTSIDE.to_string()), "other names resolve as before");

    // From a container on h1: the same, and Docker's own names still work.
    eventually("client running", Duration::from_secs(60), || {
        Ok(h1.show("web-client.service", "ActiveState")? == "active")
    })?;
    ensure!(nslookup(&dockerd, "kapell-web-client", "db.data.kapell")? == [ip(2)], "db from the container");
    let answer = dockerd.docker_ok(&["exec", "kapell-web-client", "timeout", "5", "nc", "db.data.kapell", "15432"])?;
    ensure!(answer.trim() == "h3", "db answered the container {answer:?}");
    ensure!(nslookup(&dockerd, "kapell-web-client", "outside.test")? == [OUTSIDE.to_string()]);

    // db on two hosts: both answer.
    rig.write("data.toml", &data("\"h2\", \"h3\""))?;
    rig.kapell(&["fleet", "apply", "--no-rollout"])?;
    eventually("db on h2 and h3", Duration::from_secs(20), || {
        Ok(addresses(h1, "db.data.kapell")? == BTreeSet::from([ip(1), ip(2)]))
    })?;
    let status = rig.kapell(&["fleet", "status"])?;
    ensure!(status.contains("db.data.kapell") && status.contains(&format!("{} (h2)", ip(1))), "{status}");

    // The controller is gone (nothing asks the hosts any more): the names hold, also when the
    // responder restarts from the catalog on disk, and they still follow health, probed by h1.
    rig.forget_controller();
    let (h1, h2, h3) = (&rig.hosts[0], &rig.hosts[1], &rig.hosts[2]);
    h1.systemctl_ok(&["restart", "kapell-dns.service"])?;
    for _ in 0..5 {
        eventually("db after the restart", Duration::from_secs(10), || {
            Ok(addresses(h1, "db.data.kapell")? == BTreeSet::from([ip(1), ip(2)]))
        })?;
        std::thread::sleep(Duration::from_millis(500));
    }
    h2.systemctl_ok(&["stop", "data-db.service"])?;
    eventually("db on h2 gone from h1's answers", TWO_INTERVALS, || {
        Ok(addresses(h1, "db.data.kapell")? == BTreeSet::from([ip(2)]))
    })?;
    h3.systemctl_ok(&["stop", "data-db.service"])?;
    eventually("db gone everywhere", TWO_INTERVALS, || Ok(addresses(h1, "db.data.kapell")?.is_empty()))?;
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(500));
        ensure!(addresses(h1, "db.data.kapell")?.is_empty(), "db came back while stopped");
        ensure!(addresses(h1, "web.web.kapell")? == BTreeSet::from([ip(0), ip(1)]), "web moved");
    }
    h3.systemctl_ok(&["start", "data-db.service"])?;
    eventually("db back on h3", TWO_INTERVALS + Duration::from_secs(2), || {
        Ok(addresses(h1, "db.data.kapell")? == BTreeSet::from([ip(2)]))
    })?;
    ensure!(nslookup(&dockerd, "kapell-web-client", "db.data.kapell")? == [ip(2)], "the container follows too");
    ensure!(getent(h3, "web.web.kapell")?.is_some(), "h3 resolves the fleet's names too");
    let _ = h3.exec(&["true"]).context("h3 still up")?;
    drop(dockerd);
    Ok(())
}

/// The seed scenario across hosts, from examples/sqlite-fleet.toml (its db1 as h3, web1 as h1):
/// SQLite in a container on h3 with its port published there, the proxy container on h1
/// reaching it as `server.sqlite-fleet.kapell`. A row inserted through the proxy on h1 is read
/// back through it, and is in h3's database.
#[test]
fn the_sqlite_server_on_one_host_answers_through_the_proxy_on_another() -> Result<()> {
    const SQLITE: &str = "kapell-demo/sqlite-socat:1";
    let rig = Rig::boot("")?;
    let (h1, h3) = (&rig.hosts[0], &rig.hosts[2]);
    let mut engines = Vec::new();
    for host in [h1, h3] {
        let dockerd = Dockerd::start_in_host(host, rig.net.gateway())?;
        dockerd.import_busybox_with(SQLITE, &["/usr/bin/sqlite3", "/usr/bin/socat"])?;
        engines.push(dockerd);
    }
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sqlite-fleet.toml");
    let example = std::fs::read_to_string(example)?;
    let stack =
        example.replace("hosts = [\"db1\"]", "hosts = [\"h3\"]").replace("hosts = [\"web1\"]", "hosts = [\"h1\"]");
    ensure!(stack.matches("hosts = [\"h").count() == 2, "the example places on db1 and web1:\n{example}");
    rig.write("sqlite-fleet.toml", &stack)?;
    rig.kapell(&["fleet", "apply", "--no-rollout"])?;

    // Each service runs on its own host only.
    ensure!(h3.show("sqlite-fleet-server.service", "ActiveState")? == "active", "server on h3");
    ensure!(h1.show("sqlite-fleet-proxy.service", "ActiveState")? == "active", "proxy on h1");
    ensure!(h1.show("sqlite-fleet-server.service", "LoadState")? == "not-found", "no server on h1");
    eventually("server.sqlite-fleet.kapell from h1", Duration::from_secs(30), || {
        Ok(getent(h1, "server.sqlite-fleet.kapell")? == Some(rig.ip(2)))
    })?;
    ensure!(
        nslookup(&engines[0], "kapell-sqlite-fleet-proxy", "server.sqlite-fleet.kapell")? == [rig.ip(2)],
        "the proxy's container resolves the server to h3"
    );

    // SQL through the proxy on h1: each query a connection of its own.
    let query = |host: &Host, port: u16, sql: &str| -> Result<String> {
        let script = format!("printf '%s\\n' \"{sql}\" | socat -t 2 - TCP:127.0.0.1:{port}");
        let out = host.exec(&["sh", "-c", &script])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    eventually("SQLite answers through the proxy", Duration::from_secs(30), || {
        Ok(query(h1, 12346, "select 6 * 7;")? == "42")
    })?;
    let inserted = query(h1, 12346, "insert into kv values ('greeting', 'hello from h3'); select changes();")?;
    ensure!(inserted == "1", "the insert through the proxy: {inserted:?}");
    let read = query(h1, 12346, "select v from kv where k = 'greeting';")?;
    ensure!(read == "hello from h3", "read back through the proxy: {read:?}");
    // The row lives in h3's database: asked there directly, without the proxy.
    let there = query(h3, 12345, "select v from kv where k = 'greeting';")?;
    ensure!(there == "hello from h3", "h3's own database: {there:?}");
    drop(engines);
    Ok(())
}

/// The controller's word on an instance no responder can probe (a `cmd` check only its own host
/// can run): `jobs.worker` on h3 checks that a file exists. With the federation daemon running
/// (every [`INTERVAL`]), the name follows the check on h1 and h2 in both directions, and with
/// the daemon stopped the last word holds, also across a restart of the responder. Throughout,
/// no set changes and no unit restarts on any host: health travels beside the sets.
#[test]
fn an_instance_checked_by_cmd_follows_the_controllers_word_between_pushes() -> Result<()> {
    const INTERVAL: Duration = Duration::from_secs(2);
    // Its next probe (1 s), the pass that reads it from h3, the pass after it that tells the
    // other hosts, their responders' next look (0.5 s), resolved's cache (TTL 2 s), and the
    // passes' own time.
    const FOLLOWS: Duration = Duration::from_secs(2 * 2 + 1 + 1 + 2 + 4);
    const OK_FILE: &str = "/run/worker-ok";
    const JOBS: &str = r#"[services.worker]
exec = ["/bin/sleep", "infinity"]
health = { cmd = ["/usr/bin/test", "-e", "/run/worker-ok"], interval = "1s", retries = 1 }
on_unhealthy = "ignore"
placement = { hosts = ["h3"] }
"#;
    const NATIVE_WEB: &str = "[services.web]\nexec = [\"/bin/sleep\", \"infinity\"]\n\
                              placement = { hosts = [\"h1\", \"h2\"] }\n";
    const WORKER: &str = "worker.jobs.kapell";

    let rig = Rig::boot(&format!("reconcile_interval = \"{}s\"\n", INTERVAL.as_secs()))?;
    let (h1, h2, h3) = (&rig.hosts[0], &rig.hosts[1], &rig.hosts[2]);
    rig.write("jobs.toml", JOBS)?;
    rig.write("web.toml", NATIVE_WEB)?;
    h3.exec_ok(&["touch", OK_FILE])?;
    rig.kapell(&["fleet", "apply", "--no-rollout"])?;
    let log = tempfile::NamedTempFile::new()?;
    let mut daemon = Daemon(
        rig.command(&["federate"])?.env("KAPELL_LOG", "debug").stderr(log.reopen()?).stdout(Stdio::null()).spawn()?,
    );

    let worker_on = |host: &Host| -> Result<BTreeSet<String>> { addresses(host, WORKER) };
    let h3_only = BTreeSet::from([rig.ip(2)]);
    eventually("worker from h1 and h2", Duration::from_secs(20), || {
        Ok(worker_on(h1)? == h3_only && worker_on(h2)? == h3_only)
    })?;
    let before = moving_parts(&rig)?;
    let unchanged = || -> Result<()> {
        let now = moving_parts(&rig)?;
        ensure!(now == before, "a set changed or a unit restarted:\n  before {before:?}\n  now    {now:?}");
        Ok(())
    };
    // `what` holds now and keeps holding for three passes, with nothing else moving.
    let holds = |what: &str, check: &dyn Fn() -> Result<bool>| -> Result<()> {
        for _ in 0..6 {
            ensure!(check()?, "{what} no longer holds");
            unchanged()?;
            std::thread::sleep(INTERVAL / 2);
        }
        Ok(())
    };
    holds("worker answered while healthy", &|| Ok(worker_on(h1)? == h3_only && worker_on(h2)? == h3_only))?;

    // The check fails on h3: the name leaves the other hosts' answers (and h3's own).
    h3.exec_ok(&["rm", OK_FILE])?;
    let gone = || Ok(worker_on(h1)?.is_empty() && worker_on(h2)?.is_empty() && worker_on(h3)?.is_empty());
    eventually("worker gone from every host's answers", FOLLOWS, gone)?;
    holds("worker gone while failing", &gone)?;
    ensure!(h3.show("jobs-worker.service", "ActiveState")? == "active", "the worker itself runs on");

    // Healthy again: back everywhere.
    h3.exec_ok(&["touch", OK_FILE])?;
    let back = || Ok(worker_on(h1)? == h3_only && worker_on(h2)? == h3_only);
    eventually("worker back on h1 and h2", FOLLOWS, back)?;
    holds("worker back", &back)?;

    // Failing again, then the controller goes away: its last word holds on h1, while h3, which
    // runs the check itself, sees the worker recover.
    h3.exec_ok(&["rm", OK_FILE])?;
    eventually("worker gone again", FOLLOWS, gone)?;
    daemon.stop()?;
    h3.exec_ok(&["touch", OK_FILE])?;
    eventually("h3 sees its worker healthy", Duration::from_secs(10), || Ok(worker_on(h3)? == h3_only))?;
    holds("the last word on h1 and h2", &|| Ok(worker_on(h1)?.is_empty() && worker_on(h2)?.is_empty()))?;
    let log = std::fs::read_to_string(log.path())?;
    ensure!(!log.contains(" converged: "), "the daemon changed a host:\n{log}");
    // A word a host holds already (its replies name its hash) is not sent again: most passes'
    // repairs go without it, each change of health went with it.
    for host in ["h1", "h2", "h3"] {
        let repairs = |with: bool| {
            log.lines()
                .filter(|l| l.contains(&format!("{host}: repair request of ")))
                .filter(|l| l.contains(" without the health word") != with)
                .count()
        };
        ensure!(repairs(false) >= 4 && repairs(true) >= 1, "{host}'s repairs, with and without the word:\n{log}");
    }
    ensure!(log.matches("periodic pass").count() >= 5, "the daemon passed every {INTERVAL:?}:\n{log}");
    h1.systemctl_ok(&["restart", "kapell-dns.service"])?;
    for _ in 0..6 {
        std::thread::sleep(INTERVAL / 2);
        ensure!(worker_on(h1)?.is_empty(), "the last word is kept across a restart of the responder");
        ensure!(addresses(h1, "web.web.kapell")? == BTreeSet::from([rig.ip(0), rig.ip(1)]), "web answers");
    }
    Ok(())
}

/// What health must never move: each host's received generation, and the run (invocation and
/// restart count) of every unit of the sets and of the responder.
fn moving_parts(rig: &Rig) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for host in &rig.hosts {
        let name = host.name();
        out.push(format!("{name}: set {}", host.exec_ok(&["readlink", "/etc/kapell/received/current"])?.trim()));
        for unit in ["kapell-dns.service", "web-web.service", "jobs-worker.service"] {
            let (run, restarts) = (host.show(unit, "InvocationID")?, host.show(unit, "NRestarts")?);
            out.push(format!("{name}: {unit} {run} {restarts}"));
        }
    }
    Ok(out)
}

/// `kapell federate` on the controller, stopped (SIGTERM, by its PID) when the test ends.
struct Daemon(std::process::Child);

impl Daemon {
    fn stop(&mut self) -> Result<()> {
        if self.0.try_wait()?.is_none() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id())?);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        }
        let status = self.0.wait()?;
        ensure!(status.success(), "kapell federate ended with {status}");
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
